/** `--nodes openstack` without Nova: the metadata selector and how a server becomes a node. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Server } from "../targets/openstack/client.js";
import { matchesMetadata, parseMetadataRequirement, serverToNode } from "./openstack.js";

const server = (addresses: Server["addresses"], metadata: Record<string, string> = {}): Server => ({ id: "s-1", name: "worker-0", status: "ACTIVE", metadata, addresses });

describe("openstack node source", () => {
  it("parses KEY and KEY=VALUE; every requirement must hold", () => {
    assert.deepEqual(parseMetadataRequirement("kubernetes.io/cluster/k8s"), { key: "kubernetes.io/cluster/k8s" });
    assert.deepEqual(parseMetadataRequirement("role=worker"), { key: "role", value: "worker" });
    assert.throws(() => parseMetadataRequirement("=worker"), /KEY or KEY=VALUE/);
    const selector = [{ key: "role", value: "worker" }, { key: "kubernetes.io/cluster/k8s" }];
    assert.ok(matchesMetadata(selector, { role: "worker", "kubernetes.io/cluster/k8s": "" }));
    assert.ok(!matchesMetadata(selector, { role: "control-plane", "kubernetes.io/cluster/k8s": "" }));
  });

  it("takes the fixed IPs of the server's network, one per family, and the pod CIDRs from pod-cidr metadata", () => {
    const found = serverToNode(
      server({ k8s: [{ addr: "10.0.0.11", version: 4, type: "fixed" }, { addr: "203.0.113.5", version: 4, type: "floating" }, { addr: "fd00::11", version: 6, type: "fixed" }] }, { "pod-cidr": "10.200.1.0/24, fd00:10:200:1::/64" }),
    );
    assert.deepEqual(found, {
      node: { name: "worker-0", internalIPs: ["10.0.0.11", "fd00::11"], podCIDRs: ["10.200.1.0/24", "fd00:10:200:1::/64"], labels: { "podroutes.io/server-id": "s-1", "podroutes.io/network": "k8s" } },
    });
  });

  it("a server on several networks needs --os-network, and takes that network's address", () => {
    const two = server({ a: [{ addr: "10.1.0.5", version: 4 }], b: [{ addr: "10.2.0.5", version: 4 }] });
    assert.match((serverToNode(two) as { skipped: string }).skipped, /on 2 networks \(a, b\): name the cluster's with --os-network/);
    assert.deepEqual((serverToNode(two, "b") as { node: { internalIPs: string[] } }).node.internalIPs, ["10.2.0.5"]);
  });
});
