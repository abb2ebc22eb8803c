/**
 * `npm run bench -- controller`: `podroutes controller --target gcp` against the Kubernetes API test
 * server and the local Compute Engine server at 200 ms per operation (issue 10's Performance). The join
 * is timed with the controller as its own process, as it runs (both test servers share this process's
 * thread, as the API servers would not); the simulated hour and the burst run it in process, where a
 * fake clock drives its resync timer:
 *
 * 1. 1,000 Nodes join at once: time until every route exists and every Node shows NetworkUnavailable=
 *    False, against the bound ceil(1000 / in-flight) × 200 ms (goal ≤ 1.3×) and against the cloud route
 *    controller's way simulated on the same server (a full list every 10 s, then one create and its wait
 *    per missing route, 200 at once, and the node's condition), nodes joining halfway between two of its
 *    lists (its expected wait); API calls made, every one counted (operation waits and lists are calls
 *    against the project's quota too, and so is each call inside a batch request; goal ≤ 1.05 × the routes
 *    created), and the HTTP requests they took (the writes go in batch requests). Medians of 3 runs; the floor
 *    under them (bench/compute-floor.ts: the same inserts by the Compute client alone, its own process);
 *    and one run at 1 s per operation, where the per-call work of client and servers weighs less.
 * 2. Steady state: 1,000 nodes, nothing changing, one hour of simulated time (the resync timer on a fake
 *    clock): Compute API calls made, against a 10-second poll of the routes.
 * 3. A burst of 100 node changes (each node's address: a make-before-break replace): reconciles, reads
 *    of the network and write calls.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import pLimit from "p-limit";
import { DEFAULT_MAX_IN_FLIGHT } from "../src/targets/each-change.js";
import { createCompute, DEFAULT_BATCH_CALLS, type ComputeApi } from "../src/targets/gcp/compute.js";
import { gcpTarget } from "../src/targets/gcp/factory.js";
import { ownershipMarker } from "../src/targets/gcp/target.js";
import { nodeObject, startLogged, type Started } from "../testkit/agent-lab.js";
import { BIN } from "../testkit/cli.js";
import { controllerKubeconfig, eventually, networkCondition, startInProcessController } from "../testkit/controller.js";
import { FakeClock } from "../testkit/fake-clock.js";
import { startGceServer, type GceRequest, type GceServer } from "../testkit/gce-server.js";
import { startKubeServer, type KubeApiServer } from "../testkit/kube-server.js";
import { medianBy } from "./stats.js";

const NODES = 1000;
/** Compute's time per route operation here: a realistic figure (real inserts take from a fraction of a second to seconds). */
export const LATENCY_MS = 200;
/** A second, longer operation time (real route operations take seconds): the overhead that is per call, not per round, shrinks. */
const SLOW_LATENCY_MS = 1000;
const BURST = 100;
export const NETWORK = "kubernetes-the-hard-way";
export const CLUSTER_CIDR = "10.192.0.0/10";
/** The cloud route controller's period (kube-controller-manager --route-reconciliation-period). */
const POLL_MS = 10_000;
/** Its routes created at once (maxConcurrentRouteCreations). */
const ROUTE_CONTROLLER_IN_FLIGHT = 200;
const RESYNC_MS = 300_000;
const HOUR_MS = 3_600_000;

export const nodeIp = (i: number, shift = 0) => `10.${240 + shift}.${Math.floor(i / 200)}.${20 + (i % 200)}`;
export const podCidr = (i: number) => `10.${200 + Math.floor(i / 256)}.${i % 256}.0/24`;
const routeName = (i: number) => `kubernetes-route-${podCidr(i).replace(/[./]/g, "-")}`;

export function owned(gce: GceServer): number {
  return [...gce.routes.values()].filter((r) => r.description?.startsWith(ownershipMarker("kubernetes"))).length;
}

/** The names of `count` workers from `first` on: worker-FIRST, ... */
export const workers = (count: number, first = 0): string[] => Array.from({ length: count }, (_, i) => `worker-${first + i}`);

