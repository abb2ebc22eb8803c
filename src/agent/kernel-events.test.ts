import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { desiredView, driftReason, parseMonitorLine, type KernelEvent } from "./kernel-events.js";

// Lines as `ip -N monitor route nexthop link address` (iproute2 6.1) printed them in a namespace.
const MEASURED = {
  nexthopAdd: "id 1000 via 10.240.0.21 dev eth0 scope 253 proto 150 ",
  nexthopDel: "Deleted id 1001 via 10.240.0.21 dev eth0 scope 253 proto 150 ",
  routeNhid: "10.200.1.0/24 nhid 1000 via 10.240.0.21 dev eth0 proto 150 ",
  routeVia: "10.200.2.0/24 via 10.240.0.22 dev eth0 proto 150 ",
  routeForeign: "10.200.3.0/24 via 10.240.0.22 dev eth0 ",
  routeDel: "Deleted 10.200.2.0/24 via 10.240.0.23 dev eth0 proto 150 ",
  connected: "10.240.0.0/24 dev eth0 proto 2 scope 253 src 10.240.0.20 ",
  localTable: "2 10.240.0.20 dev eth0 table 255 proto 2 scope 254 src 10.240.0.20 ",
  v6Del: "Deleted fd00:10:200:1::/64 via fd00::21 dev eth0 proto 150 metric 1024 pref medium",
  multicast: "Deleted 5 ff00::/8 dev eth0 table 255 proto 2 metric 256 pref medium",
  link: "3: eth0@peer0: <BROADCAST,MULTICAST> mtu 1500 qdisc noqueue state DOWN group 0 ",
  linkContinuation: "    link/[1] 52:ff:76:63:83:97 brd ff:ff:ff:ff:ff:ff",
  address: "3: eth0    inet 10.240.0.20/24 scope 0 eth0",
  addressDel: "Deleted 3: eth0    inet6 fd00::20/64 scope 0 nodad ",
  addressContinuation: "       valid_lft forever preferred_lft forever",
};

describe("ip monitor lines", () => {
  it("parses routes, nexthops, links and addresses as measured", () => {
    assert.deepEqual(parseMonitorLine(MEASURED.nexthopAdd), { object: "nexthop", deleted: false, id: 1000, protocol: "150", gateway: "10.240.0.21", dev: "eth0" });
    assert.deepEqual(parseMonitorLine(MEASURED.nexthopDel), { object: "nexthop", deleted: true, id: 1001, protocol: "150", gateway: "10.240.0.21", dev: "eth0" });
    assert.deepEqual(parseMonitorLine(MEASURED.routeNhid), { object: "route", deleted: false, destination: "10.200.1.0/24", protocol: "150", gateway: "10.240.0.21", nhid: 1000, dev: "eth0" });
    assert.deepEqual(parseMonitorLine(MEASURED.routeForeign), { object: "route", deleted: false, destination: "10.200.3.0/24", gateway: "10.240.0.22", dev: "eth0" });
    assert.deepEqual(parseMonitorLine(MEASURED.routeDel), { object: "route", deleted: true, destination: "10.200.2.0/24", protocol: "150", gateway: "10.240.0.23", dev: "eth0" });
    assert.deepEqual(parseMonitorLine(MEASURED.localTable), { object: "route", deleted: false, destination: "10.240.0.20/32", type: "2", table: "255", protocol: "2", dev: "eth0" });
    assert.deepEqual(parseMonitorLine(MEASURED.v6Del), { object: "route", deleted: true, destination: "fd00:10:200:1::/64", protocol: "150", gateway: "fd00::21", dev: "eth0" });
    assert.deepEqual(parseMonitorLine(MEASURED.multicast), { object: "route", deleted: true, destination: "ff00::/8", type: "5", table: "255", protocol: "2", dev: "eth0" });
    assert.deepEqual(parseMonitorLine(MEASURED.link), { object: "link", deleted: false, index: 3, name: "eth0" });
    assert.deepEqual(parseMonitorLine(MEASURED.address), { object: "address", deleted: false, index: 3, dev: "eth0", address: "10.240.0.20/24" });
    assert.deepEqual(parseMonitorLine(MEASURED.addressDel), { object: "address", deleted: true, index: 3, dev: "eth0", address: "fd00::20/64" });
  });

  it("skips continuation lines and blank ones; keeps what it does not know as unknown", () => {
    assert.equal(parseMonitorLine(MEASURED.linkContinuation), undefined);
    assert.equal(parseMonitorLine(MEASURED.addressContinuation), undefined);
    assert.equal(parseMonitorLine(""), undefined);
    assert.deepEqual(parseMonitorLine("something new from a later iproute2"), { object: "unknown", deleted: false, line: "something new from a later iproute2" });
  });

  it("reads default routes, IPv6 spellings and v4-via-v6 gateways canonically", () => {
    assert.deepEqual(parseMonitorLine("default via 10.240.0.1 dev eth0 proto 4"), { object: "route", deleted: false, destination: "0.0.0.0/0", protocol: "4", gateway: "10.240.0.1", dev: "eth0" });
    const v6 = parseMonitorLine("fd00:0010:0200:0001::/64 via fd00:0::21 dev eth0 proto 150") as Extract<KernelEvent, { object: "route" }>;
    assert.equal(v6.destination, "fd00:10:200:1::/64");
    assert.equal(v6.gateway, "fd00::21");
    const viaV6 = parseMonitorLine("10.200.9.0/24 via inet6 fe80::1 dev eth0 proto 150") as Extract<KernelEvent, { object: "route" }>;
    assert.equal(viaV6.gateway, "fe80::1");
  });
});

