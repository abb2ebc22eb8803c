import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import ipaddr from "ipaddr.js";
import {
  addressInCidr,
  canonicalIp,
  cidr,
  cidrContains,
  cidrsOverlap,
  compareCidrs,
  findOverlaps,
  parseAddress,
  parseCidr,
  routeName,
  sortByCidr,
} from "./model.js";

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
  it("is the IPv4 CIDR's canonical text with '.' and '/' as '-', for any CIDR", () =>
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.integer({ min: 0, max: 32 }), (bytes, prefix) => {
        const range = cidr(`${ipaddr.IPv4.networkAddressFromCIDR(`${[...bytes].join(".")}/${prefix}`).toString()}/${prefix}`);
        assert.equal(routeName(range), `kubernetes-route-${range.text.replace(/[./]/g, "-")}`);
      }),
      { numRuns: 2000 },
    ));
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

describe("compact form: each family as an integer, edge prefixes", () => {
  const rows: [string, 4 | 6, number | bigint, number][] = [
    ["0.0.0.0/0", 4, 0, 0],
    ["255.255.255.255/32", 4, 2 ** 32 - 1, 32],
    ["128.0.0.0/1", 4, 2 ** 31, 1],
    ["10.200.3.0/24", 4, (10 * 2 ** 24) + (200 << 16) + (3 << 8), 24],
    ["::/0", 6, 0n, 0],
    ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", 6, 2n ** 128n - 1n, 128],
    ["8000::/1", 6, 2n ** 127n, 1],
    ["fd00:10:200:1::/64", 6, 0xfd00_0010_0200_0001n << 64n, 64],
  ];
  for (const [text, family, network, prefixLength] of rows) {
    it(`${text} → IPv${family} ${network}/${prefixLength}`, () => {
      const range = cidr(text);
      assert.deepEqual([range.text, range.family, range.network, range.prefixLength], [text, family, network, prefixLength]);
    });
  }
  it("host bits at /0, /31, /127 are refused with the network meant", () => {
    const reason = (text: string) => { const parsed = parseCidr(text); return parsed.ok ? "ok" : parsed.reason; };
    assert.match(reason("10.0.0.0/0"), /host bits set \(the network is 0\.0\.0\.0\/0\)/);
    assert.match(reason("::1/0"), /host bits set \(the network is ::\/0\)/);
    assert.match(reason("10.0.0.1/31"), /the network is 10\.0\.0\.0\/31/);
    assert.match(reason("fd00::1/127"), /the network is fd00::\/127/);
  });
  it("/0 holds everything of its family and nothing of the other", () => {
    assert.ok(cidrContains(cidr("0.0.0.0/0"), cidr("255.255.255.255/32")));
    assert.ok(cidrContains(cidr("::/0"), cidr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")));
    assert.ok(!cidrContains(cidr("::/0"), cidr("0.0.0.0/0")));
    assert.ok(addressInCidr(parseAddress("255.255.255.255")!, cidr("0.0.0.0/0")));
    assert.ok(!addressInCidr(parseAddress("::")!, cidr("0.0.0.0/0")));
    assert.ok(addressInCidr(parseAddress("10.0.0.1")!, cidr("10.0.0.1/32")));
    assert.ok(!addressInCidr(parseAddress("10.0.0.2")!, cidr("10.0.0.1/32")));
  });
});

/**
 * Random CIDRs of both families, as ipaddr.js writes them, with prefixes biased to the edges. The
 * references below compute with ipaddr.js alone, the way podroutes did before the compact form.
 */
const randomCidr = fc
  .oneof(
    fc.tuple(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.oneof(fc.constantFrom(0, 1, 31, 32), fc.integer({ min: 0, max: 32 }))),
    fc.tuple(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.oneof(fc.constantFrom(0, 1, 64, 127, 128), fc.integer({ min: 0, max: 128 }))),
  )
  .map(([bytes, prefix]) => `${ipaddr.fromByteArray([...bytes]).toString()}/${prefix}`)
  .map((text) => {
    const [address, prefix] = ipaddr.parseCIDR(text);
    const network = address.kind() === "ipv4" ? ipaddr.IPv4.networkAddressFromCIDR(text) : ipaddr.IPv6.networkAddressFromCIDR(text);
    return { text, network: `${network.toString()}/${prefix}`, hostBits: network.toString() !== address.toString() };
  })
  .filter(({ network }) => !(ipaddr.parseCIDR(network)[0] as ipaddr.IPv6).isIPv4MappedAddress?.());

/** The sort key podroutes used before the compact form: family, address bytes in hex, prefix. */
function ipaddrSortKey(text: string): string {
  const [address, prefix] = ipaddr.parseCIDR(text);
  const hex = address.toByteArray().map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${address.kind() === "ipv4" ? 4 : 6}${hex}${String(prefix).padStart(3, "0")}`;
}

function ipaddrContains(outer: string, inner: string): boolean {
  const [a, aPrefix] = ipaddr.parseCIDR(outer);
  const [b, bPrefix] = ipaddr.parseCIDR(inner);
  return a.kind() === b.kind() && bPrefix >= aPrefix && b.match(a, aPrefix);
}

describe("compact form against ipaddr.js (fast-check)", () => {
  it("parses like ipaddr.js: the same canonical network, host bits refused", () => {
    fc.assert(
      fc.property(randomCidr, ({ text, network, hostBits }) => {
        const parsed = parseCidr(text);
        if (hostBits) assert.deepEqual(parsed, { ok: false, reason: `host bits set (the network is ${network})` });
        else assert.equal(parsed.ok && parsed.cidr.text, network);
      }),
      { numRuns: 2000 },
    );
  });

  it("reads addresses as ipaddr.js does: the same canonical text and value; no octal, hex or shorthand", () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 16, maxLength: 16 })), (bytes) => {
        const reference = ipaddr.fromByteArray([...bytes]);
        if (reference.kind() === "ipv6" && (reference as ipaddr.IPv6).isIPv4MappedAddress()) return;
        const address = parseAddress(reference.toString())!;
        assert.equal(address.text, reference.toString());
        assert.equal(BigInt(address.value), reference.toByteArray().reduce((sum, byte) => (sum << 8n) | BigInt(byte), 0n));
      }),
      { numRuns: 2000 },
    );
    for (const text of ["010.1.1.1", "0x0a.1.1.1", "10.1", "10.1.1.256", "1.2.3.4.5", " 10.1.1.1", "1..2.3", ".1.2.3", "1.2.3.", "00.1.2.3", "1.2.3.4a"]) assert.equal(parseAddress(text), undefined, text);
  });

  it("reads any string of digits and dots as the strict four-part spelling and ipaddr.js together do", () => {
    const strict = /^(0|[1-9]\d*)(\.(0|[1-9]\d*)){3}$/;
    fc.assert(
      fc.property(fc.stringMatching(/^[0-9.]{1,16}$/), (text) => {
        const expected = strict.test(text) && ipaddr.IPv4.isValid(text) ? ipaddr.IPv4.parse(text).toByteArray().reduce((sum, byte) => sum * 256 + byte, 0) : undefined;
        assert.equal(parseAddress(text)?.value, expected, text);
      }),
      { numRuns: 5000 },
    );
  });

  it("sorts in the same order as before (family, address, prefix)", () => {
    fc.assert(
      fc.property(fc.array(randomCidr.map((c) => c.network), { maxLength: 60 }), (texts) => {
        const before = [...texts].sort((a, b) => (ipaddrSortKey(a) < ipaddrSortKey(b) ? -1 : ipaddrSortKey(a) > ipaddrSortKey(b) ? 1 : 0));
        assert.deepEqual([...texts].sort(compareCidrs), before);
        assert.deepEqual(sortByCidr(texts, (text) => text), before);
      }),
      { numRuns: 500 },
    );
  });

  it("containment, overlap and address membership agree with ipaddr.js' match", () => {
    // Nearby pairs too: a random pair of CIDRs almost never nests.
    const pair = fc.oneof(
      fc.tuple(randomCidr, randomCidr).map(([a, b]) => [a.network, b.network] as const),
      randomCidr.chain((a) => fc.integer({ min: 0, max: 128 }).map((shorter) => {
        const [address, prefix] = ipaddr.parseCIDR(a.network);
        const outerPrefix = Math.max(0, prefix - (shorter % (prefix + 1)));
        const outer = address.kind() === "ipv4" ? ipaddr.IPv4.networkAddressFromCIDR(`${address}/${outerPrefix}`) : ipaddr.IPv6.networkAddressFromCIDR(`${address}/${outerPrefix}`);
        return [`${outer.toString()}/${outerPrefix}`, a.network] as const;
      })),
    );
    fc.assert(
      fc.property(pair, fc.boolean(), ([x, y], swap) => {
        const [outer, inner] = swap ? [y, x] : [x, y];
        assert.equal(cidrContains(cidr(outer), cidr(inner)), ipaddrContains(outer, inner), `${outer} ⊇ ${inner}`);
        assert.equal(cidrsOverlap(cidr(outer), cidr(inner)), ipaddrContains(outer, inner) || ipaddrContains(inner, outer), `${outer} ∩ ${inner}`);
        const innerAddress = inner.slice(0, inner.indexOf("/"));
        const [o, oPrefix] = ipaddr.parseCIDR(outer);
        const member = ipaddr.parse(innerAddress).kind() === o.kind() && ipaddr.parse(innerAddress).match(o, oPrefix);
        assert.equal(addressInCidr(parseAddress(innerAddress)!, cidr(outer)), member, `${innerAddress} in ${outer}`);
      }),
      { numRuns: 2000 },
    );
  });

  it("findOverlaps names every range that overlaps another, and only those", () => {
    const ranges = fc.array(
      fc.oneof(
        randomCidr.map((c) => c.network),
        // Clustered ranges, so that overlaps are common.
        fc.tuple(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 22, max: 26 })).map(([n, prefix]) => ipaddr.IPv4.networkAddressFromCIDR(`10.200.${n}.0/${prefix}`).toString() + `/${prefix}`),
      ),
      { maxLength: 30 },
    );
    fc.assert(
      fc.property(ranges, (texts) => {
        const pairs = findOverlaps(texts.map(cidr));
        for (const [a, b] of pairs) {
          assert.ok(a < b && (ipaddrContains(texts[a]!, texts[b]!) || ipaddrContains(texts[b]!, texts[a]!)), `${texts[a]} and ${texts[b]} do not overlap`);
        }
        const named = new Set(pairs.flat());
        const overlapping = texts.map((_, i) => texts.some((other, j) => j !== i && (ipaddrContains(other, texts[i]!) || ipaddrContains(texts[i]!, other))));
        assert.deepEqual(texts.map((_, i) => named.has(i)), overlapping);
      }),
      { numRuns: 1000 },
    );
  });
});

describe("parsed texts are remembered", () => {
  it("gives the same frozen value for the same text, so no caller can change another's", () => {
    const [first, again] = [cidr("10.201.7.0/24"), cidr("10.201.7.0/24")];
    assert.equal(first, again);
    assert.ok(Object.isFrozen(first) && Object.isFrozen(parseAddress("10.201.7.1")));
    assert.throws(() => ((first as { text: string }).text = "x"), TypeError);
  });
  it("stays right past its bound (65,536 texts), and remembers no failures", () => {
    for (let i = 0; i < 70_000; i++) {
      const text = `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}/32`;
      assert.equal(cidr(text).text, text);
    }
    assert.equal(parseAddress("10.0.0.1")!.value, 0x0a000001);
    assert.deepEqual(parseCidr("10.0.0.1/24"), { ok: false, reason: "host bits set (the network is 10.0.0.0/24)" });
    assert.deepEqual(parseCidr("10.0.0.1/24"), { ok: false, reason: "host bits set (the network is 10.0.0.0/24)" });
  });
});