export function allRouted(kube: KubeApiServer, names: readonly string[]): boolean {
  return names.every((name) => networkCondition(kube, name)?.state === "False/RouteCreated");
}

/**
 * allRouted for a poll while Nodes join: it reads each Node once it is routed, not every Node each
 * time (the test server copies each Node it hands out: 1,000 copies every 20 ms took a fifth of the
 * core the test servers run on, time the controller's answers then waited for). A full look at the end.
 */
export function routedWatcher(kube: KubeApiServer, names: readonly string[]): () => boolean {
  let routed = 0;
  return () => {
    while (routed < names.length && networkCondition(kube, names[routed]!)?.state === "False/RouteCreated") routed++;
    return routed === names.length && allRouted(kube, names);
  };
}

/**
 * Compute calls by kind over a slice of the request log. Every call counts (each is one against the
 * project's API rate quota): reads, writes, operation waits and operation lists alike, each call inside
 * a batch request too; `http` is the HTTP requests they took (a batch request is one).
 */
export type ComputeTally = ReturnType<typeof tally>;

export function tally(log: GceRequest[]): { total: number; http: number; batches: number; lists: number; inserts: number; deletes: number; waits: number; operationLists: number; other: number } {
  const batchRequest = (call: GceRequest) => !call.inBatch && call.path.startsWith("/batch/");
  const calls = log.filter((call) => !batchRequest(call));
  const batches = log.length - calls.length;
  const out = { total: calls.length, http: calls.filter((call) => !call.inBatch).length + batches, batches, lists: 0, inserts: 0, deletes: 0, waits: 0, operationLists: 0, other: 0 };
  for (const call of calls) {
    if (call.method === "GET" && call.path.endsWith("/global/routes")) out.lists++;
    else if (call.method === "POST" && call.path.endsWith("/global/routes")) out.inserts++;
    else if (call.method === "DELETE") out.deletes++;
    else if (call.path.endsWith("/wait")) out.waits++;
    else if (call.method === "GET" && call.path.endsWith("/global/operations")) out.operationLists++;
    else out.other++;
  }
  return out;
}

const execFileAsync = promisify(execFile);
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;

function clearCluster(kube: KubeApiServer, gce: GceServer, latencyMs = LATENCY_MS): void {
  for (const resource of ["nodes", "events", "leases"] as const) for (const o of kube.objects(resource)) kube.remove(resource, o.metadata.name, o.metadata.namespace);
  kube.clearRequests();
  gce.reset();
  gce.latencyMs = latencyMs;
  gce.routesQuota = 100_000;
}

let joinRuns = 0;

/** bench/compute-floor.ts as its own process on a fresh network (`routes` inserts): its time and calls. */
export async function computeFloor(gce: GceServer, tokenFile: string, routes = NODES, latencyMs = LATENCY_MS): Promise<{ ms: number; calls: number; httpRequests: number }> {
  gce.reset();
  gce.latencyMs = latencyMs;
  gce.routesQuota = 100_000;
  const script = fileURLToPath(new URL("./compute-floor.js", import.meta.url));
  const { stdout } = await execFileAsync(process.execPath, [script, gce.endpoint, gce.project, tokenFile, NETWORK, String(routes), String(DEFAULT_MAX_IN_FLIGHT)], { env: { ...process.env, GCE_METADATA_HOST: "127.0.0.1:9" } });
  return JSON.parse(stdout) as { ms: number; calls: number; httpRequests: number };
}

/**
 * `podroutes controller --target gcp` as a process of its own against the test servers, default flags
 * but for `extraFlags` (a later flag wins), Node run with `nodeFlags` (`--cpu-prof`); its output (JSON
 * logs) goes to `logFile`.
 */
