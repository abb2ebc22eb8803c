/**
 * `npm run bench -- controller-scale [--nodes N] [--burst B] [--latency MS] [--aws-latency MS]
 * [--only gcp|aws] [--json FILE] [--cpu-prof DIR]` (issue 23 item 3; each option also as an environment
 * variable: PODROUTES_BENCH_NODES, _BURST, _LATENCY_MS, _AWS_LATENCY_MS, _ONLY, _JSON, _CPU_PROF; --cpu-prof
 * has each controller process write a V8 CPU profile into DIR): `podroutes controller` at 5,000 Nodes,
 * a process of its own with default flags, against the Kubernetes API test server and the cloud's.
 *
 * GCP (testkit/gce-server.ts, 200 ms per operation by default):
 *   (a) initial sync: the process started against N existing Nodes with pod CIDRs, timed until every
 *       route exists and every Node shows NetworkUnavailable=False (the last condition patch's arrival
 *       at the API server), against the bound ceil(routes / in-flight) × latency and the floor (the same
 *       inserts by the Compute client alone, bench/compute-floor.ts);
 *   (b) a burst of B Nodes joining at once on top: the same;
 *   (c) a resync with nothing to do, two ways: the process restarted (its first reconcile finds
 *       everything in place), and the periodic resync of that process (--resync 10s): its time from the
 *       controller's own podroutes_sync_duration_seconds, and every call made.
 * AWS (moto behind testkit/moto.ts's proxy, which holds each request --aws-latency ms first, as EC2
 * takes its time): one route table holds 1,000 routes at most (the hard quota; --route-limit 1000),
 * the table's default route to the gateway among them. So the same three at the largest size that fits
 * (999 - B initial + B burst), then N Nodes at once on another table: what the controller refuses and
 * what a user sees of it (conditions, Events, logs).
 *
 * Every cloud call counts (reads, writes, operation waits, each call inside a batch request); HTTP
 * requests are what they took. Memory is the controller process's peak RSS (VmHWM of /proc/PID/status)
 * at the end of each phase, CPU its utime + stime over the phase. The test servers run in this process,
 * on the same two cores as the controller: their own work is in every time.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { DescribeInstancesCommand, DescribeNetworkInterfacesCommand, DescribeRouteTablesCommand } from "@aws-sdk/client-ec2";
import { DEFAULT_MAX_IN_FLIGHT } from "../src/targets/each-change.js";
import { MAX_ROUTE_LIMIT } from "../src/targets/aws/target.js";
import { nodeObject, startLogged, type Started } from "../testkit/agent-lab.js";
import { BIN } from "../testkit/cli.js";
import { controllerKubeconfig, eventually, networkCondition } from "../testkit/controller.js";
import { startGceServer, type GceServer } from "../testkit/gce-server.js";
import { startKubeServer, type KubeApiServer, type RecordedRequest } from "../testkit/kube-server.js";
import { buildCluster, offlineAwsEnv, REGION, startEc2Proxy, startMoto, type Ec2Proxy, type FixtureInstance } from "../testkit/moto.js";
import { computeFloor, LATENCY_MS, nodeIp, owned, podCidr, routedWatcher, startGcpControllerProcess, tally, workers } from "./controller.js";
import { median } from "./stats.js";

/** Pod CIDRs 10.200-219.x.0/24 for 5,000 Nodes; outside the VPC's 10.240.0.0/16 (its local route is no pod route). */
const AWS_CLUSTER_CIDR = "10.192.0.0/11";
/** The periodic resync measured in (c): short enough to wait for. */
const SHORT_RESYNC = "10s";
/** Longer than any phase: no periodic resync mixes into (a) and (b). */
const LONG_RESYNC = "30m";
const PHASE_LIMIT_MS = 600_000;

interface Settings {
  nodes: number;
  burst: number;
  latencyMs: number;
  awsLatencyMs: number;
  only?: "gcp" | "aws";
  json?: string;
  /** Where the controller processes write their CPU profiles (node --cpu-prof), if anywhere. */
  cpuProf?: string;
}

