/**
 * `npm run bench -- agent-real`: `podroutes agent` on a node of a 5,000-node cluster whose API server is
 * the REAL one: etcd, kube-apiserver and kube-controller-manager (src/lab/kubernetes) in a network
 * namespace, 5,000 Nodes created through the API as kubelets make them (bench/agent.ts's
 * asTheKubeletMakesIt, without its managedFields: the server writes its own), deploy/'s RBAC applied,
 * the agent in-cluster with its ServiceAccount's token from TokenRequest, as node-0, in the same namespace.
 * The same figures as `npm run bench -- agent` (against the test server), so the difference the real
 * server makes is known: whole-process start to ready, RSS, CPU per no-op resync, and Node change →
 * route in the kernel (p50, p99). A real API server will not change a pod CIDR once set, so the change
 * here is what it allows: a Node's InternalIP (a new next hop, a status patch as the kubelet's).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { startControlPlane } from "../src/lab/kubernetes/control-plane.js";
import { getIn, inClusterEnv, startAgentProcess } from "../testkit/agent-lab.js";
import { flatNamespace, removeFlatNamespace } from "../testkit/netns.js";
import { cpuMs, median, monitor, ownedCount, readyWatcher, rssMb } from "./agent.js";
import { percentile } from "./stats.js";
import { apiLoader, createKubeletNodes, nodeIp, podCidr, type ApiLoader } from "./real-plane.js";

const NS = `prbenchreal${process.pid % 100000}`;
const NODES = Number(process.env.BENCH_NODES ?? 5000);
const CHANGES = 100;
const SELF = "node-0";
const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));

/** A next hop no node has, for the k-th change: the /16's upper half. */
const movedIp = (k: number) => `10.240.${200 + (k >> 8)}.${k & 255}`;

