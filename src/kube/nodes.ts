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
import { checkInventory, type Problem, type RawInventory, type RawNode } from "../inventory.js";
import { familyOfAddress, parseIp, type Inventory } from "../model.js";

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
        labels = {};
        for (const [key, value] of Object.entries(metadata.labels)) {
          if (typeof value === "string") labels[key] = value;
          else say(["metadata", "labels", key], "must be a string");
        }
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
 * or internal IP, the one that had it first keeps being served and the newcomer is quarantined.
 */
export function inventoryFromNodes(objects: readonly unknown[], options: { source: string; cluster?: string; clusterCIDR?: string }): NodeInventory {
  const quarantined = new Map<string, Problem[]>();
  const notes = new Map<string, string[]>();
  const readable: { node: RawNode; created: string }[] = [];
  objects.forEach((object, index) => {
    const reading = readKubeNode(object);
    const key = reading.name ?? `items[${index}]`;
    if (reading.notes.length) notes.set(key, reading.notes);
    if (!reading.node) {
      quarantined.set(key, reading.problems.map((p) => ({ node: key, message: p.message })));
      return;
    }
    const created = (object as KubeNode).metadata?.creationTimestamp;
    readable.push({ node: reading.node, created: typeof created === "string" ? created : "" });
  });
  readable.sort((a, b) => a.created.localeCompare(b.created) || (a.node.name ?? "").localeCompare(b.node.name ?? ""));

  const raw: RawInventory = { nodes: readable.map((r) => r.node), source: options.source };
  const settings = { ...(options.cluster ? { cluster: options.cluster } : {}), ...(options.clusterCIDR ? { clusterCIDR: options.clusterCIDR } : {}) };
  const first = checkInventory(raw, settings);
  const general: Problem[] = [];
  for (const problem of first.problems) {
    if (problem.node === undefined) {
      general.push(problem);
      continue;
    }
    quarantined.set(problem.node, [...(quarantined.get(problem.node) ?? []), problem]);
  }
  // Leaving a node out never makes another one invalid: every pairwise problem is reported at the later
  // node, so the rest, checked again, is the canonical inventory of the good nodes.
  if (first.problems.length === 0) return { inventory: first.inventory, quarantined, notes, general };
  const good = raw.nodes.filter((node) => !quarantined.has(node.name ?? ""));
  const { inventory } = checkInventory({ ...raw, nodes: good }, settings);
  return { inventory, quarantined, notes, general };
}