function settings(argv: string[]): Settings {
  const option = (flag: string, env: string) => (argv.indexOf(flag) >= 0 ? argv[argv.indexOf(flag) + 1] : process.env[env]);
  const count = (flag: string, env: string, fallback: number, min: number) => {
    const text = option(flag, env);
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!Number.isInteger(value) || value < min) throw new Error(`bench controller-scale: ${flag} (${env}) must be a whole number ≥ ${min}, not ${JSON.stringify(text)}`);
    return value;
  };
  const only = option("--only", "PODROUTES_BENCH_ONLY");
  if (only !== undefined && only !== "gcp" && only !== "aws") throw new Error(`bench controller-scale: --only must be gcp or aws, not ${JSON.stringify(only)}`);
  const burst = count("--burst", "PODROUTES_BENCH_BURST", 500, 1);
  if (burst >= MAX_ROUTE_LIMIT - 1) throw new Error(`bench controller-scale: --burst must leave room in a table of ${MAX_ROUTE_LIMIT} routes, not ${burst}`);
  const json = option("--json", "PODROUTES_BENCH_JSON");
  const cpuProf = option("--cpu-prof", "PODROUTES_BENCH_CPU_PROF");
  return {
    nodes: count("--nodes", "PODROUTES_BENCH_NODES", 5000, 1),
    burst,
    latencyMs: count("--latency", "PODROUTES_BENCH_LATENCY_MS", LATENCY_MS, 0),
    awsLatencyMs: count("--aws-latency", "PODROUTES_BENCH_AWS_LATENCY_MS", 200, 0),
    ...(only ? { only } : {}),
    ...(json ? { json } : {}),
    ...(cpuProf ? { cpuProf } : {}),
  };
}

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());

/** A process's peak and current resident memory (MB) and CPU time so far (s), from /proc. */
function usage(pid: number): { peakRssMb: number; rssMb: number; cpuSeconds: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  // Fields after the command name (which may hold spaces, inside parentheses): state is the first; utime and stime the 12th and 13th.
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { peakRssMb: kb("VmHWM") / 1024, rssMb: kb("VmRSS") / 1024, cpuSeconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS };
}

/** The controller's /metrics, summed by metric name (every label set together). */
async function metricTotals(controller: Started): Promise<Map<string, number>> {
  const listen = /"msg":"controller started".*?"listen":"([^"]+)"/.exec(controller.log())?.[1];
  if (!listen) throw new Error("bench: the controller has not logged where it listens");
  const text = await (await fetch(`http://${listen}/metrics`)).text();
  const totals = new Map<string, number>();
  for (const line of text.split("\n")) {
    const match = /^([a-z_]+)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (match) totals.set(match[1]!, (totals.get(match[1]!) ?? 0) + Number(match[2]));
  }
  return totals;
}

async function waitForMetrics(controller: Started, what: string, check: (totals: Map<string, number>) => boolean): Promise<Map<string, number>> {
  let last = new Map<string, number>();
  await eventually(what, async () => {
    if (!controller.running) throw new Error(`bench: the controller exited while waiting until ${what}:\n${controller.log().slice(-3000)}`);
    last = await metricTotals(controller).catch(() => new Map<string, number>());
    return check(last);
  }, PHASE_LIMIT_MS);
  return last;
}

const syncs = (totals: Map<string, number>) => totals.get("podroutes_syncs_total") ?? 0;

/** Kubernetes API requests by `verb resource` (discovery aside), the Lease's counted apart. */
function kubeTally(requests: RecordedRequest[]): { total: number; lease: number; byKind: Record<string, number> } {
  const byKind: Record<string, number> = {};
  let lease = 0;
  for (const r of requests) {
    if (!r.resource) continue;
    if (r.resource === "leases") lease++;
    else byKind[`${r.verb} ${r.resource}`] = (byKind[`${r.verb} ${r.resource}`] ?? 0) + 1;
  }
  return { total: Object.values(byKind).reduce((a, b) => a + b, 0), lease, byKind };
}

