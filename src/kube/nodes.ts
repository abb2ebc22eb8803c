/**
 * Kubernetes Node objects → podroutes nodes: the name, the InternalIP addresses of `status.addresses`
 * (one per family), `spec.podCIDRs` (falling back to `spec.podCIDR`), the labels, and an ExternalIP as the
 * SSH address. One mapping for every place Nodes come from: `kubectl get nodes -o json|yaml` files, the
 * `kubernetes` node source and the agent's watch.
 *
 * A Node is JSON from somewhere else, so every field is checked before it is used: a field of the wrong
 * type is a problem naming its path (`status.addresses[0].address must be a string`), never a TypeError
 * and never silently accepted. Two ways to use the result: the CLI rejects a whole bad inventory
 * (every problem listed), while a long-running process quarantines the bad Nodes and serves the rest
 * (`inventoryFromNodes`). Pure: no I/O.
 */
import { checkNode, checkSettings, ClaimIndex, type Claimant, type InventorySettings, type Problem, type RawNode } from "../inventory.js";
import { familyOfAddress, parseIp, type Inventory, type Node } from "../model.js";

/** The parts of a Node podroutes reads or writes (the API has many more). */
export interface KubeNode {
  apiVersion?: string;
  kind?: string;
  metadata: KubeObjectMeta;
  spec?: { podCIDR?: string; podCIDRs?: string[]; [key: string]: unknown };
  status?: { addresses?: { type: string; address: string }[]; conditions?: NodeCondition[]; [key: string]: unknown };
}

export interface KubeObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  creationTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

export interface NodeCondition {
  type: string;
  status: "True" | "False" | "Unknown";
  reason?: string;
  message?: string;
  lastHeartbeatTime?: string;
  lastTransitionTime?: string;
}

/**
 * The part of a Node the agent keeps (its store holds 5,000 of them): what routing reads (name, labels,
 * creation time, pod CIDRs, addresses), what node status and Events need (uid, resourceVersion, and of
 * the NetworkUnavailable condition what the agent's patch compares: status, reason, transition time), and
 * nothing of the rest (images, managedFields, the kubelet's other conditions, nodeInfo, capacity...).
 * Fields are kept as they came, right type or not, so a malformed Node is still reported for exactly
 * what is wrong with it; a field the Node lacks is undefined. Each part is one object literal of fixed
 * shape, not spread together: V8 gives those their fields in the object itself, where spreads left an
 * extra property array per object (issue 9's memory).
 */
export function routingView(object: unknown): KubeNode {
  if (!isMapping(object)) return object as KubeNode;
  const { metadata, spec, status } = object;
  const view = {
    kind: object.kind,
    metadata: isMapping(metadata) ? { name: metadata.name, uid: metadata.uid, resourceVersion: metadata.resourceVersion, creationTimestamp: metadata.creationTimestamp, labels: metadata.labels } : metadata,
    spec: isMapping(spec) ? { podCIDR: spec.podCIDR, podCIDRs: spec.podCIDRs } : spec,
    status: isMapping(status) ? { addresses: status.addresses, conditions: Array.isArray(status.conditions) ? status.conditions.filter(isNetworkCondition).map(conditionView) : status.conditions } : status,
  };
  return view as unknown as KubeNode;
}

const isNetworkCondition = (condition: unknown): boolean => isMapping(condition) && condition.type === "NetworkUnavailable";

function conditionView(condition: Record<string, unknown>): Record<string, unknown> {
  return { type: condition.type, status: condition.status, reason: condition.reason, lastTransitionTime: condition.lastTransitionTime };
}

/** Where in a Node object a problem is: `["status", "addresses", 0, "address"]`. */
export type FieldPath = (string | number)[];

export interface FieldProblem {
  path: FieldPath;
  message: string;
}

export interface NodeReading {
  /** The node, when every field podroutes reads has the right type (its values are checked later, by the inventory). */
  node?: RawNode;
  /** `metadata.name` when it is a string, even if other fields are bad, so a problem can name the node. */
  name?: string;
  problems: FieldProblem[];
  /** Facts worth telling the operator that are not errors (several InternalIPs, no pod CIDR yet). */
  notes: string[];
}

export function pathText(path: FieldPath): string {
  return path.map((part, index) => (typeof part === "number" ? `[${part}]` : index === 0 ? part : `.${part}`)).join("");
}

const isMapping = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);

