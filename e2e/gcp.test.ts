/**
 * `--target gcp` and `--nodes gcp` end to end against the local Compute Engine server, cross-checked with
 * the real gcloud CLI: the seed's own commands work against the server and print the seed's table, what
 * podroutes writes is what gcloud lists, and routes gcloud made are never deleted by podroutes. Faults,
 * quota, replacement and removal run through the apply engine. Explicit token, metadata off, 127.0.0.1.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { apply, plan, verifyTarget } from "../src/apply/engine.js";
import { validateInventory, type RawNode } from "../src/inventory.js";
import type { Inventory } from "../src/model.js";
import { readGcpNodes } from "../src/sources/gcp.js";
import { ComputeError, createCompute, type ComputeApi } from "../src/targets/gcp/compute.js";
import { GcpTarget, ownershipMarker, type GcpTargetSettings } from "../src/targets/gcp/target.js";
import { seededRandom, startGceServer, type GceRequest, type GceServer } from "../testkit/gce-server.js";
import { gcloud, type Gcloud } from "../testkit/gcloud.js";
import { runCli } from "../testkit/cli.js";
import { readTable, runConformance } from "../testkit/conformance.js";

process.env.GCE_METADATA_HOST = "127.0.0.1:9";
process.env.METADATA_SERVER_DETECTION = "none";

const NETWORK = "kubernetes-the-hard-way";
const SEED_TABLE = [
  ["NAME", "NETWORK", "DEST_RANGE", "NEXT_HOP", "PRIORITY"],
  ["kubernetes-route-10-200-0-0-24", NETWORK, "10.200.0.0/24", "10.240.0.20", "1000"],
  ["kubernetes-route-10-200-1-0-24", NETWORK, "10.200.1.0/24", "10.240.0.21", "1000"],
  ["kubernetes-route-10-200-2-0-24", NETWORK, "10.200.2.0/24", "10.240.0.22", "1000"],
];

/** The seed's whole expected `gcloud compute routes list` output, split as gcloudTable() splits it. */
const SEED_LISTING = `NAME                            NETWORK                  DEST_RANGE     NEXT_HOP                  PRIORITY
default-route-236a40a8bc992b5b  kubernetes-the-hard-way  0.0.0.0/0      default-internet-gateway  1000
default-route-df77b1e818a56b30  kubernetes-the-hard-way  10.240.0.0/24                            1000
kubernetes-route-10-200-0-0-24  kubernetes-the-hard-way  10.200.0.0/24  10.240.0.20               1000
kubernetes-route-10-200-1-0-24  kubernetes-the-hard-way  10.200.1.0/24  10.240.0.21               1000
kubernetes-route-10-200-2-0-24  kubernetes-the-hard-way  10.200.2.0/24  10.240.0.22               1000`
  .split("\n")
  .map((line) => line.trim().split(/\s{2,}/));

let server: GceServer;
let cli: Gcloud;
const dir = mkdtempSync(join(tmpdir(), "podroutes-gcp-"));
const tokenFile = join(dir, "token");
writeFileSync(tokenFile, "test-token\n");

before(async () => {
  server = await startGceServer();
  cli = gcloud(server);
});
after(async () => {
  cli?.dispose();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  server.reset();
  // The network's own routes, as in the seed's listing (the subnet route shows no next hop there).
  server.addRoute({ name: "default-route-236a40a8bc992b5b", network: NETWORK, destRange: "0.0.0.0/0", nextHopGateway: `${server.endpoint}projects/${server.project}/global/gateways/default-internet-gateway` });
  server.addRoute({ name: "default-route-df77b1e818a56b30", network: NETWORK, destRange: "10.240.0.0/24" });
});

function nodes(count: number, edit: (node: RawNode, i: number) => RawNode = (n) => n): RawNode[] {
  return Array.from({ length: count }, (_, i) => edit({ name: `worker-${i}`, internalIPs: [`10.240.${Math.floor(i / 200)}.${20 + (i % 200)}`], podCIDRs: [`10.200.${i}.0/24`] }, i));
}

function inventory(raw: RawNode[]): Inventory {
  return validateInventory({ nodes: raw, source: "test", cluster: "kubernetes", clusterCIDR: "10.200.0.0/16" });
}

async function target(settings: Partial<GcpTargetSettings> = {}, compute?: ComputeApi): Promise<{ target: GcpTarget; compute: ComputeApi }> {
  compute ??= await createCompute({ project: server.project, endpoint: server.endpoint, accessTokenFile: tokenFile, minBackoffMs: 20, maxBackoffMs: 200, requestTimeoutMs: 400, retries: 12 });
  const t = new GcpTarget(compute, { cluster: "kubernetes", network: NETWORK, nextHop: "ip", priority: 1000, maxInFlight: 16, clusterCIDR: "10.200.0.0/16", ...settings });
  return { target: t, compute };
}