export function startGcpControllerProcess(gce: GceServer, kubeconfig: string, tokenFile: string, logFile: string, extraFlags: string[] = [], nodeFlags: string[] = []): Started {
  return startLogged(
    [process.execPath, ...nodeFlags, BIN, "controller", "--target=gcp", `--project=${gce.project}`, `--network=${NETWORK}`, `--compute-endpoint=${gce.endpoint}`, `--access-token-file=${tokenFile}`, `--cluster-cidr=${CLUSTER_CIDR}`, `--kubeconfig=${kubeconfig}`, "--identity=bench-process", "--listen=127.0.0.1:0", ...extraFlags],
    logFile,
    "podroutes controller",
    { ...process.env, GCE_METADATA_HOST: "127.0.0.1:9" },
  );
}

interface Join {
  routesMs: number;
  joinMs: number;
  calls: ReturnType<typeof tally>;
  /** Reconciles that wrote. */
  batches: number;
  /** The most operations running at once. */
  peak: number;
}

/**
 * A fresh cluster, the controller started as its own process with default flags, then 1,000 Nodes put
 * at once: time until every route exists and until every Node shows NetworkUnavailable=False (the
 * arrival of the last condition patch at the API server, by its request log), and every Compute call
 * made meanwhile. Leaves the Nodes and routes in place (the steady state uses them).
 */
async function joinAsProcess(kube: KubeApiServer, gce: GceServer, kubeconfig: string, tokenFile: string, dir: string, latencyMs: number): Promise<Join> {
  clearCluster(kube, gce, latencyMs);
  const controller = startGcpControllerProcess(gce, kubeconfig, tokenFile, join(dir, `controller-${++joinRuns}.log`));
  try {
    await eventually("the controller leads and listed the Nodes", () => /"msg":"listed Nodes"/.test(controller.log()), 30_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const logStart = gce.requestLog.length;
    const kubeStart = kube.requests.length;
    const start = performance.now();
    const startedAt = Date.now();
    for (let i = 0; i < NODES; i++) kube.put("nodes", nodeObject(`worker-${i}`, nodeIp(i), podCidr(i)));
    let routesMs = 0;
    const routed = routedWatcher(kube, workers(NODES));
    await eventually(
      "every route and every condition",
      () => {
        if (!routesMs && owned(gce) === NODES) routesMs = performance.now() - start;
        return routesMs > 0 && routed();
      },
      300_000,
    );
    // When the last condition reached the API server (the poll above sees it up to 20 ms later).
    const conditionsAt = Math.max(...kube.requests.slice(kubeStart).filter((r) => r.method === "PATCH" && r.path.endsWith("/status") && r.code < 300).map((r) => r.at));
    const joinMs = conditionsAt - startedAt;
    await new Promise((resolve) => setTimeout(resolve, 500));
    return {
      routesMs,
      joinMs,
      calls: tally(gce.requestLog.slice(logStart)),
      batches: controller.log().split("\n").filter((line) => line.includes('"msg":"reconciled"')).length,
      peak: gce.stats.peakRunning,
    };
  } finally {
    await controller.stop();
  }
}

/**
 * One route inserted the cloud route controller's way (its GCE provider's CreateRoute): the insert, then
 * `wait` on its own operation until DONE. (The provider polls `globalOperations.get` instead, at least
 * once a second: more calls and slower; a held `wait` only flatters it.)
 */
async function insertAndWait(gce: GceServer, route: Record<string, unknown>): Promise<void> {
  const base = `${gce.endpoint}projects/${gce.project}/global`;
  const call = async (method: string, url: string, body?: unknown) => {
    const response = await fetch(url, { method, headers: { authorization: "Bearer bench", "content-type": "application/json" }, ...(body ? { body: JSON.stringify(body) } : {}) });
    if (!response.ok) throw new Error(`${method} ${url}: ${response.status} ${await response.text()}`);
    return (await response.json()) as { name: string; status: string };
  };
  let op = await call("POST", `${base}/routes`, route);
  while (op.status !== "DONE") op = await call("POST", `${base}/operations/${op.name}/wait`);
}

/**
 * The cloud route controller's loop, simulated on the same server with the calls it makes (list,
 * insert, wait): every POLL_MS it lists the network's routes (podroutes' Compute client) and
 * creates each missing one (ROUTE_CONTROLLER_IN_FLIGHT at once), then sets the node's condition.
 * Returns when every route exists and every condition is False. Its conditions are written straight into
 * the test server's store (no API call), which only flatters it.
 */
async function routeControllerWay(kube: KubeApiServer, gce: GceServer, compute: ComputeApi, firstListInMs: number): Promise<{ ms: number; calls: ReturnType<typeof tally>; kubeCalls: number }> {
  const start = performance.now();
  const logStart = gce.requestLog.length;
  const kubeStart = kube.requests.length;
  for (let i = 0; i < NODES; i++) kube.put("nodes", nodeObject(`worker-${i}`, nodeIp(i), podCidr(i)));
  await new Promise((resolve) => setTimeout(resolve, firstListInMs));
  const limit = pLimit(ROUTE_CONTROLLER_IN_FLIGHT);
  for (;;) {
    const tick = performance.now();
    const existing = new Set((await compute.listRoutes(`network eq ".*/global/networks/${NETWORK}"`)).map((r) => r.name));
    await Promise.all(
      Array.from({ length: NODES }, (_, i) => i)
        .filter((i) => !existing.has(routeName(i)))
        .map((i) =>
          limit(async () => {
            await insertAndWait(gce, { name: routeName(i), network: compute.networkUrl(NETWORK), destRange: podCidr(i), nextHopIp: nodeIp(i), priority: 1000, description: ownershipMarker("kubernetes") });
            // The route controller patches NetworkUnavailable=False once the node's route exists (kube-controller-manager's node status update).
            kube.update("nodes", `worker-${i}`, (node) => {
              (node.status as { conditions: { type: string; status: string; reason: string }[] }).conditions = [{ type: "NetworkUnavailable", status: "False", reason: "RouteCreated" }];
            });
          }),
        ),
    );
    if (owned(gce) === NODES && allRouted(kube, workers(NODES))) break;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, POLL_MS - (performance.now() - tick))));
  }
  return { ms: performance.now() - start, calls: tally(gce.requestLog.slice(logStart)), kubeCalls: NODES + (kube.requests.length - kubeStart) };
}

