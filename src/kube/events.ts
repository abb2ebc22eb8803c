/**
 * core/v1 Events about Nodes, aggregated so that a node failing on every reconcile does not flood the
 * API (the event floods of flannel #2252 and the route controller's own): as client-go's EventCorrelator
 * does, a repeat of the same reason on the same Node becomes a PATCH of the existing Event's `count`,
 * `lastTimestamp` and `message`, not a new Event; and repeats within `repeatIntervalMs` are only counted,
 * written with the next repeat after it. An Event's name is stable (Node name and a hash of the reason
 * and component), so a new leader continues the count of the Event its predecessor created.
 */
import { createHash } from "node:crypto";
import { KubeApiError, type KubeClient } from "./client.js";

/** Events about cluster-scoped objects (Nodes) live in `default`, as the kubelet's and the route controller's do. */
export const NODE_EVENTS_NAMESPACE = "default";

export interface EventSource {
  /** `podroutes-controller`, `podroutes-agent`. */
  component: string;
  /** Which replica or host reports. */
  instance: string;
}

export interface NodeRef {
  name: string;
  uid?: string;
}

function timestamp(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** An Event on a Node, as `kubectl describe node` shows it. Without `name`, the API generates one. */
export function nodeEvent(node: NodeRef, event: { reason: string; message: string; type?: "Normal" | "Warning"; count?: number; name?: string }, source: EventSource, now: Date): object {
  const time = timestamp(now);
  return {
    apiVersion: "v1",
    kind: "Event",
    metadata: { ...(event.name ? { name: event.name } : { generateName: `${node.name}.podroutes-` }), namespace: NODE_EVENTS_NAMESPACE },
    involvedObject: { apiVersion: "v1", kind: "Node", name: node.name, ...(node.uid ? { uid: node.uid } : {}) },
    reason: event.reason,
    type: event.type ?? "Warning",
    message: event.message.slice(0, 1024),
    source: { component: source.component, host: source.instance },
    reportingComponent: source.component,
    reportingInstance: source.instance,
    firstTimestamp: time,
    lastTimestamp: time,
    count: event.count ?? 1,
  };
}

/** The stable name of the Event for `reason` on a Node. */
export function eventName(node: string, reason: string, component: string): string {
  return `${node}.${createHash("sha256").update(`${component}/${reason}`).digest("hex").slice(0, 12)}`;
}

interface Aggregate {
  count: number;
  /** How many of `count` the API's Event holds. */
  written: number;
  lastWriteAt: number;
}

/** What `record` did: a new Event, a count patch, or only a local count (within the repeat interval). */
export type Recorded = "created" | "patched" | "counted";

export class EventRecorder {
  private readonly aggregates = new Map<string, Aggregate>();

  constructor(
    private readonly client: KubeClient,
    private readonly source: EventSource,
    private readonly options: { repeatIntervalMs?: number; now?: () => Date; monotonic?: () => number } = {},
  ) {}

  /** Records one occurrence of `reason` on `node`; throws KubeApiError when the API refuses (the count is kept for the next try). */
  async record(node: NodeRef, reason: string, message: string, options: { type?: "Normal" | "Warning"; signal?: AbortSignal } = {}): Promise<Recorded> {
    const name = eventName(node.name, reason, this.source.component);
    const now = this.options.now?.() ?? new Date();
    const monotonic = this.options.monotonic?.() ?? performance.now();
    const aggregate = this.aggregates.get(name) ?? { count: 0, written: 0, lastWriteAt: -Infinity };
    aggregate.count++;
    this.aggregates.set(name, aggregate);
    if (aggregate.written > 0 && monotonic - aggregate.lastWriteAt < (this.options.repeatIntervalMs ?? 60_000)) return "counted";
    const request = options.signal ? { signal: options.signal } : {};
    const path = `/api/v1/namespaces/${NODE_EVENTS_NAMESPACE}/events`;
    const patch = (count: number) =>
      this.client.request("PATCH", `${path}/${name}`, { ...request, body: { count, lastTimestamp: timestamp(now), message: message.slice(0, 1024) }, contentType: "application/merge-patch+json" });
    let result: Recorded;
    if (aggregate.written > 0) {
      try {
        await patch(aggregate.count);
        result = "patched";
      } catch (error) {
        // Events expire (an hour by default): start a new one with the count so far.
        if (!(error instanceof KubeApiError && error.failure === "not-found")) throw error;
        await this.client.request("POST", path, { ...request, body: nodeEvent(node, { reason, message, name, count: aggregate.count, ...(options.type ? { type: options.type } : {}) }, this.source, now) });
        result = "created";
      }
    } else {
      try {
        await this.client.request("POST", path, { ...request, body: nodeEvent(node, { reason, message, name, ...(options.type ? { type: options.type } : {}) }, this.source, now) });
        result = "created";
      } catch (error) {
        if (!(error instanceof KubeApiError && error.failure === "conflict")) throw error;
        // Another replica (an earlier leader) made it: continue its count.
        const existing = await this.client.request<{ count?: number }>("GET", `${path}/${name}`, request);
        aggregate.count += existing.count ?? 1;
        await patch(aggregate.count);
        result = "patched";
      }
    }
    aggregate.written = aggregate.count;
    aggregate.lastWriteAt = monotonic;
    return result;
  }

  /** Forgets a Node's aggregates (it was deleted, or its problem is gone): a new problem starts a new count. */
  forget(node: string, reason: string): void {
    this.aggregates.delete(eventName(node, reason, this.source.component));
  }
}