/** One measured phase: a row of the table and of the JSON. */
interface Phase {
  target: "gcp" | "aws";
  phase: string;
  /** Nodes in the cluster, routes written in the phase. */
  nodes: number;
  routesWritten: number;
  seconds: number;
  /** ceil(routes / in-flight) × latency, where it applies. */
  boundSeconds?: number;
  /** The same writes by the cloud client alone, its own process (no Kubernetes, no controller), where measured. */
  floorSeconds?: number;
  /** Cloud API calls by kind (every call; each inside a batch too) and the HTTP requests they took. */
  cloudCalls: Record<string, number>;
  cloudCallsTotal: number;
  cloudHttp: number;
  kube: ReturnType<typeof kubeTally>;
  peakRssMb: number;
  cpuSeconds: number;
  /** CPU of the test servers over the phase: this process's (the Kubernetes API server, the GCE server or the EC2 proxy), moto's. */
  benchProcessCpuSeconds: number;
  motoCpuSeconds?: number;
  notes: string[];
}

const fixed = (value: number, digits = 2) => value.toFixed(digits);

function table(phases: Phase[]): string {
  const header = ["target", "phase", "nodes", "routes written", "time (s)", "bound (s)", "floor (s)", "cloud calls", "cloud HTTP", "k8s requests (Lease aside)", "peak RSS (MB)", "CPU (s)", "test servers' CPU (s)"];
  const calls = (p: Phase) => `${p.cloudCallsTotal}: ${Object.entries(p.cloudCalls).filter(([, n]) => n).map(([kind, n]) => `${n} ${kind}`).join(", ") || "none"}`;
  const kube = (p: Phase) => `${p.kube.total}: ${Object.entries(p.kube.byKind).map(([kind, n]) => `${n} ${kind}`).join(", ") || "none"}`;
  const rows = phases.map((p) => [p.target, p.phase, String(p.nodes), String(p.routesWritten), fixed(p.seconds), p.boundSeconds === undefined ? "" : fixed(p.boundSeconds), p.floorSeconds === undefined ? "" : fixed(p.floorSeconds), calls(p), String(p.cloudHttp), kube(p), fixed(p.peakRssMb, 0), fixed(p.cpuSeconds), fixed(p.benchProcessCpuSeconds) + (p.motoCpuSeconds === undefined ? "" : ` + moto ${fixed(p.motoCpuSeconds)}`)]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows].map((line) => line.map((c, i) => c.padEnd(widths[i]!)).join("  ")).join("\n");
}

/** This process's CPU time so far (s): the test servers it runs. */
const ownCpu = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};

const profileFlags = (s: Settings) => (s.cpuProf ? ["--cpu-prof", `--cpu-prof-dir=${s.cpuProf}`] : []);

const loads = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");

/** The arrival of the last successful condition patch among `requests`, ms since the epoch. */
function lastConditionPatch(requests: RecordedRequest[]): number {
  return Math.max(...requests.filter((r) => r.method === "PATCH" && r.path.endsWith("/status") && r.code < 300).map((r) => r.at));
}

function computeCalls(calls: ReturnType<typeof tally>): Record<string, number> {
  return { inserts: calls.inserts, deletes: calls.deletes, "operation waits": calls.waits, "operation-list pages": calls.operationLists, "route-list pages": calls.lists, other: calls.other };
}

// ---------------------------------------------------------------------------------------------- GCP

