/**
 * The route set: what every agent needs of every Node (name, uid, creation time, pod CIDRs, InternalIP
 * addresses), published by one elected agent as a few ConfigMaps that the others watch instead of Nodes
 * (issue 23). A kubelet reports its Node's status every 5 minutes, changed or not: at 5,000 Nodes that is
 * 17 Node updates a second reaching every agent that watches Nodes, none of which moves a route. The
 * route set changes only when a route does.
 *
 * Nodes are spread over SHARDS ConfigMaps by a hash of their name, so a change rewrites (and sends every
 * agent) one shard, not the whole set. A shard holds one JSON line per Node, sorted by name, so the same
 * Nodes always encode to the same text: a publisher compares texts to know whether to write, and a new
 * publisher writes nothing when the set is already right. Every shard carries the shard count, and a
 * consumer takes the set as complete only when it holds every shard of that count: a half-published
 * set must never look like a cluster whose other Nodes left. Pure: no I/O.
 */
import type { KubeNode } from "./nodes.js";

/** Label on every shard (its value: the shard's index), the consumers' label selector. */
export const ROUTE_SET_LABEL = "podroutes.io/route-set-shard";
/** Annotation on every shard: how many shards the set has. */
export const ROUTE_SET_SHARDS_ANNOTATION = "podroutes.io/route-set-shards";
/** The shard's data key. */
export const ROUTE_SET_KEY = "nodes";
export const DEFAULT_ROUTE_SET_SHARDS = 16;
/** The Lease the publisher holds: its renewals are how consumers know it is alive. */
export const ROUTE_SET_LEASE = "podroutes-route-set";

export const shardName = (shard: number) => `podroutes-route-set-${shard}`;

/** FNV-1a of the name, 32 bits: stable across processes and versions, which a shard assignment must be. */
export function shardOf(name: string, shards: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % shards;
}

/**
 * One Node as the set holds it: `[name, uid, creationTimestamp, podCIDRs, internalIPs]`. Fields are
 * kept as the Node had them, right or wrong, so an agent reports a malformed Node for exactly what is
 * wrong with it, as when it watches Nodes.
 */
type Entry = [string, unknown, unknown, unknown, unknown];

function entryOf(node: KubeNode): Entry {
  const spec = node.spec;
  const cidrs = spec === undefined || spec === null ? undefined : (spec.podCIDRs ?? (spec.podCIDR === undefined ? undefined : [spec.podCIDR]));
  const addresses = node.status?.addresses;
  const internal = Array.isArray(addresses) ? addresses.filter((a) => a?.type === "InternalIP").map((a) => a.address) : addresses;
  return [node.metadata.name, node.metadata.uid ?? null, node.metadata.creationTimestamp ?? null, cidrs ?? null, internal ?? null];
}

/** The shard texts (index → text) of `nodes`; every shard has a text, empty when it has no Node. */
export function encodeRouteSet(nodes: Iterable<KubeNode>, shards: number): string[] {
  const lines: string[][] = Array.from({ length: shards }, () => []);
  for (const node of nodes) lines[shardOf(node.metadata.name, shards)]!.push(JSON.stringify(entryOf(node)));
  // JSON of the name first: lines sort by name.
  return lines.map((shard) => shard.sort().join("\n"));
}

/** A shard's text back into Node views (what `routingView` keeps of a Node), or the problem with it. */
export function decodeShard(text: string, where: string): KubeNode[] {
  if (text === "") return [];
  return text.split("\n").map((line, i) => {
    let entry: unknown;
    try {
      entry = JSON.parse(line);
    } catch {
      throw new Error(`${where}: line ${i + 1} is not JSON`);
    }
    if (!Array.isArray(entry) || entry.length !== 5 || typeof entry[0] !== "string") throw new Error(`${where}: line ${i + 1} is not a route set entry`);
    const [name, uid, created, cidrs, ips] = entry as Entry;
    const addresses = Array.isArray(ips) ? ips.map((address) => ({ type: "InternalIP", address })) : ips;
    return {
      kind: "Node",
      metadata: { name, uid: uid ?? undefined, creationTimestamp: created ?? undefined },
      spec: { podCIDRs: cidrs ?? undefined },
      status: { addresses },
    } as KubeNode;
  });
}

/** A shard as a ConfigMap object (for a create, or an update with `resourceVersion`). */
export function shardObject(shard: number, shards: number, namespace: string, text: string, resourceVersion?: string): object {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: shardName(shard),
      namespace,
      labels: { [ROUTE_SET_LABEL]: String(shard), "app.kubernetes.io/managed-by": "podroutes" },
      annotations: { [ROUTE_SET_SHARDS_ANNOTATION]: String(shards) },
      ...(resourceVersion ? { resourceVersion } : {}),
    },
    data: { [ROUTE_SET_KEY]: text },
  };
}

export interface ShardConfigMap {
  metadata: { name: string; namespace?: string; resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  data?: Record<string, string>;
}

/** A shard ConfigMap's index, shard count and text, or why it is not one. */
export function readShard(object: ShardConfigMap): { shard: number; shards: number; text: string } {
  const where = `ConfigMap ${object.metadata.namespace ?? ""}/${object.metadata.name}`;
  const shard = Number(object.metadata.labels?.[ROUTE_SET_LABEL]);
  const shards = Number(object.metadata.annotations?.[ROUTE_SET_SHARDS_ANNOTATION]);
  if (!Number.isInteger(shards) || shards < 1) throw new Error(`${where}: annotation ${ROUTE_SET_SHARDS_ANNOTATION} is not a shard count`);
  if (!Number.isInteger(shard) || shard < 0 || shard >= shards) throw new Error(`${where}: label ${ROUTE_SET_LABEL} is not a shard of ${shards}`);
  const text = object.data?.[ROUTE_SET_KEY];
  if (typeof text !== "string") throw new Error(`${where}: no data key ${ROUTE_SET_KEY}`);
  return { shard, shards, text };
}
