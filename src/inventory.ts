/**
 * Validation of an inventory before anything is planned or changed. Every problem is collected, so the
 * operator fixes a file once instead of once per error, and each names file:line, node and value.
 * Pure: node sources hand in what they read, this returns a checked Inventory or the list of problems.
 */
import {
  canonicalIp,
  cidr,
  cidrContains,
  addressNetwork,
  parseAddress,
  parseCidr,
  specialPurposeAddress,
  specialPurposeRange,
  type Address,
  type Cidr,
  type Inventory,
  type Node,
  type SourceLocation,
} from "./model.js";
import { PodroutesError } from "./errors.js";
import { MultiMap } from "./multimap.js";

/** A node as a source read it: the same fields as a Node, as text not yet checked, name maybe missing. */
export type RawNode = Omit<Node, "name"> & { name?: string };

export interface RawInventory {
  cluster?: string;
  clusterCIDR?: string;
  nodes: RawNode[];
  source: string;
}

/** One thing wrong with the input. */
export interface Problem {
  where?: SourceLocation;
  node?: string;
  value?: string;
  message: string;
}

export function formatProblem(problem: Problem): string {
  const parts: string[] = [];
  if (problem.where) parts.push(`${problem.where.file}:${problem.where.line}`);
  if (problem.node) parts.push(`node ${problem.node}`);
  if (problem.value !== undefined) parts.push(JSON.stringify(problem.value));
  return parts.length ? `${parts.join(": ")}: ${problem.message}` : problem.message;
}

/** Bad input: nothing has been changed. Carries every problem found. */
export class InputError extends PodroutesError {
  readonly kind = "input" as const;
  constructor(
    readonly problems: Problem[],
    readonly subject = "invalid input",
  ) {
    super(`${subject}:\n${problems.map((p) => `  ${formatProblem(p)}`).join("\n")}`);
    this.name = "InputError";
  }
}

export const DEFAULT_CLUSTER = "kubernetes";

