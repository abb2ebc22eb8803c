/**
 * What the agent tells the API about nodes, decided without I/O: its own Node's NetworkUnavailable
 * condition once its routes are in place (the route controller's and Calico's convention: the scheduler
 * keeps pods off a node whose network is not ready), and the Event that reports a quarantined Node.
 */
import type { KubeNode } from "../kube/nodes.js";

export const NETWORK_CONDITION = "NetworkUnavailable";
export const READY_REASON = "PodroutesAgentReady";
export const QUARANTINE_REASON = "PodroutesQuarantined";
export const AGENT_COMPONENT = "podroutes-agent";
/** Events about cluster-scoped objects (Nodes) live in `default`, as the kubelet's do. */
export const NODE_EVENTS_NAMESPACE = "default";

/**
 * The strategic-merge patch of `nodes/NAME/status` that sets NetworkUnavailable=False with podroutes'
 * reason, or undefined when the Node already shows exactly that status and reason (nothing to write).
 * `conditions` merge by `type`, so the kubelet's own conditions are left alone. The transition time moves
 * only when the status does, as the API's conventions ask.
 */
export function networkReadyPatch(node: KubeNode, now: Date): object | undefined {
  const conditions = Array.isArray(node.status?.conditions) ? node.status!.conditions! : [];
  const current = conditions.find((condition) => condition?.type === NETWORK_CONDITION);
  if (current?.status === "False" && current.reason === READY_REASON) return undefined;
  const time = now.toISOString().replace(/\.\d{3}Z$/, "Z");
  return {
    status: {
      conditions: [
        {
          type: NETWORK_CONDITION,
          status: "False",
          reason: READY_REASON,
          message: "podroutes agent: routes to every other node's pod CIDRs are in place on this node",
          lastHeartbeatTime: time,
          lastTransitionTime: current?.status === "False" && current.lastTransitionTime ? current.lastTransitionTime : time,
        },
      ],
    },
  };
}

/** A Warning Event on a Node the agent left out of routing, and why. */
export function quarantineEvent(node: { name: string; uid?: string }, problems: string[], reporter: string, now: Date): object {
  const time = now.toISOString().replace(/\.\d{3}Z$/, "Z");
  return {
    apiVersion: "v1",
    kind: "Event",
    metadata: { generateName: `${node.name}.podroutes-`, namespace: NODE_EVENTS_NAMESPACE },
    involvedObject: { apiVersion: "v1", kind: "Node", name: node.name, ...(node.uid ? { uid: node.uid } : {}) },
    reason: QUARANTINE_REASON,
    type: "Warning",
    message: `podroutes leaves this node out of pod routing until its Node object is fixed: ${problems.join("; ")}`.slice(0, 1024),
    source: { component: AGENT_COMPONENT, host: reporter },
    reportingComponent: AGENT_COMPONENT,
    reportingInstance: reporter,
    firstTimestamp: time,
    lastTimestamp: time,
    count: 1,
  };
}
