/**
 * `--target openstack` and `--nodes openstack` end to end against the OpenStack test server, with and
 * without the `extraroute-atomic` extension, cross-checked with the real openstack CLI: a route podroutes
 * wrote reads back in `openstack router show -f json` exactly as one the CLI wrote itself. Another
 * writer's change between podroutes' read and its whole-list write is kept, as are the allowed address
 * pairs podroutes did not add. Test credentials, 127.0.0.1 only.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { apply, plan, verifyTarget } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import type { Inventory } from "../src/model.js";
import type { ResolvedOptions } from "../src/options.js";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cloudConfigFrom, createOpenStackApi, OpenStackApiError } from "../src/targets/openstack/client.js";
import { openstackTarget } from "../src/targets/openstack/factory.js";
import { jsonOf, runCli } from "../testkit/cli.js";
import { readTable, runConformance } from "../testkit/conformance.js";
import { openstackCli } from "../testkit/openstack-cli.js";
import { startOpenStackServer, type OpenStackServerApi, type OpenStackServerOptions, type OsPort, type OsRouter } from "../testkit/openstack-server.js";

const CLUSTER_CIDR = "10.200.0.0/16";
const NODES = [
  { name: "worker-0", ip: "10.240.0.20", podCIDR: "10.200.0.0/24" },
  { name: "worker-1", ip: "10.240.0.21", podCIDR: "10.200.1.0/24" },
  { name: "worker-2", ip: "10.240.0.22", podCIDR: "10.200.2.0/24" },
];
const SPARE_IP = "10.240.0.99";
const options = { parallel: 4 };

interface Cloud {
  server: OpenStackServerApi;
  router: OsRouter;
  ports: Map<string, OsPort>;
}

/** A network, a router on it, the three nodes (cluster metadata, pod-cidr) and a spare server that is no node. */
async function cloud(given: OpenStackServerOptions = {}): Promise<Cloud> {
  const server = await startOpenStackServer(given);
  const { subnet } = server.addNetwork({ name: "k8s", cidr: "10.240.0.0/24" });
  const router = server.addRouter({ name: "k8s-router", subnets: [subnet] });
  const ports = new Map<string, OsPort>();
  for (const node of NODES) {
    ports.set(node.name, server.addServer({ name: node.name, subnet, ip: node.ip, metadata: { "kubernetes.io/cluster/kubernetes": "owned", "pod-cidr": node.podCIDR } }).port);
  }
  ports.set("spare", server.addServer({ name: "spare", subnet, ip: SPARE_IP }).port);
  return { server, router, ports };
}

function seedInventory(): Inventory {
  return validateInventory({ source: "seed", nodes: NODES.map((n) => ({ name: n.name, internalIPs: [n.ip], podCIDRs: [n.podCIDR] })) }, { clusterCIDR: CLUSTER_CIDR });
}

function resolved(server: OpenStackServerApi, extra: Record<string, unknown> = {}): ResolvedOptions {
  return { cluster: "kubernetes", clusterCIDR: CLUSTER_CIDR, parallel: 4, env: server.env(), warn: () => {}, interactive: false, router: "k8s-router", ...extra };
}

const sorted = <T extends { destination: string }>(routes: T[]) => [...routes].sort((a, b) => a.destination.localeCompare(b.destination));

for (const atomic of [true, false]) {
  runConformance({
    name: `openstack (${atomic ? "add/remove_extraroutes" : "whole-list PUT"})`,
    async setup() {
      const { server, router } = await cloud({ atomic });
      return {
        target: await openstackTarget.create(resolved(server)),
        inventory: seedInventory(),
        spareNextHop: SPARE_IP,
        addForeignRoute: async (_table, destination, nexthop) => server.setRoutes(router, [...router.routes, { destination, nexthop }]),
        hasRoute: async (_table, destination) => router.routes.some((r) => r.destination === destination),
        teardown: () => server.stop(),
      };
    },
  });
}

