/**
 * The Hetzner target's decisions without the API: which routes of a network are podroutes' (one row per
 * kind of route a network holds), the route limit, and flag checking. Pure parts only; the target against
 * the API test server is e2e/hetzner.test.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UsageError } from "../../errors.js";
import { validateInventory } from "../../inventory.js";
import { clusterRanges } from "../../model.js";
import type { ResolvedOptions } from "../../options.js";
import type { CloudServer, Network } from "./api.js";
import { hetznerTarget } from "./factory.js";
import { createsPastLimit, holdersOf, observeRoute, routeCountAfter, ROUTE_LIMIT } from "./target.js";
import type { Change } from "../target.js";

const NETWORK: Network = {
  id: 7,
  name: "k8s",
  ipRange: "10.0.0.0/8",
  subnets: [
    { type: "cloud", ipRange: "10.0.0.0/24", networkZone: "eu-central", gateway: "10.0.0.1" },
    { type: "vswitch", ipRange: "10.0.1.0/24", networkZone: "eu-central", gateway: "10.0.1.1" },
  ],
  routes: [],
  servers: [1, 2, 3],
  labels: {},
};

function server(id: number, name: string, ip: string, labels: Record<string, string> = {}, aliasIps: string[] = []): CloudServer {
  return { id, name, status: "running", labels, privateNet: [{ network: NETWORK.id, ip, aliasIps }, { network: 99, ip: "172.16.0.5", aliasIps: [] }] };
}

const cluster = server(1, "node-1", "10.0.0.2", { "podroutes.io/cluster": "a" }, ["10.0.0.102"]);
const named = server(2, "node-2", "10.0.0.3");
const stranger = server(3, "db", "10.0.0.9");
const holders = holdersOf(NETWORK.id, [cluster, named, stranger], [cluster]);

function observe(destination: string, gateway: string, nodeAddresses: string[] = ["10.0.0.3"]) {
  return observeRoute(
    { destination, gateway },
    { ranges: clusterRanges("10.244.0.0/16"), nodeAddresses: new Set(nodeAddresses), selector: "podroutes.io/cluster=a", network: NETWORK, holders },
  );
}

describe("hetzner target: which routes are podroutes'", () => {
  const rows: [string, string, string, { owned: boolean; inCluster: boolean; healthy?: false; unattributed?: boolean }, string[]?][] = [
    ["inside the cluster CIDR via an inventory node", "10.244.2.0/24", "10.0.0.3", { owned: true, inCluster: true }],
    ["inside via a server the selector picks", "10.244.1.0/24", "10.0.0.2", { owned: true, inCluster: true }],
    ["inside via an alias IP of a selected server", "10.244.1.0/24", "10.0.0.102", { owned: true, inCluster: true }],
    ["inside via a server that is no cluster node (another cluster's, a hand-made route)", "10.244.9.0/24", "10.0.0.9", { owned: false, inCluster: true }],
    ["inside via an IP no server holds: stale, a deleted node's", "10.244.5.0/24", "10.0.0.50", { owned: true, inCluster: true, healthy: false }],
    ["inside via a vSwitch IP (a dedicated server's): never stale", "10.244.6.0/24", "10.0.1.20", { owned: false, inCluster: true }],
    ["outside the cluster CIDR via a cluster node", "192.168.0.0/24", "10.0.0.3", { owned: false, inCluster: false }],
    ["outside via an IP no server holds", "172.20.0.0/16", "10.0.0.50", { owned: false, inCluster: false }],
    ["wider than the cluster CIDR via a cluster node", "10.0.0.0/8", "10.0.0.3", { owned: false, inCluster: false }],
    ["without an inventory, inside via an unselected server: unattributed", "10.244.9.0/24", "10.0.0.9", { owned: false, inCluster: true, unattributed: true }, []],
    ["without an inventory, inside via a selected server: owned", "10.244.1.0/24", "10.0.0.2", { owned: true, inCluster: true }, []],
  ];
  for (const [name, destination, gateway, want, nodes] of rows) {
    it(name, () => {
      const seen = observe(destination, gateway, nodes)!;
      assert.equal(seen.observed.owned, want.owned);
      assert.equal(seen.inCluster, want.inCluster);
      assert.equal(seen.observed.healthy, want.healthy);
      assert.equal(seen.observed.unattributed !== undefined, want.unattributed ?? false, seen.observed.unattributed);
      assert.equal(seen.observed.nextHop, gateway);
    });
  }

  it("a stale route's gateway held by an inventory node is the node's route, not broken", () => {
    const seen = observe("10.244.5.0/24", "10.0.0.50", ["10.0.0.50"])!;
    assert.equal(seen.observed.owned, true);
    assert.equal(seen.observed.healthy, undefined);
  });

  it("details name the server behind the gateway, and why a route is stale", () => {
    assert.deepEqual(observe("10.244.1.0/24", "10.0.0.2")!.observed.details, { network: "k8s", gateway: "10.0.0.2", server: "node-1", serverId: 1 });
    assert.deepEqual(observe("10.244.5.0/24", "10.0.0.50")!.observed.details, { network: "k8s", gateway: "10.0.0.50", reason: "no server on network k8s holds 10.0.0.50" });
    assert.match(observe("10.244.9.0/24", "10.0.0.9", [])!.observed.unattributed!, /10\.0\.0\.9 \(server db\) is not a server labelled podroutes\.io\/cluster=a.*--nodes/);
  });

  it("holders: only the IPs on this network, alias IPs included; the selected servers by id", () => {
    assert.deepEqual([...holders.byIp.keys()].sort(), ["10.0.0.102", "10.0.0.2", "10.0.0.3", "10.0.0.9"]);
    assert.deepEqual([...holders.clusterServers], [1]);
  });
});

describe("hetzner target: the route limit", () => {
  const inventory = validateInventory(
    { source: "t", nodes: [0, 1, 2].map((i) => ({ name: `n${i}`, internalIPs: [`10.0.0.${i + 2}`], podCIDRs: [`10.244.${i}.0/24`] })) },
    { clusterCIDR: "10.244.0.0/16" },
  );
  const route = (i: number) => ({ name: `r${i}`, destination: `10.244.${i}.0/24`, nextHop: `10.0.0.${i + 2}`, node: `n${i}`, family: 4 as const });
  const create = (i: number): Change => ({ action: "create", route: route(i) });
  const del = (destination: string): Change => ({ action: "delete", current: { destination, owned: true, nextHop: "10.0.0.50" } });

  it("counts creates and deletes; a replace keeps the count", () => {
    assert.equal(routeCountAfter(98, [create(0), create(1), del("10.244.9.0/24"), { action: "replace", route: route(2), current: { destination: "10.244.2.0/24", owned: true } }]), 99);
  });

  it("the creates past the room left, after the deletes, are refused one by one with the network's name", () => {
    assert.deepEqual(createsPastLimit("k8s", ROUTE_LIMIT - 1, [create(0), create(1), create(2)]).map((r) => r.change.action === "create" && r.change.route.destination), ["10.244.1.0/24", "10.244.2.0/24"]);
    assert.deepEqual(createsPastLimit("k8s", ROUTE_LIMIT - 1, [create(0), create(1), del("10.244.9.0/24")]), [], "the delete makes room");
    const [refused] = createsPastLimit("k8s", ROUTE_LIMIT, [create(0)]);
    assert.equal(refused?.limit, "route-limit");
    assert.match(refused!.message, /network k8s is at Hetzner's limit of 100 routes per network: no room for 10\.244\.0\.0\/24/);
    assert.equal(inventory.nodes.length, 3);
  });
});

describe("hetzner target: flags", () => {
  const options = (extra: Record<string, unknown>): ResolvedOptions => ({
    cluster: "kubernetes",
    clusterCIDR: "10.244.0.0/16",
    parallel: 4,
    env: { HCLOUD_TOKEN: "t", HCLOUD_ENDPOINT: "http://127.0.0.1:9/v1" },
    warn: () => {},
    interactive: false,
    network: "k8s",
    ...extra,
  });

  it("needs --network, --cluster-cidr and HCLOUD_TOKEN, each named; a bad --poll-interval or endpoint is a usage error", async () => {
    await assert.rejects(hetznerTarget.create(options({ network: undefined })), (e: unknown) => e instanceof UsageError && /--network is required/.test(e.message));
    await assert.rejects(hetznerTarget.create(options({ clusterCIDR: undefined })), (e: unknown) => e instanceof UsageError && /--cluster-cidr is required by --target hetzner/.test(e.message));
    await assert.rejects(hetznerTarget.create(options({ env: {} })), (e: unknown) => e instanceof UsageError && /HCLOUD_TOKEN/.test(e.message));
    await assert.rejects(hetznerTarget.create(options({ pollInterval: "fast" })), (e: unknown) => e instanceof UsageError && /--poll-interval "fast": must be a duration/.test(e.message));
    await assert.rejects(hetznerTarget.create(options({ hcloudEndpoint: "ftp://x" })), (e: unknown) => e instanceof UsageError && /--hcloud-endpoint "ftp:\/\/x": must be an http\(s\) URL/.test(e.message));
    await assert.rejects(hetznerTarget.create(options({ env: { HCLOUD_TOKEN: "t", HCLOUD_ENDPOINT: "nope" } })), (e: unknown) => e instanceof UsageError && /--hcloud-endpoint "nope"/.test(e.message), "HCLOUD_ENDPOINT is the flag's");
    const target = await hetznerTarget.create(options({}));
    assert.equal(target.name, "hetzner");
    assert.equal(target.locksTables, false);
  });
});
