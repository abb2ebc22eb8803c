import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Route } from "../../model.js";
import type { Change } from "../target.js";
import { batchResults, buildWriteBatch, connectedNetworks, NEXTHOP_ID_BASE, observedRoutes, onLinkDevice, parseHostState, ROUTES_BATCH } from "./iproute.js";

// What `ip -N -json -force -batch -` printed for READ_BATCH in a lab worker (trimmed).
const routes = [
  { dst: "10.200.0.0/24", dev: "cni0", protocol: "2", scope: "253", prefsrc: "10.200.0.1", flags: [] },
  { dst: "10.200.1.0/24", nhid: NEXTHOP_ID_BASE, gateway: "10.240.0.21", dev: "eth0", protocol: "150", flags: [] },
  { dst: "10.200.2.0/24", gateway: "10.240.0.99", dev: "eth0", flags: [] },
  { dst: "10.240.0.0/24", dev: "eth0", protocol: "2", scope: "253", prefsrc: "10.240.0.20", flags: [] },
  { type: "2", dst: "10.240.0.20", dev: "eth0", table: "255", protocol: "2", scope: "254", flags: [] },
  { dst: "fd00::/64", dev: "eth0", protocol: "2", metric: 256, flags: [] },
];
const nexthops = [{ id: NEXTHOP_ID_BASE, gateway: "10.240.0.21", dev: "eth0", scope: "link", protocol: "150", flags: [] }];
const addresses = [{ ifname: "eth0", addr_info: [{ local: "10.240.0.20" }, { local: "fd00::20" }] }];
const stdout = [routes, nexthops, addresses].map((a) => JSON.stringify(a)).join("\n") + "\n";

const route = (destination: string, nextHop: string): Route => ({ name: "x", destination, nextHop, node: `node-of-${nextHop}`, family: nextHop.includes(":") ? 6 : 4 });

describe("reading a host", () => {
  const state = parseHostState(stdout, "");
  it("keeps main-table routes and the host's addresses", () => {
    assert.equal(state.routes.length, 5);
    assert.deepEqual(state.addresses, ["10.240.0.20", "fd00::20"]);
    assert.ok(state.nexthopObjects);
  });
  it("marks only routes with our protocol as owned", () => {
    const observed = observedRoutes(state, 150);
    assert.deepEqual(observed.filter((r) => r.owned).map((r) => r.destination), ["10.200.1.0/24"]);
    assert.deepEqual(observed.find((r) => r.destination === "10.200.2.0/24"), {
      destination: "10.200.2.0/24", nextHop: "10.240.0.99", nextHopLabel: "10.240.0.99", owned: false, device: "eth0", protocol: "boot", details: {},
    });
  });
  it("notices a kernel without nexthop objects", () => {
    const old = parseHostState([routes, addresses].map((a) => JSON.stringify(a)).join("\n"), 'Object "nexthop" is unknown\nCommand failed -:2\n');
    assert.equal(old.nexthopObjects, false);
    assert.deepEqual(old.addresses, ["10.240.0.20", "fd00::20"]);
  });
  it("reads the routes alone for a plan (ROUTES_BATCH), the same routes as a full read", () => {
    const plan = parseHostState(`${JSON.stringify(routes)}\n`, "", ROUTES_BATCH);
    assert.deepEqual(plan.routes, state.routes);
    assert.deepEqual([plan.nexthops, plan.nexthopObjects, plan.addresses], [[], false, []]);
    assert.deepEqual(observedRoutes(plan, 150), observedRoutes(state, 150));
  });
  it("finds the device a gateway is on-link through, and none for an off-link one", () => {
    const networks = connectedNetworks(state);
    assert.equal(onLinkDevice(networks, "10.240.0.22"), "eth0");
    assert.equal(onLinkDevice(networks, "10.200.0.9"), "cni0");
    assert.equal(onLinkDevice(networks, "fd00::22"), "eth0");
    assert.equal(onLinkDevice(networks, "10.99.0.1"), undefined);
  });
});

describe("writing a host: one batch", () => {
  const state = parseHostState(stdout, "");
  const current = observedRoutes(state, 150);
  const changes: Change[] = [
    { action: "create", route: route("10.200.3.0/24", "10.240.0.23") },
    { action: "create", route: route("10.200.4.0/24", "10.240.0.23") },
    { action: "create", route: route("10.200.5.0/24", "10.99.0.1") },
    { action: "delete", current: current.find((r) => r.destination === "10.200.1.0/24")! },
  ];
  const batch = buildWriteBatch(state, changes, { proto: 150, nodeOfNextHop: (ip) => `node-of-${ip}` });

  it("shares one nexthop object per next hop, tags everything, and removes nexthops left unused", () => {
    assert.deepEqual(batch.script.trim().split("\n"), [
      `nexthop replace id ${NEXTHOP_ID_BASE + 1} via 10.240.0.23 dev eth0 proto 150`,
      `route add 10.200.3.0/24 nhid ${NEXTHOP_ID_BASE + 1} proto 150`,
      `route add 10.200.4.0/24 nhid ${NEXTHOP_ID_BASE + 1} proto 150`,
      "route del 10.200.1.0/24 proto 150",
      `nexthop del id ${NEXTHOP_ID_BASE}`,
    ]);
  });
  it("refuses an off-link next hop before writing, naming the node and the next hop", () => {
    assert.equal(batch.refused.length, 1);
    assert.match(batch.refused[0]!.error!, /next hop 10\.99\.0\.1 of node node-of-10\.99\.0\.1 is not on-link/);
  });
  it("maps `Command failed -:N` back to the change on that line", () => {
    const results = batchResults(batch, changes, "RTNETLINK answers: File exists\nCommand failed -:3\n");
    const failed = results.filter((r) => !r.ok).map((r) => (r.change.action === "delete" ? r.change.current.destination : r.change.route.destination));
    assert.deepEqual(failed.sort(), ["10.200.4.0/24", "10.200.5.0/24"]);
    assert.match(results.find((r) => !r.ok && r.change.action === "create" && r.change.route.destination === "10.200.4.0/24")!.error!, /File exists/);
  });
  it("uses plain `via` routes where the kernel has no nexthop objects", () => {
    const old = { ...state, nexthops: [], nexthopObjects: false };
    const plain = buildWriteBatch(old, changes.slice(0, 1), { proto: 150, nodeOfNextHop: () => "w" });
    assert.equal(plain.script, "route add 10.200.3.0/24 via 10.240.0.23 dev eth0 proto 150\n");
  });
});
