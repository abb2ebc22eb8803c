/**
 * Nodes as the route set has them (kube/route-set.ts), for an agent started with `--route-set`: a
 * reflector lists and watches the shard ConfigMaps, and each shard's change becomes the Node events a
 * Node reflector would have given (added, modified, deleted), so the agent's loop is the same either
 * way. What reaches the agent is one shard per route change, not a Node per kubelet heartbeat.
 *
 * The set counts as listed only when it is complete (every shard of its count present and readable);
 * until then the agent plans nothing, as before a first list of Nodes. A shard that goes missing or
 * unreadable later keeps its last good Nodes: a set being rewritten must never look like Nodes leaving.
 */
import type { KubeClient } from "../kube/client.js";
import type { KubeNode } from "../kube/nodes.js";
import { Reflector, type ReflectorCounters, type ReflectorEvent } from "../kube/reflector.js";
import { decodeShard, readShard, ROUTE_SET_LABEL, type ShardConfigMap } from "../kube/route-set.js";

/** What the agent reads Nodes from: a Node reflector, or this. */
export interface NodeSource {
  readonly store: ReadonlyMap<string, KubeNode>;
  readonly hasSynced: boolean;
  readonly counters: ReflectorCounters;
  subscribe(listener: (event: ReflectorEvent<KubeNode>) => void): () => void;
  run(signal: AbortSignal): Promise<void>;
}

export class RouteSetSource implements NodeSource {
  readonly store = new Map<string, KubeNode>();
  private readonly shards: Reflector<ShardConfigMap & { metadata: { name: string } }>;
  /** shard index → its text and Nodes as last read readably. */
  private readonly held = new Map<number, { text: string; nodes: KubeNode[] }>();
  /** Shards read by readAll, taken by replaceShard. */
  private readonly pending = new Map<number, { text: string; nodes: KubeNode[]; gone?: boolean }>();
  private listeners = new Set<(event: ReflectorEvent<KubeNode>) => void>();
  private synced = false;
  private lastWarning: string | undefined;

  constructor(
    client: KubeClient,
    namespace: string,
    private readonly warn: (message: string, fields?: Record<string, unknown>) => void,
  ) {
    this.shards = new Reflector({ client, path: `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`, labelSelector: ROUTE_SET_LABEL, pageSize: 100 });
    this.shards.subscribe((event) => this.onShardEvent(event));
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  /** The shards' list or watch position, as last seen. */
  get resourceVersion(): string {
    return this.shards.resourceVersion ?? "";
  }

  get counters(): ReflectorCounters {
    return this.shards.counters;
  }

  subscribe(listener: (event: ReflectorEvent<KubeNode>) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  run(signal: AbortSignal): Promise<void> {
    return this.shards.run(signal);
  }

  /** A warning once for each state the set is in, not once per shard event while it stays there. */
  private warnOnce(message: string, fields: Record<string, unknown>): void {
    const text = JSON.stringify([message, fields]);
    if (text === this.lastWarning) return;
    this.lastWarning = text;
    this.warn(message, fields);
  }

  private emit(event: ReflectorEvent<KubeNode>): void {
    for (const listener of this.listeners) listener(event);
  }

  private onShardEvent(event: ReflectorEvent<ShardConfigMap & { metadata: { name: string } }>): void {
    if (event.type === "error") {
      this.emit(event);
      return;
    }
    // The first list's shards arrive one event each before its `synced`: the set is judged once, whole.
    if (event.type !== "synced" && !this.shards.hasSynced) return;
    const changed = this.readAll();
    if (!changed) return;
    // A relist ends in `synced` as a Node reflector's does: the agent reconciles in full.
    const first = !this.synced || event.type === "synced";
    for (const shard of changed) this.replaceShard(shard, !first);
    if (first) {
      this.synced = true;
      this.emit({ type: "synced", resourceVersion: this.shards.resourceVersion ?? "", objects: this.store.size });
    }
  }

  /**
   * Reads the shards in the reflector's store whose text changed into `pending`; the indices that
   * changed when the set is complete, else undefined (and nothing is taken).
   */
  private readAll(): number[] | undefined {
    let count: number | undefined;
    const seen = new Set<number>();
    const read = new Map<number, { text: string; nodes: KubeNode[]; gone?: boolean }>();
    for (const object of this.shards.store.values()) {
      try {
        const shard = readShard(object);
        if (count !== undefined && shard.shards !== count) throw new Error(`ConfigMap ${object.metadata.name}: a set of ${shard.shards} shards, the others say ${count}`);
        count = shard.shards;
        seen.add(shard.shard);
        if (this.held.get(shard.shard)?.text !== shard.text) read.set(shard.shard, { text: shard.text, nodes: decodeShard(shard.text, `ConfigMap ${object.metadata.name}`) });
      } catch (error) {
        this.warnOnce("route set: a shard cannot be read; every Node stays as last read", { error: (error as Error).message });
        return undefined;
      }
    }
    if (count === undefined || seen.size !== count) {
      this.warnOnce("route set: incomplete, waiting for its publisher; routes stay as they are", { shards: seen.size, of: count ?? "unknown" });
      return undefined;
    }
    this.lastWarning = undefined;
    // Shards of a larger set than this one: their Nodes go with them.
    for (const index of [...this.held.keys()]) if (index >= count) read.set(index, { text: "", nodes: [], gone: true });
    for (const [index, shard] of read) this.pending.set(index, shard);
    return [...read.keys()];
  }

  /** The store made what shard `index` now says; with `announce`, each Node that came, changed or went is an event. */
  private replaceShard(index: number, announce: boolean): void {
    const next = this.pending.get(index)!;
    this.pending.delete(index);
    const before = this.held.get(index)?.nodes ?? [];
    if (next.gone) this.held.delete(index);
    else this.held.set(index, next);
    const now = new Map(next.nodes.map((node) => [node.metadata.name, node]));
    const events: ReflectorEvent<KubeNode>[] = [];
    for (const previous of before) {
      const current = now.get(previous.metadata.name);
      if (!current) {
        this.store.delete(previous.metadata.name);
        events.push({ type: "deleted", object: previous });
      } else if (JSON.stringify(current) !== JSON.stringify(previous)) events.push({ type: "modified", object: current, previous });
    }
    const had = new Set(before.map((node) => node.metadata.name));
    for (const [name, node] of now) {
      this.store.set(name, node);
      if (!had.has(name)) events.push({ type: "added", object: node });
    }
    if (announce) for (const event of events) this.emit(event);
  }
}