export async function run(): Promise<void> {
  process.env.GCE_METADATA_HOST = "127.0.0.1:9";
  const dir = mkdtempSync(join(tmpdir(), "podroutes-bench-controller-"));
  const kube = await startKubeServer({ tokens: {}, historyWindow: 20_000 });
  const gce = await startGceServer({ latencyMs: LATENCY_MS, routesQuota: 100_000 });
  const tokenFile = join(dir, "gcp-token");
  writeFileSync(tokenFile, "bench\n");
  try {
    const kubeconfig = await controllerKubeconfig(kube, dir, "bench");

    // 1. 1,000 Nodes join at once, the controller a process of its own with default flags: three times at
    // 200 ms per operation (medians), once at 1 s (the bound 5 s: how much of the gap is per-call CPU).
    const floors: { ms: number; calls: number; httpRequests: number }[] = [];
    for (let run = 0; run < 3; run++) floors.push(await computeFloor(gce, tokenFile));
    const floor = medianBy(floors, (f) => f.ms);
    const slow = await joinAsProcess(kube, gce, kubeconfig, tokenFile, dir, SLOW_LATENCY_MS);
    const joins: Join[] = [];
    for (let run = 0; run < 3; run++) joins.push(await joinAsProcess(kube, gce, kubeconfig, tokenFile, dir, LATENCY_MS));
    const join_ = medianBy(joins, (j) => j.joinMs);
    const boundMs = Math.ceil(NODES / DEFAULT_MAX_IN_FLIGHT) * LATENCY_MS;
    const slowBoundMs = Math.ceil(NODES / DEFAULT_MAX_IN_FLIGHT) * SLOW_LATENCY_MS;

    let logStart: number;
    let start: number;

    // The same controller in process (the servers and it share one thread): for the fake resync clock.
    for (const lease of kube.objects("leases")) kube.remove("leases", lease.metadata.name, lease.metadata.namespace);
    const clock = new FakeClock();
    const running = await startInProcessController({
      target: gcpTarget,
      values: { project: gce.project, network: NETWORK, computeEndpoint: gce.endpoint, accessTokenFile: tokenFile },
      kubeconfig,
      identity: "bench",
      clusterCIDR: CLUSTER_CIDR,
      resyncMs: RESYNC_MS,
      resyncClock: clock,
    });
    const { controller } = running;
    await eventually("the controller leads and has reconciled", () => controller.term?.reconciler.reconciled === true, 30_000);
    await controller.term!.loop.settled();

    // 2. Steady state: one simulated hour of resyncs, nothing changing.
    logStart = gce.requestLog.length;
    const kubeStart = kube.requests.length;
    const realStart = performance.now();
    for (let t = 0; t < HOUR_MS; t += RESYNC_MS) {
      await clock.advance(RESYNC_MS);
      await controller.term!.loop.settled();
    }
    const steady = tally(gce.requestLog.slice(logStart));
    const steadyKube = kube.requests.slice(kubeStart).filter((r) => !r.path.includes("/leases/"));
    const realSeconds = (performance.now() - realStart) / 1000;
    // A 10-second poll lists the network 360 times an hour; one list of this network costs `pagesPerList` calls.
    const pagesPerList = steady.lists / (HOUR_MS / RESYNC_MS);
    const pollCalls = (HOUR_MS / POLL_MS) * pagesPerList;

    // 3. A burst of 100 node changes: each node's address, so each route is replaced make-before-break.
    logStart = gce.requestLog.length;
    const syncsBeforeBurst = ["changed", "unchanged", "failed"].reduce((sum, result) => sum + controller.metrics.syncs.get({ result }), 0);
    start = performance.now();
    for (let i = 0; i < BURST; i++) {
      kube.update("nodes", `worker-${i}`, (node) => {
        (node.status as { addresses: { type: string; address: string }[] }).addresses[0]!.address = nodeIp(i, 1);
      });
    }
    await eventually("the burst's routes replaced", () => {
      for (let i = 0; i < BURST; i++) {
        const routes = [...gce.routes.values()].filter((r) => r.destRange === podCidr(i));
        if (routes.length !== 1 || routes[0]!.nextHopIp !== nodeIp(i, 1)) return false;
      }
      return true;
    }, 120_000);
    await controller.term!.loop.settled();
    const burstMs = performance.now() - start;
    const burst = tally(gce.requestLog.slice(logStart));
    const burstBatches = ["changed", "unchanged", "failed"].reduce((sum, result) => sum + controller.metrics.syncs.get({ result }), 0) - syncsBeforeBurst;
    await running.stop();

    // The cloud route controller's way on the same server, nodes joining halfway to its next list.
    clearCluster(kube, gce);
    const compute = await createCompute({ project: gce.project, endpoint: gce.endpoint, accessTokenFile: tokenFile });
    const theirs = await routeControllerWay(kube, gce, compute, POLL_MS / 2);

    console.log(`1,000 Nodes join at once (GCE test server, ${LATENCY_MS} ms per operation; the controller a whole process with default flags: --max-in-flight ${DEFAULT_MAX_IN_FLIGHT}, where its adaptive limit starts; it halves on throttling):`);
    console.log(`  podroutes controller (median of 3; runs: ${joins.map((j) => (j.joinMs / 1000).toFixed(2)).join(", ")} s): every route in ${(join_.routesMs / 1000).toFixed(2)} s, every condition False in ${(join_.joinMs / 1000).toFixed(2)} s, ${join_.batches} reconcile(s) with changes, at most ${join_.peak} operations running at once`);
    console.log(`    vs the bound ceil(${NODES}/${DEFAULT_MAX_IN_FLIGHT}) × ${LATENCY_MS} ms = ${(boundMs / 1000).toFixed(2)} s: ${ratio(join_.joinMs, boundMs)} (goal ≤ 1.3×)`);
    console.log(`    Compute API calls, every one counted: ${join_.calls.total} (${join_.calls.inserts} inserts, ${join_.calls.waits} operation waits, ${join_.calls.operationLists} operation-list pages, ${join_.calls.lists} route-list pages, ${join_.calls.other} other: quota, instances) for ${NODES} routes: ${ratio(join_.calls.total, NODES)} (goal ≤ 1.05×); writes alone ${ratio(join_.calls.inserts + join_.calls.deletes, NODES)}`);
    console.log(`    in ${join_.calls.http} HTTP requests (${join_.calls.batches} of them batch requests carrying the writes; --compute-batch ${DEFAULT_BATCH_CALLS})`);
    console.log(`  the floor: the same ${NODES} inserts by the Compute client alone in a process of its own (no Kubernetes, no controller), ${DEFAULT_MAX_IN_FLIGHT} in flight: ${(floor.ms / 1000).toFixed(2)} s (median of 3; ${ratio(floor.ms, boundMs)} the bound), ${floor.calls} calls in ${floor.httpRequests} HTTP requests; the controller's join beyond it: ${((join_.joinMs - floor.ms) / 1000).toFixed(2)} s`);
    console.log(`  at ${SLOW_LATENCY_MS} ms per operation: every condition False in ${(slow.joinMs / 1000).toFixed(2)} s vs the bound ${(slowBoundMs / 1000).toFixed(2)} s: ${ratio(slow.joinMs, slowBoundMs)}; ${slow.calls.total} Compute calls (${ratio(slow.calls.total, NODES)})`);
    console.log(`  the cloud route controller's way (a list every ${POLL_MS / 1000} s, one create and its wait per route, ${ROUTE_CONTROLLER_IN_FLIGHT} at once), nodes joining halfway to its next list: ${(theirs.ms / 1000).toFixed(2)} s, Compute API calls ${theirs.calls.total} (${theirs.calls.inserts} inserts, ${theirs.calls.waits} waits, ${theirs.calls.lists} list pages)`);
    console.log(`    podroutes: ${ratio(theirs.ms, join_.joinMs)} faster, ${ratio(theirs.calls.total, join_.calls.total)} fewer Compute calls`);
    console.log(`Steady state, ${NODES} nodes, nothing changing, one simulated hour (--resync ${RESYNC_MS / 60_000}m on a fake clock; ${realSeconds.toFixed(1)} s real):`);
    console.log(`  Compute API calls: ${steady.total} (${steady.lists} route-list pages: ${HOUR_MS / RESYNC_MS} resyncs × ${pagesPerList}; writes ${steady.inserts + steady.deletes}, other ${steady.other + steady.waits})`);
    console.log(`  Kubernetes API calls besides the Lease: ${steadyKube.length} (condition patches and Events: none while nothing changes); the Lease: one renewal per --retry-period (client-go's 2 s: 1,800 an hour, as any leader-elected controller)`);
    console.log(`  vs a ${POLL_MS / 1000}-second poll of the routes: ${pollCalls} calls an hour: ${ratio(pollCalls, Math.max(1, steady.total))} fewer`);
    console.log(`A burst of ${BURST} node changes (each node's address: a make-before-break replace):`);
    console.log(`  ${burstBatches} reconciles, ${burst.lists} route-list pages read, ${burst.inserts + burst.deletes} write calls (${burst.inserts} inserts + ${burst.deletes} deletes for ${BURST} replaces: ${ratio(burst.inserts + burst.deletes, 2 * BURST)} of the minimum), ${burst.waits} operation waits and ${burst.operationLists} operation-list pages, ${burst.total} Compute calls in all (${burst.http} HTTP requests); ${(burstMs / 1000).toFixed(2)} s`);
  } finally {
    await kube.close();
    await gce.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
