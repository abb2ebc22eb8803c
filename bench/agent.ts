/**
 * `npm run bench -- agent`: `podroutes agent` on a node of a 5,000-node cluster. The Kubernetes API test
 * server (its own process) holds 5,000 Nodes, each the size the kubelet makes them (images, conditions,
 * managedFields, nodeInfo: about 7 KB of JSON); the agent runs as its own process in a network namespace,
 * as node-0, next to the server, started as the image starts it (bin/podroutes.js → the bundle).
 * Measured against issue 9's goals:
 *   - initial sync of 4,999 routes, whole process: from spawning the agent to /readyz answering 200;
 *   - one Node changed (its pod CIDR): the kernel writes `ip monitor` sees, and the time from the API
 *     change to the new route in the kernel, p50 and p99 over 100 changes made one after another;
 *   - a no-op resync: kernel writes, and the CPU of the agent's own process (utime + stime in
 *     /proc/PID/stat, children such as `ip` not included) per resync, over a minute of `--resync 1s`
 *     with nothing changing;
 *   - RSS of the agent process after the sync (1 s after ready, when it has given the sync's heap back; and at ready);
 * and compared with a replace-everything resync of 5,000 routes (kube-router's way: one `ip -batch` of
 * `route replace` for all) and with a 10 s poll (what each costs per hour).
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { READ_ARGS, ROUTES_BATCH } from "../src/targets/linux/iproute.js";
import { run } from "../src/process.js";
import type { KubeObject } from "../testkit/kube-server.js";
import { admin, agentDeployedEnv, agentRbacRules, getIn, inClusterEnv, nodeObject, startAgentProcess, startKubeServerProcess } from "../testkit/agent-lab.js";
import { watchKernelWrites } from "../testkit/kernel-writes.js";
import { flatNamespace, removeFlatNamespace } from "../testkit/netns.js";
import { percentile } from "./stats.js";

const NS = `prbenchagent${process.pid % 100000}`;
const NODES = 5000;
const CHANGES = 100;
const SELF = "node-0";
/** The agent's service account token: the test server grants it deploy/agent-rbac.yaml's rules. */
const AGENT_TOKEN = "agent-token";
/** The agent runs with the DaemonSet's environment (its V8 heap settings); BENCH_AGENT_ENV=none runs it without NODE_OPTIONS, for a comparison. */
const AGENT_ENV: NodeJS.ProcessEnv = process.env.BENCH_AGENT_ENV === "none" ? { NODE_OPTIONS: undefined } : {};
/** The NODE_OPTIONS the agent gets, for the report. */
const agentNodeOptions = () => ({ ...agentDeployedEnv(), ...AGENT_ENV }).NODE_OPTIONS ?? "";

const nodeIp = (i: number) => `10.240.${(i + 2) >> 8}.${(i + 2) & 255}`;
const podCidr = (i: number) => `10.${100 + (i >> 8)}.${i & 255}.0/24`;
/** A pod CIDR no node has, for the k-th change. */
const movedCidr = (k: number, round: number) => `10.${130 + round}.${k & 255}.0/24`;

