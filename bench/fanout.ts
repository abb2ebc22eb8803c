/**
 * `npm run bench -- fanout`: what reaches each agent from the REAL kube-apiserver in a cluster of 5,000
 * kubelet-sized Nodes whose kubelets report status as kubelets do (a status PATCH of each Node's
 * condition heartbeats every 5 minutes, spread: 16.7 a second at 5,000), with W simulated agents each
 * watching on its own connection (bench/watch-counter.ts, in the control plane's namespace). For each
 * way of watching: bytes and events delivered per agent, per hour (measured over a window, scaled), and
 * kube-apiserver's and etcd's CPU and memory over the window. BENCH_NODES, BENCH_WATCHERS (50) and
 * BENCH_WINDOW_S (60) change the size; BENCH_READER_PROBES=off runs the real reader without path probes.
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import { startControlPlane, type ControlPlane } from "../src/lab/kubernetes/control-plane.js";
import { flatNamespace, removeFlatNamespace } from "../testkit/netns.js";
import { inClusterEnv, startAgentProcess, within, type Started } from "../testkit/agent-lab.js";
import { DEFAULT_ROUTE_SET_SHARDS, ROUTE_SET_LABEL, ROUTE_SET_LEASE } from "../src/kube/route-set.js";
import { DEFAULT_ROUTE_SET_FALLBACK_AFTER_MS, fallbackOptions } from "../src/agent/route-set-fallback.js";
import { percentile } from "./stats.js";
import { cpuMs, rssMb } from "./agent.js";
import { apiLoader, createKubeletNodes, nodeIp, type ApiLoader } from "./real-plane.js";

const NS = `prbenchfan${process.pid % 100000}`;
const NODES = Number(process.env.BENCH_NODES ?? 5000);
const WATCHERS = Number(process.env.BENCH_WATCHERS ?? 50);
const WINDOW_S = Number(process.env.BENCH_WINDOW_S ?? 60);
const JOINS = 20;
/** The real reader's path probes (BENCH_READER_PROBES=off: what they cost, by difference). */
const READER_PROBES = process.env.BENCH_READER_PROBES === "off" ? "off" : "on";
/** The kubelet's nodeStatusReportFrequency: a status report at least this often, changed or not. */
export const REPORT_EVERY_S = 300;
const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));
const COUNTER = fileURLToPath(new URL("./watch-counter.js", import.meta.url));
const KUBELET_CONDITIONS = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];

interface Report {
  bytes: number[];
  events: number[];
  last: number[];
  open: number;
}

/** COUNT watches of `path` in the namespace, as agents with `token` would open them. */
function watchers(plane: ControlPlane, token: string, count: number, encoding: "json" | "protobuf", path: string) {
  const child = spawn("ip", ["netns", "exec", NS, process.execPath, COUNTER, plane.url, plane.caFile, token, String(count), encoding, path], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout!, crlfDelay: Infinity })[Symbol.asyncIterator]();
  return {
    async report(): Promise<Report> {
      child.stdin!.write("report\n");
      const next = await lines.next();
      if (next.done) throw new Error("the watch counter exited");
      return JSON.parse(next.value) as Report;
    },
    stop: () => child.kill(),
  };
}

/** The kubelet's status report: its conditions' heartbeat times, as a strategic merge patch. */
function heartbeat(now: string) {
  return {
    status: {
      conditions: KUBELET_CONDITIONS.map((type) => ({ type, lastHeartbeatTime: now })),
    },
  };
}

