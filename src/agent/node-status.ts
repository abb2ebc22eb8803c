/**
 * What the agent tells the API about nodes, decided without I/O: its own Node's NetworkUnavailable
 * condition once its routes are in place (the route controller's and Calico's convention: the scheduler
 * keeps pods off a node whose network is not ready), and the Event that reports a quarantined Node.
 */
import { nodeEvent } from "../kube/events.js";
import type { KubeNode } from "../kube/nodes.js";

export const NETWORK_CONDITION = "NetworkUnavailable";
export const READY_REASON = "PodroutesAgentReady";
export const QUARANTINE_REASON = "PodroutesQuarantined";
export const AGENT_COMPONENT = "podroutes-agent";
export { NODE_EVENTS_NAMESPACE } from "../kube/events.js";

/** The NetworkUnavailable condition a reporter wants a Node to show. */
export interface NetworkCondition {
  status: "True" | "False";
  reason: string;
  message: string;
}

/**
 * The strategic-merge patch of `nodes/NAME/status` that sets NetworkUnavailable as `wanted` says, or
 * undefined when the Node already shows that status and reason (nothing to write) and, with
 * `compareMessage`, that message too: a reporter whose messages name why (the controller's: which route
 * limit, which foreign route) and are built without timestamps or counters, so an unchanged situation
 * never differs while a condition someone else wrote (the kubelet's initial `NoRouteCreated`) is taken
 * over. `conditions` merge by `type`, so the kubelet's own conditions are left alone. The transition time
 * moves only when the status does, as the API's conventions ask.
 */
export function networkConditionPatch(node: KubeNode, wanted: NetworkCondition, now: Date, options: { compareMessage?: boolean } = {}): object | undefined {
  const conditions = Array.isArray(node.status?.conditions) ? node.status!.conditions! : [];
  const current = conditions.find((condition) => condition?.type === NETWORK_CONDITION);
  const sameMessage = !options.compareMessage || current?.message === wanted.message.slice(0, 1024);
  if (current?.status === wanted.status && current.reason === wanted.reason && sameMessage) return undefined;
  const time = now.toISOString().replace(/\.\d{3}Z$/, "Z");
  return {
    status: {
      conditions: [
        {
          type: NETWORK_CONDITION,
          status: wanted.status,
          reason: wanted.reason,
          message: wanted.message.slice(0, 1024),
          lastHeartbeatTime: time,
          lastTransitionTime: current?.status === wanted.status && current.lastTransitionTime ? current.lastTransitionTime : time,
        },
      ],
    },
  };
}

/** NetworkUnavailable=False with the agent's reason, once this node's routes are in place. */
export function networkReadyPatch(node: KubeNode, now: Date): object | undefined {
  return networkConditionPatch(node, { status: "False", reason: READY_REASON, message: "podroutes agent: routes to every other node's pod CIDRs are in place on this node" }, now);
}

/** A Warning Event on a Node the agent left out of routing, and why. */
export function quarantineEvent(node: { name: string; uid?: string }, problems: string[], reporter: string, now: Date): object {
  const message = `podroutes leaves this node out of pod routing until its Node object is fixed: ${problems.join("; ")}`;
  return nodeEvent(node, { reason: QUARANTINE_REASON, message }, { component: AGENT_COMPONENT, instance: reporter }, now);
}
