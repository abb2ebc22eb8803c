import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Route } from "../../model.js";
import type { Change } from "../target.js";
import { BATCH_END, batchResults, buildWriteBatch, connectedNetworks, NEXTHOP_ID_BASE, observedRoutes, onLinkDevice, parseHostState, resultsFromState, ROUTES_BATCH, unusedNexthops, type HostState, hostNetworks, refusalLasts, refusalOf } from "./iproute.js";

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
  it("keeps every table's routes and the host's addresses", () => {
    assert.equal(state.routes.length, 6);
    assert.deepEqual(state.addresses, ["10.240.0.20", "fd00::20"]);
    assert.ok(state.nexthopObjects);
  });
  it("marks only routes with our protocol as owned", () => {
    const observed = observedRoutes(state, 150);
    assert.deepEqual(observed.filter((r) => r.owned).map((r) => r.destination), ["10.200.1.0/24"]);
    assert.deepEqual(observed.find((r) => r.destination === "10.200.2.0/24"), {
      destination: "10.200.2.0/24", nextHop: "10.240.0.99", nextHopLabel: "10.240.0.99", owned: false, device: "eth0", protocol: "boot", details: { table: "main", metric: 0, type: "unicast" },
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
      `nexthop add id ${NEXTHOP_ID_BASE + 1} proto 150 via 10.240.0.23 dev eth0`,
      `route add proto 150 10.200.3.0/24 nhid ${NEXTHOP_ID_BASE + 1}`,
      `route add proto 150 10.200.4.0/24 nhid ${NEXTHOP_ID_BASE + 1}`,
      "route del proto 150 10.200.1.0/24 table main metric 0",
      `nexthop del id ${NEXTHOP_ID_BASE}`,
      BATCH_END,
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
    assert.equal(plain.script, `route add proto 150 10.200.3.0/24 via 10.240.0.23 dev eth0\n${BATCH_END}\n`);
  });
});

/** A host state from route and nexthop JSON as `ip -N -json` prints it, on eth0 10.240.0.20/16. */
function host(extraRoutes: object[], nexthopObjects: object[] = []): HostState {
  const base = [{ dst: "10.240.0.0/16", dev: "eth0", protocol: "2", scope: "253", prefsrc: "10.240.0.20" }];
  return parseHostState([[...base, ...extraRoutes], nexthopObjects, addresses].map((a) => JSON.stringify(a)).join("\n"), "");
}
const options = { proto: 150, nodeOfNextHop: (ip: string) => `node-of-${ip}` };
const NH = NEXTHOP_ID_BASE;