/** Reads one Node object of unknown shape. */
export function readKubeNode(object: unknown): NodeReading {
  const problems: FieldProblem[] = [];
  const notes: string[] = [];
  const say = (path: FieldPath, message: string) => problems.push({ path, message: `${pathText(path)} ${message}` });
  if (!isMapping(object)) return { problems: [{ path: [], message: "a Node must be a mapping" }], notes };
  if (object.kind !== undefined && object.kind !== "Node") say(["kind"], `is ${JSON.stringify(object.kind)}, not Node`);

  const metadata = object.metadata;
  let name: string | undefined;
  let labels: Record<string, string> | undefined;
  if (!isMapping(metadata)) say(["metadata"], "must be a mapping");
  else {
    if (typeof metadata.name === "string") name = metadata.name;
    else say(["metadata", "name"], "must be a string");
    if (metadata.labels !== undefined && metadata.labels !== null) {
      if (!isMapping(metadata.labels)) say(["metadata", "labels"], "must be a mapping");
      else {
        let allText = true;
        for (const [key, value] of Object.entries(metadata.labels)) {
          if (typeof value === "string") continue;
          allText = false;
          say(["metadata", "labels", key], "must be a string");
        }
        // The Node's own labels object, not a copy: an agent holds 5,000 of them (issue 9), and nothing
        // podroutes does writes to labels.
        if (allText) labels = metadata.labels as Record<string, string>;
      }
    }
  }

  const spec = object.spec ?? {};
  let podCIDRs: string[] = [];
  if (!isMapping(spec)) say(["spec"], "must be a mapping");
  else {
    const list = spec.podCIDRs;
    if (list !== undefined && list !== null && !(Array.isArray(list) && list.every((c) => typeof c === "string"))) say(["spec", "podCIDRs"], "must be a list of strings");
    else if (spec.podCIDR !== undefined && spec.podCIDR !== null && typeof spec.podCIDR !== "string") say(["spec", "podCIDR"], "must be a string");
    // podCIDRs is the dual-stack field; podCIDR is its first entry, alone on clusters older than 1.16.
    else podCIDRs = (list as string[] | undefined)?.length ? [...(list as string[])] : typeof spec.podCIDR === "string" && spec.podCIDR ? [spec.podCIDR] : [];
  }

  const status = object.status ?? {};
  const internal: string[] = [];
  let external: string | undefined;
  if (!isMapping(status)) say(["status"], "must be a mapping");
  else if (status.addresses !== undefined && status.addresses !== null) {
    if (!Array.isArray(status.addresses)) say(["status", "addresses"], "must be a list");
    else {
      status.addresses.forEach((entry: unknown, index) => {
        const at: FieldPath = ["status", "addresses", index];
        if (!isMapping(entry)) return say(at, "must be a mapping with type and address");
        if (typeof entry.type !== "string") return say([...at, "type"], "must be a string");
        if (typeof entry.address !== "string") return say([...at, "address"], "must be a string");
        if (entry.type === "InternalIP") internal.push(entry.address);
        else if (entry.type === "ExternalIP") external ??= entry.address;
      });
    }
  }

  if (problems.length) return { ...(name !== undefined ? { name } : {}), problems, notes };

  const internalIPs = firstPerFamily(internal, notes);
  if (podCIDRs.length === 0) notes.push("has no pod CIDR yet: no route leads to it (it still gets routes to the other nodes)");
  const node: RawNode = {
    ...(name !== undefined ? { name } : {}),
    internalIPs,
    podCIDRs,
    ...(external ? { sshAddress: external } : {}),
    ...(labels ? { labels } : {}),
  };
  return { node, ...(name !== undefined ? { name } : {}), problems, notes };
}

/**
 * One InternalIP per family, the first listed (the kubelet lists its primary address first). Text that is
 * no IP address is kept, for the inventory's validation to report with the node's name.
 */
function firstPerFamily(addresses: string[], notes: string[]): string[] {
  const chosen: string[] = [];
  const seen = new Map<number, string[]>();
  for (const text of addresses) {
    const address = parseIp(text);
    if (!address) {
      chosen.push(text);
      continue;
    }
    const family = familyOfAddress(address);
    const ofFamily = seen.get(family) ?? [];
    if (!ofFamily.length) chosen.push(text);
    seen.set(family, [...ofFamily, text]);
  }
  for (const [family, all] of seen) {
    if (all.length > 1) notes.push(`has ${all.length} IPv${family} InternalIPs (${all.join(", ")}): routing to the first, ${all[0]}`);
  }
  return chosen;
}

