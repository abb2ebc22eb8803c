/**
 * `npm run bench -- peers-controller [--nodes N] [--json FILE]` (issue 21's controller row): N Nodes
 * (1,000) joining at once at 200 ms per Compute operation, for Kubernetes' real route controller
 * (testkit/peers: k8s.io/cloud-provider's controller over a GCE `Routes` of ours) and for `podroutes
 * controller --target gcp`, each in turn on a fresh lab with the real control plane (etcd,
 * kube-apiserver, kube-controller-manager allocating pod CIDRs) and a fresh Compute Engine test server
 * (its own process in the controller's namespace, an instance per Node: the route controller's routes
 * point at instances, looked up by name). The lab's one worker's Node is routed first (the controller
 * runs); then the N Nodes are created at once as kubelets register them (no pod CIDR: kube-controller-
 * manager allocates one; an InternalIP in the lab's 10.240/16; no worker behind them), and timed:
 * - until every route exists: the latest route's creationTimestamp (the server stamps a route when its
 *   operation turns DONE) after the first create was sent; the poll that sees them all reads every
 *   page of the routes every second, its calls not counted (another token);
 * - until every Node shows NetworkUnavailable=False, as a poll of the API sees it (a `kubectl get
 *   nodes` in the jumpbox, 200 ms after the one before: each takes about a second at 1,000 Nodes, so
 *   the figure includes up to one poll; a `kubectl get nodes --watch` died silently at 1,000 Nodes);
 * - the Compute calls the controller made meanwhile, by kind, and the HTTP requests they took.
 * The route controller reconciles every 10 s (cloud-controller-manager's default): its figure includes
 * the wait for its next period, as a Node joining any cluster of it does.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { within } from "../testkit/agent-lab.js";
import { kubeletNodeObject } from "../src/lab/kubernetes/kubelets.js";
import { peerBinaries } from "../testkit/peers/binaries.js";
import { GCE_NETWORK, GCE_ZONE, PeerLab, gceRoutes, requestLog, startGce, startPodroutesController, startRouteController, type GceEndpoint, type Launch } from "../testkit/peers/lab.js";
import type { GceRequest } from "../testkit/gce-server.js";
import { tally } from "./controller.js";
import { apiLoader } from "./real-plane.js";

const LATENCY_MS = 200;
/** 4 × 256 /24s: room for 1,000 Nodes and the worker's (the topology's /16 holds 256). */
const CLUSTER_CIDR = "10.200.0.0/14";
const DEADLINE_MS = 300_000;
const log = (line: string) => process.stderr.write(`  ${line}\n`);
const seconds = (ms: number) => Number((ms / 1000).toFixed(2));

export const SYSTEMS = ["podroutes", "route-controller"] as const;
type System = (typeof SYSTEMS)[number];
type Cell = number | string;

