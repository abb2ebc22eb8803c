/**
 * `npm run bench -- fanout`: what reaches each agent from the REAL kube-apiserver in a cluster of 5,000
 * kubelet-sized Nodes whose kubelets report status as kubelets do (a status PATCH of each Node's
 * condition heartbeats every 5 minutes, spread: 16.7 a second at 5,000), with W simulated agents each
 * watching on its own connection (bench/watch-counter.ts, in the control plane's namespace). For each
 * way of watching: bytes and events delivered per agent, per hour (measured over a window, scaled), and
 * kube-apiserver's and etcd's CPU and memory over the window. BENCH_NODES, BENCH_WATCHERS (50) and
 * BENCH_WINDOW_S (60) change the size.
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
import { cpuMs, rssMb } from "./agent.js";
import { apiLoader, createKubeletNodes, nodeIp, type ApiLoader } from "./real-plane.js";

const NS = `prbenchfan${process.pid % 100000}`;
const NODES = Number(process.env.BENCH_NODES ?? 5000);
const WATCHERS = Number(process.env.BENCH_WATCHERS ?? 50);
const WINDOW_S = Number(process.env.BENCH_WINDOW_S ?? 60);
/** The kubelet's nodeStatusReportFrequency: a status report at least this often, changed or not. */
const REPORT_EVERY_S = 300;
const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));
const COUNTER = fileURLToPath(new URL("./watch-counter.js", import.meta.url));
const KUBELET_CONDITIONS = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];

interface Report {
  bytes: number[];
  events: number[];
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

/** Status reports of every Node, each every REPORT_EVERY_S, spread evenly, for `seconds`; resolves to how many were sent. */
async function kubelets(api: ApiLoader, seconds: number, from: number): Promise<{ sent: number; failed: number; next: number }> {
  const perSecond = NODES / REPORT_EVERY_S;
  const start = performance.now();
  let sent = 0;
  let failed = 0;
  const inFlight: Promise<void>[] = [];
  for (;;) {
    const due = Math.floor(((performance.now() - start) / 1000) * perSecond);
    if (performance.now() - start >= seconds * 1000) break;
    for (; sent < due; sent++) {
      const i = (from + sent) % NODES;
      inFlight.push(api.send("PATCH", `/api/v1/nodes/node-${i}/status`, heartbeat(new Date().toISOString().replace(/\.\d+Z$/, "Z")), "application/strategic-merge-patch+json").then((a) => { if (a.status !== 200) failed++; }));
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await Promise.all(inFlight);
  return { sent, failed, next: (from + sent) % NODES };
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(1);

export async function run(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "podroutes-bench-fanout-"));
  await flatNamespace(NS, `${nodeIp(0)}/16`);
  let plane: ControlPlane | undefined;
  let api: ApiLoader | undefined;
  const stops: (() => void)[] = [];
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
    await createKubeletNodes(api, NODES);
    const nodeBytes = JSON.stringify(JSON.parse(await must(["get", "node", "node-1", "-o", "json"]))).length;
    const apiserver = plane.processes.find((p) => p.what === "kube-apiserver")!;
    const etcd = plane.processes.find((p) => p.what === "etcd")!;
    console.log(`fan-out: ${NODES} kubelet-sized Nodes (${(nodeBytes / 1024).toFixed(1)} KB of JSON each) in the REAL kube-apiserver ${plane.binaries.release}, status reports every ${REPORT_EVERY_S} s each (${(NODES / REPORT_EVERY_S).toFixed(1)}/s), ${WATCHERS} simulated agents each on its own connection, ${WINDOW_S} s a way, scaled to an hour`);

    let next = 0;
    const ways: { name: string; encoding: "json" | "protobuf"; path: string }[] = [
      { name: "watch every Node (JSON, as podroutes' agent, flannel and kube-router do)", encoding: "json", path: "/api/v1/nodes" },
      { name: "watch every Node (protobuf)", encoding: "protobuf", path: "/api/v1/nodes" },
    ];
    for (const way of ways) {
      const counter = watchers(plane, token, WATCHERS, way.encoding, way.path);
      stops.push(counter.stop);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const before = await counter.report();
      if (before.open !== WATCHERS) throw new Error(`${way.name}: ${before.open} of ${WATCHERS} watches open`);
      const cpu0 = { apiserver: await cpuMs(apiserver.pid), etcd: await cpuMs(etcd.pid) };
      const t0 = performance.now();
      const reported = await kubelets(api, WINDOW_S, next);
      next = reported.next;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const after = await counter.report();
      const took = (performance.now() - t0) / 1000;
      const scale = 3600 / took;
      const perAgent = (field: "bytes" | "events") => after[field].reduce((sum, v, i) => sum + v - before[field][i]!, 0) / WATCHERS;
      const cpu = { apiserver: (await cpuMs(apiserver.pid)) - cpu0.apiserver, etcd: (await cpuMs(etcd.pid)) - cpu0.etcd };
      const rss = { apiserver: (await rssMb(apiserver.pid)).total, etcd: (await rssMb(etcd.pid)).total };
      console.log(`  ${way.name}:`);
      console.log(`    per agent per hour: ${mb(perAgent("bytes") * scale)} MB, ${Math.round(perAgent("events") * scale)} events  (${reported.sent} status reports in ${took.toFixed(0)} s, ${reported.failed} failed)`);
      console.log(`    kube-apiserver: ${((cpu.apiserver / 1000) * scale / 3600 * 100).toFixed(0)}% of a core (${(cpu.apiserver / 1000).toFixed(1)} s CPU in the window), RSS ${rss.apiserver.toFixed(0)} MB; etcd ${((cpu.etcd / 1000) * scale / 3600 * 100).toFixed(0)}% of a core, RSS ${rss.etcd.toFixed(0)} MB`);
      console.log(`    API-server egress to ${WATCHERS} agents: ${mb((perAgent("bytes") * WATCHERS) / took)} MB/s; for 5,000 agents: ${mb((perAgent("bytes") * 5000) / took)} MB/s`);
      counter.stop();
    }
  } finally {
    for (const stop of stops) stop();
    api?.stop();
    if (plane) await plane.stop();
    await removeFlatNamespace(NS);
    await rm(dir, { recursive: true, force: true });
  }
}
