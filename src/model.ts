/**
 * The values every stage of the pipeline shares: nodes, inventories, routes, and the CIDR math on them.
 * Pure: no I/O. CIDR parsing and matching come from ipaddr.js, which handles both families and the
 * many spellings of IPv6; this module only adds canonical text and the checks podroutes needs.
 */
import ipaddr from "ipaddr.js";

export type Family = 4 | 6;

/** Where a value came from, so that an error can name it (`nodes.txt:3`). */
export interface SourceLocation {
  file: string;
  line: number;
}

/** A cluster node as podroutes needs it. */
export interface Node {
  /** Unique within the inventory; the table name of host-route targets. */
  name: string;
  /** The node's internal addresses, at most one per family: the next hop of its pod CIDRs. */
  internalIPs: string[];
  /** Pod ranges, canonical CIDR text; empty for a node that runs no pods (a control plane). */
  podCIDRs: string[];
  /** Where to reach the node over SSH when it differs from its internal IP (a public IP). */
  sshAddress?: string;
  fqdn?: string;
  labels?: Record<string, string>;
  origin?: SourceLocation;
}

/** The nodes of one cluster, as read from a node source. */
export interface Inventory {
  cluster: string;
  /**
   * Every pod CIDR must lie inside it; routes outside it are never podroutes' business. Canonical text;
   * dual-stack clusters give one CIDR per family, comma-separated, as kube-controller-manager's
   * --cluster-cidr does (`10.200.0.0/16,fd00:10:200::/56`): read it with `clusterRanges`.
   */
  clusterCIDR?: string;
  nodes: Node[];
  /** What was read, for messages: a path, `-`, `lab`, `gcp:project`. */
  source: string;
}

/** One route podroutes wants: traffic for `destination` goes to `nextHop`, the internal IP of `node`. */
export interface Route {
  /** The seeds' name, `kubernetes-route-10-200-0-0-24`; a valid GCP resource name for both families. */
  name: string;
  destination: string;
  nextHop: string;
  node: string;
  family: Family;
}

export interface Cidr {
  /** Canonical text: network address in ipaddr.js' normal form, then the prefix length. */
  text: string;
  family: Family;
  address: ipaddr.IPv4 | ipaddr.IPv6;
  prefixLength: number;
}

export function familyOfAddress(address: ipaddr.IPv4 | ipaddr.IPv6): Family {
  return address.kind() === "ipv4" ? 4 : 6;
}

/**
 * Parses an IP address in its strict form (no IPv4 shorthand like `10.1`, no IPv6 zone id like
 * `fe80::1%eth0`: a zone names an interface of one host and is no address to route to); undefined when
 * it is not one.
 */
export function parseIp(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (ipaddr.IPv4.isValidFourPartDecimal(text)) return ipaddr.IPv4.parse(text);
  if (text.includes(":") && !text.includes("%") && ipaddr.IPv6.isValid(text)) {
    const parsed = ipaddr.IPv6.parse(text);
    // An IPv4-mapped IPv6 address is a spelling trick, not a node address podroutes should route to.
    return parsed.isIPv4MappedAddress() ? undefined : parsed;
  }
  return undefined;
}

/** Canonical text of an IP address, so that `fd00:0::1` and `fd00::1` compare equal. */
export function canonicalIp(text: string): string | undefined {
  return parseIp(text)?.toString();
}

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; reason: string };

/** Parses `10.200.0.0/24`; refuses host bits (`10.200.0.1/24`) and names the network it meant. */
export function parseCidr(text: string): CidrParse {
  const slash = text.indexOf("/");
  if (slash < 0) return { ok: false, reason: "not a CIDR (expected ADDRESS/PREFIX)" };
  const address = parseIp(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (!address) return { ok: false, reason: "not a valid IP address before the /" };
  const max = address.kind() === "ipv4" ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) {
    return { ok: false, reason: `prefix length must be 0..${max}` };
  }
  const prefixLength = Number(prefixText);
  const network = networkOf(address, prefixLength);
  const canonical = `${network.toString()}/${prefixLength}`;
  if (network.toString() !== address.toString()) {
    return { ok: false, reason: `host bits set (the network is ${canonical})` };
  }
  return { ok: true, cidr: { text: canonical, family: familyOfAddress(address), address: network, prefixLength } };
}

/** The ranges of a (validated) cluster CIDR text, one per family. */
export function clusterRanges(clusterCIDR: string | undefined): Cidr[] {
  return clusterCIDR === undefined ? [] : clusterCIDR.split(",").map((text) => cidr(text.trim()));
}

/** Parses a CIDR that is known to be valid (already validated); throws otherwise. */
export function cidr(text: string): Cidr {
  const parsed = parseCidr(text);
  if (!parsed.ok) throw new Error(`invalid CIDR ${JSON.stringify(text)}: ${parsed.reason}`);
  return parsed.cidr;
}

