import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { InputError, validateInventory } from "../inventory.js";
import { networkReadyPatch } from "../agent/node-status.js";
import { inventoryFromNodes, NodeIndex, readKubeNode, routingView, type KubeNode } from "./nodes.js";

function kubeNode(name: string, addresses: [string, string][], podCIDRs?: string[], extra: { podCIDR?: string; created?: string; labels?: Record<string, string> } = {}) {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name, ...(extra.created ? { creationTimestamp: extra.created } : {}), ...(extra.labels ? { labels: extra.labels } : {}) },
    spec: { ...(podCIDRs ? { podCIDRs } : {}), ...(extra.podCIDR ? { podCIDR: extra.podCIDR } : {}) },
    status: { addresses: addresses.map(([type, address]) => ({ type, address })) },
  };
}

describe("Node → inventory", () => {
  it("maps a dual-stack node: one InternalIP per family, both pod CIDRs, labels, ExternalIP for SSH", () => {
    const reading = readKubeNode(
      kubeNode("worker-0", [["Hostname", "worker-0"], ["InternalIP", "10.240.0.20"], ["ExternalIP", "203.0.113.10"], ["InternalIP", "fd00::20"]], ["10.200.0.0/24", "fd00:10:200::/64"], { labels: { zone: "a" } }),
    );
    assert.deepEqual(reading.problems, []);
    assert.deepEqual(reading.notes, []);
    assert.deepEqual(reading.node, { name: "worker-0", internalIPs: ["10.240.0.20", "fd00::20"], podCIDRs: ["10.200.0.0/24", "fd00:10:200::/64"], sshAddress: "203.0.113.10", labels: { zone: "a" } });
  });

  it("falls back to spec.podCIDR when spec.podCIDRs is absent (clusters before 1.16)", () => {
    assert.deepEqual(readKubeNode(kubeNode("a", [["InternalIP", "10.0.0.1"]], undefined, { podCIDR: "10.1.0.0/24" })).node?.podCIDRs, ["10.1.0.0/24"]);
    assert.deepEqual(readKubeNode(kubeNode("a", [["InternalIP", "10.0.0.1"]], ["10.2.0.0/24"], { podCIDR: "10.1.0.0/24" })).node?.podCIDRs, ["10.2.0.0/24"]);
  });

  it("keeps a node without a pod CIDR yet, with a note: it still gets routes to the others", () => {
    const reading = readKubeNode(kubeNode("new", [["InternalIP", "10.0.0.9"]]));
    assert.deepEqual(reading.node?.podCIDRs, []);
    assert.match(reading.notes.join(), /no pod CIDR yet/);
    const inventory = validateInventory({ nodes: [reading.node!, readKubeNode(kubeNode("old", [["InternalIP", "10.0.0.1"]], ["10.1.0.0/24"])).node!], source: "t" });
    assert.deepEqual(inventory.nodes.map((n) => [n.name, n.podCIDRs]), [["new", []], ["old", ["10.1.0.0/24"]]]);
  });

  it("takes the first of several InternalIPs of one family and says so", () => {
    const reading = readKubeNode(kubeNode("a", [["InternalIP", "10.0.0.1"], ["InternalIP", "10.0.0.2"], ["InternalIP", "fd00::1"]], ["10.1.0.0/24"]));
    assert.deepEqual(reading.node?.internalIPs, ["10.0.0.1", "fd00::1"]);
    assert.deepEqual(reading.notes, ["has 2 IPv4 InternalIPs (10.0.0.1, 10.0.0.2): routing to the first, 10.0.0.1"]);
  });

  it("names the path of every malformed field and never throws", () => {
    const problems = (object: unknown) => readKubeNode(object).problems.map((p) => p.message);
    assert.deepEqual(problems(null), ["a Node must be a mapping"]);
    assert.deepEqual(problems({ metadata: { name: 5 } }), ["metadata.name must be a string"]);
    assert.deepEqual(problems({ kind: "Pod", metadata: { name: "p" } }), ['kind is "Pod", not Node']);
    assert.deepEqual(problems({ metadata: { name: "a", labels: { x: 1 } } }), ["metadata.labels.x must be a string"]);
    assert.deepEqual(problems({ metadata: { name: "a" }, spec: { podCIDRs: [1] } }), ["spec.podCIDRs must be a list of strings"]);
    assert.deepEqual(problems({ metadata: { name: "a" }, spec: { podCIDR: {} } }), ["spec.podCIDR must be a string"]);
    assert.deepEqual(problems({ metadata: { name: "a" }, status: { addresses: {} } }), ["status.addresses must be a list"]);
    assert.deepEqual(problems({ metadata: { name: "a" }, status: { addresses: [null, { type: 1, address: "x" }, { type: "InternalIP" }] } }), [
      "status.addresses[0] must be a mapping with type and address",
      "status.addresses[1].type must be a string",
      "status.addresses[2].address must be a string",
    ]);
    assert.equal(readKubeNode({ metadata: { name: "a" }, status: "x" }).name, "a", "the name survives other problems, so they can name the node");
  });

  it("the CLI way: the inventory's validation names the node of a bad value", () => {
    const raw = { nodes: [readKubeNode(kubeNode("a", [["InternalIP", "10.0.0.300"]], ["10.1.0.0/24"])).node!], source: "kubernetes" };
    assert.throws(() => validateInventory(raw), (e: unknown) => e instanceof InputError && /node a: "10\.0\.0\.300": internal IP is not a valid IP address/.test(e.message));
  });

  it("the agent's way: quarantines each bad Node with its reasons and serves every other one", () => {
    const result = inventoryFromNodes(
      [
        kubeNode("late", [["InternalIP", "10.0.0.3"]], ["10.1.0.0/24"], { created: "2026-01-03T00:00:00Z" }),
        kubeNode("first", [["InternalIP", "10.0.0.1"]], ["10.1.0.0/24"], { created: "2026-01-01T00:00:00Z" }),
        kubeNode("bad-cidr", [["InternalIP", "10.0.0.4"]], ["10.9.0.1/24"]),
        kubeNode("no-v6-ip", [["InternalIP", "10.0.0.5"]], ["fd00:1::/64"]),
        { metadata: { name: "broken" }, status: { addresses: "x" } },
        { metadata: {} },
        kubeNode("fine", [["InternalIP", "10.0.0.2"]], ["10.1.1.0/24"], { created: "2026-01-02T00:00:00Z" }),
      ],
      { source: "kubernetes" },
    );
    assert.deepEqual(result.inventory.nodes.map((n) => n.name), ["first", "fine"]);
    assert.deepEqual([...result.quarantined.keys()].sort(), ["bad-cidr", "broken", "items[5]", "late", "no-v6-ip"]);
    assert.match(result.quarantined.get("late")![0]!.message, /overlaps 10\.1\.0\.0\/24 of node first/);
    assert.match(result.quarantined.get("bad-cidr")![0]!.message, /host bits/);
    assert.match(result.quarantined.get("no-v6-ip")![0]!.message, /no IPv6 internal IP/);
    assert.match(result.quarantined.get("broken")![0]!.message, /status\.addresses must be a list/);
    assert.deepEqual(result.general, []);
  });

  // issue 25 item 1: a newcomer whose pod CIDR swallows the nodes' own network once quarantined every node.
  it("a new Node whose pod CIDR contains established Nodes' InternalIPs is the one left out", () => {
    const established = [
      kubeNode("worker-0", [["InternalIP", "10.240.0.20"]], ["10.200.0.0/24"], { created: "2026-01-01T00:00:00Z" }),
      kubeNode("worker-1", [["InternalIP", "10.240.0.21"]], ["10.200.1.0/24"], { created: "2026-01-01T00:00:01Z" }),
    ];
    for (const [ip, cidr] of [["10.240.0.32", "10.240.0.0/24"], ["10.250.0.9", "10.240.0.0/24"], ["10.240.0.32", "10.0.0.0/8"], ["192.168.0.9", "10.0.0.0/8"]] as const) {
      const result = inventoryFromNodes([...established, kubeNode("netclash", [["InternalIP", ip]], [cidr], { created: "2026-01-02T00:00:00Z" })], { source: "kubernetes" });
      assert.deepEqual(result.inventory.nodes.map((n) => n.name), ["worker-0", "worker-1"], `${ip} ${cidr}`);
      assert.deepEqual([...result.quarantined.keys()], ["netclash"], `${ip} ${cidr}`);
      assert.ok(result.quarantined.get("netclash")!.some((p) => /contains internal IP 10\.240\.0\.20 of node worker-0/.test(p.message)), `${ip} ${cidr}`);
    }
    // The other way round stays as it was: a newcomer whose IP lies in an established pod CIDR is at fault.
    const late = inventoryFromNodes([...established, kubeNode("late", [["InternalIP", "10.200.1.7"]], [], { created: "2026-01-02T00:00:00Z" })], { source: "kubernetes" });
    assert.deepEqual([...late.quarantined.keys()], ["late"]);
    assert.match(late.quarantined.get("late")![0]!.message, /internal IP lies inside pod CIDR 10\.200\.1\.0\/24 of node worker-1/);
  });

  it("one at a time too: the netclash Node added to a running index leaves the others served, and its delete changes nothing else", () => {
    const index = new NodeIndex({ source: "kubernetes" });
    index.set("worker-0", kubeNode("worker-0", [["InternalIP", "10.240.0.20"]], ["10.200.0.0/24"], { created: "2026-01-01T00:00:00Z" }));
    index.set("worker-1", kubeNode("worker-1", [["InternalIP", "10.240.0.21"]], ["10.200.1.0/24"], { created: "2026-01-01T00:00:01Z" }));
    index.set("netclash", kubeNode("netclash", [["InternalIP", "10.240.0.32"]], ["10.240.0.0/24"], { created: "2026-01-02T00:00:00Z" }));
    assert.deepEqual(index.inventory().nodes.map((n) => n.name), ["worker-0", "worker-1"]);
    assert.deepEqual([...index.quarantined.keys()], ["netclash"]);
    // An established Node whose IP moves into the newcomer's range: still the newcomer at fault.
    index.set("worker-1", kubeNode("worker-1", [["InternalIP", "10.240.0.77"]], ["10.200.1.0/24"], { created: "2026-01-01T00:00:01Z" }));
    assert.deepEqual([...index.quarantined.keys()], ["netclash"]);
    index.delete("netclash");
    assert.deepEqual(index.inventory().nodes.map((n) => n.name), ["worker-0", "worker-1"]);
    assert.equal(index.quarantined.size, 0);
  });

  it("an empty list is a general problem, not a quarantine", () => {
    const result = inventoryFromNodes([], { source: "kubernetes" });
    assert.equal(result.inventory.nodes.length, 0);
    assert.equal(result.general.length, 1);
  });
});

