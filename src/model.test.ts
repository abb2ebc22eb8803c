import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { canonicalIp, cidr, cidrsOverlap, compareCidrs, parseCidr, routeName } from "./model.js";

describe("parseCidr", () => {
  const rows: [string, string | RegExp][] = [
    ["10.200.0.0/24", "10.200.0.0/24"],
    ["fd00:10:200::/64", "fd00:10:200::/64"],
    ["FD00:0010:0200:0000::/64", "fd00:10:200::/64"],
    ["10.200.0.1/24", /host bits set \(the network is 10\.200\.0\.0\/24\)/],
    ["10.200.0.0/33", /prefix length must be 0..32/],
    ["10.200.0/24", /not a valid IP/],
    ["10.200.0.0", /not a CIDR/],
    ["fd00::/129", /0..128/],
    ["::ffff:10.0.0.0/120", /not a valid IP/],
  ];
  for (const [input, expected] of rows) {
    it(`${input} → ${expected}`, () => {
      const parsed = parseCidr(input);
      if (typeof expected === "string") assert.deepEqual(parsed.ok && parsed.cidr.text, expected);
      else assert.match(parsed.ok ? "ok" : parsed.reason, expected);
    });
  }
});

describe("routeName", () => {
  it("is the seeds' name for IPv4", () => assert.equal(routeName(cidr("10.200.0.0/24")), "kubernetes-route-10-200-0-0-24"));
  it("is a valid GCP resource name for the longest IPv6 CIDR", () => {
    const name = routeName(cidr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"));
    assert.match(name, /^[a-z]([-a-z0-9]*[a-z0-9])?$/);
    assert.ok(name.length <= 63, `${name} has ${name.length} characters`);
  });
  it("tells IPv6 CIDRs apart that compress alike", () => assert.notEqual(routeName(cidr("fd00:1::/64")), routeName(cidr("fd00:0:1::/64"))));
});

describe("CIDR relations", () => {
  it("overlap is containment either way, never across families", () => {
    assert.ok(cidrsOverlap(cidr("10.200.0.0/16"), cidr("10.200.3.0/24")));
    assert.ok(cidrsOverlap(cidr("10.200.3.0/24"), cidr("10.200.0.0/16")));
    assert.ok(!cidrsOverlap(cidr("10.200.0.0/24"), cidr("10.200.1.0/24")));
    assert.ok(!cidrsOverlap(cidr("0.0.0.0/0"), cidr("::/0")));
  });
  it("sorts numerically, IPv4 first", () => {
    const sorted = ["fd00::/64", "10.200.10.0/24", "10.200.2.0/24"].sort(compareCidrs);
    assert.deepEqual(sorted, ["10.200.2.0/24", "10.200.10.0/24", "fd00::/64"]);
  });
  it("canonicalizes IPs and refuses shorthand", () => {
    assert.equal(canonicalIp("fd00:0::1"), "fd00::1");
    assert.equal(canonicalIp("10.1"), undefined);
  });
});