/** Status reports of each of `nodes` Nodes, each every REPORT_EVERY_S, spread evenly, for `seconds`; resolves to how many were sent. */
export async function kubelets(api: ApiLoader, nodes: number, seconds: number, from: number): Promise<{ sent: number; failed: number; next: number }> {
  const perSecond = nodes / REPORT_EVERY_S;
  const start = performance.now();
  let sent = 0;
  let failed = 0;
  const inFlight: Promise<void>[] = [];
  for (;;) {
    const due = Math.floor(((performance.now() - start) / 1000) * perSecond);
    if (performance.now() - start >= seconds * 1000) break;
    for (; sent < due; sent++) {
      const i = (from + sent) % nodes;
      inFlight.push(api.send("PATCH", `/api/v1/nodes/node-${i}/status`, heartbeat(new Date().toISOString().replace(/\.\d+Z$/, "Z")), "application/strategic-merge-patch+json").then((a) => { if (a.status !== 200) failed++; }));
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await Promise.all(inFlight);
  return { sent, failed, next: (from + sent) % nodes };
}

export interface KubeletFleet {
  plane: ControlPlane;
  /** kubectl as the cluster's admin: its output, or an error naming the command. */
  must(args: string[], input?: string): Promise<string>;
  api: ApiLoader;
  /** podroutes-agent's token (deploy/agent-rbac.yaml applied). */
  token: string;
  stop(): Promise<void>;
}

/**
 * The REAL control plane in namespace `ns` (made by the caller, with nodeIp(0)), podroutes' namespace and
 * agent RBAC applied, and `nodes` kubelet-sized Nodes node-0… On failure, whatever it started is stopped.
 */
export async function kubeletFleet(ns: string, dir: string, nodes: number, options: { auditLog?: string } = {}): Promise<KubeletFleet> {
  let plane: ControlPlane | undefined;
  let api: ApiLoader | undefined;
  const stop = async () => {
    api?.stop();
    if (plane) await plane.stop();
  };
  try {
    plane = await startControlPlane({ netns: ns, address: nodeIp(0), stateDir: join(dir, "control-plane"), clusterCIDR: "10.0.0.0/8", progress: (line) => process.stderr.write(`# ${line}\n`), auditLog: options.auditLog });
    const must = async (args: string[], input?: string) => {
      const result = await plane!.kubectl(args, input);
      if (result.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${result.stderr}`);
      return result.stdout;
    };
    await must(["apply", "--server-side", "-f", join(DEPLOY, "namespace.yaml")]);
    await must(["apply", "--server-side", "-f", join(DEPLOY, "agent-rbac.yaml")]);
    const token = await plane.createToken("podroutes", "podroutes-agent");
    api = apiLoader(ns, plane.url, plane.caFile, plane.adminToken, 32);
    await createKubeletNodes(api, nodes);
    return { plane, must, api, token, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
const kb = (bytes: number) => (bytes / 1e3).toFixed(1);

export async function run(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "podroutes-bench-fanout-"));
  await flatNamespace(NS, `${nodeIp(0)}/16`);
  let fleet: KubeletFleet | undefined;
  const stops: (() => void)[] = [];
  let publisher: Started | undefined;
  /** A real reader (`--nodes-from route-set`, path probes on) beside the simulated ones: its RSS and CPU. */
  let reader: Started | undefined;
  try {
    fleet = await kubeletFleet(NS, dir, NODES);
    const { plane, must, api, token } = fleet;
    const nodeBytes = JSON.stringify(JSON.parse(await must(["get", "node", "node-1", "-o", "json"]))).length;
    const apiserver = plane.processes.find((p) => p.what === "kube-apiserver")!;
    const etcd = plane.processes.find((p) => p.what === "etcd")!;
    console.log(`fan-out: ${NODES} kubelet-sized Nodes (${(nodeBytes / 1024).toFixed(1)} KB of JSON each) in the REAL kube-apiserver ${plane.binaries.release}, status reports every ${REPORT_EVERY_S} s each (${(NODES / REPORT_EVERY_S).toFixed(1)}/s), ${WATCHERS} simulated agents each on its own connection, ${WINDOW_S} s a way, scaled to an hour`);

    let next = 0;
    /** Status reports for WINDOW_S with `counters` watching: per agent per hour, and the servers' cost. */
    const measure = async (name: string, counters: ReturnType<typeof watchers>[]) => {
      const opened = await within(60_000, async () => (await Promise.all(counters.map((c) => c.report()))).every((r) => r.open === WATCHERS), 200);
      if (opened === undefined) throw new Error(`${name}: not every one of the ${WATCHERS} watches opened within 60 s`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const before = await Promise.all(counters.map((c) => c.report()));
      const cpu0 = { apiserver: await cpuMs(apiserver.pid), etcd: await cpuMs(etcd.pid), publisher: publisher ? await cpuMs(publisher.pid) : 0, reader: reader ? await cpuMs(reader.pid) : 0 };
      const t0 = performance.now();
      const reported = await kubelets(api, NODES, WINDOW_S, next);
      next = reported.next;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const after = await Promise.all(counters.map((c) => c.report()));
      const took = (performance.now() - t0) / 1000;
      const scale = 3600 / took;
      const perAgent = (field: "bytes" | "events") => after.reduce((sum, report, k) => sum + report[field].reduce((s2, v, i) => s2 + v - before[k]![field][i]!, 0), 0) / WATCHERS;
      const cpu = { apiserver: (await cpuMs(apiserver.pid)) - cpu0.apiserver, etcd: (await cpuMs(etcd.pid)) - cpu0.etcd, publisher: publisher ? (await cpuMs(publisher.pid)) - cpu0.publisher : 0, reader: reader ? (await cpuMs(reader.pid)) - cpu0.reader : 0 };
      const rss = { apiserver: (await rssMb(apiserver.pid)).total, etcd: (await rssMb(etcd.pid)).total };
      const core = (ms: number) => `${(((ms / 1000) * scale) / 36).toFixed(1)}% of a core`;
      console.log(`  ${name}:`);
      console.log(`    per agent per hour: ${mb(perAgent("bytes") * scale)} MB, ${Math.round(perAgent("events") * scale)} events  (${reported.sent} status reports in ${took.toFixed(0)} s, ${reported.failed} failed)`);
      console.log(`    kube-apiserver ${core(cpu.apiserver)}, RSS ${rss.apiserver.toFixed(0)} MB; etcd ${core(cpu.etcd)}, RSS ${rss.etcd.toFixed(0)} MB${publisher ? `; the publisher agent ${core(cpu.publisher)}, RSS ${(await rssMb(publisher.pid)).total.toFixed(0)} MB` : ""}`);
      if (reader) console.log(`    a reader agent (--nodes-from route-set, path probes ${READER_PROBES}): ${((cpu.reader / 1000) * (3600 / WINDOW_S)).toFixed(1)} s of CPU per hour, RSS ${(await rssMb(reader.pid)).total.toFixed(0)} MB (${(await rssMb(reader.pid)).peak.toFixed(0)} MB at most), ${NODES} Nodes in its store`);
      console.log(`    API-server egress: ${((perAgent("bytes") * WATCHERS) / took / 1e3).toFixed(1)} KB/s to these ${WATCHERS}; ${mb((perAgent("bytes") * 5000) / took)} MB/s for 5,000 agents`);
      return perAgent("bytes") * scale;
    };
    /** New Nodes, one at a time: time until every watch of `counter` has had an event after the create. */
    let joined = NODES;
    const joins = async (counter: ReturnType<typeof watchers>, times: number) => {
      const took: number[] = [];
      for (let k = 0; k < times; k++) {
        const start = Date.now();
        const t0 = performance.now();
        await createKubeletNodes(api, 1, joined++);
        for (;;) {
          const report = await counter.report();
          if (report.last.every((at) => at >= start)) break;
          if (performance.now() - t0 > 10_000) throw new Error(`a join not seen by every watch within 10 s`);
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        took.push(performance.now() - t0);
      }
      return `p50 ${percentile(took, 50).toFixed(0)} ms, p99 ${percentile(took, 99).toFixed(0)} ms (${times} joins)`;
    };
    // Each watch starts at a list's resourceVersion, as an agent's does after its list: a watch without
    // one would first get every Node as ADDED.
    const listVersion = async (path: string) => (JSON.parse(await must(["get", "--raw", `${path}${path.includes("?") ? "&" : "?"}limit=1`])) as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    const from = async (path: string) => `${path}${path.includes("?") ? "&" : "?"}resourceVersion=${await listVersion(path)}`;
    const everyNode = { json: 0, protobuf: 0 };
    for (const encoding of ["json", "protobuf"] as const) {
      const counter = watchers(plane, token, WATCHERS, encoding, await from("/api/v1/nodes"));
      stops.push(counter.stop);
      everyNode[encoding] = await measure(`watch every Node (${encoding}${encoding === "json" ? ", as podroutes' agent, flannel and kube-router do" : ""})`, [counter]);
      if (encoding === "json") console.log(`    a Node joins → an event on every watch: ${await joins(counter, JOINS)}`);
      counter.stop();
    }

    // The route set: a publisher agent (podroutes agent --publish-route-set, in-cluster as deployed); each
    // simulated agent watches the shards and its own Node, as `--nodes-from route-set` does.
    await must(["apply", "--server-side", "-f", join(DEPLOY, "route-set-rbac.yaml")]);
    const env = { ...(await inClusterEnv(join(dir, "serviceaccount"), plane, token, "podroutes")), KUBECONFIG: undefined };
    publisher = startAgentProcess(["ip", "netns", "exec", NS], ["--node", "node-0", "--publish-route-set", "--listen", "127.0.0.1:9465", "--path-probes", "off", "--log-format", "json"], join(dir, "publisher.log"), env);
    const shardsPath = `/api/v1/namespaces/podroutes/configmaps?labelSelector=${encodeURIComponent(ROUTE_SET_LABEL)}`;
    const published = await within(60_000, async () => (await plane!.kubectl(["get", "configmaps", "-n", "podroutes", "-l", ROUTE_SET_LABEL, "-o", "name"])).stdout.trim().split("\n").filter(Boolean).length === DEFAULT_ROUTE_SET_SHARDS, 200);
    if (published === undefined) throw new Error(`the publisher did not publish ${DEFAULT_ROUTE_SET_SHARDS} shards in 60 s:\n${publisher.log()}`);
    // The same Node as the publisher: both share the bench's one namespace, so they must want one table
    // (as node-1, each would remove the other's "own" pod CIDR route, and fight on every kernel event).
    reader = startAgentProcess(["ip", "netns", "exec", NS], ["--node", "node-0", "--nodes-from", "route-set", "--listen", "127.0.0.1:9467", "--path-probes", READER_PROBES, "--log-format", "json"], join(dir, "reader.log"), env);
    if ((await within(120_000, async () => /"read the route set whole"/.test(reader!.log()), 200)) === undefined) throw new Error(`the reader did not read the route set in 120 s:\n${reader.log()}`);
    await new Promise((resolve) => setTimeout(resolve, 5000)); // its first sync's work done before the window
    const shardBytes = JSON.parse((await must(["get", "configmaps", "-n", "podroutes", "-l", ROUTE_SET_LABEL, "-o", "json"]))).items.reduce((sum: number, cm: object) => sum + JSON.stringify(cm).length, 0);
    console.log(`  the route set: ${DEFAULT_ROUTE_SET_SHARDS} shards, ${(shardBytes / 1024).toFixed(0)} KB in all, published ${(published / 1000).toFixed(1)} s after the publisher started`);
    const shardCounter = watchers(plane, token, WATCHERS, "json", await from(shardsPath));
    // The own Node: one whose status report falls early in the window (a kubelet reports 12 times an
    // hour), so its cost per report is measured and counted 12 times an hour.
    const ownName = `node-${(next + 1) % NODES}`;
    const ownNode = watchers(plane, token, WATCHERS, "json", await from(`/api/v1/nodes?fieldSelector=${encodeURIComponent(`metadata.name=${ownName}`)}`));
    stops.push(shardCounter.stop, ownNode.stop);
    await within(60_000, async () => (await ownNode.report()).open === WATCHERS, 200);
    const own0 = await ownNode.report();
    const shardsHourly = await measure("watch the route set (JSON, podroutes agent --nodes-from route-set), kubelets reporting", [shardCounter]);
    const own1 = await ownNode.report();
    const ownEvents = own1.events.reduce((sum, v, i) => sum + v - own0.events[i]!, 0) / WATCHERS;
    const ownBytes = own1.bytes.reduce((sum, v, i) => sum + v - own0.bytes[i]!, 0) / WATCHERS;
    const ownHourly = ownEvents ? (ownBytes / ownEvents) * (3600 / REPORT_EVERY_S) : NaN;
    console.log(`    and the own Node (${ownName}, watched alone): ${ownEvents.toFixed(1)} events of ${(ownBytes / Math.max(1, ownEvents) / 1024).toFixed(1)} KB in the window; ${3600 / REPORT_EVERY_S} reports an hour: ${kb(ownHourly)} KB per agent per hour`);
    const beforeJoins = await shardCounter.report();
    console.log(`    a Node joins → an event on every watch of the route set: ${await joins(shardCounter, JOINS)}`);
    const afterJoins = await shardCounter.report();
    const perChange = afterJoins.bytes.reduce((sum, v, i) => sum + v - beforeJoins.bytes[i]!, 0) / WATCHERS / JOINS;
    console.log(`    each route change costs every agent ${(perChange / 1024).toFixed(1)} KB (its shard)`);
    // The readers' check that a publisher still runs (agent/route-set-fallback.ts): a GET of the Lease a
    // minute at the default bound. Its answer's body as the API server sends it, and its headers (about 300 bytes).
    const leaseBody = (await must(["get", "--raw", `/apis/coordination.k8s.io/v1/namespaces/podroutes/leases/${ROUTE_SET_LEASE}`])).trim().length;
    const leaseHourly = (3600_000 / fallbackOptions(DEFAULT_ROUTE_SET_FALLBACK_AFTER_MS).checkEveryMs) * (leaseBody + 300);
    console.log(`    and the Lease read to know a publisher runs: ${3600_000 / fallbackOptions(DEFAULT_ROUTE_SET_FALLBACK_AFTER_MS).checkEveryMs} GETs an hour of ${leaseBody} bytes (+ headers): ${kb(leaseHourly)} KB per agent per hour`);
    const routeSet = shardsHourly + ownHourly + leaseHourly;
    const churn = 60;
    console.log(`  bytes per agent per hour, the route set (shards + own Node + Lease reads): ${kb(routeSet)} KB with no route change, ${mb(routeSet + churn * perChange)} MB with ${churn} route changes an hour`);
    console.log(`  watching every Node ÷ the route set, per agent per hour: JSON ${(everyNode.json / routeSet).toFixed(0)}× (${(everyNode.json / (routeSet + churn * perChange)).toFixed(0)}× with ${churn} route changes an hour; every Node's watch gets those too), protobuf ${(everyNode.protobuf / routeSet).toFixed(0)}×  [goal ≥ 50×]`);
  } finally {
    for (const stop of stops) stop();
    await publisher?.stop();
    await reader?.stop();
    await fleet?.stop();
    await removeFlatNamespace(NS);
    await rm(dir, { recursive: true, force: true });
  }
}
