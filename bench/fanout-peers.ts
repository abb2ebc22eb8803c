/**
 * `npm run bench -- fanout-peers [--json FILE]` (issue 21's row "the agent's CPU per hour idle and RSS at
 * 1,000 Nodes; API requests and bytes per agent per hour with kubelet-like Node status updates"): one REAL
 * control plane in a namespace of its own with BENCH_NODES (1,000) kubelet-sized Nodes whose kubelets
 * report status every 5 minutes, spread (bench/fanout.ts), and each system in turn as ONE daemon for
 * node-0 in that namespace: podroutes' agent watching every Node (path probes off, then on), podroutes'
 * agent `--nodes-from route-set` (a publisher agent beside it), kube-router (routing only) and flanneld
 * (`--kube-subnet-mgr`, host-gw). Each gets its own token; once it has synced (its routes in place, or
 * 20 s) and SETTLE_S more have passed, over BENCH_WINDOW_S (60) with the kubelets reporting:
 * - its CPU (utime + stime of /proc/PID/stat) scaled to an hour, its VmRSS and VmHWM at the end;
 * - the API requests it made: kube-apiserver's audit log, counted by the token's credential id (its JTI);
 * - the bytes on its connections to kube-apiserver, both ways (TLS records, from `ss -ti`'s bytes_received
 *   and bytes_acked of its sockets; a connection closed within the window is missed).
 * Next hops: node-0's namespace has the control plane's address on eth0 (a veth whose peer, in the same
 * namespace, has no address), so every Node's InternalIP 10.240.x.y is on-link there and answers nothing:
 * the routes a daemon installs stay in the bench's namespace and carry nothing. Between systems, every
 * route within 10.64.0.0/10 (the pod CIDRs) is deleted from that namespace.
 * The peers are built against testkit/peers/go's one client-go (v0.37.2, raised by the route controller's
 * k8s.io/cloud-provider), whose informers use the streaming WatchList, gzipped by kube-apiserver; their
 * releases' own client-go (kube-router v2.1.0: v0.29.2, flannel v0.28.11: v0.34.10) lists then watches.
 * BENCH_PEER_WATCHLIST=off runs them as released do (client-go's KUBE_FEATURE_WatchListClient=false).
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { run as runProcess } from "../src/process.js";
import { flatNamespace, removeFlatNamespace } from "../testkit/netns.js";
import { inClusterEnv, startAgentProcess, startLogged, within, writeKubeconfig, type Started } from "../testkit/agent-lab.js";
import { peerBinaries } from "../testkit/peers/binaries.js";
import { FLANNEL_RBAC, KUBE_ROUTER_RBAC } from "../testkit/peers/rbac.js";
import { DEFAULT_ROUTE_SET_SHARDS, ROUTE_SET_LABEL } from "../src/kube/route-set.js";
import { cpuMs, rssMb } from "./agent.js";
import { kubeletFleet, kubelets, type KubeletFleet } from "./fanout.js";
import { nodeIp } from "./real-plane.js";

const NS = `prbenchfp${process.pid % 100000}`;
const NODES = Number(process.env.BENCH_NODES ?? 1000);
const WINDOW_S = Number(process.env.BENCH_WINDOW_S ?? 60);
/** After a daemon's sync: its first sync's work (and its first status reports' events) done before the window. */
const SETTLE_S = 20;
const POD_CIDRS = "10.64.0.0/10";
const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));
const APISERVER = `${nodeIp(0)}:6443`;
/** The peers' client-go environment: its WatchList as their releases have it, with BENCH_PEER_WATCHLIST=off. */
const PEER_ENV = { PATH: process.env.PATH ?? "/usr/bin:/bin", ...(process.env.BENCH_PEER_WATCHLIST === "off" ? { KUBE_FEATURE_WatchListClient: "false" } : {}) };

const SYSTEMS = ["podroutes (path probes off)", "podroutes (path probes on)", "podroutes --nodes-from route-set", "kube-router", "flannel"] as const;
type System = (typeof SYSTEMS)[number];
type Cell = number | string;

interface Measured {
  syncedS: Cell;
  routes: number;
  cpuSecondsPerHour: number;
  vmRssMb: number;
  vmHwmMb: number;
  requestsPerHour: Cell;
  requests: string;
  /** From its start to the window's end: its first list and watches too. */
  requestsSinceStart: string;
  bytesInPerHour: number;
  bytesOutPerHour: number;
}

