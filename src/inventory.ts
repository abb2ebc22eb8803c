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
  findOverlaps,
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

/** A pod range and the node it belongs to, for messages about overlaps. */
interface PodRange {
  range: Cidr;
  node: Pick<Node, "name" | "origin">;
}

/** Checks a raw inventory; returns it in canonical form or throws InputError listing every problem. */
export function validateInventory(raw: RawInventory, options: { clusterCIDR?: string; cluster?: string } = {}): Inventory {
  const { inventory, problems } = checkInventory(raw, options);
  if (problems.length) throw new InputError(problems, `invalid inventory ${raw.source}`);
  return inventory;
}

/**
 * The same checks, collected instead of thrown, for a long-running process that must keep serving the
 * good nodes while it quarantines a bad one: every problem found, each naming its node where it has one,
 * and the inventory in canonical form (nodes with problems still in it; the caller decides).
 */
export function checkInventory(raw: RawInventory, options: { clusterCIDR?: string; cluster?: string } = {}): { inventory: Inventory; problems: Problem[] } {
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

  if (raw.nodes.length === 0) problems.push({ message: `${raw.source}: the inventory has no nodes` });

  const nodes: Node[] = [];
  const podRanges: PodRange[] = [];
  const byName = new Map<string, Node>();
  const byIp = new Map<string, Node>();
  const nodeAddresses: { node: Node; addresses: Address[] }[] = [];

  for (const rawNode of raw.nodes) {
    const where = rawNode.origin;
    const name = rawNode.name ?? "";
    const say = (message: string, value?: string) => problems.push({ where, node: name || undefined, value, message });

    if (!NODE_NAME.test(name)) say("node name must be letters, digits, '.', '_' or '-'", name);
    const earlierName = byName.get(name);
    if (earlierName) say(`duplicate node name (first at ${describe(earlierName)})`, name);

    const addresses: Address[] = [];
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
      if (addresses.some((earlier) => earlier.family === address.family)) {
        say(`more than one IPv${address.family} internal IP`, text);
        continue;
      }
      const earlier = byIp.get(address.text);
      if (earlier) say(`duplicate internal IP (also node ${earlier.name} at ${describe(earlier)})`, text);
      addresses.push(address);
    }
    const internalIPs = addresses.map((address) => address.text);

    let sshAddress: string | undefined;
    if (rawNode.sshAddress !== undefined) {
      sshAddress = canonicalIp(rawNode.sshAddress) ?? hostName(rawNode.sshAddress);
      if (!sshAddress) say("SSH address is neither an IP address nor a host name", rawNode.sshAddress);
    }

    const podCIDRs: string[] = [];
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
      if (!addresses.some((address) => address.family === range.family)) {
        say(`IPv${range.family} pod CIDR but no IPv${range.family} internal IP to route it to`, text);
      }
      if (clusterRanges.length && !clusterRanges.some((cluster) => cidrContains(cluster, range))) {
        say(`pod CIDR lies outside the cluster CIDR ${clusterRanges.map((r) => r.text).join(",")}`, text);
      }
      podCIDRs.push(range.text);
      podRanges.push({ range, node: { name, origin: where } });
    }

    for (const [key] of Object.entries(rawNode.labels ?? {})) {
      if (!LABEL_KEY.test(key)) say("label key is not a valid Kubernetes label key", key);
    }

    // Field by field rather than with spreads: a cold process builds thousands of these.
    const node: Node = { name, internalIPs, podCIDRs };
    if (sshAddress) node.sshAddress = sshAddress;
    if (rawNode.fqdn) node.fqdn = rawNode.fqdn;
    if (rawNode.labels) node.labels = rawNode.labels;
    if (where) node.origin = where;
    if (!earlierName && name) byName.set(name, node);
    for (const ip of internalIPs) if (!byIp.has(ip)) byIp.set(ip, node);
    nodes.push(node);
    nodeAddresses.push({ node, addresses });
  }

  // Overlapping pod ranges: found in one sweep, reported at the later of the two.
  for (const [first, second] of findOverlaps(podRanges.map((r) => r.range))) {
    const other = podRanges[first]!;
    const later = podRanges[second]!;
    problems.push({
      where: later.node.origin,
      node: later.node.name,
      value: later.range.text,
      message: `pod CIDR overlaps ${other.range.text} of node ${other.node.name} (${describe(other.node)})`,
    });
  }

  // A node IP inside a pod range would route the node's own traffic to itself, or to another node.
  // Looked up by the address's network at each prefix length the pod ranges use, not pairwise.
  const byPrefix = { 4: new Map<number, Map<number | bigint, PodRange>>(), 6: new Map<number, Map<number | bigint, PodRange>>() };
  for (const podRange of podRanges) {
    const { family, prefixLength, network } = podRange.range;
    const byNetwork = byPrefix[family].get(prefixLength) ?? new Map<number | bigint, PodRange>();
    byNetwork.set(network, podRange);
    byPrefix[family].set(prefixLength, byNetwork);
  }
  for (const { node, addresses } of nodeAddresses) {
    for (const address of addresses) {
      for (const [prefixLength, byNetwork] of byPrefix[address.family]) {
        const holder = byNetwork.get(addressNetwork(address, prefixLength));
        if (!holder) continue;
        problems.push({
          where: node.origin,
          node: node.name,
          value: address.text,
          message: `internal IP lies inside pod CIDR ${holder.range.text} of node ${holder.node.name}`,
        });
      }
    }
  }

  const inventory: Inventory = {
    cluster,
    ...(clusterRanges.length ? { clusterCIDR: clusterRanges.map((r) => r.text).join(",") } : {}),
    nodes,
    source: raw.source,
  };
  return { inventory, problems };
}

function describe(node: Pick<Node, "origin">): string {
  return node.origin ? `${node.origin.file}:${node.origin.line}` : "the inventory";
}

function hostName(text: string): string | undefined {
  return /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(text)
    ? text
    : undefined;
}
