/**
 * core/v1 Events about Nodes, aggregated so that a node failing on every reconcile does not flood the
 * API (the event floods of flannel #2252 and the route controller's own): as client-go's EventCorrelator
 * does, a repeat of the same reason on the same Node becomes a PATCH of the existing Event's `count`,
 * `lastTimestamp` and `message`, not a new Event; and repeats within `repeatIntervalMs` are only counted,
 * written with the next repeat after it. The aggregates live in the process, as client-go's do: a new
 * leader starts Events of its own. Writes are exactly `create` and `patch` (its RBAC grants no more).
 */
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

/** An Event on a Node, as `kubectl describe node` shows it; the API generates its name. */
export function nodeEvent(node: NodeRef, event: { reason: string; message: string; type?: "Normal" | "Warning"; count?: number }, source: EventSource, now: Date): object {
  const time = timestamp(now);
  return {
    apiVersion: "v1",
    kind: "Event",
    metadata: { generateName: `${node.name}.podroutes-`, namespace: NODE_EVENTS_NAMESPACE },
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

interface Aggregate {
  /** The Event's name, once created (the API generates it). */
  name?: string;
  count: number;
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
    const key = `${node.name}/${reason}`;
    const now = this.options.now?.() ?? new Date();
    const monotonic = this.options.monotonic?.() ?? performance.now();
    const aggregate = this.aggregates.get(key) ?? { count: 0, lastWriteAt: -Infinity };
    aggregate.count++;
    this.aggregates.set(key, aggregate);
    if (aggregate.name !== undefined && monotonic - aggregate.lastWriteAt < (this.options.repeatIntervalMs ?? 60_000)) return "counted";
    const request = options.signal ? { signal: options.signal } : {};
    const path = `/api/v1/namespaces/${NODE_EVENTS_NAMESPACE}/events`;
    let result: Recorded = "created";
    if (aggregate.name !== undefined) {
      try {
        const body = { count: aggregate.count, lastTimestamp: timestamp(now), message: message.slice(0, 1024) };
        await this.client.request("PATCH", `${path}/${encodeURIComponent(aggregate.name)}`, { ...request, body, contentType: "application/merge-patch+json" });
        result = "patched";
      } catch (error) {
        // Events expire (an hour by default): a new one carries the count so far.
        if (!(error instanceof KubeApiError && error.failure === "not-found")) throw error;
        aggregate.name = undefined;
      }
    }
    if (aggregate.name === undefined) {
      const body = nodeEvent(node, { reason, message, count: aggregate.count, ...(options.type ? { type: options.type } : {}) }, this.source, now);
      const created = await this.client.request<{ metadata?: { name?: string } }>("POST", path, { ...request, body });
      aggregate.name = created.metadata?.name ?? "";
    }
    aggregate.lastWriteAt = monotonic;
    return result;
  }

  /** Forgets a Node's aggregate for `reason` (its problem is gone): a new problem starts a new Event. */
  forget(node: string, reason: string): void {
    this.aggregates.delete(`${node}/${reason}`);
  }
}