/** The token's JTI, which kube-apiserver's audit log names as the credential id of every request made with it. */
function jti(token: string): string {
  const payload = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString("utf8")) as { jti?: string };
  if (!payload.jti) throw new Error("the ServiceAccount token has no jti: kube-apiserver cannot tell its requests apart");
  return payload.jti;
}

/** Bytes in and out on process `pid`'s connections to kube-apiserver, per connection (`ss -ti` in the namespace). */
async function apiserverBytes(pid: number): Promise<Map<string, { in: number; out: number }>> {
  const shown = await runProcess("ip", ["netns", "exec", NS, "ss", "-tinpH", "state", "established", "dst", APISERVER]);
  if (shown.code !== 0) throw new Error(`ss in ${NS}: ${shown.stderr.trim()}`);
  const sockets = new Map<string, { in: number; out: number }>();
  // A socket's line, then its tcp_info on indented lines.
  const records = shown.stdout.replace(/\n[ \t]+/g, " ").split("\n").filter(Boolean);
  for (const record of records) {
    if (!record.includes(`pid=${pid},`)) continue;
    const local = record.trim().split(/\s+/)[2]!;
    const field = (name: string) => Number(new RegExp(`\\b${name}:(\\d+)`).exec(record)?.[1] ?? 0);
    sockets.set(local, { in: field("bytes_received"), out: field("bytes_acked") });
  }
  return sockets;
}

interface AuditEvent {
  auditID: string;
  verb: string;
  requestReceivedTimestamp: string;
  user: { extra?: Record<string, string[]> };
  objectRef?: { resource?: string; subresource?: string };
}

/** The requests made with the token whose JTI is `id`, received in [from, to): each once (a watch has two events). */
async function auditedRequests(auditLog: string, id: string, from: number, to: number): Promise<Map<string, number>> {
  const seen = new Set<string>();
  const counts = new Map<string, number>();
  for (const line of (await readFile(auditLog, "utf8")).split("\n")) {
    if (!line.includes(id)) continue;
    const event = JSON.parse(line) as AuditEvent;
    if (!event.user.extra?.["authentication.kubernetes.io/credential-id"]?.includes(`JTI=${id}`)) continue;
    const at = Date.parse(event.requestReceivedTimestamp);
    if (at < from || at >= to || seen.has(event.auditID)) continue;
    seen.add(event.auditID);
    const what = `${event.verb} ${event.objectRef?.resource ?? "?"}${event.objectRef?.subresource ? `/${event.objectRef.subresource}` : ""}`;
    counts.set(what, (counts.get(what) ?? 0) + 1);
  }
  return counts;
}

async function podRoutes(): Promise<number> {
  const shown = await runProcess("ip", ["-n", NS, "-json", "route", "show", "root", POD_CIDRS]);
  return shown.code === 0 ? (JSON.parse(shown.stdout || "[]") as unknown[]).length : 0;
}

const log = (line: string) => process.stderr.write(`# ${line}\n`);