/** gcloud's table, split on runs of spaces (column widths depend on the longest value). */
async function gcloudTable(): Promise<string[][]> {
  const listed = await cli.run(["compute", "routes", "list", "--filter", `network: ${NETWORK}`]);
  assert.equal(listed.code, 0, listed.stderr);
  return listed.stdout.trim().split("\n").map((line) => line.trim().split(/\s{2,}/));
}

function podRows(table: string[][]): string[][] {
  return table.filter((row) => row[0] === "NAME" || row[0]!.startsWith("kubernetes-route-"));
}

async function converge(t: GcpTarget, inv: Inventory) {
  const planned = await plan(t, inv, { parallel: 4 });
  const report = await apply(t, planned, inv, { parallel: 4 });
  return { planned, report };
}

describe("gcp target against the local Compute Engine server", () => {
  it("runs the seed's gcloud loop and prints the seed's table; podroutes reports those routes as conflicts and leaves them", async () => {
    for (const i of [0, 1, 2]) {
      const created = await cli.run(["compute", "routes", "create", `kubernetes-route-10-200-${i}-0-24`, "--network", NETWORK, "--next-hop-address", `10.240.0.2${i}`, "--destination-range", `10.200.${i}.0/24`]);
      assert.equal(created.code, 0, created.stderr);
    }
    const table = await gcloudTable();
    assert.deepEqual(podRows(table), SEED_TABLE);
    assert.deepEqual(table.find((row) => row[0] === "default-route-df77b1e818a56b30"), ["default-route-df77b1e818a56b30", NETWORK, "10.240.0.0/24", "1000"]);

    const { target: t } = await target();
    const inv = inventory(nodes(3));
    const { planned, report } = await converge(t, inv);
    assert.equal(planned.summary.conflicts, 3);
    assert.equal(planned.summary.create + planned.summary.delete + planned.summary.replace, 0);
    assert.equal(report.counts.deleted, 0);
    // A plan to remove everything podroutes owns touches none of them either.
    const removal = await plan(t, inv, { parallel: 4, deleteAll: true });
    assert.equal(removal.summary.delete, 0);
    assert.deepEqual(podRows(await gcloudTable()), SEED_TABLE);
  });

  it("creates the seed's routes that gcloud lists as in the seed, then changes nothing; gcloud deletes them (batch)", async () => {
    const { target: t } = await target();
    const inv = inventory(nodes(3));
    const { report } = await converge(t, inv);
    assert.equal(report.ok, true);
    assert.equal(report.counts.created, 3);
    assert.deepEqual(podRows(await gcloudTable()), SEED_TABLE);
    for (const route of server.routes.values()) if (route.name.startsWith("kubernetes-route-")) assert.match(route.description ?? "", new RegExp(ownershipMarker("kubernetes")));
    const again = await plan(t, inv, { parallel: 4 });
    assert.equal(again.summary.unchanged, 3);
    assert.equal(again.summary.create + again.summary.replace + again.summary.delete, 0);
    const rows = (await readTable(t, inv, NETWORK)).map((r) => t.listing.row({ id: NETWORK, scope: "shared" }, r));
    assert.deepEqual([t.listing.columns, ...rows].map((row) => row.filter((cell) => cell !== "")), SEED_LISTING, "podroutes lists the network like the seed's gcloud output");
    const deleted = await cli.run(["compute", "routes", "delete", "kubernetes-route-10-200-0-0-24", "kubernetes-route-10-200-1-0-24", "--quiet"]);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.ok(server.stats.batches >= 1, "gcloud deletes several routes through the batch endpoint");
    const healed = await converge(t, inv);
    assert.equal(healed.report.counts.created, 2);
  });

  it("replaces a changed next hop make-before-break, deletes a removed node's route, and never deletes a gcloud route", async () => {
    const { target: t } = await target();
    await converge(t, inventory(nodes(3)));
    const foreign = await cli.run(["compute", "routes", "create", "hand-made", "--network", NETWORK, "--next-hop-address", "10.240.0.99", "--destination-range", "10.200.99.0/24"]);
    assert.equal(foreign.code, 0, foreign.stderr);
    const moved = inventory(nodes(2, (n, i) => (i === 1 ? { ...n, internalIPs: ["10.240.0.31"] } : n)));
    const { planned, report } = await converge(t, moved);
    assert.equal(planned.summary.replace, 1);
    assert.equal(planned.summary.delete, 1);
    assert.equal(report.ok, true, JSON.stringify(report.tables));
    const routes = [...server.routes.values()];
    const to1 = routes.filter((r) => r.destRange === "10.200.1.0/24");
    assert.equal(to1.length, 1);
    assert.equal(to1[0]!.nextHopIp, "10.240.0.31");
    assert.equal(routes.filter((r) => r.destRange === "10.200.2.0/24").length, 0);
    assert.ok(server.routes.has("hand-made"));
    const table = await gcloudTable();
    assert.ok(table.some((row) => row[0] === "hand-made"));
    assert.equal((await plan(t, moved, { parallel: 4 })).summary.replace, 0);
  });

  it("converges with 20% of calls failing (429, 503, timeouts): no duplicate, no missing route; a second apply changes nothing", async () => {
    const { target: t, compute } = await target();
    const inv = inventory(nodes(40));
    server.setRandom(seededRandom(42));
    server.faultRate = 0.2;
    server.timeoutHoldMs = 600;
    server.latencyMs = 20;
    const { report } = await converge(t, inv);
    assert.equal(report.ok, true, JSON.stringify(report.tables.flatMap((x) => x.results.filter((r) => !r.ok))));
    assert.ok(server.stats.faults["429"] > 0 && server.stats.faults["503"] > 0 && server.stats.faults.timeout > 0, JSON.stringify(server.stats.faults));
    assert.ok(compute.calls.retries > 0);
    server.faultRate = 0;
    const ours = [...server.routes.values()].filter((r) => r.name.startsWith("kubernetes-route-"));
    assert.equal(ours.length, 40);
    assert.equal(new Set(ours.map((r) => r.destRange)).size, 40);
    const again = await converge(t, inv);
    assert.equal(again.planned.summary.unchanged, 40);
    assert.equal(again.report.counts.created + again.report.counts.replaced + again.report.counts.deleted, 0);
  });

  it("refuses a plan over the ROUTES quota before any call, suggesting host routes", async () => {
    server.routesQuota = 10;
    const { target: t } = await target();
    const planned = await plan(t, inventory(nodes(12)), { parallel: 4 });
    assert.equal(planned.review.refusals.length, 1);
    assert.match(planned.review.refusals[0]!, /ROUTES quota is 10.*--target ssh/s);
    assert.equal(server.stats.inserts, 0);
    server.routesQuota = 250;
  });

  it("--next-hop instance, canIpForward review and verify, and --nodes gcp from instance metadata", async () => {
    server.addInstance({ name: "worker-0", zone: "us-west1-c", networkIP: "10.240.0.20", network: NETWORK, canIpForward: true, podCidr: "10.200.0.0/24", tags: ["worker"] });
    server.addInstance({ name: "worker-1", zone: "us-west1-c", networkIP: "10.240.0.21", network: NETWORK, canIpForward: false, podCidr: "10.200.1.0/24", tags: ["worker"] });
    server.addInstance({ name: "controller-0", zone: "us-west1-c", networkIP: "10.240.0.10", network: NETWORK, canIpForward: true, tags: ["controller"] });
    const { target: t, compute } = await target({ nextHop: "instance" });
    const raw = await readGcpNodes(compute, { labels: [], tags: ["worker"] });
    assert.deepEqual(raw.nodes.map((n) => [n.name, n.internalIPs, n.podCIDRs]), [
      ["worker-0", ["10.240.0.20"], ["10.200.0.0/24"]],
      ["worker-1", ["10.240.0.21"], ["10.200.1.0/24"]],
    ]);
    const byPrefix = await readGcpNodes(compute, { namePrefix: "controller-", labels: [], tags: [] });
    assert.deepEqual(byPrefix.nodes.map((n) => n.name), ["controller-0"]);
    const inv = inventory(raw.nodes);
    const { planned, report } = await converge(t, inv);
    assert.ok(planned.review.warnings.some((w) => w.includes("worker-1") && w.includes("canIpForward")));
    assert.equal(report.ok, true, JSON.stringify(report.tables));
    assert.match(server.routes.get("kubernetes-route-10-200-1-0-24")!.nextHopInstance!, /zones\/us-west1-c\/instances\/worker-1$/);
    assert.equal((await plan(t, inv, { parallel: 4 })).summary.unchanged, 2);
    const checks = await verifyTarget(t, inv, { progress: () => {} });
    assert.deepEqual(checks.map((c) => [c.table, c.ok]), [["worker-0", true], ["worker-1", false]]);
  });

  it("waits out an operation longer than any request: each wait is held up to the server's limit or returns early, and the loop has a deadline, not a retry count", async () => {
    // Scaled 1/1000 from the real API and podroutes' defaults: a request times out after 60 ms (60 s), a
    // wait after 150 ms (150 s), the server holds a wait up to 120 ms (about 2 minutes) and sometimes
    // answers RUNNING at once, the route operations take 1.5 s (25 minutes), the deadline is 3.6 s (1 h).
    server.latencyMs = 1500;
    server.waitHoldMs = 120;
    server.waitEarlyReturnRate = 0.2;
    server.setRandom(seededRandom(7));
    const compute = await createCompute({
      project: server.project,
      endpoint: server.endpoint,
      accessTokenFile: tokenFile,
      requestTimeoutMs: 60,
      waitTimeoutMs: 150,
      operationTimeoutMs: 3600,
      retries: 8,
      minBackoffMs: 0.5,
      maxBackoffMs: 32,
    });
    const { target: t } = await target({}, compute);
    const { report } = await converge(t, inventory(nodes(3)));
    assert.equal(report.ok, true, JSON.stringify(report.tables.flatMap((x) => x.results.filter((r) => !r.ok))));
    assert.ok(server.stats.earlyWaits > 0, "some waits came back early");
    assert.equal([...server.routes.values()].filter((r) => r.name.startsWith("kubernetes-route-")).length, 3);
  });

  it("confirms operations pending together together: 100 inserts in flight cost a few waits and operation lists, not a wait each", async () => {
    server.latencyMs = 100;
    const { target: t, compute } = await target({ maxInFlight: 100, initialInFlight: 100 });
    const { report } = await converge(t, inventory(nodes(100)));
    assert.equal(report.ok, true, JSON.stringify(report.tables.flatMap((x) => x.results.filter((r) => !r.ok))));
    assert.equal([...server.routes.keys()].filter((name) => name.startsWith("kubernetes-route-")).length, 100);
    const confirmations = server.requestLog.filter((r) => r.path.endsWith("/wait") || (r.method === "GET" && r.path.endsWith("/global/operations")));
    assert.ok(confirmations.length <= 10, `${confirmations.length} calls confirmed 100 operations`);
    assert.ok(compute.calls.requests <= 100 * 1.05 + 3, `${compute.calls.requests} Compute calls for 100 routes`);
  });

  for (const mode of ["refuse", "ignore"] as const) {
    it(`an API that ${mode === "refuse" ? "refuses the operations filter (400)" : "ignores the operations filter (lists every operation)"}: each operation is waited for on its own, and every write still lands`, async () => {
      server.latencyMs = 50;
      server.operationsFilter = mode;
      const { target: t } = await target({ maxInFlight: 20, initialInFlight: 20 });
      const lists = () => server.requestLog.filter((r) => r.method === "GET" && r.path.endsWith("/global/operations")).length;
      const first = await converge(t, inventory(nodes(10)));
      const listsBefore = lists();
      const { report } = await converge(t, inventory(nodes(70))); // 60 more, 20 at a time: 3 rounds
      for (const r of [first.report, report]) assert.equal(r.ok, true, JSON.stringify(r.tables.flatMap((x) => x.results.filter((c) => !c.ok))));
      // Refused: the first answer says so. Ignored: the first answer holding an operation of another wave (or one not DONE) does.
      if (mode === "refuse") assert.equal(lists(), 1, "asked once, then never again");
      else assert.ok(lists() - listsBefore <= 1, `${lists() - listsBefore} lists once the answer showed the filter ignored`);
      assert.equal([...server.routes.keys()].filter((name) => name.startsWith("kubernetes-route-")).length, 70);
    });
  }

  it("an endpoint without the operations list (404) and without the batch path: the list is asked once, the operations are waited on together, within the in-flight limit", async () => {
    server.latencyMs = 200;
    server.operationsFilter = "missing";
    server.routesQuota = 1000;
    server.refuseBatches = true;
    const { target: t } = await target({ maxInFlight: 50, initialInFlight: 50 });
    const { report } = await converge(t, inventory(nodes(250)));
    assert.equal(report.ok, true, JSON.stringify(report.tables.flatMap((x) => x.results.filter((c) => !c.ok))));
    assert.equal([...server.routes.keys()].filter((name) => name.startsWith("kubernetes-route-")).length, 250);
    const lists = server.requestLog.filter((r) => r.method === "GET" && r.path.endsWith("/global/operations")).length;
    assert.equal(lists, 1, "the 404 is remembered: asked once, never again");
    assert.ok(server.stats.peakWaits > 1, `operations waited on one at a time (peak ${server.stats.peakWaits})`);
    assert.ok(server.stats.peakWaits <= 50, `${server.stats.peakWaits} waits at once, past the in-flight limit of 50`);
  });

  // The server does the insert, then its answer never arrives: held past the client's 400 ms limit (a
  // timeout), or the connection closed well before it (a failed connection). Both are retried.
  for (const lost of [
    { how: "answer was lost (the client's time limit)", holdMs: 600 },
    { how: "connection was cut before the answer (the server closed it)", holdMs: 30 },
  ]) {
    it(`a write whose ${lost.how} is retried with the same requestId: the first operation comes back, no 409, inserted once`, async () => {
      server.latencyMs = 20;
      server.faultKinds = ["timeout"];
      server.timeoutHoldMs = lost.holdMs;
      server.faultRate = 1;
      const { compute } = await target();
      const inserted = compute.insertRoute({ name: "kubernetes-route-10-200-0-0-24", network: compute.networkUrl(NETWORK), destRange: "10.200.0.0/24", nextHopIp: "10.240.0.20", priority: 1000, description: ownershipMarker("kubernetes") });
      while (!server.requestLog.some((r) => r.method === "POST")) await new Promise((resolve) => setTimeout(resolve, 5));
      server.faultRate = 0;
      await inserted;
      const posts = server.requestLog.filter((r) => r.method === "POST" && r.path.endsWith("/global/routes"));
      assert.deepEqual(posts.map((r) => r.status), [0, 200], "the lost answer, then the first operation again");
      assert.equal(server.stats.inserts, 1, "carried out once");
      assert.equal(compute.calls.retries, 1);
      assert.ok(server.routes.has("kubernetes-route-10-200-0-0-24"));
    });
  }

  describe("writes in batch requests", () => {
    /** `count` routes of the cluster for the Compute client alone, named and placed as podroutes names them. */
    const routeBodies = (compute: ComputeApi, count: number) =>
      Array.from({ length: count }, (_, i) => ({
        name: `kubernetes-route-10-200-${i}-0-24`,
        network: compute.networkUrl(NETWORK),
        destRange: `10.200.${i}.0/24`,
        nextHopIp: `10.240.0.${20 + i}`,
        priority: 1000,
        description: ownershipMarker("kubernetes"),
      }));
    const routeWrites = () => server.requestLog.filter((r) => r.method === "POST" && r.path.endsWith("/global/routes"));
    const batchRequests = () => server.requestLog.filter((r) => !r.inBatch && r.path === "/batch/compute/v1");
    const ourRoutes = () => [...server.routes.values()].filter((r) => r.name.startsWith("kubernetes-route-"));
    beforeEach(() => (server.routesQuota = 250)); // reset() leaves the quota as a test set it

    it("a 300-route converge goes out in a few batch requests, each route inserted once, each call counted", async () => {
      server.latencyMs = 50;
      server.routesQuota = 1000;
      const { target: t, compute } = await target({ maxInFlight: 200, initialInFlight: 200, clusterCIDR: "10.192.0.0/10" });
      const raw = nodes(300, (n, i) => ({ ...n, podCIDRs: [`10.${200 + (i >> 8)}.${i & 255}.0/24`] }));
      const inv = validateInventory({ nodes: raw, source: "test", cluster: "kubernetes", clusterCIDR: "10.192.0.0/10" });
      const { report } = await converge(t, inv);
      assert.equal(report.ok, true, JSON.stringify(report.tables.flatMap((x) => x.results.filter((r) => !r.ok)).slice(0, 2)));
      assert.equal(ourRoutes().length, 300);
      assert.equal(server.stats.inserts, 300, "each route inserted once");
      const parts = routeWrites().filter((r) => r.inBatch);
      assert.ok(server.stats.batches >= 3 && server.stats.batches <= 10, `${server.stats.batches} batch requests`);
      assert.ok(parts.length >= 290, `${parts.length} of 300 inserts went in batches`);
      assert.equal(routeWrites().length, 300, "no insert sent twice");
      // Every inner call counts (the project's quota); the HTTP requests are far fewer.
      assert.equal(compute.calls.requests, server.requestLog.filter((r) => r.inBatch || r.path !== "/batch/compute/v1").length);
      assert.ok(compute.calls.httpRequests < compute.calls.requests / 5, `${compute.calls.httpRequests} HTTP requests for ${compute.calls.requests} calls`);
      server.routesQuota = 250;
    });

    it("each write gets its own part's answer: a name taken (409) and the ROUTES quota (403) fail only their own route", async () => {
      const { compute } = await target();
      const bodies = routeBodies(compute, 10);
      server.addRoute({ name: bodies[3]!.name, network: NETWORK, destRange: "10.201.0.0/24", nextHopIp: "10.240.0.99" });
      server.routesQuota = server.routes.size + 8; // room for 8 of the 9 inserts that can succeed
      const settled = await Promise.allSettled(bodies.map((body) => compute.insertRoute(body)));
      assert.equal(server.stats.batches, 1, "the ten inserts went as one batch request");
      const failures = settled.flatMap((s, i) => (s.status === "rejected" ? [[i, s.reason]] : [])) as [number, unknown][];
      assert.equal(failures.length, 2, JSON.stringify(failures));
      const conflict = failures.find(([i]) => i === 3)?.[1];
      assert.ok(conflict instanceof ComputeError && conflict.status === 409 && conflict.reason === "alreadyExists", String(conflict));
      const quota = failures.find(([i]) => i !== 3)?.[1];
      assert.ok(quota instanceof ComputeError && quota.status === 403 && quota.reason === "quotaExceeded", String(quota));
      assert.equal(ourRoutes().filter((r) => r.description === ownershipMarker("kubernetes")).length, 8);
      assert.equal(compute.calls.retries, 0, "neither error is retried");
    });

    it("a 409 in a batch fails only that node's change in apply, naming the route; the others are created", async () => {
      const { target: t } = await target({ maxInFlight: 16, initialInFlight: 16 });
      server.addRoute({ name: "kubernetes-route-10-200-2-0-24", network: NETWORK, destRange: "10.201.2.0/24", nextHopIp: "10.240.0.99" });
      const { report } = await converge(t, inventory(nodes(6)));
      const failed = report.tables.flatMap((x) => x.results.filter((r) => !r.ok));
      assert.deepEqual(failed.map((r) => (r.change.action === "delete" ? r.change.current.name : r.change.route.node)), ["worker-2"]);
      assert.match(failed[0]!.error ?? "", /a different route named kubernetes-route-10-200-2-0-24 already exists/);
      assert.equal(report.counts.created, 5);
      assert.ok(server.stats.batches >= 1);
    });

    for (const fault of [
      { what: "a part's 429 is retried alone", when: (r: GceRequest) => r.inBatch === true && r.method === "POST", kind: "429" as const, resent: 1, replays: 0 },
      { what: "a whole batch's 503 is retried whole", when: (r: GceRequest) => !r.inBatch && r.path === "/batch/compute/v1", kind: "503" as const, resent: 0, replays: 0 },
      { what: "a batch whose connection was cut after the server did its work is retried whole, its requestIds replayed", when: (r: GceRequest) => !r.inBatch && r.path === "/batch/compute/v1", kind: "timeout" as const, resent: 10, replays: 10 },
    ]) {
      it(`${fault.what}: each route inserted exactly once, no 409`, async () => {
        server.latencyMs = 20;
        server.timeoutHoldMs = 30; // the server closes the connection well before the client's time limit
        server.injectFault(fault.when, fault.kind);
        const { compute } = await target();
        await Promise.all(routeBodies(compute, 10).map((body) => compute.insertRoute(body)));
        assert.equal(ourRoutes().length, 10);
        assert.equal(server.stats.inserts, 10, "each insert carried out once");
        const writes = routeWrites();
        assert.equal(writes.length, 10 + fault.resent, JSON.stringify(writes.map((w) => w.status)));
        assert.ok(!writes.some((w) => w.status === 409), "no 409");
        assert.equal(writes.filter((w) => w.replayed).length, fault.replays, "a write sent again after its answer was lost gets the first operation back");
        const faulted = server.requestLog.filter((r) => r.fault === fault.kind);
        assert.equal(faulted.length, 1);
        // A batch failing whole sends every one of its calls again (each counts); a part's failure only its own.
        assert.equal(compute.calls.retries, fault.kind === "429" ? 1 : 10);
        if (fault.kind !== "429") assert.equal(batchRequests().length, 2, "the batch, then the same batch again");
      });
    }

    it("with --compute-batch 1 (batching off), each write is its own request", async () => {
      const compute = await createCompute({ project: server.project, endpoint: server.endpoint, accessTokenFile: tokenFile, batchCalls: 1 });
      await Promise.all(routeBodies(compute, 10).map((body) => compute.insertRoute(body)));
      assert.equal(server.stats.batches, 0);
      assert.equal(routeWrites().filter((r) => !r.inBatch).length, 10);
      assert.equal(compute.calls.httpRequests, compute.calls.requests);
    });

    it("an endpoint that refuses batch requests (404) gets each write on its own, from then on", async () => {
      server.refuseBatches = true;
      const { compute } = await target();
      await Promise.all(routeBodies(compute, 10).slice(0, 5).map((body) => compute.insertRoute(body)));
      await Promise.all(routeBodies(compute, 10).slice(5).map((body) => compute.insertRoute(body)));
      assert.equal(ourRoutes().length, 10);
      assert.equal(batchRequests().length, 1, "asked once");
      assert.equal(routeWrites().filter((r) => !r.inBatch).length, 10);
      assert.equal(server.stats.inserts, 10);
    });
  });

  it("re-calls a wait that came back early only after a pause, not at once", async () => {
    // A server that answers every wait at once (the API allows it) for an operation of 1 s. The pause
    // before each re-call doubles from 0.5 ms to at most 32 ms (randomized upwards only), so in 1 s there
    // can be at most about 7 short pauses and 1000 / 32 long ones: fewer than 50 waits. Re-calling at
    // once would make hundreds.
    server.latencyMs = 1000;
    server.waitEarlyReturnRate = 1;
    const compute = await createCompute({ project: server.project, endpoint: server.endpoint, accessTokenFile: tokenFile, minBackoffMs: 0.5, maxBackoffMs: 32, operationTimeoutMs: 10_000 });
    const { target: t } = await target({}, compute);
    const { report } = await converge(t, inventory(nodes(1)));
    assert.equal(report.ok, true, JSON.stringify(report.tables));
    assert.ok(server.stats.waits < 50, `${server.stats.waits} waits for one operation of 1 s`);
    assert.equal(server.stats.earlyWaits, server.stats.waits - 1, "every wait but the last, which found it DONE, came back early");
  });

  it("retries an insert into a network that is not ready yet (400 resourceNotReady) until it is: the seed's order, network then routes", async () => {
    server.addNetwork(NETWORK, { readyInMs: 800 });
    const compute = await createCompute({ project: server.project, endpoint: server.endpoint, accessTokenFile: tokenFile, minBackoffMs: 20, maxBackoffMs: 200, retries: 3 });
    const { target: t } = await target({}, compute);
    const { report } = await converge(t, inventory(nodes(3)));
    assert.equal(report.ok, true, JSON.stringify(report.tables.flatMap((x) => x.results.filter((r) => !r.ok))));
    assert.ok(server.stats.notReadyRefusals >= 3, JSON.stringify(server.stats));
    assert.equal(report.counts.created, 3);
  });

  it("waits for room under the project's concurrent operations quota (403 CONCURRENT_OPERATIONS_QUOTA_EXCEEDED) however long the queue", async () => {
    // 24 inserts, 16 sent at once, 2 operations of 200 ms allowed at a time: the last ones wait about 2.4 s,
    // far longer than 3 retries with backoff of 20-200 ms last.
    server.throttleAbove = 2;
    server.latencyMs = 200;
    const compute = await createCompute({ project: server.project, endpoint: server.endpoint, accessTokenFile: tokenFile, minBackoffMs: 20, maxBackoffMs: 200, retries: 3 });
    const { target: t } = await target({ maxInFlight: 16 }, compute);
    const { report } = await converge(t, inventory(nodes(24)));
    assert.equal(report.ok, true, JSON.stringify(report.tables.flatMap((x) => x.results.filter((r) => !r.ok)).slice(0, 2)));
    assert.ok(server.stats.throttled > 0);
    assert.equal([...server.routes.values()].filter((r) => r.name.startsWith("kubernetes-route-")).length, 24);
  });

  it("multi-NIC instances and overlapping networks: next hops, node IPs and canIpForward come from the interface on the target network", async () => {
    // worker-0's nic0 is on a management network, its nic1 on the cluster's; another network reuses
    // 10.240.0.21, worker-1's address, for an unrelated instance listed after worker-1.
    server.addInstance({ name: "worker-0", zone: "us-west1-c", nics: [{ network: "mgmt", networkIP: "192.168.0.20" }, { network: NETWORK, networkIP: "10.240.0.20" }], canIpForward: true, podCidr: "10.200.0.0/24", tags: ["worker"] });
    server.addInstance({ name: "worker-1", zone: "us-west1-c", networkIP: "10.240.0.21", network: NETWORK, canIpForward: true, podCidr: "10.200.1.0/24", tags: ["worker"] });
    server.addInstance({ name: "lookalike", zone: "us-west1-b", networkIP: "10.240.0.21", network: "other", canIpForward: false, tags: ["worker"] });
    const { target: t, compute } = await target({ nextHop: "instance" });
    const raw = await readGcpNodes(compute, { labels: [], tags: ["worker"], network: NETWORK });
    assert.deepEqual(raw.nodes.map((n) => [n.name, n.internalIPs]), [
      ["worker-0", ["10.240.0.20"]],
      ["worker-1", ["10.240.0.21"]],
    ], "the node IP is the interface on --network's; an instance with none there is no node of it");
    const inv = inventory(raw.nodes);
    const { planned, report } = await converge(t, inv);
    assert.deepEqual(planned.review.warnings, []);
    assert.equal(report.ok, true, JSON.stringify(report.tables));
    assert.match(server.routes.get("kubernetes-route-10-200-0-0-24")!.nextHopInstance!, /instances\/worker-0$/);
    assert.match(server.routes.get("kubernetes-route-10-200-1-0-24")!.nextHopInstance!, /instances\/worker-1$/);
    const again = await plan(t, inv, { parallel: 4 });
    assert.deepEqual(again.summary, { create: 0, replace: 0, delete: 0, unchanged: 2, conflicts: 0 }, "no endless replace of worker-0's route");
    const checks = await verifyTarget(t, inv, { progress: () => {} });
    assert.deepEqual(checks.map((c) => [c.table, c.ok]), [["worker-0", true], ["worker-1", true]]);
  });

  it("--nodes gcp keeps an instance in REPAIRING (it keeps its IP and pods) and leaves stopping and stopped ones out", async () => {
    for (const [i, status] of ["RUNNING", "REPAIRING", "STAGING", "STOPPING", "TERMINATED", "SUSPENDED"].entries()) {
      server.addInstance({ name: `worker-${i}`, zone: "us-west1-c", networkIP: `10.240.0.2${i}`, network: NETWORK, status, podCidr: `10.200.${i}.0/24`, tags: ["worker"] });
    }
    const { compute } = await target();
    const raw = await readGcpNodes(compute, { labels: [], tags: ["worker"] });
    assert.deepEqual(raw.nodes.map((n) => n.name), ["worker-0", "worker-1", "worker-2"]);
  });

  describe("through the CLI", () => {
    const nodesFile = join(dir, "nodes.txt");
    writeFileSync(nodesFile, "10.240.0.20 10.200.0.0/24 worker-0\n10.240.0.21 10.200.1.0/24 worker-1\n10.240.0.22 10.200.2.0/24 worker-2\n");
    const env = () => ({
      PATH: process.env.PATH,
      GCE_METADATA_HOST: "127.0.0.1:9",
      METADATA_SERVER_DETECTION: "none",
      CLOUDSDK_CORE_PROJECT: server.project,
      CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: server.endpoint,
      CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: tokenFile,
    });
    const args = ["--nodes", nodesFile, "--target", "gcp", "--network", NETWORK, "--cluster-cidr", "10.200.0.0/16"];

    it("apply then list prints the seed's table; gcloud lists the same; a second plan has no changes", async () => {
      const applied = await runCli(["apply", "--yes", ...args], { env: env() });
      assert.equal(applied.code, 0, applied.stderr + applied.stdout);
      const listed = await runCli(["list", ...args], { env: env() });
      assert.equal(listed.code, 0, listed.stderr);
      // podroutes prints the seed's whole table, default routes included (gcloud itself shows the gateway
      // as a URL when the endpoint is overridden, so only its pod rows are compared).
      assert.deepEqual(listed.stdout.trim().split("\n").map((l) => l.trim().split(/\s{2,}/)), SEED_LISTING);
      assert.deepEqual(podRows(await gcloudTable()), SEED_TABLE);
      const again = await runCli(["plan", "--detailed-exitcode", ...args], { env: env() });
      assert.equal(again.code, 0, again.stdout + again.stderr);
    });

    it("refuses apply over the ROUTES quota before any write", async () => {
      server.routesQuota = 3; // the two default routes use 2
      const refused = await runCli(["apply", "--yes", ...args], { env: env() });
      assert.notEqual(refused.code, 0);
      assert.match(refused.stdout + refused.stderr, /ROUTES quota/);
      assert.equal(server.stats.inserts, 0);
      server.routesQuota = 250;
    });

    it("verify fails naming the instance whose canIpForward is off", async () => {
      server.addInstance({ name: "worker-0", zone: "us-west1-c", networkIP: "10.240.0.20", network: NETWORK, canIpForward: true });
      server.addInstance({ name: "worker-1", zone: "us-west1-c", networkIP: "10.240.0.21", network: NETWORK, canIpForward: false });
      server.addInstance({ name: "worker-2", zone: "us-west1-c", networkIP: "10.240.0.22", network: NETWORK, canIpForward: true });
      assert.equal((await runCli(["apply", "--yes", ...args], { env: env() })).code, 0);
      const verified = await runCli(["verify", ...args], { env: env() });
      assert.equal(verified.code, 1, verified.stdout + verified.stderr);
      assert.match(verified.stdout + verified.stderr, /worker-1 \(10\.240\.0\.21\) has canIpForward off/);
    });

    /** A nodes file of `count` nodes, and apply with default flags (only the required ones). */
    async function applyMany(count: number) {
      const file = join(dir, `nodes-${count}.txt`);
      writeFileSync(file, nodes(count).map((n) => `${n.internalIPs[0]} ${n.podCIDRs[0]} ${n.name}`).join("\n"));
      const applied = await runCli(["apply", "--yes", "--nodes", file, "--target", "gcp", "--network", NETWORK], { env: env() });
      assert.equal(applied.code, 0, applied.stdout + applied.stderr);
      assert.equal([...server.routes.keys()].filter((name) => name.startsWith("kubernetes-route-")).length, count);
    }

    it("with default flags, operations in flight grow past the former fixed 10 while the API accepts them", async () => {
      server.latencyMs = 50;
      await applyMany(100);
      assert.equal(server.stats.throttled, 0);
      assert.ok(server.stats.peakRunning > 10, `at most ${server.stats.peakRunning} operations ran at once`);
    });

    it("against a server that throttles above 20 operations at once, default flags converge with at most 10% of writes throttled", async () => {
      server.latencyMs = 100;
      server.throttleAbove = 20;
      server.routesQuota = 1000;
      await applyMany(250);
      const writes = server.stats.inserts + server.stats.throttled;
      assert.ok(server.stats.throttled <= writes * 0.1, `${server.stats.throttled} of ${writes} writes throttled`);
      assert.ok(server.stats.peakRunning <= 20);
      server.routesQuota = 250;
    });
  });
});

// The shared behaviour every target shows, against the local Compute Engine server.
let conformanceRoutes = 0;
runConformance({
  name: "gcp (Compute Engine routes, local API server)",
  async setup() {
    server.reset();
    const { target: t } = await target();
    return {
      target: t,
      inventory: inventory(nodes(3)),
      spareNextHop: "10.240.0.99",
      // A route someone made with gcloud: no podroutes marker.
      addForeignRoute: async (_table, destination, nextHop) =>
        void server.addRoute({ name: `hand-made-${conformanceRoutes++}`, network: NETWORK, destRange: destination, nextHopIp: nextHop }),
      hasRoute: async (_table, destination) => [...server.routes.values()].some((r) => r.destRange === destination),
      teardown: async () => server.reset(),
    };
  },
});
