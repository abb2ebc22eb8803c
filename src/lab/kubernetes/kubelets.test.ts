import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { kubeletNodeObject } from "./kubelets.js";

describe("kubeletNodeObject", () => {
  it("registers the Node as a kubelet does: addresses, Ready, and the kubelet's annotation (flannel panics on a Node without annotations)", () => {
    const node = kubeletNodeObject({ name: "worker-0", internalIP: "10.240.0.20" }, new Date("2026-01-02T03:04:05.678Z")) as any;
    assert.deepEqual(node.metadata.annotations, { "volumes.kubernetes.io/controller-managed-attach-detach": "true" });
    assert.deepEqual(node.status.addresses, [{ type: "InternalIP", address: "10.240.0.20" }, { type: "Hostname", address: "worker-0" }]);
    assert.equal(node.status.conditions[0].type, "Ready");
    assert.equal(node.status.conditions[0].lastHeartbeatTime, "2026-01-02T03:04:05Z");
    assert.equal(node.spec, undefined, "no pod CIDR: the node IPAM controller gives it");
  });
});