export function networkOf(address: ipaddr.IPv4 | ipaddr.IPv6, prefixLength: number): ipaddr.IPv4 | ipaddr.IPv6 {
  return address.kind() === "ipv4"
    ? ipaddr.IPv4.networkAddressFromCIDR(`${address.toString()}/${prefixLength}`)
    : ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/${prefixLength}`);
}

/** True when `ip` lies inside `range` (families must match). */
export function ipInCidr(ip: string, range: Cidr): boolean {
  const address = parseIp(ip);
  if (!address || address.kind() !== range.address.kind()) return false;
  return address.match(range.address, range.prefixLength);
}

/** True when `inner` lies wholly inside `outer`. */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  return (
    outer.family === inner.family &&
    inner.prefixLength >= outer.prefixLength &&
    inner.address.match(outer.address, outer.prefixLength)
  );
}

/**
 * The special-purpose ranges no pod CIDR or node IP may touch, by ipaddr.js' names: traffic for them
 * never leaves a host by a route to another node (loopback, link-local with the cloud metadata server
 * 169.254.169.254, multicast, the unspecified "this network", broadcast).
 */
const REFUSED_RANGES = ["unspecified", "broadcast", "multicast", "linkLocal", "loopback"] as const;

type SpecialRangeTable = Record<string, [ipaddr.IPv4 | ipaddr.IPv6, number] | [ipaddr.IPv4 | ipaddr.IPv6, number][]>;

/** ipaddr.js' own table of special-purpose ranges (what `range()` answers from), as CIDRs. */
function refusedRanges(): { name: string; range: Cidr }[] {
  const tables = [ipaddr.IPv4, ipaddr.IPv6].map((kind) => (kind.prototype as unknown as { SpecialRanges: SpecialRangeTable }).SpecialRanges);
  return tables.flatMap((table) =>
    REFUSED_RANGES.flatMap((name) => {
      const entry = table[name];
      if (!entry) return [];
      const list = (Array.isArray(entry[0]) ? entry : [entry]) as [ipaddr.IPv4 | ipaddr.IPv6, number][];
      return list.map(([address, prefixLength]) => ({ name, range: cidr(`${address.toString()}/${prefixLength}`) }));
    }),
  );
}

let refused: { name: string; range: Cidr }[] | undefined;

/**
 * The special-purpose range a CIDR (or an address as a /32 or /128) overlaps, as `loopback 127.0.0.0/8`;
 * undefined for an ordinary unicast range. Overlap, not just the first address: `192.0.0.0/2` holds
 * multicast and broadcast.
 */
export function specialPurposeRange(range: Cidr): string | undefined {
  refused ??= refusedRanges();
  const hit = refused.find((special) => cidrsOverlap(special.range, range));
  return hit ? `${hit.name} ${hit.range.text}` : undefined;
}

/** Two CIDRs overlap exactly when one contains the other. */
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return cidrContains(a, b) || cidrContains(b, a);
}

/**
 * The seeds' route name: `kubernetes-route-10-200-0-0-24`. IPv6 uses the uncompressed groups without
 * leading zeros (`kubernetes-route-fd00-10-200-0-0-0-0-0-64`), at most 60 characters, so it stays a
 * valid GCP resource name ([a-z]([-a-z0-9]*[a-z0-9])?, 63 characters).
 */
export function routeName(destination: string): string {
  const parsed = cidr(destination);
  const groups =
    parsed.address.kind() === "ipv4"
      ? parsed.address.toString().split(".")
      : (parsed.address as ipaddr.IPv6).parts.map((part) => part.toString(16));
  return `kubernetes-route-${groups.join("-")}-${parsed.prefixLength}`;
}

/** The node's internal IP of one family, if it has one. */
export function internalIpOf(node: Node, family: Family): string | undefined {
  return node.internalIPs.find((ip) => familyOfAddress(parseIp(ip)!) === family);
}

/** The address as a number, for sorting and sweeping thousands of CIDRs without pairwise checks. */
export function addressValue(address: ipaddr.IPv4 | ipaddr.IPv6): bigint {
  return address.toByteArray().reduce((value, byte) => (value << 8n) | BigInt(byte), 0n);
}

/** A key that sorts CIDR text by family, then numerically, then by prefix length. */
export function cidrSortKey(text: string): string {
  const parsed = cidr(text);
  const width = parsed.family === 4 ? 8 : 32;
  return `${parsed.family}${addressValue(parsed.address).toString(16).padStart(width, "0")}${String(parsed.prefixLength).padStart(3, "0")}`;
}

/** Sorts CIDR texts by family, then numerically, so plans and tables read in address order. */
export function compareCidrs(a: string, b: string): number {
  const x = cidrSortKey(a);
  const y = cidrSortKey(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Sorts values by the CIDR text `key` gives, parsing each CIDR once. */
export function sortByCidr<T>(values: T[], key: (value: T) => string): T[] {
  return values
    .map((value) => ({ value, sortKey: cidrSortKey(key(value)) }))
    .sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0))
    .map(({ value }) => value);
}

/**
 * Every pair of overlapping CIDRs, in O(n log n): aligned CIDRs either nest or are disjoint, so after
 * sorting by start address (wider first) one stack of the ranges still open finds each overlap.
 * Returns index pairs [earlier in input, later in input] for each range and the nearest range holding it.
 */
export function findOverlaps(ranges: Cidr[]): [number, number][] {
  const items = ranges
    .map((range, index) => {
      const start = addressValue(range.address);
      const bits = range.family === 4 ? 32 : 128;
      return { index, family: range.family, start, end: start + (1n << BigInt(bits - range.prefixLength)) - 1n, prefix: range.prefixLength };
    })
    .sort((a, b) => a.family - b.family || (a.start < b.start ? -1 : a.start > b.start ? 1 : a.prefix - b.prefix));
  const pairs: [number, number][] = [];
  const open: typeof items = [];
  for (const item of items) {
    while (open.length && (open.at(-1)!.family !== item.family || open.at(-1)!.end < item.start)) open.pop();
    const holder = open.at(-1);
    if (holder) pairs.push(holder.index < item.index ? [holder.index, item.index] : [item.index, holder.index]);
    open.push(item);
  }
  return pairs;
}
