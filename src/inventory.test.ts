import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InputError, validateInventory, type RawNode } from "./inventory.js";

const node = (name: string, ip: string, pod: string[], line: number): RawNode => ({ name, internalIPs: [ip], podCIDRs: pod, origin: { file: "nodes.txt", line } });

function problems(nodes: RawNode[], options: { clusterCIDR?: string } = {}): string[] {
  try {
    validateInventory({ nodes, source: "nodes.txt" }, options);
  } catch (error) {
    assert.ok(error instanceof InputError);
    return error.message.split("\n").slice(1).map((l) => l.trim());
  }
  return [];
}

describe("validateInventory", () => {
  it("accepts the seeds' cluster and keeps it canonical", () => {
    const inventory = validateInventory({
      source: "seed",
      nodes: [node("worker-0", "10.240.0.20", ["10.200.0.0/24"], 1), node("worker-1", "10.240.0.21", ["10.200.1.0/24"], 2)],
    });
    assert.equal(inventory.cluster, "kubernetes");
    assert.deepEqual(inventory.nodes.map((n) => n.podCIDRs[0]), ["10.200.0.0/24", "10.200.1.0/24"]);
  });

  it("reports every problem at once, each with file:line, node and value", () => {
    const found = problems(
      [
        node("worker-0", "10.240.0.20", ["10.200.0.1/24"], 1),
        node("worker-1", "10.240.0.300", ["10.200.1.0/24"], 2),
        node("worker-1", "10.240.0.22", ["10.200.1.128/25"], 3),
        node("worker-3", "10.240.0.22", ["10.201.0.0/24"], 4),
        node("worker-4", "10.200.1.7", [], 5),
      ],
      { clusterCIDR: "10.200.0.0/16" },
    );
    const expected = [
      /^nodes\.txt:1: node worker-0: "10\.200\.0\.1\/24": pod CIDR: host bits set/,
      /^nodes\.txt:2: node worker-1: "10\.240\.0\.300": internal IP is not a valid IP address/,
      /^nodes\.txt:3: node worker-1: "worker-1": duplicate node name \(first at nodes\.txt:2\)/,
      /^nodes\.txt:3: node worker-1: "10\.200\.1\.128\/25": pod CIDR overlaps 10\.200\.1\.0\/24 of node worker-1 \(nodes\.txt:2\)/,
      /^nodes\.txt:4: node worker-3: "10\.240\.0\.22": duplicate internal IP \(also node worker-1 at nodes\.txt:3\)/,
      /^nodes\.txt:4: node worker-3: "10\.201\.0\.0\/24": pod CIDR lies outside the cluster CIDR 10\.200\.0\.0\/16/,
      /^nodes\.txt:5: node worker-4: "10\.200\.1\.7": internal IP lies inside pod CIDR 10\.200\.1\.0\/24 of node worker-1/,
    ];
    for (const pattern of expected) assert.ok(found.some((line) => pattern.test(line)), `missing ${pattern}\nin:\n${found.join("\n")}`);
  });

  it("refuses an empty inventory", () => assert.match(problems([]).join("\n"), /has no nodes/));

  it("needs an internal IP of the pod CIDR's family (dual stack)", () => {
    assert.match(problems([node("w", "10.240.0.20", ["fd00:10:200::/64"], 1)]).join("\n"), /IPv6 pod CIDR but no IPv6 internal IP/);
    const ok = validateInventory({
      source: "x",
      nodes: [{ name: "w", internalIPs: ["10.240.0.20", "fd00::20"], podCIDRs: ["10.200.0.0/24", "fd00:10:200::/64"] }],
    });
    assert.deepEqual(ok.nodes[0]!.internalIPs, ["10.240.0.20", "fd00::20"]);
  });

  it("takes one cluster CIDR per family, as --cluster-cidr does for dual stack", () => {
    const nodes = [{ name: "w", internalIPs: ["10.240.0.20", "fd00::20"], podCIDRs: ["10.200.0.0/24", "fd00:10:200::/64"] }];
    assert.equal(validateInventory({ source: "x", nodes }, { clusterCIDR: "10.200.0.0/16, fd00:10:200::/56" }).clusterCIDR, "10.200.0.0/16,fd00:10:200::/56");
    assert.match(problems(nodes as RawNode[], { clusterCIDR: "10.200.0.0/16" }).join("\n"), /"fd00:10:200::\/64": pod CIDR lies outside the cluster CIDR 10\.200\.0\.0\/16/);
    assert.match(problems(nodes as RawNode[], { clusterCIDR: "10.200.0.0/16,10.201.0.0/16" }).join("\n"), /at most one range per family/);
  });

  it("refuses node names that could smuggle shell syntax", () => {
    assert.match(problems([node("w;rm -rf /", "10.240.0.20", [], 1)]).join("\n"), /node name must be/);
  });

  // issue 8 item 3: ranges that would hijack a host's own traffic pass no longer.
  it("refuses special-purpose pod CIDRs and node IPs, and zone ids, naming the range", () => {
    const found = problems([
      node("a", "10.240.0.20", ["169.254.169.254/32"], 1),
      node("b", "10.240.0.21", ["127.0.0.0/8"], 2),
      node("c", "10.240.0.22", ["224.0.0.0/4"], 3),
      { name: "d", internalIPs: ["10.240.0.23", "fd00::23"], podCIDRs: ["fe80::/65"], origin: { file: "nodes.txt", line: 4 } },
      node("e", "10.240.0.24", ["192.0.0.0/2"], 5),
      node("f", "0.0.0.0", [], 6),
      node("g", "255.255.255.255", [], 7),
      node("h", "fe80::22%eth0", [], 8),
      node("i", "127.0.0.9", [], 9),
      node("j", "10.240.0.25", ["0.0.0.0/0"], 10),
    ]).join("\n");
    for (const pattern of [
      /nodes\.txt:1: node a: "169\.254\.169\.254\/32": pod CIDR overlaps the special-purpose range linkLocal 169\.254\.0\.0\/16/,
      /nodes\.txt:2: node b: "127\.0\.0\.0\/8": pod CIDR overlaps the special-purpose range loopback/,
      /nodes\.txt:3: node c: "224\.0\.0\.0\/4": pod CIDR overlaps the special-purpose range multicast/,
      /nodes\.txt:4: node d: "fe80::\/65": pod CIDR overlaps the special-purpose range linkLocal fe80::\/10/,
      /nodes\.txt:5: node e: "192\.0\.0\.0\/2": pod CIDR overlaps the special-purpose range (broadcast|multicast)/,
      /nodes\.txt:6: node f: "0\.0\.0\.0": internal IP lies in the special-purpose range unspecified/,
      /nodes\.txt:7: node g: "255\.255\.255\.255": internal IP lies in the special-purpose range broadcast/,
      /nodes\.txt:8: node h: "fe80::22%eth0": internal IP has a zone id/,
      /nodes\.txt:9: node i: "127\.0\.0\.9": internal IP lies in the special-purpose range loopback/,
      /nodes\.txt:10: node j: "0\.0\.0\.0\/0": pod CIDR overlaps the special-purpose range/,
    ]) {
      assert.match(found, pattern);
    }
  });

  it("still accepts ordinary private, CGNAT and ULA ranges", () => {
    const ok = validateInventory({
      source: "x",
      nodes: [
        { name: "a", internalIPs: ["100.64.0.20", "fd00::20"], podCIDRs: ["100.96.0.0/24", "fd00:10:200::/64"] },
        { name: "b", internalIPs: ["192.168.0.21"], podCIDRs: ["172.16.1.0/24"] },
      ],
    });
    assert.equal(ok.nodes.length, 2);
  });
});