/** What a long-running process serves from a list of Nodes: the good ones, and why each bad one is left out. */
export interface NodeInventory {
  /** The valid nodes, checked and canonical as `validateInventory` returns them. */
  inventory: Inventory;
  /** Node name (or `items[N]` when it has none) → its problems. These nodes are not in the inventory. */
  quarantined: Map<string, Problem[]>;
  /** Node name → notes (several InternalIPs, no pod CIDR yet). */
  notes: Map<string, string[]>;
  /** Problems of no one node (a bad cluster CIDR; an empty list). */
  general: Problem[];
}

/**
 * Maps Nodes and validates them as one inventory, keeping every node that has no problem of its own.
 * Nodes are taken oldest first (creationTimestamp, then name), so when two Nodes claim the same pod CIDR
 * or internal IP, the one that had it first keeps being served and the newcomer is quarantined. The
 * same NodeIndex a long-running process keeps up to date Node by Node, filled at once.
 */
export function inventoryFromNodes(objects: readonly unknown[], options: NodeIndexOptions): NodeInventory {
  const index = new NodeIndex(options);
  index.setMany(objects.map((object, position) => [`#${position}`, object, `items[${position}]`]));
  return index.snapshot();
}

export interface NodeIndexOptions {
  source: string;
  cluster?: string;
  clusterCIDR?: string;
}

/** One Node in the index. */
interface IndexedNode {
  /** The caller's key (the store's: the Node's name). */
  key: string;
  /** How problems and notes name it: `metadata.name`, or the caller's fallback when it has none. */
  name: string;
  created: string;
  /** Order of first arrival: the last tie-break (two Nodes of one name and age in a file). */
  arrival: number;
  /** The Node object as it was set: a caller tells a changed Node by its object. */
  object: unknown;
  /** The node as served, while it has no problem (undefined while quarantined). */
  served: Node | undefined;
  /** Readable Nodes: checked alone, and their claims in the index. */
  claimant?: Claimant<IndexedNode>;
  /** Unreadable Nodes: the fields of the wrong type. */
  fieldProblems?: Problem[];
  notes: string[];
}

/**
 * The inventory of a set of Node objects, kept up to date one Node at a time: a Node set or deleted is
 * read and checked alone, then against the others through a ClaimIndex, and only the Nodes whose
 * checks it can change (same name, same internal IP, overlapping pod range, an IP inside its range) are
 * checked again. The result is the same as checking the final set of Nodes at once (inventoryFromNodes
 * is this index, filled at once). Pure: no I/O.
 */
export class NodeIndex {
  private readonly settings: InventorySettings;
  private readonly entries = new Map<string, IndexedNode>();
  private readonly claims = new ClaimIndex<IndexedNode>((a, b) => this.compare(a, b));
  /** Node name → its problems: these Nodes are not served. */
  readonly quarantined = new Map<string, Problem[]>();
  /** Node name → notes (several InternalIPs, no pod CIDR yet). */
  readonly notes = new Map<string, string[]>();
  private arrivals = 0;
  private inventoryCache: Inventory | undefined;

  constructor(private readonly options: NodeIndexOptions) {
    this.settings = checkSettings({}, { ...(options.cluster ? { cluster: options.cluster } : {}), ...(options.clusterCIDR ? { clusterCIDR: options.clusterCIDR } : {}) });
  }

  /** Sets one Node (new or changed) under `key`; returns the keys of the Nodes checked again (it among them). */
  set(key: string, object: unknown, fallbackName = key): string[] {
    const old = this.entries.get(key);
    const affected = new Set<IndexedNode>();
    if (old) this.drop(old, affected);
    const entry = this.enter(key, object, fallbackName, old?.arrival);
    if (entry.claimant) for (const other of this.claims.related(entry.claimant)) affected.add(other.key);
    affected.add(entry);
    return this.recheck(affected);
  }

  /**
   * Sets many Nodes not in the index yet (a first list): every claim goes in first, then each Node is
   * checked once, instead of each arrival checking again the ones it collides with.
   */
  setMany(objects: Iterable<[key: string, object: unknown, fallbackName?: string]>): string[] {
    const entered = new Set<IndexedNode>();
    for (const [key, object, fallbackName] of objects) {
      if (this.entries.has(key)) throw new Error(`NodeIndex.setMany: ${key} is already in the index (use set)`);
      entered.add(this.enter(key, object, fallbackName ?? key, undefined));
    }
    return this.recheck(entered);
  }