/** Node i's InternalIP: in the lab's 10.240/16, past its VPC's /24 (the jumpbox, controller and workers). */
const nodeIp = (i: number) => `10.240.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;
const nodeName = (i: number) => `node-${i}`;

interface Measured {
  /** Until kube-controller-manager had given every Node its pod CIDR (polled as the conditions are). */
  allocatedS?: Cell;
  routesS: Cell;
  conditionsS: Cell;
  calls?: Record<string, number>;
  routes?: number;
  errors?: number;
}

/** Compute calls by kind: bench/controller.ts's tally, with operation gets (the route controller's polls) their own. */
function byKind(calls: GceRequest[]): Record<string, number> {
  const counted = tally(calls);
  const operationGets = calls.filter((c) => c.method === "GET" && /\/global\/operations\/[^/]+$/.test(c.path)).length;
  const instanceGets = calls.filter((c) => c.method === "GET" && /\/zones\/[^/]+\/instances\/[^/]+$/.test(c.path)).length;
  return {
    total: counted.total,
    inserts: counted.inserts,
    lists: counted.lists,
    "operation waits/gets": counted.waits + operationGets,
    "instance gets": instanceGets,
    other: counted.other - operationGets - instanceGets + counted.deletes + counted.operationLists,
    http: counted.http,
  };
}

/** How many Nodes show NetworkUnavailable=False, by one `kubectl get nodes` in the jumpbox (admin credentials). */
async function clearedNodes(lab: PeerLab): Promise<number> {
  return countNodes(lab, '{range .items[*]}{.status.conditions[?(@.type=="NetworkUnavailable")].status}{"\\n"}{end}', (value) => value === "False");
}

/** How many Nodes have their pod CIDR from kube-controller-manager, the same way. */
async function allocatedNodes(lab: PeerLab): Promise<number> {
  return countNodes(lab, '{range .items[*]}{.spec.podCIDR}{"\\n"}{end}', (value) => value !== "");
}

async function countNodes(lab: PeerLab, template: string, counts: (value: string) => boolean): Promise<number> {
  const listed = await lab.kubectl(["get", "nodes", "-o", `jsonpath=${template}`]);
  return listed.split("\n").filter((value) => counts(value.trim())).length;
}

async function measure(system: System, nodes: number, prepare: (lab: PeerLab, gce: GceEndpoint) => Promise<Launch>): Promise<Measured> {
  const lab = new PeerLab(`k1${system === "podroutes" ? "pc" : "rc"}${process.pid % 1000}`, 1, () => {}, CLUSTER_CIDR);
  const failed = (what: string) => `${what} (${lab.logs(3).replace(/\n/g, " | ").slice(0, 400)})`;
  let api: ReturnType<typeof apiLoader> | undefined;
  try {
    await lab.up();
    const instances = Array.from({ length: nodes }, (_, i) => ({ name: nodeName(i), zone: GCE_ZONE, networkIP: nodeIp(i), network: GCE_NETWORK, canIpForward: true }));
    // The project's ROUTES quota raised from GCP's default 250, as a cluster of 1,000 Nodes needs.
    const gce = await startGce(lab, LATENCY_MS, { instances, requestLogFile: join(lab.dir, "gce-requests.json"), routesQuota: 10_000 });
    // Who creates the Nodes (as the kubelets would, with their own credentials): a ServiceAccount allowed to.
    await lab.kubectl(["create", "serviceaccount", "bench-kubelets", "-n", "kube-system"]);
    await lab.kubectl(["create", "clusterrolebinding", "bench-kubelets", "--clusterrole=cluster-admin", "--serviceaccount=kube-system:bench-kubelets"]);
    api = apiLoader(lab.state.jumpboxNetns, lab.state.kubernetes!.url, lab.state.kubernetes!.caFile, await lab.token("kube-system", "bench-kubelets"), 32);
    const launch = await prepare(lab, gce);
    await launch();
    // It runs once the lab's worker has its route.
    const worker = lab.state.workers[0]!;
    const workerCidr = await lab.podCIDR(worker.name);
    if ((await within(120_000, async () => (await gceRoutes(lab, gce)).some((r) => r.destRange === workerCidr), 200)) === undefined) return { routesS: failed(`the worker's route (${workerCidr}) not within 120 s`), conditionsS: "see routes" };
    await new Promise((resolve) => setTimeout(resolve, 1000));

    const since = performance.now();
    const startedAt = Date.now();
    const answers = await Promise.all(Array.from({ length: nodes }, (_, i) => api!.send("POST", "/api/v1/nodes", kubeletNodeObject({ name: nodeName(i), internalIP: nodeIp(i) }))));
    const refused = answers.filter((a) => a.status !== 201);
    if (refused.length) return { routesS: `${refused.length} Node creates failed, e.g. ${refused[0]!.status} ${refused[0]!.error}`, conditionsS: "see routes" };
    log(`${system}: ${nodes} Nodes created in ${seconds(performance.now() - since)} s`);

    let routes: Awaited<ReturnType<typeof gceRoutes>> = [];
    const allRouted = async () => (routes = await gceRoutes(lab, gce)).length >= nodes + 1;
    let cleared = 0;
    let clearedAt = 0;
    const allCleared = async () => {
      cleared = await clearedNodes(lab);
      clearedAt = performance.now();
      return cleared >= nodes + 1;
    };
    // The floor both controllers wait for: kube-controller-manager's allocations (its client's 20 requests a second, by default).
    let allocatedAt = 0;
    const allAllocated = async () => {
      const done = (await allocatedNodes(lab)) >= nodes + 1;
      if (done) allocatedAt = performance.now();
      return done;
    };
    const allocatedDone = within(DEADLINE_MS, allAllocated, 200);
    const routesDone = within(DEADLINE_MS, allRouted, 1000);
    const clearedDone = within(DEADLINE_MS, allCleared, 200);
    const [routesTook, clearedTook, allocatedTook] = await Promise.all([routesDone, clearedDone, allocatedDone]);
    const doneAt = Date.now();
    const calls = (await requestLog(gce)).filter((c) => c.token !== "test" && c.at >= startedAt && c.at <= doneAt);
    const counted = byKind(calls);
    const errors = calls.filter((c) => c.status >= 400 || c.status === 0).length;
    const kinds = new Map<string, number>();
    for (const c of calls) {
      const key = `${c.method} ${c.path.replace(/\/projects\/[^/]+/, "/projects/P").replace(/\/(routes|operations|instances)\/[^/]+/g, "/$1/X")}${c.inBatch ? " (in a batch)" : ""}`;
      kinds.set(key, (kinds.get(key) ?? 0) + 1);
    }
    log(`${system}: calls by method and path ${JSON.stringify(Object.fromEntries(kinds))}`);
    const lastRoute = Math.max(...routes.map((r) => Date.parse(r.creationTimestamp ?? "")));
    const routesS: Cell = routesTook === undefined ? failed(`${routes.length - 1} of ${nodes} routes within ${DEADLINE_MS / 1000} s`) : seconds(lastRoute - startedAt);
    const conditionsS: Cell = clearedTook === undefined ? `${cleared - 1} of ${nodes} Nodes cleared within ${DEADLINE_MS / 1000} s` : seconds(clearedAt - since);
    const allocatedS: Cell = allocatedTook === undefined ? `not every pod CIDR within ${DEADLINE_MS / 1000} s` : seconds(allocatedAt - since);
    log(`${system}: every pod CIDR allocated ${allocatedS} s, every route ${routesS} s, every NetworkUnavailable=False ${conditionsS} s; Compute calls ${JSON.stringify(counted)}, ${errors} answered an error`);
    return { routesS, conditionsS, allocatedS, calls: counted, routes: routes.length - 1, errors };
  } catch (error) {
    return { routesS: failed(`failed: ${(error as Error).message.split("\n")[0]}`), conditionsS: "see routes" };
  } finally {
    api?.stop();
    await lab.down();
  }
}

