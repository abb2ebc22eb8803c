import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { matchesTags, parseTagSelector, vmToNode } from "./azure.js";

describe("--nodes azure", () => {
  it("parses KEY=VALUE and KEY tag selectors, and refuses Azure's forbidden tag-name characters", () => {
    assert.deepEqual(parseTagSelector("role=worker"), { key: "role", value: "worker" });
    assert.deepEqual(parseTagSelector("pool"), { key: "pool" });
    assert.deepEqual(parseTagSelector("note=a=b"), { key: "note", value: "a=b" });
    assert.throws(() => parseTagSelector("kubernetes.io/cluster=x"), /KEY without/);
    assert.throws(() => parseTagSelector("=x"), /must be KEY/);
  });
  it("matches every selector, tag names case-insensitively and values exactly", () => {
    const tags = { Role: "worker", "k8s-azure-cluster-name": "prod" };
    assert.equal(matchesTags(tags, [{ key: "role", value: "worker" }, { key: "k8s-azure-cluster-name", value: "prod" }]), true);
    assert.equal(matchesTags(tags, [{ key: "role", value: "Worker" }]), false);
    assert.equal(matchesTags(tags, [{ key: "pool" }]), false);
    assert.equal(matchesTags(tags, [{ key: "ROLE" }]), true);
  });
  it("takes the primary NIC's IPs (IPv4 first), the pod-cidr tag (comma-separated) and the node-name tag, else the VM name lowercased", () => {
    const nics = new Map([
      ["/subscriptions/s/resourcegroups/rg/providers/microsoft.network/networkinterfaces/a", { id: "/x/a", name: "a", enableIPForwarding: false, addresses: ["fd00::20", "10.240.0.20"] }],
      ["/subscriptions/s/resourcegroups/rg/providers/microsoft.network/networkinterfaces/b", { id: "/x/b", name: "b", enableIPForwarding: false, addresses: ["10.9.0.1"] }],
    ]);
    const vm = {
      id: "/vm/Worker-0",
      name: "Worker-0",
      tags: { "pod-cidr": "10.200.0.0/24, fd00:200::/64" },
      nicIds: ["/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/a", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/b"],
    };
    const node = vmToNode(vm, nics);
    assert.equal(node.name, "worker-0");
    assert.deepEqual(node.internalIPs, ["10.240.0.20", "fd00::20"]);
    assert.deepEqual(node.podCIDRs, ["10.200.0.0/24", "fd00:200::/64"]);
    assert.equal(vmToNode({ ...vm, tags: { "Node-Name": "n0" } }, nics).name, "n0");
    assert.deepEqual(vmToNode({ ...vm, nicIds: [] }, nics).internalIPs, []);
  });
});