async function gcp(s: Settings, dir: string, log: (line: string) => void): Promise<Phase[]> {
  const kube = await startKubeServer({ tokens: {}, historyWindow: 4 * (s.nodes + s.burst) });
  const gce = await startGceServer({ latencyMs: s.latencyMs, routesQuota: 100_000 });
  const tokenFile = join(dir, "gcp-token");
  writeFileSync(tokenFile, "bench\n");
  const phases: Phase[] = [];
  const bound = (routes: number) => (Math.ceil(routes / DEFAULT_MAX_IN_FLIGHT) * s.latencyMs) / 1000;
  let controller: Started | undefined;
  const nodeFlags = profileFlags(s);
  try {
    const kubeconfig = await controllerKubeconfig(kube, dir, "bench");
    const phase = (name: string, nodes: number, routesWritten: number, seconds: number, from: { gce: number; kube: number; cpu: number; own: number }, notes: string[], boundSeconds?: number): Phase => {
      const calls = tally(gce.requestLog.slice(from.gce));
      const used = usage(controller!.pid);
      return {
        target: "gcp", phase: name, nodes, routesWritten, seconds, ...(boundSeconds !== undefined ? { boundSeconds } : {}),
        cloudCalls: computeCalls(calls), cloudCallsTotal: calls.total, cloudHttp: calls.http,
        kube: kubeTally(kube.requests.slice(from.kube)), peakRssMb: used.peakRssMb, cpuSeconds: used.cpuSeconds - from.cpu, benchProcessCpuSeconds: ownCpu() - from.own, notes,
      };
    };
    const mark = () => ({ gce: gce.requestLog.length, kube: kube.requests.length, cpu: controller ? usage(controller.pid).cpuSeconds : 0, own: ownCpu() });

    // (a) Initial sync: N Nodes exist, the controller starts.
    const initial = workers(s.nodes);
    for (let i = 0; i < s.nodes; i++) kube.put("nodes", nodeObject(initial[i]!, nodeIp(i), podCidr(i)));
    kube.clearRequests();
    let from = mark();
    const startedAt = Date.now();
    const start = performance.now();
    controller = startGcpControllerProcess(gce, kubeconfig, tokenFile, join(dir, "gcp-controller.log"), [`--resync=${LONG_RESYNC}`], nodeFlags);
    let routesMs = 0;
    const routedA = routedWatcher(kube, initial);
    await eventually("(a) every route and every condition", () => {
      if (!controller!.running) throw new Error(`bench: the controller exited:\n${controller!.log().slice(-3000)}`);
      if (!routesMs && owned(gce) === s.nodes) routesMs = performance.now() - start;
      return routesMs > 0 && routedA();
    }, PHASE_LIMIT_MS);
    await waitForMetrics(controller, "(a) the first reconcile finished", (m) => syncs(m) >= 1);
    const listedAt = Date.parse(/"time":"([^"]+)","msg":"listed Nodes"/.exec(controller.log())?.[1] ?? "");
    const a = phase("(a) initial sync", s.nodes, owned(gce), (lastConditionPatch(kube.requests.slice(from.kube)) - startedAt) / 1000, from, [
      `process start to the first complete list of Nodes: ${fixed((listedAt - startedAt) / 1000)} s; every route in ${fixed(routesMs / 1000)} s`,
      `at most ${gce.stats.peakRunning} operations running at once`,
    ], bound(s.nodes));
    phases.push(a);
    log(`gcp (a) done in ${fixed(a.seconds)} s (load ${loads()})`);

    // (b) A burst of B Nodes joining at once.
    const joining = workers(s.burst, s.nodes);
    from = mark();
    const burstAt = Date.now();
    const burstStart = performance.now();
    const syncsBefore = syncs(await metricTotals(controller));
    for (let i = 0; i < s.burst; i++) kube.put("nodes", nodeObject(joining[i]!, nodeIp(s.nodes + i), podCidr(s.nodes + i)));
    routesMs = 0;
    const routedB = routedWatcher(kube, joining);
    await eventually("(b) the burst's routes and conditions", () => {
      if (!routesMs && owned(gce) === s.nodes + s.burst) routesMs = performance.now() - burstStart;
      return routesMs > 0 && routedB();
    }, PHASE_LIMIT_MS);
    // The reconcile that wrote them has reported: syncs went up and stays (nothing else is coming).
    const afterB = await waitForMetrics(controller, "(b) its reconciles finished", (m) => syncs(m) > syncsBefore);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const reconcilesB = syncs(await metricTotals(controller)) - syncsBefore;
    const b = phase("(b) burst of joins", s.nodes + s.burst, owned(gce) - s.nodes, (lastConditionPatch(kube.requests.slice(from.kube)) - burstAt) / 1000, from, [
      `every route in ${fixed(routesMs / 1000)} s; ${reconcilesB} reconcile(s) (${syncs(afterB) - syncsBefore} by the time every condition was in)`,
    ], bound(s.burst));
    phases.push(b);
    log(`gcp (b) done in ${fixed(b.seconds)} s (load ${loads()})`);
    await controller.stop();
    controller = undefined;

    // (c) Resync with nothing to do: a restarted process's first reconcile, then its periodic resync.
    from = mark();
    const restartAt = performance.now();
    controller = startGcpControllerProcess(gce, kubeconfig, tokenFile, join(dir, "gcp-controller-restart.log"), [`--resync=${SHORT_RESYNC}`], nodeFlags);
    const first = await waitForMetrics(controller, "(c) the restarted controller reconciled", (m) => syncs(m) >= 1);
    const restartMs = performance.now() - restartAt;
    const firstSyncSeconds = first.get("podroutes_sync_duration_seconds_sum") ?? NaN;
    const c1 = phase("(c) restart, nothing to do", s.nodes + s.burst, owned(gce) - s.nodes - s.burst, restartMs / 1000, from, [
      `process start to its first reconcile finished (its own sync duration: ${fixed(firstSyncSeconds)} s)`,
    ]);
    c1.cpuSeconds = usage(controller.pid).cpuSeconds; // since the process began
    phases.push(c1);
    from = mark();
    const second = await waitForMetrics(controller, "(c) the periodic resync", (m) => syncs(m) >= 2);
    const resyncSeconds = (second.get("podroutes_sync_duration_seconds_sum") ?? NaN) - firstSyncSeconds;
    const c2 = phase(`(c) periodic resync (--resync ${SHORT_RESYNC}), nothing to do`, s.nodes + s.burst, owned(gce) - s.nodes - s.burst, resyncSeconds, from, [
      "time: the controller's podroutes_sync_duration_seconds of that reconcile; calls and CPU: all between the two reconciles' ends (Lease renewals included)",
    ]);
    phases.push(c2);
    log(`gcp (c) done (load ${loads()})`);
    await controller.stop();
    controller = undefined;

    // The floor under (a): its inserts by podroutes' Compute client alone (bench/compute-floor.ts).
    const floor = await computeFloor(gce, tokenFile, s.nodes, s.latencyMs);
    a.floorSeconds = floor.ms / 1000;
    a.notes.push(`the floor: the same ${s.nodes} inserts by the Compute client alone, a process of its own, ${DEFAULT_MAX_IN_FLIGHT} in flight: ${fixed(floor.ms / 1000)} s (${floor.calls} calls in ${floor.httpRequests} HTTP requests); the controller's initial sync beyond it: ${fixed(a.seconds - floor.ms / 1000)} s`);
    return phases;
  } finally {
    await controller?.stop();
    await kube.close();
    await gce.stop();
  }
}