/** Node names end up in route tables, file names and remote commands: keep them to DNS-label-like text. */
const NODE_NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/;
export const CLUSTER_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LABEL_KEY = /^([A-Za-z0-9.-]{1,253}\/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

/** Checks a raw inventory; returns it in canonical form or throws InputError listing every problem. */
export function validateInventory(raw: RawInventory, options: { clusterCIDR?: string; cluster?: string } = {}): Inventory {
  const { inventory, problems } = checkInventory(raw, options);
  if (problems.length) throw new InputError(problems, `invalid inventory ${raw.source}`);
  return inventory;
}

/**
 * The same checks, collected instead of thrown, for a long-running process that must keep serving the
 * good nodes while it quarantines a bad one: every problem found, each naming its node where it has one,
 * and the inventory in canonical form (nodes with problems still in it; the caller decides). Each node
 * is checked alone (checkNode), then against the others through a ClaimIndex holding every node, which
 * is the same code a long-running process keeps up to date node by node (kube/nodes.ts NodeIndex).
 */
export function checkInventory(raw: RawInventory, options: { clusterCIDR?: string; cluster?: string } = {}): { inventory: Inventory; problems: Problem[] } {
  const settings = checkSettings(raw, options);
  const problems = [...settings.problems];
  if (raw.nodes.length === 0) problems.push({ message: `${raw.source}: the inventory has no nodes` });
  // Earlier in the input is older: of two nodes claiming one thing, the later one is at fault.
  const index = new ClaimIndex<number>((a, b) => a - b);
  const entries = raw.nodes.map((rawNode, position) => ({ key: position, checked: checkNode(rawNode, settings.clusterRanges) }));
  for (const entry of entries) index.add(entry);
  for (const entry of entries) problems.push(...entry.checked.problems, ...index.problemsOf(entry));
  const inventory: Inventory = {
    cluster: settings.cluster,
    ...(settings.clusterCIDR !== undefined ? { clusterCIDR: settings.clusterCIDR } : {}),
    nodes: entries.map((entry) => entry.checked.node),
    source: raw.source,
  };
  return { inventory, problems };
}

/** The inventory-wide settings, checked: the cluster name and the cluster CIDR (one range per family). */
export interface InventorySettings {
  cluster: string;
  clusterRanges: Cidr[];
  /** The canonical cluster CIDR text, when one was given. */
  clusterCIDR?: string;
  problems: Problem[];
}

export function checkSettings(raw: { cluster?: string; clusterCIDR?: string }, options: { clusterCIDR?: string; cluster?: string } = {}): InventorySettings {
  const problems: Problem[] = [];
  const cluster = options.cluster ?? raw.cluster ?? DEFAULT_CLUSTER;
  if (!CLUSTER_NAME.test(cluster)) {
    problems.push({ value: cluster, message: "cluster name must be lowercase letters, digits and '-' (at most 63)" });
  }
  const clusterRanges: Cidr[] = [];
  const clusterText = options.clusterCIDR ?? raw.clusterCIDR;
  if (clusterText !== undefined) {
    for (const part of clusterText.split(",").map((t) => t.trim())) {
      const parsed = parseCidr(part);
      if (!parsed.ok) problems.push({ value: part, message: `cluster CIDR: ${parsed.reason}` });
      else if (clusterRanges.some((r) => r.family === parsed.cidr.family)) problems.push({ value: clusterText, message: "cluster CIDR: at most one range per family" });
      else clusterRanges.push(parsed.cidr);
    }
  }
  return { cluster, clusterRanges, ...(clusterRanges.length ? { clusterCIDR: clusterRanges.map((r) => r.text).join(",") } : {}), problems };
}

/** One node checked alone, with what it claims (its name, addresses and pod ranges) for the checks between nodes. */
export interface CheckedNode {
  /** The node in canonical form (invalid addresses and pod CIDRs left out). */
  node: Node;
  /** Its valid internal addresses (one per family, not special-purpose), each with the text it was given as. */
  addresses: { address: Address; text: string }[];
  /** Its valid pod ranges (parsed, not special-purpose). */
  ranges: Cidr[];
  /** The problems of this node alone. */
  problems: Problem[];
}

/** Every check of one node that needs no other node. Pure. */
export function checkNode(rawNode: RawNode, clusterRanges: readonly Cidr[]): CheckedNode {
  const problems: Problem[] = [];
  const where = rawNode.origin;
  const name = rawNode.name ?? "";
  const say = (message: string, value?: string) => problems.push({ where, node: name || undefined, value, message });

  if (!NODE_NAME.test(name)) say("node name must be letters, digits, '.', '_' or '-'", name);

  const addresses: CheckedNode["addresses"] = [];
  if (rawNode.internalIPs.length === 0) say("node has no internal IP");
  for (const text of rawNode.internalIPs) {
    const address = parseAddress(text);
    if (!address) {
      say(text.includes("%") ? "internal IP has a zone id (%…): a next hop must be a plain address" : "internal IP is not a valid IP address", text);
      continue;
    }
    const special = specialPurposeAddress(address);
    if (special) {
      say(`internal IP lies in the special-purpose range ${special}: no node can be reached there`, text);
      continue;
    }
    if (addresses.some((earlier) => earlier.address.family === address.family)) {
      say(`more than one IPv${address.family} internal IP`, text);
      continue;
    }
    addresses.push({ address, text });
  }

  let sshAddress: string | undefined;
  if (rawNode.sshAddress !== undefined) {
    sshAddress = canonicalIp(rawNode.sshAddress) ?? hostName(rawNode.sshAddress);
    if (!sshAddress) say("SSH address is neither an IP address nor a host name", rawNode.sshAddress);
  }

  const ranges: Cidr[] = [];
  for (const text of rawNode.podCIDRs) {
    const parsed = parseCidr(text);
    if (!parsed.ok) {
      say(`pod CIDR: ${parsed.reason}`, text);
      continue;
    }
    const range = parsed.cidr;
    const special = specialPurposeRange(range);
    if (special) {
      // Routing such a range to a node would hijack the host's own traffic (127/8, 169.254.169.254, fe80::/10).
      say(`pod CIDR overlaps the special-purpose range ${special}`, text);
      continue;
    }
    if (!addresses.some(({ address }) => address.family === range.family)) {
      say(`IPv${range.family} pod CIDR but no IPv${range.family} internal IP to route it to`, text);
    }
    if (clusterRanges.length && !clusterRanges.some((cluster) => cidrContains(cluster, range))) {
      say(`pod CIDR lies outside the cluster CIDR ${clusterRanges.map((r) => r.text).join(",")}`, text);
    }
    ranges.push(range);
  }

  for (const [key] of Object.entries(rawNode.labels ?? {})) {
    if (!LABEL_KEY.test(key)) say("label key is not a valid Kubernetes label key", key);
  }

  // Field by field rather than with spreads: a cold process builds thousands of these.
  const node: Node = { name, internalIPs: addresses.map(({ address }) => address.text), podCIDRs: ranges.map((range) => range.text) };
  if (sshAddress) node.sshAddress = sshAddress;
  if (rawNode.fqdn) node.fqdn = rawNode.fqdn;
  if (rawNode.labels) node.labels = rawNode.labels;
  if (where) node.origin = where;
  return { node, addresses, ranges, problems };
}

/** A node in a ClaimIndex: a key of the caller's, and the node checked alone. */
export interface Claimant<K> {
  readonly key: K;
  readonly checked: CheckedNode;
}

/**
 * The checks between nodes, against an index of every node's claims (name, internal IPs, pod ranges)
 * that can take one node in or out at a time, so a long-running process re-checks only the nodes a
 * change touches. The rules: of two nodes claiming one name, one internal IP or overlapping pod ranges,
 * the later one (by `compare`; the older keeps being served) is at fault, naming the earlier; so too of a
 * node whose internal IP lies inside another's pod range and that other node (a node whose IP lies inside
 * its own range is at fault). Whatever was added and removed
 * in whatever order, a node's problems depend only on the nodes in the index now. Pure (no I/O).
 */
export class ClaimIndex<K> {
  private readonly byName = new MultiMap<string, Claimant<K>>();
  private readonly byIp = new MultiMap<string, Claimant<K>>();
  /**
   * Family → each prefix length pod ranges use → network → the nodes with an internal IP in it: which
   * nodes' IPs lie inside a range, found without looking at every node.
   */
  private readonly ipsByNetwork = { 4: new Map<number, MultiMap<number | bigint, Claimant<K>>>(), 6: new Map<number, MultiMap<number | bigint, Claimant<K>>>() };
  /** Family → prefix length → network → the ranges there and their nodes. */
  private readonly byRange = { 4: new Map<number, MultiMap<number | bigint, RangeClaim<K>>>(), 6: new Map<number, MultiMap<number | bigint, RangeClaim<K>>>() };

  /** `compare(a, b) < 0`: a is older than b. */
  constructor(private readonly compare: (a: K, b: K) => number) {}

  add(claimant: Claimant<K>): void {
    const { node, addresses, ranges } = claimant.checked;
    if (node.name) this.byName.add(node.name, claimant);
    for (const { address } of addresses) {
      this.byIp.add(address.text, claimant);
      for (const [prefixLength, byNetwork] of this.ipsByNetwork[address.family]) byNetwork.add(addressNetwork(address, prefixLength), claimant);
    }
    for (const range of ranges) {
      let byNetwork = this.byRange[range.family].get(range.prefixLength);
      if (!byNetwork) {
        this.byRange[range.family].set(range.prefixLength, (byNetwork = new MultiMap()));
        // A prefix length no range used before: index every internal IP at it once.
        const ips = new MultiMap<number | bigint, Claimant<K>>();
        for (const holder of this.byIp.values()) {
          for (const { address } of holder.checked.addresses) if (address.family === range.family) ips.add(addressNetwork(address, range.prefixLength), holder);
        }
        this.ipsByNetwork[range.family].set(range.prefixLength, ips);
      }
      byNetwork.add(range.network, { range, claimant });
    }
  }

  remove(claimant: Claimant<K>): void {
    const { node, addresses, ranges } = claimant.checked;
    if (node.name) this.byName.delete(node.name, claimant);
    for (const { address } of addresses) {
      this.byIp.delete(address.text, claimant);
      for (const [prefixLength, byNetwork] of this.ipsByNetwork[address.family]) byNetwork.delete(addressNetwork(address, prefixLength), claimant);
    }
    for (const range of ranges) {
      const byNetwork = this.byRange[range.family].get(range.prefixLength);
      if (!byNetwork) continue;
      for (const claim of [...byNetwork.get(range.network)]) if (claim.claimant === claimant) byNetwork.delete(range.network, claim);
      if (byNetwork.size === 0) {
        this.byRange[range.family].delete(range.prefixLength);
        this.ipsByNetwork[range.family].delete(range.prefixLength);
      }
    }
  }

  /** The problems between `claimant` and the nodes in the index. */
  problemsOf(claimant: Claimant<K>): Problem[] {
    const { node, addresses, ranges } = claimant.checked;
    const problems: Problem[] = [];
    const say = (message: string, value?: string) => problems.push({ where: node.origin, node: node.name || undefined, value, message });
    const earliest = (claimants: Iterable<Claimant<K>> | undefined) => {
      let first: Claimant<K> | undefined;
      for (const other of claimants ?? []) if (this.older(other, claimant) && (!first || this.older(other, first))) first = other;
      return first;
    };
    const sameName = node.name ? earliest(this.byName.get(node.name)) : undefined;
    if (sameName) say(`duplicate node name (first at ${describe(sameName.checked.node)})`, node.name);
    for (const { address, text } of addresses) {
      const holder = earliest(this.byIp.get(address.text));
      if (holder) say(`duplicate internal IP (also node ${holder.checked.node.name} at ${describe(holder.checked.node)})`, text);
    }
    ranges.forEach((range, index) => {
      for (const other of this.overlapping(range)) {
        const earlier = other.claimant === claimant ? ranges.indexOf(other.range) < index : this.older(other.claimant, claimant);
        if (!earlier) continue;
        say(`pod CIDR overlaps ${other.range.text} of node ${other.claimant.checked.node.name} (${describe(other.claimant.checked.node)})`, range.text);
      }
    });
    // A node IP inside a pod range would route the node's own traffic to itself, or to another node.
    // Between two nodes the later one is at fault, like every other clash: a newcomer whose pod range
    // swallows the nodes' own network must not quarantine every established node (issue 25 item 1).
    for (const { address } of addresses) {
      for (const [prefixLength, byNetwork] of this.byRange[address.family]) {
        for (const holder of byNetwork.get(addressNetwork(address, prefixLength))) {
          if (holder.claimant !== claimant && !this.older(holder.claimant, claimant)) continue;
          say(`internal IP lies inside pod CIDR ${holder.range.text} of node ${holder.claimant.checked.node.name}`, address.text);
        }
      }
    }
    for (const range of ranges) {
      for (const other of this.ipsByNetwork[range.family].get(range.prefixLength)?.get(range.network) ?? []) {
        if (other === claimant || !this.older(other, claimant)) continue;
        for (const { address } of other.checked.addresses) {
          if (address.family === range.family && addressNetwork(address, range.prefixLength) === range.network) {
            say(`pod CIDR contains internal IP ${address.text} of node ${other.checked.node.name} (${describe(other.checked.node)})`, range.text);
          }
        }
      }
    }
    return problems;
  }

  /** The other nodes whose problems may change when `claimant` comes into the index or leaves it. */
  related(claimant: Claimant<K>): Set<Claimant<K>> {
    const { node, addresses, ranges } = claimant.checked;
    const found = new Set<Claimant<K>>();
    if (node.name) for (const other of this.byName.get(node.name)) found.add(other);
    for (const { address } of addresses) {
      for (const other of this.byIp.get(address.text)) found.add(other);
      // Nodes whose pod range contains this IP: which of the two is at fault depends on their ages.
      for (const [prefixLength, byNetwork] of this.byRange[address.family]) for (const holder of byNetwork.get(addressNetwork(address, prefixLength))) found.add(holder.claimant);
    }
    for (const range of ranges) {
      for (const other of this.overlapping(range)) found.add(other.claimant);
      // Nodes whose internal IP lies inside this range (its prefix length is indexed while it is in the index).
      for (const other of this.ipsByNetwork[range.family].get(range.prefixLength)?.get(range.network) ?? []) found.add(other);
    }
    found.delete(claimant);
    return found;
  }

  /** Every range in the index overlapping `range` (containing it or inside it). */
  private *overlapping(range: Cidr): Generator<RangeClaim<K>> {
    for (const [prefixLength, byNetwork] of this.byRange[range.family]) {
      if (prefixLength <= range.prefixLength) {
        // Ranges containing it sit at the network of its first address at their own length.
        yield* byNetwork.get(addressNetwork(firstAddress(range), prefixLength));
      } else {
        for (const claim of byNetwork.values()) if (cidrContains(range, claim.range)) yield claim;
      }
    }
  }

  private older(a: Claimant<K>, b: Claimant<K>): boolean {
    return this.compare(a.key, b.key) < 0;
  }
}

interface RangeClaim<K> {
  range: Cidr;
  claimant: Claimant<K>;
}

/** The first address of a range, as an Address (for lookups by network). */
function firstAddress(range: Cidr): Address {
  return parseAddress(range.text.slice(0, range.text.indexOf("/")))!;
}

function describe(node: Pick<Node, "origin">): string {
  return node.origin ? `${node.origin.file}:${node.origin.line}` : "the inventory";
}

function hostName(text: string): string | undefined {
  return /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(text)
    ? text
    : undefined;
}
