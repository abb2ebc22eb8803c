import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { KubeNode, NodeCondition } from "../kube/nodes.js";
import { networkReadyPatch, quarantineEvent } from "./node-status.js";

const NOW = new Date("2026-11-23T10:00:00.123Z");

function withConditions(conditions?: NodeCondition[]): KubeNode {
  return { metadata: { name: "worker-0" }, status: { ...(conditions ? { conditions } : {}) } };
}

const ready: NodeCondition = { type: "Ready", status: "True", reason: "KubeletReady" };

describe("NetworkUnavailable condition", () => {
  it("patches nothing when the Node already shows False with podroutes' reason", () => {
    const node = withConditions([ready, { type: "NetworkUnavailable", status: "False", reason: "PodroutesAgentReady", lastTransitionTime: "2026-01-01T00:00:00Z" }]);
    assert.equal(networkReadyPatch(node, NOW), undefined);
  });

  it("sets False when the condition is missing or True, the transition time now", () => {
    for (const node of [withConditions(), withConditions([ready]), withConditions([{ type: "NetworkUnavailable", status: "True", reason: "NoRouteCreated", lastTransitionTime: "2026-01-01T00:00:00Z" }])]) {
      assert.deepEqual(networkReadyPatch(node, NOW), {
        status: {
          conditions: [
            {
              type: "NetworkUnavailable",
              status: "False",
              reason: "PodroutesAgentReady",
              message: "podroutes agent: routes to every other node's pod CIDRs are in place on this node",
              lastHeartbeatTime: "2026-11-23T10:00:00Z",
              lastTransitionTime: "2026-11-23T10:00:00Z",
            },
          ],
        },
      });
    }
  });

  it("a False status with another reason takes podroutes' reason but keeps its transition time", () => {
    const node = withConditions([{ type: "NetworkUnavailable", status: "False", reason: "RouteCreated", lastTransitionTime: "2026-01-01T00:00:00Z" }]);
    const patch = networkReadyPatch(node, NOW) as { status: { conditions: NodeCondition[] } };
    assert.equal(patch.status.conditions[0]!.reason, "PodroutesAgentReady");
    assert.equal(patch.status.conditions[0]!.lastTransitionTime, "2026-01-01T00:00:00Z");
  });

  it("the patch names only its own condition (strategic merge by type leaves the kubelet's alone)", () => {
    const patch = networkReadyPatch(withConditions([ready]), NOW) as { status: { conditions: NodeCondition[] } };
    assert.deepEqual(patch.status.conditions.map((c) => c.type), ["NetworkUnavailable"]);
  });
});

describe("quarantine Event", () => {
  it("is a Warning on the Node, from podroutes-agent on the reporting host", () => {
    const event = quarantineEvent({ name: "worker-3", uid: "u-3" }, ["node worker-3: pod CIDR overlaps 10.200.1.0/24 of node worker-1"], "worker-3", NOW) as any;
    assert.equal(event.kind, "Event");
    assert.equal(event.metadata.namespace, "default");
    assert.deepEqual(event.involvedObject, { apiVersion: "v1", kind: "Node", name: "worker-3", uid: "u-3" });
    assert.equal(event.type, "Warning");
    assert.equal(event.reason, "PodroutesQuarantined");
    assert.match(event.message, /overlaps 10\.200\.1\.0\/24/);
    assert.deepEqual(event.source, { component: "podroutes-agent", host: "worker-3" });
  });
});
