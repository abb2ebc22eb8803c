import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InputError, validateInventory } from "../inventory.js";
import { detectFormat, parseNodesFile } from "./file.js";

const seedTable = "10.69.1.20 10.70.0.0/24\n10.69.1.21 10.70.1.0/24\n10.69.1.22 10.70.2.0/24\n";
const machines = `# Kubernetes the Hard Way
10.240.0.10 server.kubernetes.local server
10.240.0.20 node-0.kubernetes.local node-0 10.200.0.0/24
10.240.0.21 node-1.kubernetes.local node-1 10.200.1.0/24
`;
const yaml = `cluster: kubernetes-the-hard-way
clusterCIDR: 10.200.0.0/16
nodes:
  - name: worker-0
    internalIP: 10.240.0.20
    podCIDRs: [10.200.0.0/24, "fd00:10:200::/64"]
    sshAddress: 203.0.113.10
  - name: worker-1
    internalIP: [10.240.0.21, "fd00::21"]
    podCIDRs: [10.200.1.0/24]
    labels: {zone: a}
`;

describe("node files", () => {
  it("detects each format from the text", () => {
    assert.equal(detectFormat(seedTable), "routing-table");
    assert.equal(detectFormat(machines), "machines.txt");
    assert.equal(detectFormat(yaml), "yaml");
    assert.equal(detectFormat('{"nodes":[]}'), "json");
    assert.equal(detectFormat('{"kind":"NodeList","items":[]}'), "kubernetes-nodelist");
  });

  it("reads the seeds' routing table, naming nodes by their IP", () => {
    const raw = parseNodesFile(seedTable, "table.txt");
    assert.deepEqual(raw.nodes.map((n) => [n.name, n.internalIPs[0], n.podCIDRs[0], n.origin?.line]), [
      ["10.69.1.20", "10.69.1.20", "10.70.0.0/24", 1],
      ["10.69.1.21", "10.69.1.21", "10.70.1.0/24", 2],
      ["10.69.1.22", "10.69.1.22", "10.70.2.0/24", 3],
    ]);
  });

  it("reads machines.txt; a line without a pod subnet is a node without pods", () => {
    const inventory = validateInventory(parseNodesFile(machines, "machines.txt"));
    assert.deepEqual(inventory.nodes.map((n) => [n.name, n.fqdn, n.podCIDRs]), [
      ["server", "server.kubernetes.local", []],
      ["node-0", "node-0.kubernetes.local", ["10.200.0.0/24"]],
      ["node-1", "node-1.kubernetes.local", ["10.200.1.0/24"]],
    ]);
  });

  it("reads YAML with dual-stack pod CIDRs and keeps line numbers", () => {
    const raw = parseNodesFile(yaml, "cluster.yaml");
    assert.equal(raw.cluster, "kubernetes-the-hard-way");
    assert.equal(raw.clusterCIDR, "10.200.0.0/16");
    assert.deepEqual(raw.nodes.map((n) => n.origin?.line), [4, 8]);
    assert.deepEqual(raw.nodes[0]!.podCIDRs, ["10.200.0.0/24", "fd00:10:200::/64"]);
    assert.equal(raw.nodes[0]!.sshAddress, "203.0.113.10");
    assert.deepEqual(raw.nodes[1]!.labels, { zone: "a" });
  });

  it("reads the same inventory from JSON", () => {
    const json = JSON.stringify({ cluster: "c", nodes: [{ name: "a", internalIP: "10.0.0.1", podCIDRs: ["10.1.0.0/24"] }] }, null, 2);
    const raw = parseNodesFile(json, "c.json");
    assert.deepEqual(raw.nodes.map((n) => [n.name, n.internalIPs, n.podCIDRs, n.origin?.line]), [["a", ["10.0.0.1"], ["10.1.0.0/24"], 4]]);
  });

  it("reads `kubectl get nodes -o json`", () => {
    const list = {
      kind: "NodeList",
      items: [
        {
          metadata: { name: "worker-0" },
          spec: { podCIDR: "10.200.0.0/24", podCIDRs: ["10.200.0.0/24"] },
          status: { addresses: [{ type: "InternalIP", address: "10.240.0.20" }, { type: "Hostname", address: "worker-0" }] },
        },
      ],
    };
    const raw = parseNodesFile(JSON.stringify(list), "-");
    assert.deepEqual(raw.nodes.map((n) => [n.name, n.internalIPs, n.podCIDRs]), [["worker-0", ["10.240.0.20"], ["10.200.0.0/24"]]]);
  });

  it("reads what kubectl really prints: `kind: List` (issue 8), as JSON and as YAML", () => {
    const node = {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: "worker-0", labels: { zone: "a" } },
      spec: { podCIDR: "10.200.0.0/24", podCIDRs: ["10.200.0.0/24", "fd00:10:200::/64"] },
      status: { addresses: [{ type: "InternalIP", address: "10.240.0.20" }, { type: "InternalIP", address: "fd00::20" }, { type: "Hostname", address: "worker-0" }] },
    };
    const json = JSON.stringify({ apiVersion: "v1", kind: "List", items: [node], metadata: { resourceVersion: "" } }, null, 4);
    const yamlList = `apiVersion: v1
items:
- apiVersion: v1
  kind: Node
  metadata:
    name: worker-0
  spec:
    podCIDR: 10.200.0.0/24
  status:
    addresses:
    - address: 10.240.0.20
      type: InternalIP
kind: List
metadata:
  resourceVersion: ""
`;
    assert.equal(detectFormat(json), "kubernetes-nodelist");
    assert.equal(detectFormat(yamlList), "kubernetes-nodelist");
    assert.deepEqual(parseNodesFile(json, "-").nodes.map((n) => [n.name, n.internalIPs, n.podCIDRs, n.labels]), [
      ["worker-0", ["10.240.0.20", "fd00::20"], ["10.200.0.0/24", "fd00:10:200::/64"], { zone: "a" }],
    ]);
    assert.deepEqual(parseNodesFile(yamlList, "nodes.yaml").nodes.map((n) => [n.name, n.internalIPs, n.podCIDRs, n.origin?.line]), [["worker-0", ["10.240.0.20"], ["10.200.0.0/24"], 3]]);
  });

  it("rejects NodeList fields of the wrong type with file:line, never a TypeError (issue 8)", () => {
    const list = (status: unknown, metadata: unknown = { name: "worker-0" }) =>
      JSON.stringify({ apiVersion: "v1", kind: "List", items: [{ kind: "Node", metadata, spec: { podCIDR: "10.200.0.0/24" }, status }] }, null, 2);
    const cases: [string, RegExp][] = [
      [list({ addresses: "x" }), /nodes\.json:\d+: .*status\.addresses must be a list/],
      [list({ addresses: [null] }), /nodes\.json:\d+: .*status\.addresses\[0\] must be a mapping/],
      [list({ addresses: [{ type: "InternalIP", address: 12 }] }), /nodes\.json:\d+: .*status\.addresses\[0\]\.address must be a string/],
      [list({ addresses: [{ type: "InternalIP", address: "10.240.0.20" }] }, { name: 12345 }), /nodes\.json:\d+: .*metadata\.name must be a string/],
      [JSON.stringify({ kind: "List", items: [{ kind: "Node", metadata: { name: "a" }, spec: { podCIDRs: "10.200.0.0/24" } }] }), /nodes\.json:1: .*spec\.podCIDRs must be a list of strings/],
      [JSON.stringify({ kind: "List", items: [{ kind: "Node", metadata: { name: "a", labels: ["x"] } }] }), /nodes\.json:1: .*metadata\.labels must be a mapping/],
    ];
    for (const [text, expected] of cases) {
      assert.throws(() => parseNodesFile(text, "nodes.json"), (e: unknown) => e instanceof InputError && expected.test(e.message), text);
    }
    // The line is the bad field's own line, not only the item's.
    const text = list({ addresses: "x" });
    const line = text.split("\n").findIndex((l) => l.includes('"addresses"')) + 1;
    assert.throws(() => parseNodesFile(text, "nodes.json"), (e: unknown) => e instanceof InputError && e.message.includes(`nodes.json:${line}:`));
  });

  it("names file:line for unknown YAML fields and mixed column formats", () => {
    assert.throws(() => parseNodesFile("nodes:\n  - name: a\n    internalIp: 10.0.0.1\n", "n.yaml"), (e: unknown) => e instanceof InputError && /n\.yaml:2: unknown field "internalIp"/.test(e.message));
    assert.throws(() => parseNodesFile("10.0.0.1 10.1.0.0/24\n10.0.0.2 host.example host\n", "t.txt"), /t\.txt:2: "10\.0\.0\.2 host\.example host": this line is in machines\.txt form/);
    assert.throws(() => parseNodesFile("nodes: [\n", "bad.yaml"), /cannot read bad\.yaml as YAML/);
  });

  // issue 8 item 8: the cluster-CIDR guard must never be switched off in silence.
  it("refuses unknown and ill-typed top-level keys with file:line", () => {
    const list = "cluster: c\nclusterCIDR: [10.200.0.0/16]\nnodes:\n  - {name: a, internalIP: 10.0.0.1, podCIDRs: [10.201.0.0/24]}\n";
    assert.throws(() => parseNodesFile(list, "l.yaml"), (e: unknown) => e instanceof InputError && /l\.yaml:2: "clusterCIDR": must be a string/.test(e.message));
    const typo = "clustercidr: 10.200.0.0/16\nnodes:\n  - {name: a, internalIP: 10.0.0.1, podCIDRs: [10.201.0.0/24]}\n";
    assert.throws(() => parseNodesFile(typo, "t.yaml"), (e: unknown) => e instanceof InputError && /t\.yaml:1: "clustercidr": unknown top-level field/.test(e.message));
    const json = JSON.stringify({ clusterCIDR: "10.200.0.0/16", nodes: [], extra: 1 }, null, 2);
    assert.throws(() => parseNodesFile(json, "j.json"), (e: unknown) => e instanceof InputError && /j\.json:4: "extra": unknown top-level field/.test(e.message));
  });

  // issue 8 item 12: an alias bomb is bad input (exit 3 with the file named), not a crash.
  it("refuses a YAML alias bomb as bad input", () => {
    const levels = ["a", "b", "c", "d", "e", "f"];
    const bomb = levels.map((name, i) => `${name}: &${name} [${Array(9).fill(i ? `*${levels[i - 1]}` : '"x"').join(",")}]`).join("\n") + "\nnodes: [*f]\n";
    assert.throws(() => parseNodesFile(bomb, "bomb.yaml"), (e: unknown) => e instanceof InputError && /bomb\.yaml:1: .*alias/i.test(e.message));
  });
});
