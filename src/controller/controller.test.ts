/**
 * The controller in-process against the Kubernetes API test server and the local Compute Engine server,
 * with exactly deploy/controller/rbac.yaml's permissions: Nodes joining, leaving and changing become
 * route writes (make-before-break replaces), conditions and Events; a burst of Node events is a few
 * reconciles; a change behind its back waits for the next resync (a fake clock reaches it) while a Node
 * change does not; foreign routes and the ROUTES quota are reported, never overwritten or passed.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { nodeObject } from "../../testkit/agent-lab.js";
import { controllerKubeconfig, eventually, networkCondition, startInProcessController, type InProcessController } from "../../testkit/controller.js";
import { FakeClock } from "../../testkit/fake-clock.js";
import { startGceServer, type GceServer } from "../../testkit/gce-server.js";
import { gcloud, type Gcloud } from "../../testkit/gcloud.js";
import { startKubeServer, type KubeApiServer, type KubeObject } from "../../testkit/kube-server.js";
import { gcpTarget } from "../targets/gcp/factory.js";
import { ownershipMarker } from "../targets/gcp/target.js";

process.env.GCE_METADATA_HOST = "127.0.0.1:9";
const NETWORK = "kubernetes-the-hard-way";
const worker = (i: number, ip = `10.240.0.${20 + i}`) => nodeObject(`worker-${i}`, ip, `10.200.${i}.0/24`);
const routeName = (i: number) => `kubernetes-route-10-200-${i}-0-24`;

describe("podroutes controller (gcp, in-process)", () => {
  let kube: KubeApiServer;
  let gce: GceServer;
  let dir: string;
  let tokenFile: string;
  let kubeconfig: string;
  let running: InProcessController | undefined;
  let cli: Gcloud;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-controller-"));
    kube = await startKubeServer({ tokens: {} });
    gce = await startGceServer();
    tokenFile = join(dir, "gcp-token");
    await writeFile(tokenFile, "controller-a\n");
    kubeconfig = await controllerKubeconfig(kube, dir, "controller-a");
    cli = gcloud(gce);
  });
  after(async () => {
    cli?.dispose();
    await running?.stop();
    await kube.close();
    await gce.stop();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    await running?.stop();
    running = undefined;
    for (const resource of ["nodes", "events", "leases"] as const) for (const o of kube.objects(resource)) kube.remove(resource, o.metadata.name, o.metadata.namespace);
    kube.clearRequests();
    gce.reset();
    gce.latencyMs = 20;
    gce.addRoute({ name: "default-route-0", network: NETWORK, destRange: "0.0.0.0/0", nextHopGateway: "default-internet-gateway" });
  });

  const start = async (options: { resyncClock?: FakeClock; eventRepeatIntervalMs?: number; maxInFlight?: number } = {}) => {
    running = await startInProcessController({
      target: gcpTarget,
      values: { project: gce.project, network: NETWORK, computeEndpoint: gce.endpoint, accessTokenFile: tokenFile, ...(options.maxInFlight ? { maxInFlight: String(options.maxInFlight) } : {}) },
      kubeconfig,
      identity: "controller-a",
      clusterCIDR: "10.200.0.0/16",
      ...options,
    });
    return running;
  };
  const ours = () =>
    [...gce.routes.values()]
      .filter((r) => r.description?.startsWith(ownershipMarker("kubernetes")))
      .map((r) => `${r.destRange} via ${r.nextHopIp}`)
      .sort();
  const writes = () => gce.requestLog.filter((r) => (r.method === "POST" && r.path.endsWith("/global/routes")) || r.method === "DELETE");
  /** The controller's reads of the network (gcloud's own calls aside). */
  const reads = () => gce.requestLog.filter((r) => r.token === "controller-a" && r.method === "GET" && r.path.endsWith("/global/routes")).length;
  const syncs = () => ["changed", "unchanged", "failed"].reduce((sum, result) => sum + running!.controller.metrics.syncs.get({ result }), 0);
  const settled = async () => {
    await eventually("the controller leads", () => running!.controller.elector.isLeader);
    await eventually("a reconcile ran", () => running!.controller.term?.reconciler.reconciled === true);
    await running!.controller.term!.loop.settled();
  };

  it("nodes join: routes created, conditions False/RouteCreated; a node deleted: its route deleted; an address change: replaced make-before-break; a pod CIDR change: the route moves", async () => {
    for (const i of [0, 1, 2]) kube.put("nodes", worker(i));
    await start();
    await settled();
    assert.deepEqual(ours(), ["10.200.0.0/24 via 10.240.0.20", "10.200.1.0/24 via 10.240.0.21", "10.200.2.0/24 via 10.240.0.22"]);
    for (const i of [0, 1, 2]) {
      const condition = networkCondition(kube, `worker-${i}`);
      assert.equal(condition?.state, "False/RouteCreated");
      assert.match(condition!.message, /exist in every table/);
    }
    assert.equal(gce.routes.has("default-route-0"), true, "the network's own route is left alone");

    kube.remove("nodes", "worker-2");
    await eventually("worker-2's route deleted", () => !gce.routes.has(routeName(2)));
    assert.deepEqual(ours(), ["10.200.0.0/24 via 10.240.0.20", "10.200.1.0/24 via 10.240.0.21"]);

    gce.requestLog.length = 0;
    kube.update("nodes", "worker-1", (node) => {
      (node.status as { addresses: { type: string; address: string }[] }).addresses[0]!.address = "10.240.0.31";
    });
    await eventually("worker-1's route replaced", () => ours().includes("10.200.1.0/24 via 10.240.0.31") && ours().length === 2);
    const log = gce.requestLog.map((r) => `${r.method} ${r.path.replace(/^.*\/global\//, "")}`);
    const insert = log.indexOf("POST routes");
    const del = log.indexOf(`DELETE routes/${routeName(1)}`);
    assert.ok(insert >= 0 && del > insert, `the new route is inserted before the old one is deleted: ${log.join(", ")}`);
    assert.ok(log.slice(insert, del).some((call) => call.endsWith("/wait")), "and the delete waits for the insert's operation to be DONE");
    assert.equal(networkCondition(kube, "worker-1")?.state, "False/RouteCreated");

    // A new pod CIDR: a new destination (a new route name), and the old destination's route goes.
    kube.update("nodes", "worker-0", (node) => {
      (node.spec as { podCIDR: string; podCIDRs: string[] }).podCIDR = "10.200.10.0/24";
      (node.spec as { podCIDR: string; podCIDRs: string[] }).podCIDRs = ["10.200.10.0/24"];
    });
    await eventually("worker-0's route follows its pod CIDR", () => JSON.stringify(ours()) === JSON.stringify(["10.200.1.0/24 via 10.240.0.31", "10.200.10.0/24 via 10.240.0.20"]));
    assert.ok(gce.routes.has(routeName(10)) && !gce.routes.has(routeName(0)));
    await running!.controller.term!.loop.settled();
    assert.equal(networkCondition(kube, "worker-0")?.state, "False/RouteCreated");
    // The controller never needed more than deploy/controller/rbac.yaml grants.
    assert.deepEqual(kube.requests.filter((r) => r.code === 403).map((r) => `${r.verb} ${r.resource}`), []);
  });

  it("a burst of 100 Node events is a few reconciles: the network is read once per batch, each route written once", async () => {
    kube.put("nodes", worker(0));
    await start();
    await settled();
    const before = { syncs: syncs(), reads: reads(), writes: writes().length };
    for (let i = 1; i <= 100; i++) kube.put("nodes", worker(i, `10.240.1.${i}`));
    await eventually("101 routes", () => ours().length === 101);
    await running!.controller.term!.loop.settled();
    const batches = syncs() - before.syncs;
    assert.ok(batches <= 5, `${batches} reconciles for 100 Node events`);
    assert.equal(reads() - before.reads, batches, "one read of the network per reconcile");
    assert.equal(writes().length - before.writes, 100, "one insert per new route");
    for (let i = 1; i <= 100; i++) assert.equal(networkCondition(kube, `worker-${i}`)?.state, "False/RouteCreated");
  });

  it("a join starts as many operations as --max-in-flight allows at once (the route controller's way), not apply's slow start from 10", async () => {
    gce.latencyMs = 300;
    for (let i = 0; i < 40; i++) kube.put("nodes", worker(i, `10.240.1.${i}`));
    await start({ maxInFlight: 30 });
    await settled();
    assert.equal(ours().length, 40);
    assert.equal(gce.stats.peakRunning, 30, "the first round is 30 operations, and never more");
  });

  it("a node's condition is set as soon as its route is in, while the rest of a large write goes on", async () => {
    kube.put("nodes", worker(0));
    await start({ maxInFlight: 1 });
    await settled();
    gce.latencyMs = 150;
    for (let i = 1; i <= 6; i++) kube.put("nodes", worker(i));
    // One operation at a time: when the first new node shows False, most of the others' routes are still to come.
    await eventually("a new node's condition False", () => [1, 2, 3, 4, 5, 6].some((i) => networkCondition(kube, `worker-${i}`)?.state === "False/RouteCreated"));
    assert.ok(ours().length < 7, `conditions wait for no other node's route: ${ours().length} of 7 routes in when the first was set`);
    await eventually("all", () => [1, 2, 3, 4, 5, 6].every((i) => networkCondition(kube, `worker-${i}`)?.state === "False/RouteCreated"));
    await running!.controller.term!.loop.settled();
    assert.equal(kube.requests.filter((r) => r.method === "PATCH" && /worker-[1-6]\/status$/.test(r.path)).length, 6, "one patch per node, early or not");
  });

  it("with a 10-minute resync: a route deleted behind its back is repaired at the next resync, a Node change is handled without waiting for it", async () => {
    const clock = new FakeClock();
    for (const i of [0, 1]) kube.put("nodes", worker(i));
    await start({ resyncClock: clock });
    await settled();
    const readsBefore = reads();
    const deleted = await cli.run(["compute", "routes", "delete", routeName(0), "--quiet"]);
    assert.equal(deleted.code, 0, deleted.stderr);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(reads(), readsBefore, "nothing reads the network between resyncs while nothing changes");
    assert.equal(gce.routes.has(routeName(0)), false);

    await clock.advance(599_999);
    await running!.controller.term!.loop.settled();
    assert.equal(gce.routes.has(routeName(0)), false, "not before the resync");
    await clock.advance(1);
    await eventually("repaired at the resync", () => gce.routes.has(routeName(0)));
    assert.equal(reads(), readsBefore + 1);

    kube.put("nodes", worker(2));
    await eventually("a new Node's route without waiting for the next resync", () => gce.routes.has(routeName(2)));
    await eventually("its condition", () => networkCondition(kube, "worker-2")?.state === "False/RouteCreated");
  });

  it("a foreign route on a node's destination: condition True naming it, an Event whose repeats patch its count, never overwritten", async () => {
    const clock = new FakeClock();
    for (const i of [0, 1]) kube.put("nodes", worker(i));
    const foreign = gce.addRoute({ name: "someone-elses", network: NETWORK, destRange: "10.200.1.0/24", nextHopIp: "10.240.0.99", description: "made by hand" });
    await start({ resyncClock: clock, eventRepeatIntervalMs: 0 });
    await settled();
    const condition = networkCondition(kube, "worker-1");
    assert.equal(condition?.state, "True/NoRouteCreated");
    assert.match(condition!.message, /does not own holds 10\.200\.1\.0\/24 in kubernetes-the-hard-way \(via 10\.240\.0\.99, someone-elses\)/);
    assert.equal(networkCondition(kube, "worker-0")?.state, "False/RouteCreated");
    const events = () => kube.objects("events").filter((e) => (e as KubeObject & { reason?: string }).reason === "ForeignRouteConflict");
    assert.equal(events().length, 1);
    const event = events()[0] as KubeObject & { involvedObject: { name: string }; count: number; type: string; source: { component: string } };
    assert.deepEqual([event.involvedObject.name, event.count, event.type, event.source.component], ["worker-1", 1, "Warning", "podroutes-controller"]);

    for (let resync = 0; resync < 3; resync++) {
      await clock.advance(600_000);
      await running!.controller.term!.loop.settled();
    }
    await eventually("three repeats patched into the one Event", () => (events()[0] as unknown as { count: number }).count === 4);
    assert.equal(events().length, 1, "repeats are a count, not new Events");
    assert.deepEqual(gce.routes.get("someone-elses"), foreign, "never overwritten");
    assert.deepEqual(writes().map((w) => w.path.split("/").pop()), ["routes"], "only worker-0's route was written");
    // The condition was patched once, not on every reconcile.
    assert.equal(kube.requests.filter((r) => r.method === "PATCH" && r.path === "/api/v1/nodes/worker-1/status").length, 1);
  });

  it("the ROUTES quota: the node past it gets condition True naming the quota and a QuotaExceeded Event; nothing is written past it", async () => {
    gce.routesQuota = 3; // the default route and two of ours
    for (const i of [0, 1, 2]) kube.put("nodes", worker(i));
    await start();
    await settled();
    assert.deepEqual(ours(), ["10.200.0.0/24 via 10.240.0.20", "10.200.1.0/24 via 10.240.0.21"]);
    assert.equal(writes().length, 2, "no insert attempted past the quota");
    const condition = networkCondition(kube, "worker-2");
    assert.equal(condition?.state, "True/NoRouteCreated");
    assert.match(condition!.message, /ROUTES quota \(3, 1 used\) has no room for 10\.200\.2\.0\/24/);
    assert.deepEqual(
      kube.objects("events").map((e) => [(e as unknown as { involvedObject: { name: string } }).involvedObject.name, (e as unknown as { reason: string }).reason]),
      [["worker-2", "QuotaExceeded"]],
    );
    // A raised quota is used at the next Node event (or resync).
    gce.routesQuota = 10;
    kube.put("nodes", worker(3));
    await eventually("worker-2 and worker-3 routed", () => ours().length === 4);
    await eventually("worker-2's condition", () => networkCondition(kube, "worker-2")?.state === "False/RouteCreated");
  });
});
