import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { KubeNode } from "../../kube/nodes.js";
import { addressInPodCidr, pathPeers } from "./peers.js";

const node = (name: string, podCIDRs: unknown, ip?: string): KubeNode => ({ metadata: { name }, spec: { podCIDRs } as KubeNode["spec"], status: { addresses: ip ? [{ type: "InternalIP", address: ip }] : [] } });

describe("path peers", () => {
  it("the n-th address of an IPv4 pod CIDR", () => {
    assert.equal(addressInPodCidr("10.200.1.0/24", 1), "10.200.1.1");
    assert.equal(addressInPodCidr("10.200.1.0/24", 255), "10.200.1.255");
    assert.equal(addressInPodCidr("10.200.1.0/24", 256), undefined);
    assert.equal(addressInPodCidr("10.201.0.0/16", 258), "10.201.1.2");
    assert.equal(addressInPodCidr("fd00:200::/64", 1), undefined);
    assert.equal(addressInPodCidr("10.200.1.1/24", 1), undefined, "host bits set");
  });

  it("this node's address and every other node's with its pod CIDR and next hop as the key; nodes without an IPv4 pod CIDR or InternalIP left out", () => {
    const nodes = [node("w0", ["10.200.0.0/24"], "10.240.0.20"), node("w1", ["fd00::/64", "10.200.1.0/24"], "10.240.0.21"), node("cp", []), node("bad", "10.200.9.0/24"), node("no-ip", ["10.200.8.0/24"])];
    assert.deepEqual(pathPeers(nodes, "w0", 1), { own: "10.200.0.1", peers: [{ name: "w1", target: "10.200.1.1", key: "10.200.1.0/24 via 10.240.0.21" }] });
    assert.deepEqual(pathPeers(nodes, "cp", 1).own, undefined);
  });
});
