/**
 * The route set's publisher (kube/route-set.ts): an agent started with `--publish-route-set` watches
 * Nodes as every agent does, competes for the Lease `podroutes-route-set` (controller/leader.ts, the
 * controller's election), and while it holds it writes the shards whose text the Nodes changed. Each
 * write is a PUT carrying the shard's resourceVersion as last read or written, so a write against a
 * shard someone else changed fails with 409 and the publisher reads the set again before its next pass;
 * a term starts by reading the set, so a new leader writes only what its predecessor left wrong.
 */
import { messageOf } from "../apply/engine.js";
import { LeaderElector } from "../controller/leader.js";
import type { KubeClient } from "../kube/client.js";
import type { KubeNode } from "../kube/nodes.js";
import { Reflector, type ReflectorEvent } from "../kube/reflector.js";
import { DEFAULT_ROUTE_SET_SHARDS, encodeRouteSet, readShard, ROUTE_SET_KEY, ROUTE_SET_LABEL, ROUTE_SET_LEASE, shardName, shardObject, type ShardConfigMap } from "../kube/route-set.js";
import type { Logger } from "../observe/log.js";
import type { Registry } from "../observe/metrics.js";
import { ReconcileLoop } from "./loop.js";
import { routingChanged } from "./reconciler.js";

/** A Node change waits this long for the rest of its burst before the set is written. */
export const PUBLISH_DELAY_MS = 10;

export interface PublishResult {
  /** Shards written this pass. */
  written: number;
  /** Nodes in the set. */
  nodes: number;
}

export class RouteSetPublisher {
  /** shard → its text and resourceVersion as the API last showed them; undefined: read the set first. */
  private known: Map<number, { text: string; resourceVersion: string }> | undefined;
  /** shard → the text a write in flight sends. */
  private readonly writing = new Map<number, string>();

  constructor(
    private readonly options: {
      client: KubeClient;
      namespace: string;
      shards: number;
      nodes: () => Iterable<KubeNode>;
    },
  ) {}

  /** Forget what the API holds: the next pass reads the set again (a new term, a conflict). */
  forget(): void {
    this.known = undefined;
  }

  /**
   * A shard as the API's watch shows it. One this publisher did not write (someone changed or deleted
   * it) makes it read the set again on its next pass; true when such a pass is needed.
   */
  noticed(object: ShardConfigMap, deleted: boolean): boolean {
    if (!this.known) return false;
    const index = Number(object.metadata.labels?.[ROUTE_SET_LABEL]);
    const had = this.known.get(index);
    // Its own write, seen before or after the write's answer came back.
    if (!deleted && ((had !== undefined && had.resourceVersion === object.metadata.resourceVersion) || (this.writing.has(index) && this.writing.get(index) === object.data?.[ROUTE_SET_KEY]))) return false;
    this.known = undefined;
    return true;
  }

  /** Writes every shard whose text differs from the API's; throws the first failure, after the other shards' writes ended. */
  async publish(signal: AbortSignal): Promise<PublishResult> {
    const { client, namespace, shards } = this.options;
    const known = this.known ?? (await this.read(signal));
    this.known = known;
    const nodes = [...this.options.nodes()];
    const texts = encodeRouteSet(nodes, shards);
    const base = `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`;
    let written = 0;
    const writes = await Promise.allSettled(
      texts.map(async (text, shard) => {
        const had = known.get(shard);
        if (had?.text === text) return;
        const body = shardObject(shard, shards, namespace, text, had?.resourceVersion);
        this.writing.set(shard, text);
        const answer = await (had
          ? client.request<ShardConfigMap>("PUT", `${base}/${shardName(shard)}`, { body, signal })
          : client.request<ShardConfigMap>("POST", base, { body, signal })
        ).finally(() => this.writing.delete(shard));
        known.set(shard, { text, resourceVersion: answer.metadata.resourceVersion ?? "" });
        written++;
      }),
    );
    const failed = writes.find((w): w is PromiseRejectedResult => w.status === "rejected");
    if (failed) {
      // A conflict (someone else wrote a shard), a shard gone (404), an unknown outcome: what the API
      // holds is read again before the next pass writes.
      this.known = undefined;
      throw failed.reason;
    }
    return { written, nodes: nodes.length };
  }

  private async read(signal: AbortSignal): Promise<Map<number, { text: string; resourceVersion: string }>> {
    const { client, namespace, shards } = this.options;
    const list = await client.request<{ items: ShardConfigMap[] }>("GET", `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`, { query: { labelSelector: ROUTE_SET_LABEL }, signal });
    const known = new Map<number, { text: string; resourceVersion: string }>();
    for (const item of list.items) {
      if (item.metadata.name !== shardName(Number(item.metadata.labels?.[ROUTE_SET_LABEL]))) continue;
      let shard: ReturnType<typeof readShard> | undefined;
      try {
        shard = readShard(item);
      } catch {
        // A broken shard is rewritten whole: its resourceVersion is all the PUT needs.
      }
      const index = shard?.shard ?? Number(item.metadata.labels?.[ROUTE_SET_LABEL]);
      if (index >= shards) continue;
      known.set(index, { text: shard && shard.shards === shards ? shard.text : "\u0000stale", resourceVersion: item.metadata.resourceVersion ?? "" });
    }
    return known;
  }
}