export async function must(args: string[], stdin?: string): Promise<string> {
  const result = await run("ip", args, stdin);
  if (result.code !== 0) throw new Error(`ip ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

/** The agent's medians are nearest-rank (the lower one of an even count), like its p99. */
export const median = (values: number[]) => percentile(values, 50);

/** `ip monitor` in the namespace, lines kept with their arrival time. */
export function monitor(ns = NS) {
  const child = spawn("ip", ["-n", ns, "monitor", "route", "nexthop"], { stdio: ["ignore", "pipe", "ignore"] });
  const lines: { at: number; text: string }[] = [];
  const waiters: { match: RegExp; resolve: (at: number) => void }[] = [];
  createInterface({ input: child.stdout, crlfDelay: Infinity }).on("line", (text) => {
    const at = performance.now();
    lines.push({ at, text });
    for (const waiter of [...waiters]) {
      if (waiter.match.test(text)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(at);
      }
    }
  });
  return {
    lines,
    /** Resolves with the arrival time of the first line from now on that matches. */
    next: (match: RegExp) => new Promise<number>((resolve) => waiters.push({ match, resolve })),
    stop: () => child.kill(),
  };
}

/** Polls /readyz from inside the namespace every 2 ms; resolves with the Date.now() of the first 200. */
export function readyWatcher(ns = NS): { ready: Promise<number>; stop(): void } {
  const script =
    "const poll = () => fetch('http://127.0.0.1:9465/readyz').then((r) => r.status === 200 ? (console.log(Date.now()), process.exit(0)) : setTimeout(poll, 2), () => setTimeout(poll, 2)); poll();";
  const child = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", script], { stdio: ["ignore", "pipe", "ignore"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  return { ready: new Promise((resolve, reject) => child.on("exit", (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`readyz poller exited ${code}`))))), stop: () => child.kill() };
}

/**
 * A Node as a kubelet of today registers and updates it: besides what routing reads, the images on the
 * node, the kubelet's five conditions, capacity, nodeInfo, daemon endpoints and managedFields.
 */
export function asTheKubeletMakesIt(node: KubeObject, i: number): KubeObject {
  const status = node.status as Record<string, unknown>;
  const conditions = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"].map((type) => ({ type, status: type === "Ready" ? "True" : "False", lastHeartbeatTime: "2026-01-01T00:00:00Z", lastTransitionTime: "2026-01-01T00:00:00Z", reason: `Kubelet${type}`, message: `kubelet reports ${type}` }));
  const resources = { cpu: "4", "ephemeral-storage": "101430960Ki", "hugepages-2Mi": "0", memory: "16393252Ki", pods: "110" };
  return {
    ...node,
    metadata: {
      ...node.metadata,
      uid: `6b4e${String(i).padStart(4, "0")}-1d2f-4c3a-9e8b-2f6a1c0d${String(i).padStart(4, "0")}`,
      labels: { ...node.metadata.labels, "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "n2-standard-4", "topology.kubernetes.io/region": "europe-west1", "topology.kubernetes.io/zone": "europe-west1-b" },
      annotations: { "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock", "node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true" },
      managedFields: ["kubelet", "kube-controller-manager", "kubeadm"].map((manager) => ({ manager, operation: "Update", apiVersion: "v1", time: "2026-01-01T00:00:00Z", fieldsType: "FieldsV1", fieldsV1: { "f:metadata": { "f:labels": { ".": {}, "f:kubernetes.io/arch": {}, "f:kubernetes.io/hostname": {}, "f:kubernetes.io/os": {} } }, "f:status": { "f:conditions": { 'k:{"type":"Ready"}': { "f:lastHeartbeatTime": {}, "f:message": {}, "f:reason": {}, "f:status": {} } }, "f:images": {}, "f:nodeInfo": {} } } })),
    },
    status: {
      ...status,
      conditions: [...(status.conditions as unknown[]), ...conditions],
      capacity: resources,
      allocatable: resources,
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: { architecture: "amd64", bootID: `b00t-${i}`, containerRuntimeVersion: "containerd://1.7.24", kernelVersion: "6.1.0-28-cloud-amd64", kubeProxyVersion: "v1.32.0", kubeletVersion: "v1.32.0", machineID: `m${i}`, operatingSystem: "linux", osImage: "Debian GNU/Linux 12 (bookworm)", systemUUID: `u${i}` },
      images: Array.from({ length: 12 }, (_, k) => ({ names: [`registry.k8s.io/image-${k}@sha256:${"0123456789abcdef".repeat(4)}`, `registry.k8s.io/image-${k}:v1.${k}.0`], sizeBytes: 10_000_000 + k })),
    },
  };
}

/** The CPU time the process itself used (user + system, not its children), in ms. */
export async function cpuMs(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  // After the command name: state is field 3, utime 14 and stime 15 (1-based), in clock ticks (100/s).
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** Resident memory in MB, with its split: anonymous (heaps: V8's and malloc's) and file-backed (the node binary's pages). */
export async function rssMb(pid: number): Promise<{ total: number; anon: number; file: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) / 1024;
  return { total: kb("VmRSS"), anon: kb("RssAnon"), file: kb("RssFile"), peak: kb("VmHWM") };
}

export async function ownedCount(ns = NS): Promise<number> {
  return JSON.parse(await must(["-n", ns, "-json", "route", "show", "proto", "150"])).length;
}

export async function run_(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "podroutes-bench-agent-"));
  const nodes = Array.from({ length: NODES }, (_, i) => asTheKubeletMakesIt(nodeObject(`node-${i}`, nodeIp(i), podCidr(i), new Date(Date.UTC(2026, 0, 1, 0, 0, i % 60))), i));
  // One link on which every node's IP is on-link (a /16), as a flat VPC.
  await flatNamespace(NS, `${nodeIp(0)}/16`);
  const server = await startKubeServerProcess({ netns: NS, listen: "127.0.0.1:6443", stateDir: dir, tokens: ["admin-token", `${AGENT_TOKEN}=${agentRbacRules()}`], nodes });
  const api = admin(server);
  // The agent finds the API server as in the DaemonSet: its service account (the agent's RBAC), no kubeconfig.
  const inPod: NodeJS.ProcessEnv = { ...AGENT_ENV, ...(await inClusterEnv(join(dir, "serviceaccount"), server, AGENT_TOKEN)), KUBECONFIG: undefined };
  let agent: ReturnType<typeof startAgentProcess> | undefined;
  const kernel = monitor();
  try {
    // --- initial sync, whole process ---
    const watcher = readyWatcher();
    await new Promise((resolve) => setTimeout(resolve, 300)); // the poller's own start is not the agent's
    const spawnedAt = Date.now();
    agent = startAgentProcess(["ip", "netns", "exec", NS], ["--node", SELF, "--listen", "127.0.0.1:9465", "--resync", "10m", "--log-format", "json"], join(dir, "agent.log"), inPod);
    const started = agent;
    let timer: NodeJS.Timeout | undefined;
    const readyAt = await Promise.race([watcher.ready, new Promise<number>((_, reject) => (timer = setTimeout(() => reject(new Error(`agent not ready in 60 s:\n${started.log()}`)), 60_000)))]).finally(() => clearTimeout(timer));
    watcher.stop();
    const initialMs = readyAt - spawnedAt;
    const routes = await ownedCount();
    if (routes !== NODES - 1) throw new Error(`expected ${NODES - 1} routes after the first sync, found ${routes}`);
    // The agent gives the first sync's heap back just after it is ready (src/agent/memory.ts): RSS as it
    // is then, a second after ready, beside the figure at ready; and again after the 100 changes below.
    const rssAtReady = await rssMb(agent.pid);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, readyAt + 1000 - Date.now())));
    const rss = await rssMb(agent.pid);

    // --- one Node changed, 100 times ---
    const latencies: number[] = [];
    const writesPerChange: number[] = [];
    const kinds = new Map<string, number>();
    for (let k = 1; k <= CHANGES; k++) {
      const before = kernel.lines.length;
      const moved = movedCidr(k, 0);
      const changed = asTheKubeletMakesIt(nodeObject(`node-${k}`, nodeIp(k), moved, new Date(Date.UTC(2026, 0, 1, 0, 0, k % 60))), k);
      const landed = kernel.next(new RegExp(`^${moved.replace(/\./g, "\\.")} `));
      const start = performance.now();
      await api.put(changed);
      latencies.push((await landed) - start);
      await new Promise((resolve) => setTimeout(resolve, 30)); // the rest of the batch (the old route's delete)
      const lines = kernel.lines.slice(before).map((l) => l.text).filter((t) => !/proto kernel/.test(t));
      writesPerChange.push(lines.length);
      for (const line of lines) {
        const kind = `${line.startsWith("Deleted") ? "delete" : "add"} ${/^(Deleted )?id /.test(line) ? "nexthop" : "route"}`;
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
    }
    // The agent's own share: its reconciles of one changed Node, as it logs them.
    const inAgent = started
      .log()
      .split("\n")
      .filter((line) => line.includes('"path":"nodes"'))
      .map((line) => (JSON.parse(line) as { ms: number }).ms);
    const rssAfterChanges = await rssMb(agent.pid);
    const metrics = (await getIn(NS, "http://127.0.0.1:9465/metrics")).body;
    const syncs = [...metrics.matchAll(/^podroutes_syncs_total\{result="(\w+)"\} (\d+)/gm)].map((m) => `${m[1]} ${m[2]}`).join(", ");
    await agent.stop();
    agent = undefined;

    // --- no-op resync: a second agent (a restart: every route already in place) resyncing every second ---
    const restartedAt = Date.now();
    const again = readyWatcher();
    agent = startAgentProcess(["ip", "netns", "exec", NS], ["--node", SELF, "--listen", "127.0.0.1:9465", "--resync", "1s", "--log-format", "json"], join(dir, "agent-resync.log"), inPod);
    const restartMs = (await again.ready) - restartedAt;
    again.stop();
    await new Promise((resolve) => setTimeout(resolve, 2000)); // past the start: only resyncs from here
    const unchanged = async () => Number(/^podroutes_syncs_total\{result="unchanged"\} (\d+)/m.exec((await getIn(NS, "http://127.0.0.1:9465/metrics")).body)?.[1] ?? 0);
    const resyncPid = agent.pid;
    let syncsBefore = 0;
    let cpuBefore = 0;
    let resyncs = 0;
    let resyncCpu = 0;
    const { writes: resyncWrites } = await watchKernelWrites([NS], async () => {
      syncsBefore = await unchanged();
      cpuBefore = await cpuMs(resyncPid);
      await new Promise((resolve) => setTimeout(resolve, 60_000));
      resyncCpu = (await cpuMs(resyncPid)) - cpuBefore;
      resyncs = (await unchanged()) - syncsBefore;
    });
    const noopWrites = resyncWrites.length;
    await agent.stop();
    agent = undefined;
    const readWall: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t = performance.now();
      await must(["-n", NS, ...READ_ARGS], ROUTES_BATCH);
      readWall.push(performance.now() - t);
    }
    const current = await api.nodes();

    // --- replace-everything resync (kube-router's way) ---
    const script = current
      .filter((n) => n.metadata.name !== SELF)
      .map((n) => `route replace ${(n.spec as { podCIDRs: string[] }).podCIDRs[0]} via ${(n.status as { addresses: { address: string }[] }).addresses[0]!.address} proto 150\n`)
      .join("");
    const replaceMs: number[] = [];
    const replaceAnnounced: number[] = [];
    for (let r = 0; r < 3; r++) {
      const { writes } = await watchKernelWrites([NS], async () => {
        const start = performance.now();
        await must(["-n", NS, "-batch", "-"], script);
        replaceMs.push(performance.now() - start);
      });
      replaceAnnounced.push(writes.length);
    }

    const p50 = median(latencies);
    const p99 = percentile(latencies, 99);
    // Per resync, everything the process did in that minute counted (the /metrics reads included).
    const noopCpu = resyncCpu / Math.max(1, resyncs);
    const perHour = (period: number) => 3600 / period;
    const replace = median(replaceMs);
    const replaceWrites = script.split("\n").length - 1;
    console.log(`agent, ${NODES} Nodes in the API test server, agent in a namespace as ${SELF}`);
    console.log(`  initial sync of ${routes} routes, whole process (spawn → /readyz 200): ${initialMs.toFixed(0)} ms  [goal ≤ 1000 ms: ${initialMs <= 1000 ? "met" : `missed by ${(initialMs / 1000).toFixed(2)}×`}]`);
    console.log(`  RSS after sync (1 s after ready): ${rss.total.toFixed(0)} MB (anon ${rss.anon.toFixed(0)}, file ${rss.file.toFixed(0)}; NODE_OPTIONS ${JSON.stringify(agentNodeOptions())})  [goal ≤ 100 MB: ${rss.total <= 100 ? "met" : "missed"}]; at ready ${rssAtReady.total.toFixed(0)} MB, after the 100 changes below ${rssAfterChanges.total.toFixed(0)} MB`);
    console.log(`  one Node's pod CIDR changed (${CHANGES} changes, one at a time):`);
    console.log(`    kernel writes per change (ip monitor): ${[...new Set(writesPerChange)].join(" or ")}; in all: ${[...kinds].map(([k, v]) => `${v} ${k}`).join(", ")}  [goal: only the affected route]`);
    console.log(`    API change → new route in the kernel: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms  [goal p99 ≤ 50 ms: ${p99 <= 50 ? "met" : `missed by ${(p99 / 50).toFixed(2)}×`}]`);
    console.log(`    reconciles in the agent: ${syncs}; of one changed Node (event in → written, as the agent logs it): p50 ${median(inAgent)} ms, p99 ${percentile(inAgent, 99)} ms over ${inAgent.length}`);
    console.log(`  agent restarted with every route in place (spawn → /readyz 200): ${restartMs.toFixed(0)} ms`);
    console.log(`  no-op resync (--resync 1s for 60 s, ${resyncs} resyncs): ${noopCpu.toFixed(1)} ms CPU of the agent's own process per resync (the 'ip' read of ${routes} routes, its child: ${median(readWall).toFixed(1)} ms wall), kernel writes ${noopWrites}  [goals: ≤ 20 ms CPU ${noopCpu <= 20 ? "met" : "missed"}, 0 writes ${noopWrites === 0 ? "met" : "missed"}]`);
    console.log(`  replace-everything resync (one 'ip -batch' of 'route replace' for all, median of 3): ${replace.toFixed(0)} ms, ${replaceWrites} route writes each time (the kernel announced ${replaceAnnounced.join(", then ")} changes: it does the work even when nothing differs)`);
    console.log(`  per hour:`);
    console.log(`    podroutes agent (--resync 5m, no drift):     ${perHour(300)} no-op resyncs, ${(perHour(300) * noopCpu).toFixed(0)} ms CPU, 0 kernel writes; drift repaired on the kernel's event`);
    console.log(`    a 10 s poll that plans (read + diff):         ${perHour(10)} polls, ${(perHour(10) * noopCpu).toFixed(0)} ms CPU + ${((perHour(10) * median(readWall)) / 1000).toFixed(1)} s of 'ip' reads, 0 writes; drift found after 5 s on average  (${(perHour(10) / perHour(300)).toFixed(0)}× the agent's resyncs)`);
    console.log(`    a 10 s poll that replaces everything:         ${perHour(10)} × ${replaceWrites} = ${(perHour(10) * replaceWrites).toLocaleString("en")} kernel writes, ${((perHour(10) * replace) / 1000).toFixed(0)} s of 'ip -batch'  (vs 0 writes for the agent)`);
  } finally {
    kernel.stop();
    if (agent) await agent.stop();
    await server.stop();
    await removeFlatNamespace(NS);
    await rm(dir, { recursive: true, force: true });
  }
}

export { run_ as run };