describe("issue 8: the write path under motion", () => {
  it("item 1: new nexthop objects are added under ids nobody holds, never `nexthop replace`d", () => {
    const state = host([], [{ id: NH, gateway: "10.240.0.50", dev: "eth0", protocol: "4" }, { id: NH + 1, gateway: "10.240.0.51", dev: "eth0" }]);
    const batch = buildWriteBatch(state, [{ action: "create", route: route("10.200.3.0/24", "10.240.0.23") }], options);
    assert.equal(batch.lines[0]!.text, `nexthop add id ${NH + 2} proto 150 via 10.240.0.23 dev eth0`);
    assert.doesNotMatch(batch.script, /nexthop replace/);
  });

  it("item 6: every line carries the mark right after its verb, so no cut of it is a command without the mark", () => {
    const state = host([{ dst: "10.200.9.0/24", nhid: NH, gateway: "10.240.0.29", dev: "eth0", protocol: "150" }], [{ id: NH, gateway: "10.240.0.29", dev: "eth0", protocol: "150" }]);
    const current = observedRoutes(state, 150).find((r) => r.destination === "10.200.9.0/24")!;
    const changes: Change[] = [
      { action: "create", route: route("10.200.3.0/24", "10.240.0.23") },
      { action: "replace", route: route("10.200.9.0/24", "10.240.0.24"), current },
    ];
    const batch = buildWriteBatch(state, changes, options);
    for (const line of batch.lines.filter((l) => !l.text.startsWith("nexthop del"))) assert.match(line.text, /^(route|nexthop) (add|replace|del)( id \d+)? proto 150 /, line.text);
    assert.ok(batch.script.endsWith(`${BATCH_END}\n`));
  });

  it("item 4: an owned route at another metric is seen, replaced in podroutes' slot, and deleted by its exact metric", () => {
    const state = host([{ dst: "10.200.1.0/24", gateway: "10.240.0.21", dev: "eth0", protocol: "150", metric: 100 }]);
    const observed = observedRoutes(state, 150).filter((r) => r.owned);
    assert.deepEqual(observed[0]!.details, { table: "main", metric: 100, type: "unicast" });
    const change: Change = { action: "replace", route: route("10.200.1.0/24", "10.240.0.21"), current: observed[0]! };
    assert.deepEqual(buildWriteBatch(state, [change], options).lines.map((l) => l.text), [
      `nexthop add id ${NH} proto 150 via 10.240.0.21 dev eth0`,
      `route add proto 150 10.200.1.0/24 nhid ${NH}`,
      "route del proto 150 10.200.1.0/24 table main metric 100",
    ]);
  });

  it("item 4: owned routes in podroutes' slot come first on a destination, so the planner keeps or replaces that one", () => {
    const state = host([
      { dst: "10.200.1.0/24", gateway: "10.240.0.29", dev: "eth0", protocol: "150", metric: 100 },
      { dst: "10.200.1.0/24", gateway: "10.240.0.28", dev: "eth0", protocol: "150", table: "100" },
      { dst: "10.200.1.0/24", gateway: "10.240.0.21", dev: "eth0", protocol: "150" },
    ]);
    assert.deepEqual(observedRoutes(state, 150).filter((r) => r.owned).map((r) => r.nextHop), ["10.240.0.21", "10.240.0.29", "10.240.0.28"]);
  });

  it("item 5: a nexthop used by a foreign route in another table, or by a foreign group, is never removed", () => {
    const state = host(
      [
        { dst: "10.200.1.0/24", nhid: NH, gateway: "10.240.0.21", dev: "eth0", protocol: "150" },
        { dst: "10.9.0.0/24", nhid: NH, gateway: "10.240.0.21", dev: "eth0", table: "100" },
        { dst: "10.200.2.0/24", nhid: NH + 1, gateway: "10.240.0.22", dev: "eth0", protocol: "150" },
      ],
      [
        { id: NH, gateway: "10.240.0.21", dev: "eth0", protocol: "150" },
        { id: NH + 1, gateway: "10.240.0.22", dev: "eth0", protocol: "150" },
        { id: 7, group: [{ id: NH + 1 }, { id: 8 }] },
        { id: 8, gateway: "10.240.0.40", dev: "eth0" },
      ],
    );
    const deletes: Change[] = observedRoutes(state, 150).filter((r) => r.owned).map((current) => ({ action: "delete", current }));
    assert.deepEqual(deletes.map((c) => c.action === "delete" && c.current.destination), ["10.200.1.0/24", "10.200.2.0/24"], "the table-100 route is not ours");
    const batch = buildWriteBatch(state, deletes, options);
    assert.doesNotMatch(batch.script, /nexthop del/);
  });

  it("item 7: an owned blackhole is visible, broken, deleted by type; unused owned nexthops are found", () => {
    const state = host([{ type: "6", dst: "10.200.5.0/24", protocol: "150" }], [
      { id: NH, gateway: "10.240.0.21", dev: "eth0", protocol: "150" },
      { id: NH + 1, gateway: "10.240.0.22", dev: "eth0", protocol: "4" },
    ]);
    const hole = observedRoutes(state, 150)[0]!;
    assert.deepEqual([hole.owned, hole.healthy, hole.nextHopLabel], [true, false, "blackhole"]);
    assert.equal(buildWriteBatch(state, [{ action: "delete", current: hole }], options).lines[0]!.text, "route del proto 150 blackhole 10.200.5.0/24 table main metric 0");
    assert.deepEqual(unusedNexthops(state, 150), [NH], "only the owned one");
    // Replacing the blackhole rewrites the slot it holds (`route add` would fail with "File exists").
    const replaced = buildWriteBatch(state, [{ action: "replace", route: route("10.200.5.0/24", "10.240.0.25"), current: hole }], options);
    assert.match(replaced.script, /^route replace proto 150 10\.200\.5\.0\/24 nhid \d+$/m);
  });

  it("item 3: a pod CIDR overlapping a network the host is connected to is refused, naming both", () => {
    const state = host([]);
    const batch = buildWriteBatch(state, [
      { action: "create", route: route("10.240.0.2/32", "10.240.0.21") },
      { action: "create", route: route("10.240.0.128/25", "10.240.0.21") },
      { action: "create", route: route("10.200.1.0/24", "10.240.0.21") },
    ], options);
    assert.deepEqual(batch.refused.map((r) => r.error!.replace(/:.*/, "")), [
      "pod CIDR 10.240.0.2/32 of node node-of-10.240.0.21 overlaps 10.240.0.0/16, a network this host is connected to on eth0",
      "pod CIDR 10.240.0.128/25 of node node-of-10.240.0.21 overlaps 10.240.0.0/16, a network this host is connected to on eth0",
    ]);
    assert.doesNotMatch(batch.script, /10\.240\.0\.(2|128)\//);
  });

  it("item 11: when ip stopped partway, each change's result comes from the table as it is", () => {
    const before = host([]);
    const changes: Change[] = [
      { action: "create", route: route("10.200.1.0/24", "10.240.0.21") },
      { action: "create", route: route("10.200.2.0/24", "10.240.0.22") },
    ];
    const after = host([{ dst: "10.200.1.0/24", nhid: NH, gateway: "10.240.0.21", dev: "eth0", protocol: "150" }], [{ id: NH, gateway: "10.240.0.21", dev: "eth0", protocol: "150" }]);
    assert.equal(buildWriteBatch(before, changes, options).lines.length, 4);
    assert.deepEqual(resultsFromState(after, 150, changes, "killed").map((r) => [r.ok, r.error]), [[true, undefined], [false, "not done: killed"]]);
  });

  it("item 10: 150,000 routes make one batch without touching the call stack's limit", () => {
    const many: Change[] = Array.from({ length: 150_000 }, (_, i) => ({
      action: "create",
      route: route(`10.${128 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`, `10.240.${1 + (i % 200)}.${1 + (i % 250)}`),
    }));
    const batch = buildWriteBatch(host([]), many, options);
    assert.equal(batch.refused.length, 0);
    assert.equal(batch.lines.length, 150_000 + 200 * 250 / 50);
    assert.equal(batchResults(batch, many, "").filter((r) => r.ok).length, 150_000);
  });
});

describe("refusals that last (the route's own problem) and those that do not (the host's)", () => {
  const host = (connected: string[], addresses: string[]) =>
    hostNetworks({ routes: connected.map((dst) => ({ dst, dev: "eth0", protocol: "kernel", ...(dst.includes(":") ? {} : { scope: "link" }) })), nexthops: [], nexthopObjects: true, addresses });
  const ipv4Only = host(["10.240.0.0/24", "fe80::/64"], ["127.0.0.1", "::1", "10.240.0.20", "fe80::1"]);
  it("a next hop on none of the host's networks of its family, or of a family the host has no address of, lasts", () => {
    assert.equal(refusalLasts({ nextHop: "192.0.2.7" }, ipv4Only), true, "off-link IPv4 beside 10.240.0.0/24");
    assert.equal(refusalLasts({ nextHop: "fd00:240::26" }, ipv4Only), true, "IPv6 on an IPv4-only host (loopback and link-local do not count)");
    assert.equal(refusalLasts({ nextHop: "10.240.0.21" }, ipv4Only), true, "on-link: a refusal of its pod CIDR (over a host network) is the route's");
  });
  it("a host with addresses of the family but no connected network of it (its link down) does not: a failure, tried again", () => {
    const linkDown = host(["fe80::/64"], ["127.0.0.1", "10.240.0.20", "2001:db8::20"]);
    assert.equal(refusalLasts({ nextHop: "10.240.0.21" }, linkDown), false);
    assert.equal(refusalLasts({ nextHop: "2001:db8::21" }, linkDown), false);
  });
});

describe("a broadcast next hop", () => {
  const host = (connected: string[]) => hostNetworks({ routes: connected.map((dst) => ({ dst, dev: "eth0", protocol: "kernel", scope: "link" })), nexthops: [], nexthopObjects: true, addresses: ["10.240.0.20"] });
  const wanted = (nextHop: string) => ({ destination: "10.200.1.0/24", nextHop, node: "node-b" });
  it("is refused, naming the node, the address and the network, on every prefix up to /30", () => {
    assert.match(refusalOf(wanted("10.240.255.255"), host(["10.240.0.0/16"]), () => "node-b")!, /next hop 10\.240\.255\.255 of node node-b is the broadcast address of 10\.240\.0\.0\/16/);
    assert.match(refusalOf(wanted("192.168.7.255"), host(["192.168.7.0/24"]), () => "node-b")!, /broadcast address of 192\.168\.7\.0\/24/);
    assert.match(refusalOf(wanted("10.0.0.3"), host(["10.0.0.0/30"]), () => "node-b")!, /broadcast/);
  });
  it("is not on a /31 or /32 (no broadcast there), nor for the network's other addresses", () => {
    assert.equal(refusalOf(wanted("10.0.0.1"), host(["10.0.0.0/31"]), () => "node-b"), undefined);
    assert.equal(refusalOf(wanted("10.240.255.254"), host(["10.240.0.0/16"]), () => "node-b"), undefined);
    assert.equal(refusalOf(wanted("10.240.0.0"), host(["10.240.0.0/16"]), () => "node-b"), undefined, "the kernel takes the network address");
  });
});
