import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { clusterRanges, type Route } from "../../model.js";
import type { Change, ObservedRoute } from "../target.js";
import type { ArmRoute } from "./arm.js";
import { azureRouteName, createsPastLimit, observeRoute, planTableRoutes } from "./target.js";

const route = (node: string, destination: string, nextHop: string): Route => ({ name: `kubernetes-route-${destination}`, destination, nextHop, node, family: 4 });
const current = (destination: string, hop: string, name = "x"): ObservedRoute => ({ destination, nextHop: hop, nextHopLabel: hop, owned: true, name });
const appliance = (name: string, addressPrefix: string, nextHopIpAddress: string): ArmRoute => ({ name, addressPrefix, nextHopType: "VirtualAppliance", nextHopIpAddress, provisioningState: "Succeeded" });

describe("azure route names", () => {
  it("follow cloud-provider-azure's dual-stack form NODE____CIDR with : . / stripped", () => {
    assert.equal(azureRouteName("worker-0", "10.200.1.0/24"), "worker-0____102001024");
    assert.equal(azureRouteName("worker-0", "fd00:10:200:1::/64"), "worker-0____fd0010200164");
  });
  it("stay within Azure's 80 characters and its character set, unique per node, for long node names", () => {
    const long = `${"n".repeat(70)}.example.internal`;
    const a = azureRouteName(long, "10.200.1.0/24");
    const b = azureRouteName(`${"n".repeat(70)}.example.other`, "10.200.1.0/24");
    assert.ok(a.length <= 80, a);
    assert.match(a, /^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,78}[a-zA-Z0-9_])?$/);
    assert.ok(a.endsWith("____102001024"));
    assert.notEqual(a, b);
  });
});

describe("azure ownership (no tags on routes: cluster CIDR and a cluster node as next hop)", () => {
  const context = { ranges: clusterRanges("10.200.0.0/16"), nodeAddresses: new Set(["10.240.0.20", "10.240.0.21"]), nicAddresses: new Set(["10.240.0.20", "10.240.0.21", "10.240.0.99"]) };
  it("owns a route in the cluster CIDR via a node, whatever its name (the CCM's node-named routes too)", () => {
    const seen = observeRoute(appliance("worker-0", "10.200.0.0/24", "10.240.0.20"), context)!;
    assert.equal(seen.observed.owned, true);
    assert.equal(seen.observed.nextHop, "10.240.0.20");
    assert.equal(seen.observed.name, "worker-0");
  });
  it("does not own another cluster's route (a next hop that is no node of ours), nor one outside the cluster CIDR", () => {
    assert.equal(observeRoute(appliance("other", "10.200.5.0/24", "10.240.0.99"), context)!.observed.owned, false);
    const outside = observeRoute(appliance("fw", "0.0.0.0/0", "10.240.0.20"), context)!;
    assert.equal(outside.observed.owned, false);
    assert.equal(outside.inCluster, false);
    assert.equal(observeRoute({ name: "gw", addressPrefix: "10.200.7.0/24", nextHopType: "VirtualNetworkGateway" }, context)!.observed.owned, false);
  });
  it("owns, as unhealthy, a route in the cluster CIDR to an address no NIC holds (a deleted node's)", () => {
    const seen = observeRoute(appliance("worker-2", "10.200.2.0/24", "10.240.0.22"), context)!;
    assert.equal(seen.observed.owned, true);
    assert.equal(seen.observed.healthy, false);
    assert.equal(seen.observed.nextHop, undefined);
    assert.equal(seen.observed.nextHopLabel, "10.240.0.22");
    // Without the NIC list nothing counts as dangling.
    assert.equal(observeRoute(appliance("worker-2", "10.200.2.0/24", "10.240.0.22"), { ...context, nicAddresses: undefined })!.observed.owned, false);
  });
  it("skips service-tag destinations (no CIDR)", () => {
    assert.equal(observeRoute({ name: "tag", addressPrefix: "AzureCloud", nextHopType: "Internet" }, context), undefined);
  });
});

