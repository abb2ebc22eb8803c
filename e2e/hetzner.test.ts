/**
 * `--target hetzner` and `--nodes hetzner` end to end against the Hetzner Cloud API test server (which
 * e2e/hetzner-server.test.ts checks with the real hcloud CLI), cross-checked with that CLI here too: a
 * route podroutes writes is, in `hcloud network describe -o json`, exactly the route `hcloud network
 * add-route` writes, and routes the CLI added outside podroutes' remit survive. The shared conformance
 * suite, the CLI as a user runs it (-o json, exit codes), the 100-route limit, stale routes of deleted
 * servers, two clusters on one network, and answers lost mid-write. A test token, 127.0.0.1 only.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";
import { apply, plan, verifyTarget } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import type { Inventory } from "../src/model.js";
import type { ResolvedOptions } from "../src/options.js";
import { podCidrLabelValue } from "../src/sources/hetzner.js";
import { hetznerTarget } from "../src/targets/hetzner/factory.js";
import type { Target } from "../src/targets/target.js";
import { jsonOf, runCli } from "../testkit/cli.js";
import { runConformance } from "../testkit/conformance.js";
import { hcloud, type Hcloud } from "../testkit/hcloud.js";
import { startHetznerServer, type HetznerNetwork, type HetznerServerApi, type HetznerServerOptions } from "../testkit/hetzner-server.js";

const CLUSTER_CIDR = "10.244.0.0/16";
const NODES = [0, 1, 2].map((i) => ({ name: `node-${i}`, ip: `10.0.0.${i + 2}`, podCIDR: `10.244.${i}.0/24` }));
const SPARE_IP = "10.0.0.99";
const options = { parallel: 4 };

interface World {
  server: HetznerServerApi;
  network: HetznerNetwork;
}

/** A network 10.0.0.0/16 (subnet 10.0.0.0/24), the three nodes' servers labelled as the cluster's with their pod CIDRs, and a spare server that is no node. */
async function world(serverOptions: HetznerServerOptions = {}, cluster = "kubernetes"): Promise<World> {
  const server = await startHetznerServer({ actionDelayMs: 5, ...serverOptions });
  const network = server.addNetwork({ name: "k8s", ipRange: "10.0.0.0/16", subnets: ["10.0.0.0/24"] });
  for (const node of NODES) {
    server.addServer({ name: node.name, labels: { "podroutes.io/cluster": cluster, "podroutes.io/pod-cidr": podCidrLabelValue(node.podCIDR) }, privateNet: [{ network: network.id, ip: node.ip }] });
  }
  server.addServer({ name: "spare", labels: { role: "db" }, privateNet: [{ network: network.id, ip: SPARE_IP }] });
  return { server, network };
}

function seedInventory(nodes = NODES): Inventory {
  return validateInventory({ source: "seed", nodes: nodes.map((n) => ({ name: n.name, internalIPs: [n.ip], podCIDRs: [n.podCIDR] })) }, { clusterCIDR: CLUSTER_CIDR });
}

function resolved(server: HetznerServerApi, extra: Record<string, unknown> = {}): ResolvedOptions {
  return {
    cluster: "kubernetes",
    clusterCIDR: CLUSTER_CIDR,
    parallel: 4,
    env: { HCLOUD_TOKEN: server.token, HCLOUD_ENDPOINT: server.endpoint },
    warn: () => {},
    interactive: false,
    network: "k8s",
    pollInterval: "10ms",
    ...extra,
  };
}

/** `DEST via GATEWAY` of the network's routes, as the server holds them, sorted. */
const routesOf = (network: HetznerNetwork) => network.routes.map((r) => `${r.destination} via ${r.gateway}`).sort();
const writes = (server: HetznerServerApi) => server.requests.filter((r) => r.method === "POST");