describe("openstack target against the test server", () => {
  it("atomic: one add_extraroutes for every route, the pod CIDRs added to each node port's pairs (others' kept), verify passes, a second apply writes nothing", async () => {
    const { server, router, ports } = await cloud();
    const worker1 = ports.get("worker-1")!;
    worker1.allowed_address_pairs = [{ ip_address: "10.240.0.250", mac_address: worker1.mac_address }];
    const target = await openstackTarget.create(resolved(server));
    try {
      const inventory = seedInventory();
      const first = await plan(target, inventory, options);
      assert.deepEqual(first.summary, { create: 3, replace: 0, delete: 0, unchanged: 0, conflicts: 0 });
      assert.equal(first.review.actions.length, 3);
      const report = await apply(target, first, inventory, options);
      assert.ok(report.ok, JSON.stringify(report));
      assert.deepEqual(sorted(router.routes), NODES.map((n) => ({ destination: n.podCIDR, nexthop: n.ip })));
      const writes = server.requests.filter((r) => r.method === "PUT");
      assert.equal(writes.filter((r) => r.path.endsWith("/add_extraroutes")).length, 1, "one call for three routes");
      assert.ok(!writes.some((r) => r.path === `/v2.0/routers/${router.id}`), "no whole-list PUT");
      for (const node of NODES) assert.ok(ports.get(node.name)!.allowed_address_pairs.some((p) => p.ip_address === node.podCIDR), node.name);
      assert.deepEqual(worker1.allowed_address_pairs.map((p) => p.ip_address), ["10.240.0.250", "10.200.1.0/24"], "the pair podroutes did not add is kept");
      assert.ok(writes.filter((r) => r.path.startsWith("/v2.0/ports/")).every((r) => /^revision_number=\d+$/.test(String(r.headers["if-match"]))), "port writes carry the revision");
      assert.deepEqual((await verifyTarget(target, inventory, { progress: () => {} })).filter((c) => !c.ok), []);

      const before = server.requests.filter((r) => r.method === "PUT").length;
      const second = await plan(target, inventory, options);
      assert.deepEqual(second.summary, { create: 0, replace: 0, delete: 0, unchanged: 3, conflicts: 0 });
      assert.deepEqual(second.review.actions, []);
      assert.ok((await apply(target, second, inventory, options)).ok);
      assert.equal(server.requests.filter((r) => r.method === "PUT").length, before, "a second apply makes no write");
    } finally {
      await target.close?.();
      await server.stop();
    }
  });

  it("whole list: another writer's route added between podroutes' read and its write is kept (412, re-read, re-written)", async () => {
    const { server, router } = await cloud({ atomic: false });
    const target = await openstackTarget.create(resolved(server));
    try {
      const inventory = seedInventory();
      const planned = await plan(target, inventory, options);
      server.beforeWrite(
        (call) => call.method === "PUT" && call.path === `/v2.0/routers/${router.id}`,
        () => server.setRoutes(router, [...router.routes, { destination: "192.168.7.0/24", nexthop: SPARE_IP }]),
      );
      const report = await apply(target, planned, inventory, options);
      assert.ok(report.ok, JSON.stringify(report));
      assert.deepEqual(sorted(router.routes), sorted([...NODES.map((n) => ({ destination: n.podCIDR, nexthop: n.ip })), { destination: "192.168.7.0/24", nexthop: SPARE_IP }]));
      const puts = server.requests.filter((r) => r.method === "PUT" && r.path === `/v2.0/routers/${router.id}`);
      assert.deepEqual(puts.map((r) => r.status), [412, 200], "the first write was refused by its revision, the second made from a fresh read");
      assert.ok(puts.every((r) => /^revision_number=\d+$/.test(String(r.headers["if-match"]))));
    } finally {
      await target.close?.();
      await server.stop();
    }
  });

  it("--whole-list writes the whole list even where the atomic calls exist", async () => {
    const { server, router } = await cloud();
    const target = await openstackTarget.create(resolved(server, { wholeList: true }));
    try {
      const inventory = seedInventory();
      assert.ok((await apply(target, await plan(target, inventory, options), inventory, options)).ok);
      assert.equal(router.routes.length, 3);
      const writes = server.requests.filter((r) => r.method === "PUT" && r.path.startsWith("/v2.0/routers/")).map((r) => r.path);
      assert.deepEqual(writes, [`/v2.0/routers/${router.id}`]);
    } finally {
      await server.stop();
    }
  });

  it("a pair another writer adds to a node's port between podroutes' read and its write is kept (412 on the port's revision, read again)", async () => {
    const { server, ports } = await cloud();
    const port = ports.get("worker-0")!;
    const target = await openstackTarget.create(resolved(server));
    try {
      const inventory = seedInventory();
      const planned = await plan(target, inventory, options);
      server.beforeWrite(
        (call) => call.method === "PUT" && call.path === `/v2.0/ports/${port.id}`,
        () => {
          port.allowed_address_pairs = [...port.allowed_address_pairs, { ip_address: "10.240.0.251", mac_address: port.mac_address }];
          port.revision_number++;
        },
      );
      assert.ok((await apply(target, planned, inventory, options)).ok);
      assert.deepEqual(port.allowed_address_pairs.map((p) => p.ip_address), ["10.240.0.251", "10.200.0.0/24"]);
      assert.deepEqual(server.requests.filter((r) => r.method === "PUT" && r.path === `/v2.0/ports/${port.id}`).map((r) => r.status), [412, 200]);
    } finally {
      await server.stop();
    }
  });

  it("refuses a plan over the route limit before any write; a replace at the limit removes before it adds", async () => {
    const { server, router } = await cloud({ maxRoutes: 3 });
    try {
      const tight = await openstackTarget.create(resolved(server, { routeLimit: "2" }));
      const refused = await plan(tight, seedInventory(), options);
      assert.match(refused.review.refusals.join("\n"), /would hold 3 routes \(it holds 0\), over the route limit of 2/);
      assert.equal(refused.review.refused?.length, 1);
      const target = await openstackTarget.create(resolved(server, { routeLimit: "3" }));
      const inventory = seedInventory();
      assert.ok((await apply(target, await plan(target, inventory, options), inventory, options)).ok);
      const moved = validateInventory({ source: "seed", nodes: NODES.map((n, i) => ({ name: n.name, internalIPs: [i === 0 ? SPARE_IP : n.ip], podCIDRs: [n.podCIDR] })) }, { clusterCIDR: CLUSTER_CIDR });
      const replaced = await apply(target, await plan(target, moved, options), moved, options);
      assert.ok(replaced.ok, JSON.stringify(replaced));
      assert.deepEqual(router.routes.find((r) => r.destination === "10.200.0.0/24"), { destination: "10.200.0.0/24", nexthop: SPARE_IP });
      assert.equal(router.routes.length, 3);
    } finally {
      await server.stop();
    }
  });

  it("a node whose IP no port holds is left out alone (Neutron would refuse the whole call); Neutron's own refusal is each change's error and writes nothing", async () => {
    const { server, router } = await cloud({ maxRoutes: 2 });
    const target = await openstackTarget.create(resolved(server));
    try {
      const stray = validateInventory(
        { source: "seed", nodes: [...NODES.slice(0, 1), { name: "stray", ip: "10.240.0.77", podCIDR: "10.200.7.0/24" }].map((n) => ({ name: n.name, internalIPs: [n.ip], podCIDRs: [n.podCIDR] })) },
        { clusterCIDR: CLUSTER_CIDR },
      );
      const planned = await plan(target, stray, options);
      assert.match(planned.review.warnings.join("\n"), /node stray: no port on the router's networks holds 10\.240\.0\.77/);
      const report = await apply(target, planned, stray, options);
      const results = report.tables[0]!.results.map((r) => [r.change.action === "delete" ? "" : r.change.route.node, r.ok, r.error ?? ""]);
      assert.deepEqual(results, [["worker-0", true, ""], ["stray", false, "no port on the router's networks holds 10.240.0.77 (node stray): Neutron would refuse the route; not written"]]);
      assert.deepEqual(router.routes, [{ destination: "10.200.0.0/24", nexthop: "10.240.0.20" }]);

      // Neutron's max_routes is 2, the flag's default 30: Neutron refuses the call, and every change says why.
      const inventory = seedInventory();
      const full = await apply(target, await plan(target, inventory, options), inventory, options);
      assert.ok(!full.ok);
      const failed = full.tables[0]!.results.filter((r) => !r.ok);
      assert.equal(failed.length, 2);
      for (const result of failed) assert.match(result.error ?? "", /add_extraroutes: .*The number of routes exceeds the maximum 2\. \(HTTP 400 RoutesExhausted\)/);
      assert.deepEqual(router.routes, [{ destination: "10.200.0.0/24", nexthop: "10.240.0.20" }], "nothing written");
    } finally {
      await server.stop();
    }
  });

  it("a route whose nexthop's port is gone is podroutes' (a deleted node's blackhole): verify names it, delete removes it", async () => {
    const { server, router } = await cloud();
    server.setRoutes(router, [{ destination: "10.200.9.0/24", nexthop: "10.240.0.77" }, { destination: "192.168.1.0/24", nexthop: "10.240.0.78" }]);
    const target = await openstackTarget.create(resolved(server));
    try {
      const inventory = seedInventory();
      const checks = await verifyTarget(target, inventory, { progress: () => {} });
      assert.ok(checks.some((c) => !c.ok && /10\.200\.9\.0\/24 via 10\.240\.0\.77/.test(c.message)), JSON.stringify(checks));
      const removal = await plan(target, inventory, { ...options, deleteAll: true });
      assert.ok((await apply(target, removal, inventory, options)).ok);
      assert.deepEqual(router.routes, [{ destination: "192.168.1.0/24", nexthop: "10.240.0.78" }], "the route outside the cluster CIDR stays");
    } finally {
      await server.stop();
    }
  });

  it("two clusters on one router never touch each other's routes", async () => {
    const { server, router } = await cloud();
    const other = { destination: "10.201.0.0/24", nexthop: SPARE_IP };
    server.setRoutes(router, [other]);
    const target = await openstackTarget.create(resolved(server));
    try {
      const inventory = seedInventory();
      assert.ok((await apply(target, await plan(target, inventory, options), inventory, options)).ok);
      const removal = await plan(target, inventory, { ...options, deleteAll: true });
      assert.ok((await apply(target, removal, inventory, options)).ok);
      assert.deepEqual(router.routes, [other]);
      const observed = await readTable(target, inventory, router.id);
      assert.deepEqual(observed, [], "another cluster's CIDR is not even read as ours");
    } finally {
      await server.stop();
    }
  });
});

describe("podroutes --target openstack as a user runs it, read back by the openstack CLI", () => {
  let c: Cloud;
  let env: Record<string, string>;
  const args = ["--target", "openstack", "--router", "k8s-router", "--cluster-cidr", CLUSTER_CIDR, "-o", "json"];

  before(async () => {
    c = await cloud();
    env = { ...c.server.env(), HOME: "/nonexistent" };
  });
  after(() => c?.server.stop());

  it("plan, apply, list and delete with --nodes openstack (the default); the routes read back in openstack router show exactly as the CLI's own", async () => {
    const planned = await runCli(["plan", "--detailed-exitcode", ...args], { env });
    assert.equal(planned.code, 2, planned.stderr);
    assert.equal(jsonOf(planned).summary.create, 3);
    const applied = await runCli(["apply", "--yes", ...args], { env });
    assert.equal(applied.code, 0, applied.stderr + applied.stdout);
    assert.equal(jsonOf(applied).counts.created, 3);
    const again = await runCli(["plan", "--detailed-exitcode", ...args], { env });
    assert.equal(again.code, 0, again.stderr + again.stdout);
    const listed = jsonOf(await runCli(["list", ...args], { env }));
    assert.deepEqual(JSON.stringify(listed).match(/10\.200\.\d\.0\/24/g)?.sort(), NODES.map((n) => n.podCIDR));

    // The CLI writes a fourth route itself; podroutes' three and the CLI's read back alike.
    const cli = openstackCli(c.server);
    try {
      const added = await cli.run(["router", "add", "route", "--route", "destination=10.200.3.0/24,gateway=10.240.0.99", "k8s-router"]);
      assert.equal(added.code, 0, added.stderr);
      const shown = await cli.json<{ routes: { destination: string; nexthop: string }[] }>(["router", "show", "k8s-router"]);
      const cliOwn = shown.routes.find((r) => r.destination === "10.200.3.0/24")!;
      assert.deepEqual(Object.keys(cliOwn), ["destination", "nexthop"]);
      assert.deepEqual(sorted(shown.routes.filter((r) => r !== cliOwn)), NODES.map((n) => ({ destination: n.podCIDR, nexthop: n.ip })));
      for (const route of shown.routes) assert.deepEqual(Object.keys(route), Object.keys(cliOwn));
    } finally {
      cli.dispose();
    }

    // Without --nodes, the CLI's route through a server with no cluster metadata may be the cluster's: delete
    // removes podroutes' three, leaves it and fails, saying so. With the nodes named, it is plainly not theirs.
    const deleted = await runCli(["delete", "--yes", ...args], { env });
    assert.equal(deleted.code, 1, deleted.stderr + deleted.stdout);
    assert.equal(jsonOf(deleted).counts.deleted, 3);
    const left = await runCli(["delete", "--dry-run", ...args], { env });
    assert.match(left.stdout, /"unattributed": "its nexthop 10\.240\.0\.99 is no server with metadata kubernetes\.io\/cluster\/kubernetes/);
    const named = await runCli(["delete", "--yes", "--nodes", "openstack", ...args], { env });
    assert.equal(named.code, 0, named.stderr + named.stdout);
    assert.deepEqual(c.router.routes, [{ destination: "10.200.3.0/24", nexthop: SPARE_IP }], "the CLI's route through a server that is no node stays");
  });

  it("bad input changes nothing: an unknown router, no credentials, a wrong password", async () => {
    const before = c.server.requests.filter((r) => r.method === "PUT").length;
    const unknown = await runCli(["apply", "--yes", ...args.map((a) => (a === "k8s-router" ? "no-such-router" : a))], { env });
    assert.equal(unknown.code, 1, unknown.stdout);
    assert.match(unknown.stderr, /no router "no-such-router"/);
    const bare = await runCli(["plan", ...args], { env: { HOME: "/nonexistent", OS_AUTH_URL: "", OS_USERNAME: "", OS_PASSWORD: "", OS_PROJECT_NAME: "" } });
    assert.notEqual(bare.code, 0);
    assert.match(bare.stderr, /OS_\* variables lack auth_url \(OS_AUTH_URL\)/);
    const wrong = await runCli(["plan", ...args], { env: { ...env, OS_PASSWORD: "wrong" } });
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /POST \/v3\/auth\/tokens: .*\(HTTP 401 Unauthorized\)/);
    assert.equal(c.server.requests.filter((r) => r.method === "PUT").length, before);
  });
});

describe("podroutes' OpenStack client against the test server", () => {
  it("pages lists by limit and marker, logs in again when the token expired, and reports Neutron's error and a 412", async () => {
    const { server, router, ports } = await cloud({ tokenTtlMs: 200 });
    try {
      const api = createOpenStackApi({ config: cloudConfigFrom({ env: server.env() }), pageSize: 2 });
      const listed = await api.listPorts({ network_id: server.networks[0]!.id });
      assert.equal(listed.length, ports.size + 1, "every node port and the router's interface");
      assert.deepEqual(server.requests.filter((r) => r.path === "/v2.0/ports").map((r) => r.query.get("limit")), ["2", "2", "2"]);
      assert.ok(server.requests.filter((r) => r.path === "/v2.0/ports").slice(1).every((r) => r.query.get("marker")), "later pages by marker");
      // Keystone's token lasts 200 ms here: a call after that logs in first (the client renews a minute early).
      await api.getRouter(router.id);
      assert.ok(api.calls.logins >= 2, `logged in ${api.calls.logins} times`);
      await assert.rejects(api.getRouter("no-such-router"), (e: unknown) => e instanceof OpenStackApiError && e.status === 404 && e.type === "RouterNotFound");
      await assert.rejects(api.setRoutes(router.id, [], router.revision_number - 1), (e: unknown) => e instanceof OpenStackApiError && e.status === 412 && /Constrained to/.test(e.message));
      await assert.rejects(api.addExtraRoutes(router.id, [{ destination: "10.200.0.0/24", nexthop: "10.9.9.9" }]), /the nexthop is not connected with router \(HTTP 400 InvalidRoutes\)/);
    } finally {
      await server.stop();
    }
  });

  it("--os-cloud reads clouds.yaml (OS_CLIENT_CONFIG_FILE) with an application credential", async () => {
    const { server } = await cloud();
    const dir = mkdtempSync(join(tmpdir(), "podroutes-clouds-"));
    try {
      const credential = server.options.applicationCredentials[0]!;
      writeFileSync(
        join(dir, "clouds.yaml"),
        `clouds:\n  test:\n    auth_type: v3applicationcredential\n    region_name: RegionOne\n    auth:\n      auth_url: ${server.authUrl}\n      application_credential_id: ${credential.id}\n      application_credential_secret: ${credential.secret}\n`,
      );
      const env = { HOME: dir, OS_CLIENT_CONFIG_FILE: join(dir, "clouds.yaml") };
      const planned = await runCli(["plan", "--os-cloud", "test", "--target", "openstack", "--router", "k8s-router", "--cluster-cidr", CLUSTER_CIDR, "-o", "json"], { env });
      assert.equal(planned.code, 0, planned.stderr);
      assert.equal(jsonOf(planned).summary.create, 3);
      const login = server.requests.find((r) => r.path === "/v3/auth/tokens");
      assert.deepEqual((login?.body as any)?.auth?.identity?.methods, ["application_credential"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await server.stop();
    }
  });
});