describe("azure whole-table PUT planner", () => {
  const table = [appliance("fw", "0.0.0.0/0", "10.240.0.4"), appliance("worker-0", "10.200.0.0/24", "10.240.0.20"), appliance("theirs", "10.200.9.0/24", "10.240.0.99")];

  it("adds creates, moves replaced hops in place (the name kept), removes deletes, and keeps every other route exactly", () => {
    const changes: Change[] = [
      { action: "create", route: route("worker-1", "10.200.1.0/24", "10.240.0.21") },
      { action: "replace", route: route("worker-0", "10.200.0.0/24", "10.240.0.30"), current: current("10.200.0.0/24", "10.240.0.20", "worker-0") },
    ];
    const { routes, planned, writes } = planTableRoutes(table, changes);
    assert.equal(writes, 2);
    assert.deepEqual(planned.map((p) => p.error ?? "ok"), ["ok", "ok"]);
    assert.deepEqual(
      routes.map((r) => `${r.name} ${r.addressPrefix} ${r.nextHopType} ${r.nextHopIpAddress}`),
      ["fw 0.0.0.0/0 VirtualAppliance 10.240.0.4", "worker-0 10.200.0.0/24 VirtualAppliance 10.240.0.30", "theirs 10.200.9.0/24 VirtualAppliance 10.240.0.99", "worker-1____102001024 10.200.1.0/24 VirtualAppliance 10.240.0.21"],
    );
    assert.deepEqual(routes[0], table[0], "a foreign route goes back as it was read");
    const removed = planTableRoutes(routes, [{ action: "delete", current: current("10.200.1.0/24", "10.240.0.21") }]);
    assert.deepEqual(removed.routes.map((r) => r.name), ["fw", "worker-0", "theirs"]);
  });

  it("leaves out, with the reason, a change the table no longer fits (re-planned after a 412); a change already made is done without a write", () => {
    const changes: Change[] = [
      { action: "create", route: route("worker-9", "10.200.9.0/24", "10.240.0.29") },
      { action: "create", route: route("worker-0", "10.200.0.0/24", "10.240.0.20") },
      { action: "delete", current: current("10.200.0.0/24", "10.240.0.77") },
      { action: "replace", route: route("worker-3", "10.200.3.0/24", "10.240.0.23"), current: current("10.200.3.0/24", "10.240.0.13") },
      { action: "delete", current: current("10.200.4.0/24", "10.240.0.24") },
    ];
    const { routes, planned, writes } = planTableRoutes(table, changes);
    assert.equal(writes, 0);
    assert.deepEqual(routes, table);
    assert.match(planned[0]!.error!, /a route to 10\.200\.9\.0\/24 via 10\.240\.0\.99 \(theirs\) appeared since the plan/);
    assert.equal(planned[1]!.alreadyDone, true);
    assert.match(planned[2]!.error!, /now points at 10\.240\.0\.20, not 10\.240\.0\.77/);
    assert.match(planned[3]!.error!, /disappeared since the plan/);
    assert.equal(planned[4]!.alreadyDone, true, "a delete of a route that is gone has met its goal");
  });

  it("plans IPv6 routes as IPv4 ones (dual-stack nodes: one route per family, each its own name), next hops compared in canonical form", () => {
    const v6: Route = { name: "x", destination: "fd00:200:1::/64", nextHop: "fd00::21", node: "worker-1", family: 6 };
    const { routes } = planTableRoutes([], [{ action: "create", route: route("worker-1", "10.200.1.0/24", "10.240.0.21") }, { action: "create", route: v6 }]);
    assert.deepEqual(routes.map((r) => `${r.name} ${r.addressPrefix} ${r.nextHopIpAddress}`), ["worker-1____102001024 10.200.1.0/24 10.240.0.21", "worker-1____fd00200164 fd00:200:1::/64 fd00::21"]);
    // A route written with a non-canonical spelling of the same address is the same route.
    const spelled = planTableRoutes([appliance("r", "fd00:200:1::/64", "FD00:0::21")], [{ action: "create", route: v6 }]);
    assert.equal(spelled.planned[0]!.alreadyDone, true);
  });

  it("never gives two routes one name (a foreign route may hold the name podroutes would pick)", () => {
    const squatter = appliance("worker-1____102001024", "10.50.0.0/24", "10.240.0.4");
    const { routes } = planTableRoutes([squatter], [{ action: "create", route: route("worker-1", "10.200.1.0/24", "10.240.0.21") }]);
    assert.deepEqual(routes.map((r) => r.name), ["worker-1____102001024", "worker-1____102001024_2"]);
  });

  it("refuses the creates past the route limit, once the deletes are made", () => {
    const changes: Change[] = [
      { action: "delete", current: current("10.200.0.0/24", "10.240.0.20") },
      { action: "create", route: route("a", "10.200.1.0/24", "10.240.0.21") },
      { action: "create", route: route("b", "10.200.2.0/24", "10.240.0.22") },
    ];
    assert.deepEqual(createsPastLimit("rt", 5, changes, 5).map((r) => r.change.action === "create" && r.change.route.destination), ["10.200.2.0/24"]);
    assert.deepEqual(createsPastLimit("rt", 4, changes, 5), []);
  });
});
