/**
 * The route set with a way out: an agent that reads Nodes from the route set (route-set-source.ts) falls
 * back to watching every Node when nobody publishes the set any more, and goes back to the set when a
 * publisher returns. Without it, a cluster whose publishing agents are all gone would keep routing by
 * the last set it read: a Node joining would never be routed, and nothing would say why.
 *
 * Whether a publisher runs is read from the route set's Lease, polled (a GET every `checkEveryMs`), never
 * watched: its holder renews it every second, and a watch would deliver each renewal to every agent,
 * more than the set itself costs them. The publisher counts as gone once the Lease's record (holder and
 * renew time) has not changed over `afterMs` of successful reads, judged by this agent's own clock
 * (as leader election does, so clock skew between nodes does not matter); a failed read judges nothing,
 * so an API server that is down does not send every agent to list every Node when it comes back.
 *
 * The switch is made when the other side is complete: to the Nodes once their first list is in (until
 * then the set's last Nodes stay), back to the set once the set is complete. Each switch is a `synced`
 * event, which the agent answers with a full reconcile from the new store.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { KubeApiError, KubeClient } from "../kube/client.js";
import type { KubeNode } from "../kube/nodes.js";
import type { Reflector, ReflectorCounters, ReflectorEvent } from "../kube/reflector.js";
import { ROUTE_SET_LEASE } from "../kube/route-set.js";
import type { NodeSource, RouteSetSource } from "./route-set-source.js";

export interface RouteSetFallbackOptions {
  /** The publisher counts as gone after its Lease has not changed for this long. */
  afterMs: number;
  /** How often the Lease is read. */
  checkEveryMs: number;
}

/** The route set's default: the publisher gone after 3 minutes without a renewal. */
export const DEFAULT_ROUTE_SET_FALLBACK_AFTER_MS = 180_000;

/** A read of the Lease a third of the bound, at most a minute apart (a GET a minute: about 60 KB an hour per agent). */
export function fallbackOptions(afterMs: number): RouteSetFallbackOptions {
  return { afterMs, checkEveryMs: Math.min(60_000, Math.round(afterMs / 3)) };
}

interface Lease {
  spec?: { holderIdentity?: string; renewTime?: string; acquireTime?: string };
}

export class RouteSetWithFallback implements NodeSource {
  private readonly listeners = new Set<(event: ReflectorEvent<KubeNode>) => void>();
  /** The Node watch while falling back (and while its first list is read), else undefined. */
  private nodes: { reflector: Reflector<KubeNode>; stop: AbortController; running: Promise<void> } | undefined;
  private reading: "route-set" | "nodes" = "route-set";
  private leaseRecord: string | undefined;
  private leaseChangedAt: number;
  /** Successive reads that found the Lease changed: a returning publisher must be seen renewing, not just taking it. */
  private changesInARow = 0;
  private forbiddenSaid = false;
  /** Times this agent came back from the Nodes to the set. */
  returns = 0;

  constructor(
    private readonly routeSet: RouteSetSource,
    private readonly deps: {
      client: KubeClient;
      namespace: string;
      /** A reflector of every Node, made when the agent falls back. */
      nodeWatch: () => Reflector<KubeNode>;
      options: RouteSetFallbackOptions;
      now: () => number;
      log: { info(message: string, fields?: Record<string, unknown>): void; warn(message: string, fields?: Record<string, unknown>): void };
    },
  ) {
    this.leaseChangedAt = deps.now();
    routeSet.subscribe((event) => {
      if (this.reading === "route-set") this.emit(event);
      else if (event.type === "synced" && this.publisherReturned()) this.backToRouteSet();
    });
  }

  /** Which store the agent reads now. */
  get source(): "route-set" | "nodes" {
    return this.reading;
  }

  get store(): ReadonlyMap<string, KubeNode> {
    return this.reading === "nodes" ? this.nodes!.reflector.store : this.routeSet.store;
  }

  get hasSynced(): boolean {
    return this.reading === "nodes" ? this.nodes!.reflector.hasSynced : this.routeSet.hasSynced;
  }

