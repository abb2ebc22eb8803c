/** `--nodes aws` without EC2: filter syntax and how an instance becomes a node. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { validateInventory } from "../inventory.js";
import { instanceToNode, parseFilter } from "./aws.js";

describe("aws node source", () => {
  it("parses the aws CLI's NAME=VALUE[,VALUE] filters", () => {
    assert.deepEqual(parseFilter("tag:Role=worker"), { Name: "tag:Role", Values: ["worker"] });
    assert.deepEqual(parseFilter("vpc-id=vpc-1,vpc-2"), { Name: "vpc-id", Values: ["vpc-1", "vpc-2"] });
    for (const bad of ["tag:Role", "=worker", "tag:Role="]) assert.throws(() => parseFilter(bad), /NAME=VALUE/, bad);
  });

  it("takes the name from the Name tag, the internal IP from the private IP and pod CIDRs from the pod-cidr tag", () => {
    const node = instanceToNode({
      InstanceId: "i-0abc",
      PrivateIpAddress: "10.240.0.20",
      Ipv6Address: "fd00::20",
      Placement: { AvailabilityZone: "us-east-1a" },
      Tags: [
        { Key: "Name", Value: "worker-0" },
        { Key: "pod-cidr", Value: "10.200.0.0/24, fd00:10:200::/64" },
      ],
    });
    assert.deepEqual(node, {
      name: "worker-0",
      internalIPs: ["10.240.0.20", "fd00::20"],
      podCIDRs: ["10.200.0.0/24", "fd00:10:200::/64"],
      labels: { "podroutes.io/instance-id": "i-0abc", "topology.kubernetes.io/zone": "us-east-1a" },
    });
    assert.equal(validateInventory({ source: "aws", nodes: [node] }).nodes[0]!.name, "worker-0");
  });

  it("names an untagged instance by its id and gives it no pod CIDR", () => {
    const node = instanceToNode({ InstanceId: "i-0def", PrivateIpAddress: "10.240.0.30" });
    assert.equal(node.name, "i-0def");
    assert.deepEqual(node.podCIDRs, []);
  });
});