runConformance({
  name: "hetzner (API test server)",
  async setup() {
    const { server, network } = await world();
    const target = await hetznerTarget.create(resolved(server));
    return {
      target,
      inventory: seedInventory(),
      spareNextHop: SPARE_IP,
      // Straight into the server's state: a route someone else wrote, podroutes' client not involved.
      addForeignRoute: async (_table, destination, nextHop) => void network.routes.push({ destination, gateway: nextHop }),
      hasRoute: async (_table, destination) => network.routes.some((r) => r.destination === destination),
      teardown: () => server.stop(),
    };
  },
});

describe("hetzner target against the API test server", () => {
  let w: World;
  let target: Target | undefined;
  afterEach(async () => {
    await target?.close?.();
    target = undefined;
    await w?.server.stop();
  });

  it("apply writes one action at a time, each polled to success, and a second apply writes nothing", async () => {
    w = await world({ actionDelayMs: 20 });
    target = await hetznerTarget.create(resolved(w.server));
    const inventory = seedInventory();
    const first = await plan(target, inventory, options);
    assert.deepEqual(first.summary, { create: 3, replace: 0, delete: 0, unchanged: 0, conflicts: 0 });
    const report = await apply(target, first, inventory, options);
    assert.ok(report.ok, JSON.stringify(report.tables));
    assert.deepEqual(routesOf(w.network), NODES.map((n) => `${n.podCIDR} via ${n.ip}`));
    // Serial: every write came after the previous action ended, so the API never had to refuse one as busy.
    assert.deepEqual(writes(w.server).map((r) => r.status), [201, 201, 201]);
    assert.equal(w.server.requests.filter((r) => r.error === "conflict" || r.error === "locked").length, 0);
    assert.ok(w.server.requests.some((r) => r.path.startsWith("/v1/actions/")), "the actions were polled");
    assert.deepEqual((await verifyTarget(target, inventory, { progress: () => {} })).filter((c) => !c.ok), []);

    const before = writes(w.server).length;
    const second = await plan(target, inventory, options);
    assert.deepEqual(second.summary, { create: 0, replace: 0, delete: 0, unchanged: 3, conflicts: 0 });
    assert.ok((await apply(target, second, inventory, options)).ok);
    assert.equal(writes(w.server).length, before, "a second apply makes no write call");
  });

  it("a changed next hop is a delete then an add (the API has no replace); a departed node's route is deleted", async () => {
    w = await world();
    target = await hetznerTarget.create(resolved(w.server));
    const inventory = seedInventory();
    await apply(target, await plan(target, inventory, options), inventory, options);
    const moved = seedInventory([{ ...NODES[0]!, ip: SPARE_IP }, NODES[1]!]);
    const planned = await plan(target, moved, options);
    assert.deepEqual(planned.summary, { create: 0, replace: 1, delete: 1, unchanged: 1, conflicts: 0 });
    const mark = writes(w.server).length;
    const report = await apply(target, planned, moved, options);
    assert.ok(report.ok, JSON.stringify(report.tables));
    assert.deepEqual(routesOf(w.network), ["10.244.0.0/24 via 10.0.0.99", "10.244.1.0/24 via 10.0.0.3"]);
    assert.deepEqual(
      writes(w.server).slice(mark).map((r) => `${r.path.split("/").at(-1)} ${(r.body as { destination: string }).destination} ${(r.body as { gateway: string }).gateway}`),
      ["delete_route 10.244.2.0/24 10.0.0.4", "delete_route 10.244.0.0/24 10.0.0.2", "add_route 10.244.0.0/24 10.0.0.99"],
      "deletes first (room under the route limit), the replace as delete then add",
    );
  });

  it("a stale route of a deleted server is podroutes' inside the cluster CIDR: verify names it, plan deletes it, one outside is left", async () => {
    w = await world();
    w.network.routes.push({ destination: "10.244.7.0/24", gateway: "10.0.0.77" }, { destination: "172.20.0.0/16", gateway: "10.0.0.77" });
    target = await hetznerTarget.create(resolved(w.server));
    const inventory = seedInventory();
    const checks = await verifyTarget(target, inventory, { progress: () => {} });
    assert.ok(checks.some((c) => !c.ok && /stale routes .*10\.244\.7\.0\/24 via 10\.0\.0\.77/.test(c.message)), JSON.stringify(checks));
    const planned = await plan(target, inventory, options);
    assert.deepEqual(planned.summary, { create: 3, replace: 0, delete: 1, unchanged: 0, conflicts: 0 });
    assert.ok((await apply(target, planned, inventory, options)).ok);
    assert.deepEqual(routesOf(w.network), [...NODES.map((n) => `${n.podCIDR} via ${n.ip}`), "172.20.0.0/16 via 10.0.0.77"]);
  });

  it("a network busy with another writer's action (locked, conflict) is waited out; the route is written once", async () => {
    w = await world();
    w.server.injectError({ code: "locked", count: 2, when: (c) => c.method === "POST" });
    w.server.injectError({ code: "conflict", count: 1, when: (c) => c.method === "POST" });
    target = await hetznerTarget.create(resolved(w.server));
    const inventory = seedInventory();
    const report = await apply(target, await plan(target, inventory, options), inventory, options);
    assert.ok(report.ok, JSON.stringify(report.tables));
    assert.deepEqual(routesOf(w.network), NODES.map((n) => `${n.podCIDR} via ${n.ip}`));
    assert.deepEqual(writes(w.server).map((r) => r.error ?? r.status), ["locked", "locked", "conflict", 201, 201, 201]);
  });

  it("a small request budget (the RateLimit-* headers) is honoured: apply paces itself and finishes", async () => {
    w = await world({ rateLimit: { limit: 3, refillPerSecond: 40 } });
    target = await hetznerTarget.create(resolved(w.server));
    const inventory = seedInventory();
    const report = await apply(target, await plan(target, inventory, options), inventory, options);
    assert.ok(report.ok, JSON.stringify(report.tables));
    assert.deepEqual(routesOf(w.network), NODES.map((n) => `${n.podCIDR} via ${n.ip}`));
    const refused = w.server.requests.filter((r) => r.error === "rate_limit_exceeded").length;
    assert.ok(refused <= 2, `paced by the headers, not by refusals: ${refused} of ${w.server.requests.length} calls refused`);
    assert.deepEqual(writes(w.server).filter((r) => r.status === 201).length, 3, "each route written once");
  });

  it("a write whose answer was lost is settled: read, sent once more, and written exactly once whether or not the first landed", async () => {
    w = await world({ actionDelayMs: 50 });
    target = await hetznerTarget.create(resolved(w.server));
    const inventory = seedInventory();
    // Lost after the work: the action runs, the resent add waits it out (busy), then is refused as overlapping.
    w.server.dropConnection({ when: (c) => c.method === "POST" && (c.path.endsWith("/add_route")), afterWork: true });
    const landed = await apply(target, await plan(target, inventory, options), inventory, options);
    assert.ok(landed.ok, JSON.stringify(landed.tables));
    assert.deepEqual(routesOf(w.network), NODES.map((n) => `${n.podCIDR} via ${n.ip}`));
    const first = writes(w.server).filter((r) => (r.body as { destination: string }).destination === NODES[0]!.podCIDR).map((r) => r.dropped ?? r.error ?? r.status);
    assert.equal(first[0], "after");
    assert.equal(first.at(-1), "invalid_input", `the resend is refused as a duplicate: ${first}`);

    // Lost before the work: the resend writes it; and a delete lost after its work is found done.
    w.network.routes.length = 0;
    w.server.dropConnection({ when: (c) => c.method === "POST" });
    const lost = await apply(target, await plan(target, inventory, options), inventory, options);
    assert.ok(lost.ok, JSON.stringify(lost.tables));
    assert.equal(w.network.routes.length, 3);
    w.server.dropConnection({ when: (c) => c.method === "POST", afterWork: true });
    const removed = await apply(target, await plan(target, inventory, { ...options, deleteAll: true }), inventory, options);
    assert.ok(removed.ok, JSON.stringify(removed.tables));
    assert.deepEqual(w.network.routes, []);

    // Lost twice: reported in the client's words, the others written, and a re-run finishes.
    w.server.dropConnection({ when: (c) => c.method === "POST", count: 2 });
    const failed = await apply(target, await plan(target, inventory, options), inventory, options);
    assert.equal(failed.ok, false);
    const errors = failed.tables.flatMap((t) => t.results.filter((r) => !r.ok).map((r) => r.error));
    assert.equal(errors.length, 1);
    assert.match(errors[0]!, /add_route: the connection failed/);
    assert.equal(w.network.routes.length, 2, "the other two were written");
    const rerun = await apply(target, await plan(target, inventory, options), inventory, options);
    assert.ok(rerun.ok);
    assert.equal(rerun.counts.created, 1);
  });

  it("plan warns of what the API will refuse (a pod CIDR over another route, a node no server is); apply reports it in the API's words", async () => {
    w = await world();
    w.network.routes.push({ destination: "10.244.2.0/23", gateway: SPARE_IP });
    target = await hetznerTarget.create(resolved(w.server));
    const inventory = seedInventory([...NODES, { name: "node-9", ip: "10.0.0.200", podCIDR: "10.244.9.0/24" }]);
    const planned = await plan(target, inventory, options);
    const warnings = planned.review.warnings.join("\n");
    assert.match(warnings, /node-2's pod CIDR 10\.244\.2\.0\/24 overlaps the route to 10\.244\.2\.0\/23 via 10\.0\.0\.99/);
    assert.match(warnings, /node node-9: no server on network k8s holds 10\.0\.0\.200/);
    const report = await apply(target, planned, inventory, options);
    const failed = Object.fromEntries(report.tables.flatMap((t) => t.results.filter((r) => !r.ok).map((r) => [r.change.action === "create" ? r.change.route.node : "?", r.error])));
    assert.match(failed["node-2"]!, /overlaps with the destination of another route \(invalid_input\)/);
    assert.equal(failed["node-9"], undefined, "an IP no server holds is the API's to take: it does, and the route carries nothing");
  });

  it("a dual-stack cluster: plan warns that the IPv6 pod CIDRs will not be written, and their writes say why without a call", async () => {
    w = await world();
    const dual = "10.244.0.0/16,fd00:10:244::/56";
    target = await hetznerTarget.create(resolved(w.server, { clusterCIDR: dual }));
    const inventory = validateInventory(
      { source: "seed", nodes: NODES.map((n, i) => ({ name: n.name, internalIPs: [n.ip, `fd00::${i + 2}`], podCIDRs: [n.podCIDR, `fd00:10:244:${i}::/64`] })) },
      { clusterCIDR: dual },
    );
    const planned = await plan(target, inventory, options);
    assert.match(planned.review.warnings.join("\n"), /node-0's pod CIDR fd00:10:244::\/64 is IPv6: Hetzner Cloud networks route IPv4 only/);
    const report = await apply(target, planned, inventory, options);
    const failed = report.tables.flatMap((t) => t.results.filter((r) => !r.ok).map((r) => r.error));
    assert.equal(failed.length, 3);
    assert.match(failed[0]!, /IPv4 only: fd00:10:244::\/64 not written/);
    assert.deepEqual(routesOf(w.network), NODES.map((n) => `${n.podCIDR} via ${n.ip}`));
    assert.equal(writes(w.server).length, 3, "only the IPv4 routes were sent");
  });

  it("an action that ends in error is that change's failure in the API's words; the others are written", async () => {
    w = await world();
    w.server.failNextAction({ command: "add_route", code: "action_failed", message: "route could not be installed" });
    target = await hetznerTarget.create(resolved(w.server));
    const inventory = seedInventory();
    const report = await apply(target, await plan(target, inventory, options), inventory, options);
    assert.equal(report.ok, false);
    const failed = report.tables.flatMap((t) => t.results.filter((r) => !r.ok));
    assert.deepEqual(failed.map((r) => r.change.action === "create" && r.change.route.destination), ["10.244.0.0/24"]);
    assert.match(failed[0]!.error!, /route could not be installed \(action_failed\)/);
    assert.deepEqual(routesOf(w.network), ["10.244.1.0/24 via 10.0.0.3", "10.244.2.0/24 via 10.0.0.4"]);
  });
});

describe("hetzner: the 100-route limit", () => {
  let w: World;
  let target: Target | undefined;
  afterEach(async () => {
    await target?.close?.();
    await w?.server.stop();
  });
  /** `count` routes that are not the cluster's, outside its CIDR, via the spare server. */
  const fill = (count: number) => {
    for (let i = 0; i < count; i++) w.network.routes.push({ destination: `172.16.${i}.0/24`, gateway: SPARE_IP });
  };

  it("a plan past the limit is refused before any write, naming the network and the limit; the creates that fit are named apart", async () => {
    w = await world();
    fill(99);
    target = await hetznerTarget.create(resolved(w.server));
    const inventory = seedInventory();
    const planned = await plan(target, inventory, options);
    assert.equal(planned.review.refusals.length, 1);
    assert.match(planned.review.refusals[0]!, /hetzner k8s: would hold 102 routes \(it holds 99, every route counts\), over Hetzner's limit of 100 routes per network/);
    assert.deepEqual(planned.review.refused?.map((r) => r.change.action === "create" && r.change.route.destination), ["10.244.1.0/24", "10.244.2.0/24"]);
    // The CLI refuses such a plan before apply (tested below); the write path refuses it too, on its own read.
    const report = await apply(target, planned, inventory, options);
    assert.equal(report.counts.created, 0);
    assert.equal(writes(w.server).length, 0, "no write attempted");
  });

  it("stale routes of deleted servers (hcloud-cloud-controller-manager #734) are deleted first and make room: a full network takes the new nodes", async () => {
    w = await world();
    fill(97);
    for (const i of [7, 8, 9]) w.network.routes.push({ destination: `10.244.${i}.0/24`, gateway: `10.0.0.${70 + i}` });
    assert.equal(w.network.routes.length, 100);
    target = await hetznerTarget.create(resolved(w.server));
    const inventory = seedInventory();
    const planned = await plan(target, inventory, options);
    assert.deepEqual(planned.review.refusals, []);
    assert.deepEqual(planned.summary, { create: 3, replace: 0, delete: 3, unchanged: 0, conflicts: 0 });
    const report = await apply(target, planned, inventory, options);
    assert.ok(report.ok, JSON.stringify(report.tables));
    assert.equal(w.network.routes.length, 100);
    assert.deepEqual(writes(w.server).map((r) => r.path.split("/").at(-1)), ["delete_route", "delete_route", "delete_route", "add_route", "add_route", "add_route"]);
    assert.equal(w.server.requests.filter((r) => r.error === "resource_limit_exceeded").length, 0, "the API never had to refuse one");
  });
});

describe("hetzner: two clusters on one network", () => {
  let server: HetznerServerApi;
  afterEach(() => server?.stop());

  it("each writes, lists and deletes only its own routes, stale ones included; neither sees the other's as a conflict", async () => {
    server = await startHetznerServer({ actionDelayMs: 5 });
    const network = server.addNetwork({ name: "shared", ipRange: "10.0.0.0/16", subnets: ["10.0.0.0/24"] });
    const clusters = { a: "10.244.0.0/16", b: "10.245.0.0/16" } as const;
    for (const [name, cidr] of Object.entries(clusters)) {
      for (const i of [0, 1]) {
        const prefix = cidr.split(".").slice(0, 2).join(".");
        server.addServer({ name: `${name}-${i}`, labels: { "podroutes.io/cluster": name, "podroutes.io/pod-cidr": `${prefix}.${i}.0-24` }, privateNet: [{ network: network.id, ip: `10.0.0.${name === "a" ? 10 + i : 20 + i}` }] });
      }
    }
    // Cluster b's node b-9 was deleted and left its route: stale, b's, not a's.
    network.routes.push({ destination: "10.245.9.0/24", gateway: "10.0.0.29" });
    const env = { HCLOUD_TOKEN: server.token, HCLOUD_ENDPOINT: server.endpoint };
    const cli = (cluster: "a" | "b", args: string[]) =>
      runCli([...args, "--target", "hetzner", "--network", "shared", "--cluster", cluster, "--cluster-cidr", clusters[cluster], "--poll-interval", "10ms"], { env });

    for (const cluster of ["a", "b"] as const) {
      const applied = await cli(cluster, ["apply", "--yes"]);
      assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    }
    assert.deepEqual(routesOf(network), ["10.244.0.0/24 via 10.0.0.10", "10.244.1.0/24 via 10.0.0.11", "10.245.0.0/24 via 10.0.0.20", "10.245.1.0/24 via 10.0.0.21"], "b's apply removed its own stale route");
    const planA = jsonOf(await cli("a", ["plan", "-o", "json"]));
    assert.equal(planA.summary.conflicts, 0);
    assert.equal(planA.summary.unchanged, 2);
    const listA = jsonOf<{ destination: string; owned: boolean }[]>(await cli("a", ["list", "-o", "json"]));
    assert.deepEqual(listA.map((r) => `${r.destination} ${r.owned}`), ["10.244.0.0/24 true", "10.244.1.0/24 true"], "b's routes are not a's business at all");

    network.routes.push({ destination: "10.245.9.0/24", gateway: "10.0.0.29" });
    const deleted = await cli("a", ["delete", "--yes"]);
    assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
    assert.deepEqual(routesOf(network), ["10.245.0.0/24 via 10.0.0.20", "10.245.1.0/24 via 10.0.0.21", "10.245.9.0/24 via 10.0.0.29"], "a's delete left every route of b, its stale one too");
  });
});

describe("podroutes CLI with --target hetzner (--nodes hetzner by default), cross-checked by the hcloud CLI", () => {
  let w: World;
  let cli: Hcloud;
  let env: Record<string, string>;
  let dir: string | undefined;
  beforeEach(async () => {
    w = await world();
    cli = hcloud(w.server);
    env = { HCLOUD_TOKEN: w.server.token, HCLOUD_ENDPOINT: w.server.endpoint };
  });
  afterEach(async () => {
    cli?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
    await w?.server.stop();
  });
  const flags = () => ["--target", "hetzner", "--network", "k8s", "--cluster-cidr", CLUSTER_CIDR, "--poll-interval", "10ms"];

  it("bad input is a usage error naming it (exit 3) before any call: no --cluster-cidr, no --network, no HCLOUD_TOKEN", async () => {
    const noCidr = await runCli(["plan", "--target", "hetzner", "--network", "k8s"], { env });
    assert.equal(noCidr.code, 3, noCidr.stderr);
    assert.match(noCidr.stderr, /--cluster-cidr is required by --target hetzner/);
    const noNetwork = await runCli(["plan", "--target", "hetzner", "--cluster-cidr", CLUSTER_CIDR], { env });
    assert.equal(noNetwork.code, 3, noNetwork.stderr);
    assert.match(noNetwork.stderr, /--network is required/);
    const noToken = await runCli(["plan", ...flags()], { env: { HCLOUD_ENDPOINT: w.server.endpoint } });
    assert.equal(noToken.code, 3, noToken.stderr);
    assert.match(noToken.stderr, /HCLOUD_TOKEN/);
    assert.equal(w.server.requests.length, 0, "nothing was asked of the API");
    const help = await runCli(["plan", "--target", "hetzner", "--help"]);
    for (const flag of ["--network", "--hcloud-endpoint", "--hetzner-selector", "--poll-interval", "--pod-cidr-label"]) assert.match(help.stdout, new RegExp(flag), flag);
  });

  it("a network that does not exist is bad input to --nodes hetzner (exit 3) and a failure of the target (exit 1), each naming it", async () => {
    const fromSource = await runCli(["plan", "--target", "hetzner", "--network", "nope", "--cluster-cidr", CLUSTER_CIDR], { env });
    assert.equal(fromSource.code, 3, fromSource.stderr);
    assert.match(fromSource.stderr, /hetzner nodes:\s+no network "nope"/);
    const fromTarget = await runCli(["plan", "--nodes", "-", "--target", "hetzner", "--network", "nope", "--cluster-cidr", CLUSTER_CIDR], { env, stdin: `${NODES[0]!.ip} ${NODES[0]!.podCIDR} node-0\n` });
    assert.equal(fromTarget.code, 1, fromTarget.stderr);
    assert.match(fromTarget.stderr, /hetzner: no network "nope" \(by name\)/);
  });

  it("plan, apply, list, verify, delete with -o json and exit codes; podroutes' route is in hcloud network describe exactly as hcloud network add-route writes it", async () => {
    const added = await cli.run(["network", "add-route", "k8s", "--destination", "192.168.50.0/24", "--gateway", SPARE_IP]);
    assert.equal(added.code, 0, added.stderr);
    const pending = await runCli(["plan", "--detailed-exitcode", "-o", "json", ...flags()], { env });
    assert.equal(pending.code, 2, pending.stderr);
    const planned = jsonOf(pending);
    assert.deepEqual(
      planned.tables.flatMap((t: { changes: { action: string; destination: string; next_hop: string; node: string }[] }) => t.changes.map((c) => `${c.action} ${c.destination} ${c.next_hop} ${c.node}`)),
      NODES.map((n) => `create ${n.podCIDR} ${n.ip} ${n.name}`),
      "the nodes from the servers' labels (--nodes hetzner)",
    );

    const applied = await runCli(["apply", "--yes", "-o", "json", ...flags()], { env });
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    const ours = writes(w.server).filter((r) => r.path.endsWith("/add_route") && (r.body as { destination: string }).destination.startsWith("10.244."));
    assert.equal(ours.length, 3);

    const described = await cli.json<HetznerNetwork>(["network", "describe", "k8s"]);
    assert.deepEqual(described.routes, [{ destination: "192.168.50.0/24", gateway: SPARE_IP }, ...NODES.map((n) => ({ destination: n.podCIDR, gateway: n.ip }))]);

    const listed = jsonOf<{ table: string; destination: string; nextHop?: string; owned: boolean }[]>(await runCli(["list", "-o", "json", ...flags()], { env }));
    assert.deepEqual(listed.map((r) => `${r.table} ${r.destination} ${r.nextHop} ${r.owned}`), NODES.map((n) => `k8s ${n.podCIDR} ${n.ip} true`));
    const table = await runCli(["list", ...flags()], { env });
    assert.match(table.stdout, /^NETWORK\s+DESTINATION\s+GATEWAY\s+SERVER/);
    assert.match(table.stdout, /k8s\s+10\.244\.0\.0\/24\s+10\.0\.0\.2\s+node-0/);
    const verified = await runCli(["verify", "-o", "json", ...flags()], { env });
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    assert.equal((await runCli(["plan", "--detailed-exitcode", ...flags()], { env })).code, 0);

    // The same route written by hcloud itself: removed with hcloud, added back with hcloud. hcloud sends the
    // body podroutes sent, and describe shows the very same route podroutes' write left.
    const [first] = NODES;
    const removed = await cli.run(["network", "remove-route", "k8s", "--destination", first!.podCIDR, "--gateway", first!.ip]);
    assert.equal(removed.code, 0, removed.stderr);
    const readded = await cli.run(["network", "add-route", "k8s", "--destination", first!.podCIDR, "--gateway", first!.ip]);
    assert.equal(readded.code, 0, readded.stderr);
    const hcloudWrite = writes(w.server).at(-1)!;
    assert.deepEqual(hcloudWrite.body, ours[0]!.body, "hcloud's add_route body is podroutes'");
    const again = await cli.json<HetznerNetwork>(["network", "describe", "k8s"]);
    assert.deepEqual(again.routes.find((r) => r.destination === first!.podCIDR), described.routes.find((r) => r.destination === first!.podCIDR));
    const replanned = jsonOf(await runCli(["plan", "-o", "json", ...flags()], { env }));
    assert.deepEqual(replanned.summary, { ...replanned.summary, create: 0, replace: 0, delete: 0, unchanged: 3 }, "hcloud's route is the one podroutes wants");

    const deleted = await runCli(["delete", "--yes", ...flags()], { env });
    assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
    assert.deepEqual((await cli.json<HetznerNetwork>(["network", "describe", "k8s"])).routes, [{ destination: "192.168.50.0/24", gateway: SPARE_IP }], "hcloud's route outside the cluster CIDR survived");
  });

  it("--hetzner-selector and --pod-cidr-label choose the servers and the label their pod CIDR is read from", async () => {
    w.server.addServer({ name: "gpu-0", labels: { role: "gpu", pods: "10.244.50.0-24" }, privateNet: [{ network: w.network.id, ip: "10.0.0.50" }] });
    const result = await runCli(["plan", "-o", "json", "--hetzner-selector", "role=gpu", "--pod-cidr-label", "pods", ...flags()], { env });
    assert.equal(result.code, 0, result.stderr);
    const changes = jsonOf(result).tables.flatMap((t: { changes: { action: string; destination: string; next_hop: string; node: string }[] }) => t.changes);
    assert.deepEqual(changes.map((c: { action: string; destination: string; next_hop: string; node: string }) => `${c.action} ${c.destination} ${c.next_hop} ${c.node}`), ["create 10.244.50.0/24 10.0.0.50 gpu-0"]);
    assert.ok(w.server.requests.some((r) => r.path === "/v1/servers" && r.query.get("label_selector") === "role=gpu"), "the selector is the API's, as hcloud server list -l sends it");
  });

  it("apply past the route limit exits 1 and changes nothing; verify fails (exit 1) on a stale route", async () => {
    for (let i = 0; i < 99; i++) w.network.routes.push({ destination: `172.16.${i}.0/24`, gateway: SPARE_IP });
    const refused = await runCli(["apply", "--yes", ...flags()], { env });
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    assert.match(refused.stdout + refused.stderr, /over Hetzner's limit of 100 routes per network/);
    assert.equal(writes(w.server).length, 0);
    w.network.routes.length = 0;
    w.network.routes.push({ destination: "10.244.9.0/24", gateway: "10.0.0.90" });
    const verified = await runCli(["verify", ...flags()], { env });
    assert.equal(verified.code, 1, verified.stdout + verified.stderr);
    assert.match(verified.stdout + verified.stderr, /stale routes .*10\.244\.9\.0\/24 via 10\.0\.0\.90/);
  });

  it("a nodes file instead of the servers' labels; list and delete without --nodes attribute routes by the cluster's label", async () => {
    dir = mkdtempSync(join(tmpdir(), "podroutes-hetzner-"));
    const nodesFile = join(dir, "nodes.txt");
    writeFileSync(nodesFile, `${SPARE_IP} 10.244.5.0/24 spare\n${NODES[0]!.ip} ${NODES[0]!.podCIDR} node-0\n`);
    const applied = await runCli(["apply", "--yes", "--nodes", nodesFile, ...flags()], { env });
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    assert.deepEqual(routesOf(w.network), ["10.244.0.0/24 via 10.0.0.2", "10.244.5.0/24 via 10.0.0.99"]);
    // Without --nodes: node-0 is labelled the cluster's; spare is not, so its route cannot be attributed and stays.
    const listed = jsonOf<{ destination: string; owned: boolean; unattributed?: string }[]>(await runCli(["list", "-o", "json", ...flags()], { env }));
    assert.deepEqual(listed.map((r) => `${r.destination} ${r.owned} ${r.unattributed !== undefined}`), ["10.244.0.0/24 true false", "10.244.5.0/24 false true"]);
    const deleted = await runCli(["delete", "--yes", ...flags()], { env });
    assert.equal(deleted.code, 1, deleted.stdout + deleted.stderr);
    assert.match(deleted.stdout + deleted.stderr, /10\.244\.5\.0\/24 via 10\.0\.0\.99/);
    assert.deepEqual(routesOf(w.network), ["10.244.5.0/24 via 10.0.0.99"]);
    const named = await runCli(["delete", "--yes", "--nodes", nodesFile, ...flags()], { env });
    assert.equal(named.code, 0, named.stdout + named.stderr);
    assert.deepEqual(routesOf(w.network), []);
  });
});