export async function run(argv = process.argv): Promise<void> {
  const option = (flag: string) => (argv.indexOf(flag) >= 0 ? argv[argv.indexOf(flag) + 1] : undefined);
  const jsonFile = option("--json");
  const binaries = await peerBinaries(log);
  const dir = await mkdtemp(join(tmpdir(), "podroutes-bench-fanout-peers-"));
  const auditLog = join(dir, "audit.log");
  await flatNamespace(NS, `${nodeIp(0)}/16`);
  let fleet: KubeletFleet | undefined;
  const running: Started[] = [];
  const results = new Map<System, Measured | string>();
  try {
    fleet = await kubeletFleet(NS, dir, NODES, { auditLog });
    const { plane, must, api } = fleet;
    await must(["apply", "--server-side", "-f", join(DEPLOY, "route-set-rbac.yaml")]);
    await must(["apply", "--server-side", "-f", "-"], FLANNEL_RBAC);
    await must(["apply", "--server-side", "-f", "-"], KUBE_ROUTER_RBAC);
    log(`${NODES} kubelet-sized Nodes in the REAL kube-apiserver ${plane.binaries.release}; peers ${JSON.stringify(binaries.version)}`);
    const podroutesEnv = async (name: string) => {
      const token = await plane.createToken("podroutes", "podroutes-agent");
      return { id: jti(token), env: { ...(await inClusterEnv(join(dir, `sa-${name}`), plane, token, "podroutes")), KUBECONFIG: undefined } };
    };
    const kubeconfigFor = async (namespace: string, serviceAccount: string) => {
      const token = await plane.createToken(namespace, serviceAccount);
      return { id: jti(token), kubeconfig: await writeKubeconfig(join(dir, `${serviceAccount}.kubeconfig`), plane, token) };
    };
    const inNs = ["ip", "netns", "exec", NS];
    // As deploy/agent-daemonset.yaml runs it, as node-0.
    const agentArgs = ["--node", "node-0", "--resync=5m", "--set-node-condition", "--log-format=json"];
    let next = 0;

    /** One system: `start` resolves to its daemon and the token's JTI; `routes` is how many it should install. */
    const measure = async (system: System, routes: number, start: () => Promise<{ daemon: Started; id: string }>): Promise<Measured> => {
      const t0 = performance.now();
      const before = await podRoutes();
      if (before) throw new Error(`${before} routes within ${POD_CIDRS} before ${system} started`);
      const { daemon, id } = await start();
      running.push(daemon);
      const synced = routes ? await within(300_000, async () => (await podRoutes()) >= routes, 500) : undefined;
      const syncedS: Cell = routes ? (synced === undefined ? `not within 300 s (${await podRoutes()} of ${routes} routes)` : Number(((performance.now() - t0) / 1000).toFixed(1))) : "installs none (see below)";
      if (!daemon.running) throw new Error(`${system} exited:\n${daemon.log().slice(-3000)}`);
      // The kubelets report from here on: through the settling and the window.
      const reporting = kubelets(api, NODES, SETTLE_S + WINDOW_S + 2, next);
      await new Promise((resolve) => setTimeout(resolve, (routes ? SETTLE_S : 20 + SETTLE_S) * 1000));
      const cpu0 = await cpuMs(daemon.pid);
      const bytes0 = await apiserverBytes(daemon.pid);
      const from = Date.now();
      const w0 = performance.now();
      await new Promise((resolve) => setTimeout(resolve, WINDOW_S * 1000));
      const cpu = (await cpuMs(daemon.pid)) - cpu0;
      const bytes1 = await apiserverBytes(daemon.pid);
      const to = Date.now();
      const took = (performance.now() - w0) / 1000;
      const rss = await rssMb(daemon.pid);
      const reported = await reporting;
      next = reported.next;
      let bytesIn = 0;
      let bytesOut = 0;
      for (const [socket, after] of bytes1) {
        const before = bytes0.get(socket) ?? { in: 0, out: 0 };
        bytesIn += after.in - before.in;
        bytesOut += after.out - before.out;
      }
      // The audit log is written as responses complete: a second for the last of the window's.
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const requests = await auditedRequests(auditLog, id, from, to);
      const sinceStart = await auditedRequests(auditLog, id, 0, Date.now());
      const sockets = [...bytes1].map(([socket, b]) => `${socket} in ${b.in} out ${b.out}`).join("; ");
      const total = [...requests.values()].reduce((a, b) => a + b, 0);
      const scale = 3600 / took;
      const measured: Measured = {
        syncedS,
        routes: await podRoutes(),
        cpuSecondsPerHour: Number(((cpu / 1000) * scale).toFixed(1)),
        vmRssMb: Number(rss.total.toFixed(1)),
        vmHwmMb: Number(rss.peak.toFixed(1)),
        requestsPerHour: Math.round(total * scale),
        requests: [...requests].map(([what, n]) => `${what} ×${n}`).join(", ") || "none",
        requestsSinceStart: [...sinceStart].map(([what, n]) => `${what} ×${n}`).join(", ") || "none",
        bytesInPerHour: Math.round(bytesIn * scale),
        bytesOutPerHour: Math.round(bytesOut * scale),
      };
      const load = (await readFile("/proc/loadavg", "utf8")).split(" ").slice(0, 3).join(" ");
      log(`${system} (PID ${daemon.pid}): ${JSON.stringify(measured)}; ${reported.sent} status reports (${reported.failed} failed) in the settling and window; load ${load}; its sockets to kube-apiserver at the end (bytes since each opened): ${sockets || "none"}`);
      return measured;
    };
    const stopAll = async () => {
      for (const started of running.splice(0)) await started.stop();
      // Each deleted by destination (`ip route flush root` refuses podroutes' routes: "Invalid argument").
      const shown = await runProcess("ip", ["-n", NS, "-json", "route", "show", "root", POD_CIDRS]);
      const batch = (JSON.parse(shown.stdout || "[]") as { dst: string }[]).map((r) => `route del ${r.dst}\n`).join("");
      const deleted = batch ? await runProcess("ip", ["-n", NS, "-batch", "-"], batch) : { code: 0, stderr: "" };
      const left = await podRoutes();
      if (deleted.code !== 0 || left) throw new Error(`deleting the routes within ${POD_CIDRS} in ${NS}: ${deleted.stderr.trim()} (${left} routes left)`);
    };
    const attempt = async (system: System, routes: number, start: () => Promise<{ daemon: Started; id: string }>) => {
      try {
        results.set(system, await measure(system, routes, start));
      } catch (error) {
        log(`${system}: failed: ${(error as Error).message}`);
        results.set(system, `failed: ${(error as Error).message.split("\n")[0]}`);
      } finally {
        await stopAll();
      }
    };

    for (const probes of ["off", "on"] as const) {
      await attempt(`podroutes (path probes ${probes})`, NODES - 1, async () => {
        const { id, env } = await podroutesEnv(`agent-${probes}`);
        return { id, daemon: startAgentProcess(inNs, [...agentArgs, "--listen", "127.0.0.1:9465", "--path-probes", probes], join(dir, `agent-probes-${probes}.log`), env) };
      });
    }
    await attempt("podroutes --nodes-from route-set", NODES - 1, async () => {
      const publisherEnv = await podroutesEnv("publisher");
      const publisher = startAgentProcess(inNs, [...agentArgs, "--publish-route-set", "--listen", "127.0.0.1:9466", "--path-probes", "off"], join(dir, "publisher.log"), publisherEnv.env);
      running.push(publisher);
      const published = await within(120_000, async () => (await must(["get", "configmaps", "-n", "podroutes", "-l", ROUTE_SET_LABEL, "-o", "name"])).trim().split("\n").filter(Boolean).length === DEFAULT_ROUTE_SET_SHARDS, 500);
      if (published === undefined) throw new Error(`the publisher did not publish ${DEFAULT_ROUTE_SET_SHARDS} shards in 120 s:\n${publisher.log().slice(-3000)}`);
      const { id, env } = await podroutesEnv("reader");
      return { id, daemon: startAgentProcess(inNs, [...agentArgs, "--nodes-from", "route-set", "--listen", "127.0.0.1:9467", "--path-probes", "on"], join(dir, "reader.log"), env) };
    });
    // kube-router learns routes over BGP only: with no other kube-router running it installs none, and
    // tries its iBGP full mesh to every other Node's InternalIP (on-link in the bench's namespace, unanswered).
    await attempt("kube-router", 0, async () => {
      const { id, kubeconfig } = await kubeconfigFor("kube-system", "kube-router");
      return { id, daemon: startLogged([...inNs, binaries.path["kube-router"], `--kubeconfig=${kubeconfig}`, "--hostname-override=node-0",
        "--run-router=true", "--run-firewall=false", "--run-service-proxy=false",
        "--enable-cni=false", "--enable-overlay=false", "--enable-pod-egress=false", "--bgp-graceful-restart=false",
      ], join(dir, "kube-router.log"), "kube-router", { ...PEER_ENV, HOME: dir }) };
    });
    // flanneld routes only to Nodes its peers have annotated (kube-subnet-manager, public-ip, backend): as
    // flanneld on each of them would have, before it starts (flannel last, so no other system sees them).
    const annotated = await Promise.all(Array.from({ length: NODES - 1 }, (_, k) => api.send("PATCH", `/api/v1/nodes/node-${k + 1}`, { metadata: { annotations: {
      "flannel.alpha.coreos.com/kube-subnet-manager": "true", "flannel.alpha.coreos.com/backend-type": "host-gw",
      "flannel.alpha.coreos.com/backend-data": "null", "flannel.alpha.coreos.com/public-ip": nodeIp(k + 1),
    } } }, "application/merge-patch+json")));
    const notAnnotated = annotated.filter((a) => a.status !== 200);
    if (notAnnotated.length) throw new Error(`${notAnnotated.length} flannel annotations failed, e.g. ${notAnnotated[0]!.status} ${notAnnotated[0]!.error}`);
    await attempt("flannel", NODES - 1, async () => {
      const { id, kubeconfig } = await kubeconfigFor("kube-flannel", "flannel");
      const netConf = join(dir, "net-conf.json");
      await writeFile(netConf, JSON.stringify({ Network: "10.0.0.0/8", Backend: { Type: "host-gw" } }));
      return { id, daemon: startLogged([...inNs, binaries.path.flannel, "--kube-subnet-mgr", `--kubeconfig-file=${kubeconfig}`, "--iface=eth0",
        `--net-config-path=${netConf}`, `--subnet-file=${join(dir, "subnet.env")}`, "--ip-masq=false",
      ], join(dir, "flannel.log"), "flanneld", { ...PEER_ENV, HOME: dir, NODE_NAME: "node-0" }) };
    });
  } finally {
    for (const started of running) await started.stop().catch(() => undefined);
    await fleet?.stop();
    await removeFlatNamespace(NS);
    await rm(dir, { recursive: true, force: true });
  }

  const cell = (system: System, pick: (m: Measured) => Cell): Cell => {
    const m = results.get(system);
    return m === undefined ? "not run" : typeof m === "string" ? m : pick(m);
  };
  const rows: { figure: string; unit: string; values: Record<string, Cell> }[] = [
    { figure: "synced (its routes in place) after start", unit: "s", pick: (m: Measured) => m.syncedS },
    { figure: "routes it installed (pod CIDRs, on-link next hops in the bench's namespace)", unit: "routes", pick: (m: Measured) => m.routes },
    { figure: `CPU idle, ${NODES} Nodes reporting status every 300 s`, unit: "s per hour", pick: (m: Measured) => m.cpuSecondsPerHour },
    { figure: "RSS (VmRSS) at the window's end", unit: "MB", pick: (m: Measured) => m.vmRssMb },
    { figure: "RSS peak (VmHWM)", unit: "MB", pick: (m: Measured) => m.vmHwmMb },
    { figure: "API requests (audit log, by its token)", unit: "per hour", pick: (m: Measured) => m.requestsPerHour },
    { figure: "bytes from kube-apiserver (TLS, its sockets)", unit: "MB per hour", pick: (m: Measured) => Number((m.bytesInPerHour / 1e6).toFixed(2)) },
    { figure: "bytes to kube-apiserver (TLS, its sockets)", unit: "KB per hour", pick: (m: Measured) => Number((m.bytesOutPerHour / 1e3).toFixed(1)) },
    { figure: "the requests in the window", unit: "", pick: (m: Measured) => m.requests },
    { figure: "the requests from its start to the window's end", unit: "", pick: (m: Measured) => m.requestsSinceStart },
  ].map(({ figure, unit, pick }) => ({ figure, unit, values: Object.fromEntries(SYSTEMS.map((s) => [s, cell(s, pick)])) }));
  const width = 22;
  console.log(`fanout-peers: ${NODES} Nodes, a ${WINDOW_S} s window after ${SETTLE_S} s settled, scaled to an hour; one daemon for node-0 at a time; the peers' client-go WatchList ${process.env.BENCH_PEER_WATCHLIST === "off" ? "off (as their releases)" : "on (client-go v0.37.2's default)"}`);
  console.log(["figure".padEnd(58), ...SYSTEMS.map((s) => s.slice(0, width).padStart(width))].join(" "));
  for (const row of rows.slice(0, -2)) console.log([`${row.figure} (${row.unit})`.slice(0, 58).padEnd(58), ...SYSTEMS.map((s) => String(row.values[s]).slice(0, width).padStart(width))].join(" "));
  for (const s of SYSTEMS) console.log(`  ${s}: requests in the window: ${rows.at(-2)!.values[s]}; from its start: ${rows.at(-1)!.values[s]}`);
  if (jsonFile) await writeFile(jsonFile, `${JSON.stringify({ nodes: NODES, windowS: WINDOW_S, peerWatchList: process.env.BENCH_PEER_WATCHLIST !== "off", systems: SYSTEMS, rows }, null, 2)}\n`);
}
