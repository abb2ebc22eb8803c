/** The OpenStack target's pure parts: the edit a plan asks of a router, the route limit, the address pairs. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Change, ObservedRoute } from "../target.js";
import type { Port } from "./client.js";
import { createsPastLimit, editFor, pairCovers, pairsWith, routesAfter } from "./target.js";

const route = (destination: string, nextHop: string, node = "n") => ({ name: "r", destination, nextHop, node, family: 4 as const });
const current = (destination: string, nextHop: string): ObservedRoute => ({ destination, nextHop, owned: true });
const create = (d: string, h: string): Change => ({ action: "create", route: route(d, h) });
const del = (d: string, h: string): Change => ({ action: "delete", current: current(d, h) });
const replace = (d: string, from: string, to: string): Change => ({ action: "replace", route: route(d, to), current: current(d, from) });

describe("openstack router edits", () => {
  it("adds creates, removes deletes, and a replace adds the new route and removes the old", () => {
    const held = [{ destination: "10.200.1.0/24", nexthop: "10.0.0.11" }, { destination: "10.200.2.0/24", nexthop: "10.0.0.12" }];
    const changes = [create("10.200.3.0/24", "10.0.0.13"), del("10.200.1.0/24", "10.0.0.11"), replace("10.200.2.0/24", "10.0.0.12", "10.0.0.99")];
    const edit = editFor(held, changes);
    assert.deepEqual(edit.add, [{ destination: "10.200.3.0/24", nexthop: "10.0.0.13" }, { destination: "10.200.2.0/24", nexthop: "10.0.0.99" }]);
    assert.deepEqual(edit.remove, [{ destination: "10.200.1.0/24", nexthop: "10.0.0.11" }, { destination: "10.200.2.0/24", nexthop: "10.0.0.12" }]);
    assert.deepEqual(edit.written, changes);
    assert.deepEqual(routesAfter(held, edit), [{ destination: "10.200.3.0/24", nexthop: "10.0.0.13" }, { destination: "10.200.2.0/24", nexthop: "10.0.0.99" }]);
  });

  it("a change the router already shows is done; a route that appeared or vanished since the plan is not written", () => {
    const held = [{ destination: "10.200.1.0/24", nexthop: "10.0.0.11" }, { destination: "10.200.4.0/24", nexthop: "10.0.0.50" }];
    const edit = editFor(held, [
      create("10.200.1.0/24", "10.0.0.11"),
      del("10.200.9.0/24", "10.0.0.19"),
      create("10.200.4.0/24", "10.0.0.14"),
      replace("10.200.5.0/24", "10.0.0.15", "10.0.0.16"),
    ]);
    assert.equal(edit.done.length, 2);
    assert.deepEqual(edit.add, []);
    assert.deepEqual(edit.remove, []);
    assert.match(edit.failed[0]!.error, /a route to 10\.200\.4\.0\/24 via 10\.0\.0\.50 appeared since the plan/);
    assert.match(edit.failed[1]!.error, /disappeared since the plan/);
  });

  it("keeps every route it does not remove, another writer's included, in the router's order", () => {
    const held = [{ destination: "192.168.0.0/24", nexthop: "10.0.0.5" }, { destination: "10.200.1.0/24", nexthop: "10.0.0.11" }];
    assert.deepEqual(routesAfter(held, { add: [{ destination: "10.200.1.0/24", nexthop: "10.0.0.11" }], remove: [] }), held);
  });

  it("refuses the creates past the route limit, counting the deletes' room first", () => {
    const changes = [create("10.200.1.0/24", "a"), create("10.200.2.0/24", "b"), del("10.200.9.0/24", "c"), create("10.200.3.0/24", "d")];
    const refused = createsPastLimit("r1", 29, changes, 30);
    assert.deepEqual(refused.map((r) => (r.change.action === "create" ? r.change.route.destination : "")), ["10.200.3.0/24"]);
    assert.match(refused[0]!.message, /route limit of 30 routes \(Neutron's max_routes, --route-limit\)/);
    assert.deepEqual(createsPastLimit("r1", 0, changes, 30), []);
  });
});

describe("openstack allowed address pairs", () => {
  const port: Port = {
    id: "p1",
    name: "",
    networkId: "n1",
    macAddress: "fa:16:3e:00:00:01",
    fixedIps: [{ subnetId: "s1", ipAddress: "10.0.0.11" }],
    deviceId: "srv",
    deviceOwner: "compute:nova",
    allowedAddressPairs: [{ ip_address: "10.0.0.250", mac_address: "fa:16:3e:00:00:01" }, { ip_address: "10.201.0.0/16", mac_address: "fa:16:3e:00:00:01" }],
    portSecurity: true,
    revision: 3,
  };

  it("a pair covers a pod CIDR when it equals or contains it on the port's MAC; no port security needs none", () => {
    assert.ok(pairCovers(port, "10.201.5.0/24"));
    assert.ok(!pairCovers(port, "10.200.1.0/24"));
    assert.ok(!pairCovers({ ...port, allowedAddressPairs: [{ ip_address: "10.200.0.0/16", mac_address: "fa:16:3e:99:99:99" }] }, "10.200.1.0/24"), "another MAC's pair");
    assert.ok(pairCovers({ ...port, portSecurity: false, allowedAddressPairs: [] }, "10.200.1.0/24"));
  });

  it("adds only what is not covered, keeping every pair the port had", () => {
    assert.deepEqual(pairsWith(port, ["10.200.1.0/24", "10.201.7.0/24", "10.200.1.0/24"]), [...port.allowedAddressPairs, { ip_address: "10.200.1.0/24", mac_address: port.macAddress }]);
  });
});