describe("NodeIndex: one Node at a time", () => {
  // Few values, so Nodes keep colliding: the same IP, nested and equal pod ranges, an IP inside a range,
  // a bad CIDR, no address, dual stack, equal ages, a field of the wrong type, a bad label key.
  const ips = [["10.240.0.1"], ["10.240.0.2"], ["10.240.0.3"], ["10.200.1.7"], [], ["10.240.0.2", "fd00::2"], ["not-an-ip"]];
  const cidrs = [["10.200.0.0/24"], ["10.200.1.0/24"], ["10.200.0.0/16"], ["10.200.0.128/25"], [], ["10.200.2.0/24", "fd00:200::/64"], ["10.200.300.0/24"], ["fd00::/64"]];
  const ages = ["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"];
  const nodeObject = fc.record({ ips: fc.constantFrom(...ips), podCIDRs: fc.constantFrom(...cidrs), age: fc.constantFrom(...ages), badLabel: fc.boolean(), malformed: fc.boolean() });
  const operation = fc.oneof(
    fc.record({ op: fc.constant("set" as const), name: fc.integer({ min: 0, max: 7 }), node: nodeObject }),
    fc.record({ op: fc.constant("delete" as const), name: fc.integer({ min: 0, max: 7 }) }),
  );
  const kube = (name: string, node: { ips: string[]; podCIDRs: string[]; age: string; badLabel: boolean; malformed: boolean }): unknown =>
    node.malformed && node.badLabel
      ? { kind: "Node", metadata: { name }, status: { addresses: "wrong type" } }
      : {
          kind: "Node",
          metadata: { name, creationTimestamp: node.age, ...(node.badLabel ? { labels: { "bad key!": "x" } } : {}) },
          spec: node.podCIDRs.length ? { podCIDRs: node.podCIDRs } : {},
          status: { addresses: node.ips.map((address) => ({ type: "InternalIP", address })) },
        };

  const view = (result: { inventory: { nodes: { name: string; podCIDRs: string[]; internalIPs: string[] }[] }; quarantined: Map<string, { message: string }[]>; notes: Map<string, string[]> }) => ({
    served: result.inventory.nodes.map((n) => `${n.name} ${n.internalIPs.join(",")} ${n.podCIDRs.join(",")}`),
    quarantined: [...result.quarantined].map(([name, problems]) => `${name}: ${problems.map((p) => p.message).sort().join(" | ")}`).sort(),
    notes: [...result.notes].map(([name, lines]) => `${name}: ${lines.join(" | ")}`).sort(),
  });

  it("random sets, updates and deletes give the served and quarantined Nodes of a full check of the final state (fast-check)", () => {
    fc.assert(
      fc.property(fc.array(operation, { maxLength: 40 }), (operations) => {
        const index = new NodeIndex({ source: "kubernetes" });
        const store = new Map<string, unknown>();
        for (const operation of operations) {
          const name = `node-${operation.name}`;
          if (operation.op === "delete") {
            store.delete(name);
            index.delete(name);
          } else {
            const object = kube(name, operation.node);
            store.set(name, object);
            index.set(name, object);
          }
          assert.deepEqual(view(index.snapshot()), view(inventoryFromNodes([...store.values()], { source: "kubernetes" })));
        }
      }),
      { numRuns: 300 },
    );
  });

  it("says which Nodes it checked again: the one changed and those it collides with, not every Node", () => {
    const index = new NodeIndex({ source: "kubernetes" });
    const make = (name: string, ip: string, cidr: string, at: string) => ({ kind: "Node", metadata: { name, creationTimestamp: at }, spec: { podCIDRs: [cidr] }, status: { addresses: [{ type: "InternalIP", address: ip }] } });
    for (let i = 0; i < 50; i++) index.set(`node-${i}`, make(`node-${i}`, `10.240.0.${i + 1}`, `10.200.${i}.0/24`, "2026-01-01T00:00:00Z"));
    assert.deepEqual(index.set("node-7", make("node-7", "10.240.0.8", "10.200.99.0/24", "2026-01-01T00:00:00Z")), ["node-7"]);
    // A newcomer takes node-3's pod CIDR: it is quarantined, node-3 keeps being served.
    assert.deepEqual(index.set("node-new", make("node-new", "10.240.1.1", "10.200.3.0/24", "2026-01-02T00:00:00Z")).sort(), ["node-3", "node-new"]);
    assert.ok(index.node("node-3"));
    assert.equal(index.node("node-new"), undefined);
    assert.match(index.quarantined.get("node-new")![0]!.message, /pod CIDR overlaps 10\.200\.3\.0\/24 of node node-3/);
    // node-3 goes: the newcomer is served.
    assert.deepEqual(index.delete("node-3").sort(), ["node-new"]);
    assert.ok(index.node("node-new"));
    assert.equal(index.quarantined.size, 0);
  });
});