// ---------------------------------------------------------------------------------------------- AWS

/** EC2 actions forwarded since `before` (a copy of the proxy's counts). */
function ec2Since(proxy: Ec2Proxy, before: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [action, n] of proxy.forwarded) if (n - (before.get(action) ?? 0) > 0) out[action] = n - (before.get(action) ?? 0);
  return out;
}

async function aws(s: Settings, dir: string, log: (line: string) => void): Promise<Phase[]> {
  const fits = MAX_ROUTE_LIMIT - 1; // the table's default route to the gateway counts toward the quota
  const initialCount = fits - s.burst;
  const instancesNeeded = Math.max(s.nodes, fits);
  const moto = await startMoto();
  const client = moto.client();
  const kube = await startKubeServer({ tokens: {}, historyWindow: 4 * instancesNeeded });
  let proxy: Ec2Proxy | undefined;
  let controller: Started | undefined;
  const phases: Phase[] = [];
  try {
    const builtAt = performance.now();
    const cloud = await buildCluster(client, { tables: 2, nodes: [], subnetCidr: "10.240.0.0/16", launched: instancesNeeded });
    log(`aws: ${instancesNeeded} instances in moto in ${fixed((performance.now() - builtAt) / 1000, 1)} s`);
    proxy = await startEc2Proxy(moto.endpoint, { latencyMs: s.awsLatencyMs });
    const kubeconfig = await controllerKubeconfig(kube, dir, "bench");
    const name = (i: number) => cloud.instances[i]!.name;
    const putNode = (i: number) => kube.put("nodes", nodeObject(name(i), cloud.instances[i]!.ip, podCidr(i)));
    const names = (count: number, first = 0) => Array.from({ length: count }, (_, i) => name(first + i));
    const start = (table: string, logFile: string, resync: string) =>
      startLogged(
        [process.execPath, ...profileFlags(s), BIN, "controller", "--target=aws", `--region=${REGION}`, `--endpoint=${proxy!.endpoint}`, `--route-table=${table}`, `--route-limit=${MAX_ROUTE_LIMIT}`, `--cluster-cidr=${AWS_CLUSTER_CIDR}`, `--kubeconfig=${kubeconfig}`, "--identity=bench-aws", "--listen=127.0.0.1:0", `--resync=${resync}`],
        join(dir, logFile),
        "podroutes controller --target aws",
        offlineAwsEnv(proxy!.endpoint),
      );
    const mark = () => ({ ec2: new Map(proxy!.forwarded), kube: kube.requests.length, cpu: controller ? usage(controller.pid).cpuSeconds : 0, own: ownCpu(), moto: usage(moto.pid).cpuSeconds });
    const phase = (name_: string, nodes: number, routesWritten: number, seconds: number, from: ReturnType<typeof mark>, notes: string[], boundSeconds?: number): Phase => {
      const calls = ec2Since(proxy!, from.ec2);
      const total = Object.values(calls).reduce((a, b) => a + b, 0);
      const used = usage(controller!.pid);
      return {
        target: "aws", phase: name_, nodes, routesWritten, seconds, ...(boundSeconds !== undefined ? { boundSeconds } : {}),
        cloudCalls: calls, cloudCallsTotal: total, cloudHttp: total, // EC2 has no batch requests: a call is a request
        kube: kubeTally(kube.requests.slice(from.kube)), peakRssMb: used.peakRssMb, cpuSeconds: used.cpuSeconds - from.cpu,
        benchProcessCpuSeconds: ownCpu() - from.own, motoCpuSeconds: usage(moto.pid).cpuSeconds - from.moto, notes,
      };
    };
    const creates = () => proxy!.forwarded.get("CreateRoute") ?? 0;
    // The writes of a reconcile are its routes and the source/destination checks of their next hops.
    const bound = (writes: number) => (Math.ceil(writes / DEFAULT_MAX_IN_FLIGHT) * s.awsLatencyMs) / 1000;
    const writesOf = (p: Phase) => (p.cloudCalls.CreateRoute ?? 0) + (p.cloudCalls.ModifyNetworkInterfaceAttribute ?? 0);
    const [fitTable, bigTable] = cloud.tableIds as [string, string];

    // moto's own answer time, without the proxy's hold: the calls a reconcile makes, on this table size.
    const timed = async (call: () => Promise<unknown>) => {
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t = performance.now();
        await call();
        times.push(performance.now() - t);
      }
      return median(times);
    };
    const motoDescribeTable = await timed(() => client.send(new DescribeRouteTablesCommand({ RouteTableIds: [fitTable] })));
    const motoDescribeInstances = await timed(() => client.send(new DescribeInstancesCommand({ Filters: [{ Name: "instance-id", Values: cloud.instances.slice(0, 200).map((i) => i.instanceId) }] })));
    const motoDescribeEnis = await timed(() => client.send(new DescribeNetworkInterfacesCommand({ Filters: [{ Name: "vpc-id", Values: [cloud.vpcId] }, { Name: "addresses.private-ip-address", Values: cloud.instances.slice(0, 200).map((i) => i.ip) }] })));

    // (a) Initial sync at the largest size that fits with room for the burst.
    for (let i = 0; i < initialCount; i++) putNode(i);
    kube.clearRequests();
    let from = mark();
    const startedAt = Date.now();
    const startMs = performance.now();
    controller = start(fitTable, "aws-controller.log", LONG_RESYNC);
    let routesMs = 0;
    const routedA = routedWatcher(kube, names(initialCount));
    await eventually("aws (a) every route and condition", () => {
      if (!controller!.running) throw new Error(`bench: the controller exited:\n${controller!.log().slice(-3000)}`);
      if (!routesMs && creates() >= initialCount) routesMs = performance.now() - startMs;
      return routesMs > 0 && routedA();
    }, PHASE_LIMIT_MS);
    await waitForMetrics(controller, "aws (a) the first reconcile finished", (m) => syncs(m) >= 1);
    const a = phase("(a) initial sync", initialCount, creates(), (lastConditionPatch(kube.requests.slice(from.kube)) - startedAt) / 1000, from, [`every CreateRoute passed to moto by ${fixed(routesMs / 1000)} s`]);
    a.boundSeconds = bound(writesOf(a));
    phases.push(a);
    log(`aws (a) done (load ${loads()})`);

    // (b) The burst fills the table to the quota.
    from = mark();
    const burstAt = Date.now();
    const syncsBefore = syncs(await metricTotals(controller));
    for (let i = initialCount; i < fits; i++) putNode(i);
    await eventually("aws (b) the burst's conditions", routedWatcher(kube, names(s.burst, initialCount)), PHASE_LIMIT_MS);
    await waitForMetrics(controller, "aws (b) its reconciles finished", (m) => syncs(m) > syncsBefore);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const b = phase("(b) burst of joins", fits, creates() - initialCount, (lastConditionPatch(kube.requests.slice(from.kube)) - burstAt) / 1000, from, [`${syncs(await metricTotals(controller)) - syncsBefore} reconcile(s)`]);
    b.boundSeconds = bound(writesOf(b));
    phases.push(b);
    log(`aws (b) done (load ${loads()})`);
    await controller.stop();
    controller = undefined;

    // (c) Nothing to do: a restart, then its periodic resync.
    from = mark();
    const restartAt = performance.now();
    controller = start(fitTable, "aws-controller-restart.log", SHORT_RESYNC);
    const first = await waitForMetrics(controller, "aws (c) the restarted controller reconciled", (m) => syncs(m) >= 1);
    const c1 = phase("(c) restart, nothing to do", fits, ec2Since(proxy, from.ec2).CreateRoute ?? 0, (performance.now() - restartAt) / 1000, from, [
      `process start to its first reconcile finished (its own sync duration: ${fixed(first.get("podroutes_sync_duration_seconds_sum") ?? NaN)} s)`,
    ]);
    c1.cpuSeconds = usage(controller.pid).cpuSeconds; // since the process began
    phases.push(c1);
    from = mark();
    const second = await waitForMetrics(controller, "aws (c) the periodic resync", (m) => syncs(m) >= 2);
    phases.push(phase(`(c) periodic resync (--resync ${SHORT_RESYNC}), nothing to do`, fits, ec2Since(proxy, from.ec2).CreateRoute ?? 0, (second.get("podroutes_sync_duration_seconds_sum") ?? NaN) - (first.get("podroutes_sync_duration_seconds_sum") ?? NaN), from, ["time: the controller's own sync duration"]));
    await controller.stop();
    controller = undefined;
    log(`aws (c) done (load ${loads()})`);

    // N Nodes at once on the other table: more than fits.
    for (let i = fits; i < s.nodes; i++) putNode(i);
    const all = names(s.nodes);
    const refusedText = /route limit/;
    from = mark();
    const bigAt = Date.now();
    const bigCreatesBefore = creates();
    controller = start(bigTable, "aws-controller-big.log", LONG_RESYNC);
    await eventually(`aws: every one of ${s.nodes} Nodes routed or refused`, () => {
      if (!controller!.running) throw new Error(`bench: the controller exited:\n${controller!.log().slice(-3000)}`);
      return all.every((n) => {
        const condition = networkCondition(kube, n);
        return condition?.state === "False/RouteCreated" || refusedText.test(condition?.message ?? "");
      });
    }, PHASE_LIMIT_MS);
    await waitForMetrics(controller, "aws: the first reconcile finished", (m) => syncs(m) >= 1);
    const routed = all.filter((n) => networkCondition(kube, n)?.state === "False/RouteCreated");
    const refused = all.filter((n) => refusedText.test(networkCondition(kube, n)?.message ?? ""));
    const events = kube.objects("events") as unknown as { involvedObject: { name: string }; reason: string; type: string; message: string }[];
    const byReason: Record<string, number> = {};
    for (const e of events) byReason[`${e.type}/${e.reason}`] = (byReason[`${e.type}/${e.reason}`] ?? 0) + 1;
    const sample = refused[refused.length - 1];
    const logLines = controller.log().split("\n").filter((line) => line.startsWith("{") && /refus|limit/.test(line));
    const reconciledLines = controller.log().split("\n").filter((line) => /"msg":"reconciled/.test(line));
    const warnings = controller.log().split("\n").filter((line) => /Warning/.test(line) && !line.startsWith("{"));
    const bigRow = phase(`${s.nodes} Nodes on one table (more than fits)`, s.nodes, creates() - bigCreatesBefore, (lastConditionPatch(kube.requests.slice(from.kube)) - bigAt) / 1000, from, [
      `${routed.length} Nodes routed (NetworkUnavailable=False), ${refused.length} refused (NetworkUnavailable=True naming the limit); CreateRoute calls ${creates() - bigCreatesBefore} (at most ${fits} fit)`,
      `Events: ${JSON.stringify(byReason)}`,
      ...(sample ? [`${sample}'s condition: ${JSON.stringify(networkCondition(kube, sample))}`] : []),
      ...(events[0] ? [`an Event: ${events.find((e) => e.involvedObject.name === sample)?.message ?? events[0].message}`.slice(0, 600)] : []),
      `log lines naming the limit: ${logLines.length} (a "node condition set" line per refused Node); the reconcile's: ${(reconciledLines[0] ?? "none").slice(0, 700)}`,
      ...(warnings.length ? [`Node's own warnings on stderr: ${[...new Set(warnings)].join(" | ").slice(0, 600)}`] : []),
    ]);
    phases.push(bigRow);
    log(`aws ${s.nodes} done (load ${loads()})`);
    phases[0]!.notes.push(`moto's own answer times (median of 5, without the proxy's ${s.awsLatencyMs} ms): DescribeRouteTables of one table ${fixed(motoDescribeTable, 0)} ms, DescribeNetworkInterfaces of 200 addresses ${fixed(motoDescribeEnis, 0)} ms, DescribeInstances of 200 ids ${fixed(motoDescribeInstances, 0)} ms (a reconcile makes one of each per 200 Nodes); the bound counts its writes: CreateRoute and ModifyNetworkInterfaceAttribute`);
    return phases;
  } finally {
    await controller?.stop();
    await proxy?.close();
    client.destroy();
    await kube.close();
    await moto.stop();
  }
}