export interface RunningPublisher {
  readonly leading: boolean;
  stop(): Promise<void>;
}

/**
 * The route set's Lease is held on a shorter term than the controller's (15 s / 10 s / 2 s): a route
 * change made while no publisher runs waits for the Lease to expire, so a dead publisher's term is the
 * delay the readers see at a handover. Renewing every second costs the API server one small write a
 * second, from one agent; the readers never watch the Lease, so it costs them nothing.
 */
export const ROUTE_SET_LEASE_TIMING = { leaseDurationMs: 4_000, renewDeadlineMs: 3_000, retryPeriodMs: 1_000 } as const;

/**
 * Competes for the route set's Lease and, while holding it, publishes the set from `nodes` after every
 * change that moves a route (the kubelets' heartbeats do not). Losing the Lease stops the writes at once
 * (the term's signal aborts them); a stop releases the Lease, so a standby takes over without waiting.
 */
export function startRouteSetPublisher(options: {
  client: KubeClient;
  namespace: string;
  identity: string;
  nodes: { store: ReadonlyMap<string, KubeNode>; hasSynced: boolean; subscribe(listener: (event: ReflectorEvent<KubeNode>) => void): () => void };
  registry: Registry;
  log: Logger;
}): RunningPublisher {
  const { client, namespace, log } = options;
  const publisher = new RouteSetPublisher({ client, namespace, shards: DEFAULT_ROUTE_SET_SHARDS, nodes: () => options.nodes.store.values() });
  let term: AbortSignal | undefined;
  const counts = { passes: 0, written: 0 };
  const loop = new ReconcileLoop({
    reconcile: async () => {
      const signal = term;
      if (!signal || signal.aborted) return true;
      try {
        const result = await publisher.publish(signal);
        counts.passes++;
        counts.written += result.written;
        if (result.written) log.info("route set published", { shards: result.written, nodes: result.nodes });
        return true;
      } catch (error) {
        if (signal.aborted) return true;
        log.warn("could not publish the route set; trying again", { error: messageOf(error) });
        return false;
      }
    },
    canRun: () => options.nodes.hasSynced,
    retry: { initialMs: 200, maxMs: 10_000 },
  });
  // The shards as the API has them: one changed or deleted by someone else is written again.
  const shards = new Reflector<ShardConfigMap>({ client, path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`, labelSelector: ROUTE_SET_LABEL, pageSize: 100 });
  shards.subscribe((event) => {
    if ((event.type === "modified" || event.type === "added" || event.type === "deleted") && publisher.noticed(event.object, event.type === "deleted")) {
      loop.trigger(`shard ${event.object.metadata.name} ${event.type} by someone else`, PUBLISH_DELAY_MS);
    }
  });
  options.nodes.subscribe((event) => {
    if (event.type === "error") return;
    if (event.type === "modified" && !routingChanged(event.previous, event.object)) return;
    loop.trigger(event.type === "synced" ? "complete list of Nodes" : `node ${event.object.metadata.name} ${event.type}`, PUBLISH_DELAY_MS);
  });
  options.registry.collected("podroutes_route_set_publishes_total", "passes of the route set's publisher that ended with the set as the Nodes say", "counter", () => counts.passes);
  options.registry.collected("podroutes_route_set_shard_writes_total", "route set shards written", "counter", () => counts.written);
  // Losing the Lease is final for an elector (controller/leader.ts); the agent goes on routing, so it
  // campaigns again with a new one.
  const settings = { namespace, name: ROUTE_SET_LEASE, identity: options.identity, ...ROUTE_SET_LEASE_TIMING };
  let elector: LeaderElector | undefined;
  const stopElection = new AbortController();
  const watchingShards = shards.run(stopElection.signal);
  const electing = (async () => {
    while (!stopElection.signal.aborted) {
      elector = new LeaderElector(client, settings, {
        onStartedLeading: (signal) => {
          log.info("publishing the route set", { lease: `${namespace}/${ROUTE_SET_LEASE}` });
          term = signal;
          publisher.forget();
          loop.trigger("became the route set's publisher");
        },
        onStoppedLeading: (how, why) => {
          term = undefined;
          log.info("stopped publishing the route set", { how, why });
        },
        onNewLeader: (holder) => log.info("the route set is published by another agent", { publisher: holder }),
        onAttemptFailed: (error) => log.debug("route set Lease: an attempt failed", { error: messageOf(error) }),
      });
      if ((await elector.run(stopElection.signal)) === "stopped") return;
    }
  })();
  return {
    get leading() {
      return elector?.isLeader ?? false;
    },
    async stop() {
      await loop.stop();
      stopElection.abort();
      await Promise.all([electing, watchingShards]);
    },
  };
}