  get counters(): ReflectorCounters {
    return this.reading === "nodes" ? this.nodes!.reflector.counters : this.routeSet.counters;
  }

  subscribe(listener: (event: ReflectorEvent<KubeNode>) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async run(signal: AbortSignal): Promise<void> {
    const checking = (async () => {
      while (!signal.aborted) {
        // As the reflector waits: the timer's abort listener goes with it (one left per wait would pile up on the signal).
        await sleep(this.deps.options.checkEveryMs, undefined, { signal }).catch(() => undefined);
        if (!signal.aborted) await this.check(signal);
      }
    })();
    await Promise.all([this.routeSet.run(signal), checking]);
    this.nodes?.stop.abort();
    await this.nodes?.running;
  }

  /** One read of the Lease, and the switch it calls for. */
  async check(signal?: AbortSignal): Promise<void> {
    let record: string;
    try {
      const answer = await this.deps.client.request<Lease>("GET", `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.deps.namespace)}/leases/${ROUTE_SET_LEASE}`, { ...(signal ? { signal } : {}) });
      const spec = answer.spec ?? {};
      record = JSON.stringify([spec.holderIdentity ?? "", spec.renewTime ?? "", spec.acquireTime ?? ""]);
    } catch (error) {
      const code = (error as KubeApiError).code;
      if (code === 403 && !this.forbiddenSaid) {
        this.forbiddenSaid = true;
        this.deps.log.warn("route set: its Lease cannot be read, so a publisher that is gone goes unnoticed (deploy/route-set-rbac.yaml grants get on it)", { error: (error as Error).message });
      }
      if (code !== 404) return; // judged on successful reads only
      record = "no Lease";
    }
    if (record !== this.leaseRecord) {
      this.leaseRecord = record;
      this.leaseChangedAt = this.deps.now();
      this.changesInARow++;
    } else this.changesInARow = 0;
    if (this.publisherRuns()) {
      if (this.reading === "nodes" && this.routeSet.hasSynced && this.publisherReturned()) this.backToRouteSet();
      else if (this.reading === "route-set" && this.nodes) this.cancelFallback();
    } else if (!this.nodes) this.fallBack();
  }

  private publisherRuns(): boolean {
    return this.leaseRecord !== undefined && this.leaseRecord !== "no Lease" && this.deps.now() - this.leaseChangedAt <= this.deps.options.afterMs;
  }

  /** Back from the Nodes only for a publisher seen renewing (twice changed in a row), so it has had time to publish. */
  private publisherReturned(): boolean {
    return this.publisherRuns() && this.changesInARow >= 2;
  }

  /** The publisher came back while the Node list was still being read: the set stays, the list is dropped. */
  private cancelFallback(): void {
    const nodes = this.nodes!;
    this.nodes = undefined;
    nodes.stop.abort();
  }

  private fallBack(): void {
    this.deps.log.warn("route set: no publisher for a while; watching every Node until one returns", { lease: `${this.deps.namespace}/${ROUTE_SET_LEASE}`, unchangedForSeconds: Math.round((this.deps.now() - this.leaseChangedAt) / 1000) });
    const reflector = this.deps.nodeWatch();
    const stop = new AbortController();
    reflector.subscribe((event) => {
      if (this.nodes?.reflector !== reflector) return;
      if (this.reading === "nodes") this.emit(event);
      else if (event.type === "synced") {
        this.reading = "nodes";
        this.emit(event);
      }
    });
    this.nodes = { reflector, stop, running: reflector.run(stop.signal).catch(() => undefined) };
  }

  private backToRouteSet(): void {
    this.deps.log.info("route set: published again; reading it instead of every Node");
    this.reading = "route-set";
    this.returns++;
    this.cancelFallback();
    this.emit({ type: "synced", resourceVersion: this.routeSet.resourceVersion, objects: this.routeSet.store.size });
  }

  private emit(event: ReflectorEvent<KubeNode>): void {
    for (const listener of this.listeners) listener(event);
  }
}