export async function run(argv = process.argv): Promise<void> {
  const s = settings(argv);
  process.env.GCE_METADATA_HOST = "127.0.0.1:9";
  const dir = mkdtempSync(join(tmpdir(), "podroutes-bench-controller-scale-"));
  const machine = { nproc: Number(execFileSync("nproc", { encoding: "utf8" }).trim()), node: process.version, loadsAtStart: loads() };
  const log = (line: string) => console.error(`[controller-scale] ${line}`);
  const phases: Phase[] = [];
  try {
    if (s.only !== "aws") phases.push(...(await gcp(s, dir, log)));
    const loadsAfterGcp = loads();
    if (s.only !== "gcp") phases.push(...(await aws(s, dir, log)));
    console.log(`podroutes controller at ${s.nodes} Nodes + a burst of ${s.burst}, a process of its own, default flags (--max-in-flight ${DEFAULT_MAX_IN_FLIGHT}); GCE test server ${s.latencyMs} ms per operation; EC2 = moto behind a proxy holding each request ${s.awsLatencyMs} ms`);
    console.log(`machine: ${machine.nproc} cores, Node ${machine.node}; load averages (1, 5, 15 min) at start ${machine.loadsAtStart}, after GCP ${loadsAfterGcp}, at the end ${loads()}`);
    console.log(table(phases));
    for (const p of phases) for (const note of p.notes) console.log(`  ${p.target} ${p.phase}: ${note}`);
    if (s.json) await writeFile(s.json, `${JSON.stringify({ settings: s, machine: { ...machine, loadsAtEnd: loads() }, phases }, null, 2)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