describe("routingView (what the agent's store keeps of a Node)", () => {
  // Node-like objects with every field the view keeps or drops, right type or not.
  const text = fc.constantFrom("node-1", "10.240.0.1", "fd00::1", "10.200.1.0/24", "", "x y");
  const value = fc.oneof(text, fc.integer(), fc.constant(null), fc.constant(undefined), fc.array(text, { maxLength: 2 }));
  const address = fc.oneof(fc.record({ type: fc.constantFrom("InternalIP", "ExternalIP", "Hostname"), address: value }), value);
  const condition = fc.oneof(
    fc.record({ type: fc.constantFrom("NetworkUnavailable", "Ready"), status: fc.constantFrom("True", "False"), reason: fc.constantFrom("NoRouteCreated", "PodroutesAgentReady"), message: text, lastTransitionTime: fc.constantFrom("2026-01-01T00:00:00Z") }, { requiredKeys: ["type"] }),
    value,
  );
  const node = fc.record(
    {
      kind: fc.oneof(fc.constant("Node"), value),
      metadata: fc.oneof(fc.record({ name: value, uid: value, resourceVersion: value, creationTimestamp: value, labels: fc.oneof(fc.dictionary(fc.constantFrom("zone", "bad key!"), value), value), managedFields: value }, { requiredKeys: [] }), value),
      spec: fc.oneof(fc.record({ podCIDR: value, podCIDRs: value, taints: value }, { requiredKeys: [] }), value),
      status: fc.oneof(fc.record({ addresses: fc.oneof(fc.array(address, { maxLength: 3 }), value), conditions: fc.oneof(fc.array(condition, { maxLength: 3 }), value), images: value }, { requiredKeys: [] }), value),
    },
    { requiredKeys: [] },
  );

  it("reads as the whole Node reads: same node, problems and notes, same NetworkUnavailable patch, same identity", () => {
    fc.assert(
      fc.property(node, (object) => {
        const view = routingView(object);
        assert.deepEqual(readKubeNode(view), readKubeNode(object));
        const now = new Date("2026-02-01T00:00:00Z");
        if (view.status === undefined || typeof view.status === "object") assert.deepEqual(networkReadyPatch(view, now), networkReadyPatch(object as KubeNode, now));
        const meta = object.metadata as Record<string, unknown> | undefined;
        if (meta && typeof meta === "object" && !Array.isArray(meta)) {
          for (const field of ["name", "uid", "resourceVersion", "creationTimestamp"] as const) assert.equal(view.metadata[field], meta[field]);
        }
      }),
      { numRuns: 500 },
    );
  });
});