  /** Reads and checks one Node and puts its claims in the index (checking against the others is the caller's). */
  private enter(key: string, object: unknown, fallbackName: string, arrival: number | undefined): IndexedNode {
    const reading = readKubeNode(object);
    const created = (object as KubeNode)?.metadata?.creationTimestamp;
    const entry: IndexedNode = { key, name: reading.name || fallbackName, created: typeof created === "string" ? created : "", arrival: arrival ?? this.arrivals++, object, served: undefined, notes: reading.notes };
    if (reading.node) {
      entry.claimant = { key: entry, checked: checkNode(reading.node, this.settings.clusterRanges) };
      this.claims.add(entry.claimant);
    } else {
      entry.fieldProblems = reading.problems.map((p) => ({ node: entry.name, message: p.message }));
    }
    this.entries.set(key, entry);
    return entry;
  }

  /** Deletes the Node under `key`; returns the keys of the Nodes checked again. */
  delete(key: string): string[] {
    const old = this.entries.get(key);
    if (!old) return [];
    const affected = new Set<IndexedNode>();
    this.drop(old, affected);
    this.entries.delete(key);
    return this.recheck(affected);
  }

  /** The served node under `key`, if it is served. */
  node(key: string): Node | undefined {
    return this.entries.get(key)?.served;
  }

  /** The Node object last set under `key`. */
  object(key: string): unknown {
    return this.entries.get(key)?.object;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** How many Nodes the index holds, served or not. */
  get size(): number {
    return this.entries.size;
  }

  /** Every key in the index. */
  keys(): IterableIterator<string> {
    return this.entries.keys();
  }

  /** The served nodes as one canonical inventory, oldest first (made again only after a change). */
  inventory(): Inventory {
    if (this.inventoryCache) return this.inventoryCache;
    const served = [...this.entries.values()].filter((entry) => entry.served).sort((a, b) => this.compare(a, b));
    this.inventoryCache = this.inventoryOf(served.map((entry) => entry.served!));
    return this.inventoryCache;
  }

  /** An inventory of these nodes with the index's settings (cluster, cluster CIDR). */
  inventoryOf(nodes: Node[]): Inventory {
    return {
      cluster: this.settings.cluster,
      ...(this.settings.clusterCIDR !== undefined ? { clusterCIDR: this.settings.clusterCIDR } : {}),
      nodes,
      source: this.options.source,
    };
  }

  /** Problems of no one node: a bad cluster name or CIDR, no readable Node at all. */
  general(): Problem[] {
    const problems = [...this.settings.problems];
    if (![...this.entries.values()].some((entry) => entry.claimant)) problems.push({ message: `${this.options.source}: the inventory has no nodes` });
    return problems;
  }

  snapshot(): NodeInventory {
    return { inventory: this.inventory(), quarantined: new Map(this.quarantined), notes: new Map(this.notes), general: this.general() };
  }

  private compare(a: IndexedNode, b: IndexedNode): number {
    return a.created.localeCompare(b.created) || a.name.localeCompare(b.name) || a.arrival - b.arrival;
  }

  /** Takes a Node's claims out of the index, noting whom that may change. */
  private drop(entry: IndexedNode, affected: Set<IndexedNode>): void {
    if (entry.claimant) {
      for (const other of this.claims.related(entry.claimant)) affected.add(other.key);
      this.claims.remove(entry.claimant);
    }
    this.quarantined.delete(entry.name);
    this.notes.delete(entry.name);
    entry.served = undefined;
  }

  private recheck(affected: Set<IndexedNode>): string[] {
    this.inventoryCache = undefined;
    const keys: string[] = [];
    for (const entry of affected) {
      if (this.entries.get(entry.key) !== entry) continue;
      keys.push(entry.key);
      if (entry.notes.length) this.notes.set(entry.name, entry.notes);
      const problems = entry.fieldProblems ?? [...entry.claimant!.checked.problems, ...this.claims.problemsOf(entry.claimant!)];
      if (problems.length) {
        this.quarantined.set(entry.name, problems);
        entry.served = undefined;
      } else {
        this.quarantined.delete(entry.name);
        entry.served = entry.claimant!.checked.node;
      }
    }
    return keys;
  }
}