export async function run(argv = process.argv): Promise<void> {
  const option = (flag: string) => (argv.indexOf(flag) >= 0 ? argv[argv.indexOf(flag) + 1] : undefined);
  const jsonFile = option("--json");
  const nodes = Number(option("--nodes") ?? 1000);
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 1000) throw new Error(`--nodes ${JSON.stringify(option("--nodes"))}: a whole number from 1 to 1000 (the Nodes' addresses and the cluster CIDR hold 1,000)`);
  const binaries = await peerBinaries(log);
  const measured: Record<System, Measured> = {
    "route-controller": await measure("route-controller", nodes, (lab, gce) => startRouteController(lab, binaries, gce)),
    podroutes: await measure("podroutes", nodes, (lab, gce) => startPodroutesController(lab, gce)),
  };
  const rows: { figure: string; unit: string; values: Record<System, Cell>; ratio?: false }[] = [
    { figure: `${nodes} Nodes join, ${LATENCY_MS} ms per Compute operation → every route exists`, unit: "s", values: { podroutes: measured.podroutes.routesS, "route-controller": measured["route-controller"].routesS } },
    { figure: "... → NetworkUnavailable=False on every Node (read via the API)", unit: "s", values: { podroutes: measured.podroutes.conditionsS, "route-controller": measured["route-controller"].conditionsS } },
  ];
  rows.push({ figure: "... the floor under both: kube-controller-manager gave every Node its pod CIDR (polled)", unit: "s", values: { podroutes: measured.podroutes.allocatedS ?? "not measured", "route-controller": measured["route-controller"].allocatedS ?? "not measured" }, ratio: false });
  for (const kind of ["total", "inserts", "lists", "operation waits/gets", "instance gets", "other", "http"]) {
    const figure = kind === "total" ? `Compute calls until both (every call, in a batch too), of ${nodes} routes` : kind === "http" ? "... the HTTP requests they took (a batch request is one)" : `... of which ${kind}`;
    const pick = (s: System) => measured[s].calls?.[kind] ?? "not measured (see routes)";
    rows.push({ figure, unit: "calls", values: { podroutes: pick("podroutes"), "route-controller": pick("route-controller") } });
  }
  rows.push({ figure: "Compute calls answered an error", unit: "calls", values: { podroutes: measured.podroutes.errors ?? "not measured", "route-controller": measured["route-controller"].errors ?? "not measured" }, ratio: false });
  const cells = rows.map((row) => [
    `${row.figure} (${row.unit})`,
    ...SYSTEMS.map((s) => {
      const value = row.values[s];
      const base = row.values.podroutes;
      if (typeof value !== "number") return value;
      return s === "podroutes" || row.ratio === false || typeof base !== "number" || base === 0 ? String(value) : `${value} (${(value / base).toFixed(1)}×)`;
    }),
  ]);
  const header = ["figure", ...SYSTEMS];
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  console.log([header, ...cells].map((line) => line.map((c, i) => c.padEnd(widths[i]!)).join("  ")).join("\n"));
  console.log(`versions: ${JSON.stringify(binaries.version)}; ratios are the route controller's figure over podroutes'`);
  if (jsonFile) await writeFile(jsonFile, `${JSON.stringify({ systems: SYSTEMS, rows }, null, 2)}\n`);
}