describe("which kernel events are drift", () => {
  const desired = desiredView(150, [
    { destination: "10.200.1.0/24", nextHop: "10.240.0.21" },
    { destination: "10.200.2.0/24", nextHop: "10.240.0.22" },
  ]);
  const reason = (line: string) => driftReason(parseMonitorLine(line)!, desired);

  const rows: [string, string, boolean][] = [
    ["the agent's own write of a planned route", MEASURED.routeNhid, false],
    ["its own nexthop to a planned next hop", MEASURED.nexthopAdd, false],
    ["an owned route deleted by someone (ip route del)", "Deleted 10.200.1.0/24 nhid 1000 via 10.240.0.21 dev eth0 proto 150", true],
    ["an owned route the agent removed itself (no longer wanted)", "Deleted 10.200.7.0/24 via 10.240.0.27 dev eth0 proto 150", false],
    ["an owned route rewritten to a wrong next hop", "10.200.1.0/24 via 10.240.0.22 dev eth0 proto 150", true],
    ["an owned route on a destination not planned", "10.200.9.0/24 via 10.240.0.29 dev eth0 proto 150", true],
    ["an owned nexthop of a planned next hop removed", "Deleted id 1000 via 10.240.0.22 dev eth0 scope 253 proto 150", true],
    ["an owned nexthop of a next hop no longer planned removed (its own cleanup)", MEASURED.nexthopDel.replace("10.240.0.21", "10.240.0.29"), false],
    ["an owned nexthop rewritten to an unplanned address", "id 1000 via 10.240.0.99 dev eth0 scope 253 proto 150", true],
    ["a foreign nexthop", "id 7 via 10.240.0.21 dev eth0 scope 253 proto 4", false],
    ["a foreign route on a pod CIDR (a conflict to report)", "10.200.2.0/24 via 10.240.0.99 dev eth0 proto 4", true],
    ["a foreign route elsewhere", MEASURED.routeForeign, false],
    ["a connected network appearing (link up)", MEASURED.connected, true],
    ["the local table", MEASURED.localTable, false],
    ["multicast of the local table going away", MEASURED.multicast, false],
    ["a link going down (IPv4 routes flushed silently)", MEASURED.link, true],
    ["an address added", MEASURED.address, true],
    ["an address removed", MEASURED.addressDel, true],
    ["an unknown line", "something new", true],
  ];
  for (const [what, line, drift] of rows) {
    it(`${what}: ${drift ? "reconcile" : "ignore"}`, () => {
      if (drift) assert.ok(reason(line), `expected drift for ${line}`);
      else assert.equal(reason(line), undefined);
    });
  }
});