export async function run(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "podroutes-bench-real-"));
  await flatNamespace(NS, `${nodeIp(0)}/16`);
  let plane: Awaited<ReturnType<typeof startControlPlane>> | undefined;
  let agent: ReturnType<typeof startAgentProcess> | undefined;
  let api: ApiLoader | undefined;
  const kernel = monitor(NS);
  try {
    plane = await startControlPlane({ netns: NS, address: nodeIp(0), stateDir: join(dir, "control-plane"), clusterCIDR: "10.0.0.0/8", progress: (line) => process.stderr.write(`# ${line}\n`) });
    const must = async (args: string[]) => {
      const result = await plane!.kubectl(args);
      if (result.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${result.stderr}`);
      return result.stdout;
    };
    await must(["apply", "--server-side", "-f", join(DEPLOY, "namespace.yaml")]);
    await must(["apply", "--server-side", "-f", join(DEPLOY, "agent-rbac.yaml")]);
    const token = await plane.createToken("podroutes", "podroutes-agent");
    api = apiLoader(NS, plane.url, plane.caFile, plane.adminToken, 32);

    // --- 5,000 Nodes through the API, as kubelets make them ---
    const created = performance.now();
    await createKubeletNodes(api, NODES);
    const createMs = performance.now() - created;
    const sample = JSON.parse(await must(["get", "node", "node-1", "-o", "json"]));
    const nodeBytes = JSON.stringify(sample).length;

    // --- initial sync, whole process ---
    const inPod: NodeJS.ProcessEnv = { ...(await inClusterEnv(join(dir, "serviceaccount"), plane, token, "podroutes")), KUBECONFIG: undefined };
    const watcher = readyWatcher(NS);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const spawnedAt = Date.now();
    agent = startAgentProcess(["ip", "netns", "exec", NS], ["--node", SELF, "--listen", "127.0.0.1:9465", "--resync", "10m", "--log-format", "json"], join(dir, "agent.log"), inPod);
    const started = agent;
    let timer: NodeJS.Timeout | undefined;
    const readyAt = await Promise.race([watcher.ready, new Promise<number>((_, reject) => (timer = setTimeout(() => reject(new Error(`agent not ready in 120 s:\n${started.log()}`)), 120_000)))]).finally(() => clearTimeout(timer));
    watcher.stop();
    const initialMs = readyAt - spawnedAt;
    const routes = await ownedCount(NS);
    if (routes !== NODES - 1) throw new Error(`expected ${NODES - 1} routes after the first sync, found ${routes}`);
    const rssAtReady = await rssMb(agent.pid);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, readyAt + 1000 - Date.now())));
    const rss = await rssMb(agent.pid);

    // --- one Node's InternalIP changed (a status patch, as the kubelet's), 100 times, one at a time ---
    const latencies: number[] = [];
    for (let k = 1; k <= CHANGES; k++) {
      const landed = kernel.next(new RegExp(`^${podCidr(k).replace(/\./g, "\\.")} .*via ${movedIp(k).replace(/\./g, "\\.")}`));
      const start = performance.now();
      const patched = await api.send("PATCH", `/api/v1/nodes/node-${k}/status`, { status: { addresses: [{ type: "InternalIP", address: movedIp(k) }] } }, "application/strategic-merge-patch+json");
      if (patched.status !== 200) throw new Error(`patch node-${k}: ${patched.status} ${patched.error}`);
      let late: NodeJS.Timeout | undefined;
      latencies.push((await Promise.race([landed, new Promise<number>((_, reject) => (late = setTimeout(() => reject(new Error(`node-${k}'s new next hop not in the kernel in 10 s:\n${started.log().slice(-2000)}`)), 10_000)))]).finally(() => clearTimeout(late))) - start);
    }
    const rssAfterChanges = await rssMb(agent.pid);
    await agent.stop();
    agent = undefined;

    // --- no-op resync: restarted with every route in place, resyncing every second for 30 s ---
    const again = readyWatcher(NS);
    const restartedAt = Date.now();
    agent = startAgentProcess(["ip", "netns", "exec", NS], ["--node", SELF, "--listen", "127.0.0.1:9465", "--resync", "1s", "--log-format", "json"], join(dir, "agent-resync.log"), inPod);
    const restartMs = (await again.ready) - restartedAt;
    again.stop();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const unchanged = async () => Number(/^podroutes_syncs_total\{result="unchanged"\} (\d+)/m.exec((await getIn(NS, "http://127.0.0.1:9465/metrics")).body)?.[1] ?? 0);
    const syncsBefore = await unchanged();
    const before = await cpuMs(agent.pid);
    await new Promise((resolve) => setTimeout(resolve, 30_000));
    const resyncCpu = ((await cpuMs(agent.pid)) - before) / Math.max(1, (await unchanged()) - syncsBefore);
    const idleRss = await rssMb(agent.pid);
    await agent.stop();
    agent = undefined;

    const p50 = median(latencies);
    const p99 = percentile(latencies, 99);
    console.log(`agent, ${NODES} Nodes in the REAL kube-apiserver ${plane.binaries.release} (etcd, kube-controller-manager), agent in-cluster with its ServiceAccount's token, as ${SELF}`);
    console.log(`  ${NODES} Nodes created through the API (32 at a time): ${(createMs / 1000).toFixed(1)} s; a Node as the server stores it: ${(nodeBytes / 1024).toFixed(1)} KB of JSON`);
    console.log(`  initial sync of ${routes} routes, whole process (spawn → /readyz 200): ${initialMs.toFixed(0)} ms  [goal ≤ 1000 ms: ${initialMs <= 1000 ? "met" : `missed by ${(initialMs / 1000).toFixed(2)}×`}]`);
    console.log(`  RSS 1 s after ready: ${rss.total.toFixed(0)} MB (anon ${rss.anon.toFixed(0)}, file ${rss.file.toFixed(0)}); at ready ${rssAtReady.total.toFixed(0)} MB; after the ${CHANGES} changes ${rssAfterChanges.total.toFixed(0)} MB; idle (resyncing) ${idleRss.total.toFixed(0)} MB  [goal ≤ 100 MB: ${rss.total <= 100 ? "met" : "missed"}]`);
    console.log(`  one Node's InternalIP changed (${CHANGES} status patches, one at a time) → its route's new next hop in the kernel: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms  [goal p99 ≤ 50 ms: ${p99 <= 50 ? "met" : `missed by ${(p99 / 50).toFixed(2)}×`}]`);
    console.log(`  agent restarted with every route in place (spawn → /readyz 200): ${restartMs.toFixed(0)} ms`);
    console.log(`  no-op resyncs (--resync 1s for 30 s): ${resyncCpu.toFixed(1)} ms CPU of the agent's own process per resync (the /metrics reads included)  [goal ≤ 20 ms: ${resyncCpu <= 20 ? "met" : "missed"}]`);
  } finally {
    kernel.stop();
    api?.stop();
    if (agent) await agent.stop();
    if (plane) await plane.stop();
    await removeFlatNamespace(NS);
    await rm(dir, { recursive: true, force: true });
  }
}
