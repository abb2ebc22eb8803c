/**
 * The values every stage of the pipeline shares: nodes, inventories, routes, and the CIDR math on them.
 * Pure: no I/O. Reading and writing addresses is ipaddr.js' job, which handles both families and the
 * many spellings of IPv6; each address and CIDR is parsed once into a compact integer form (Address,
 * Cidr), on which containment, overlap and address order are plain integer comparisons, so thousands of
 * routes are planned without text being parsed again.
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

/**
 * A CIDR parsed once, in the compact form every comparison uses: the network address as an integer (a
 * number for IPv4, exact up to 2^32; a bigint for IPv6) and the prefix length. Containment, overlap and
 * address order are integer operations on it; ipaddr.js is used only to read and write text.
 */
export type Cidr = Readonly<
  {
    /** Canonical text: network address in ipaddr.js' normal form, then the prefix length. */
    text: string;
    prefixLength: number;
  } & ({ family: 4; network: number } | { family: 6; network: bigint })
>;

/** An IP address parsed once: canonical text and the address as an integer, as in Cidr. */
export type Address = Readonly<{ text: string } & ({ family: 4; value: number } | { family: 6; value: bigint })>;

/**
 * The texts parseAddress and parseCidr have parsed, remembered: the same text comes back at every stage
 * (the inventory, the planner, the kernel's own listing, the write), and a parse costs microseconds where
 * a lookup costs nanoseconds. Results are frozen values, so sharing them is safe; the memory is bounded
 * (emptied when full), so a long-running process does not grow it without end.
 */
const PARSED_LIMIT = 1 << 16;
const parsedAddresses = new Map<string, Address>();
const parsedCidrs = new Map<string, Cidr>();

function remember<T>(parsed: Map<string, T>, text: string, value: T): T {
  if (parsed.size >= PARSED_LIMIT) parsed.clear();
  parsed.set(text, Object.freeze(value));
  return value;
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
  // One parse each (ipaddr's own isValid* helpers parse, then parse again): the strict spelling is
  // checked first, and ipaddr throws on what it cannot take (an octet above 255, a bad IPv6 group).
  try {
    if (FOUR_PART_DECIMAL.test(text)) return ipaddr.IPv4.parse(text);
    if (!text.includes(":") || text.includes("%")) return undefined;
    const parsed = ipaddr.IPv6.parse(text);
    // An IPv4-mapped IPv6 address is a spelling trick, not a node address podroutes should route to.
    return parsed.isIPv4MappedAddress() ? undefined : parsed;
  } catch {
    return undefined;
  }
}

/** ipaddr.js' isValidFourPartDecimal spelling: four decimal parts, no leading zeros (no octal, no hex). */
const FOUR_PART_DECIMAL = /^(0|[1-9]\d*)(\.(0|[1-9]\d*)){3}$/;

/** Parses an IP address (as parseIp) into its compact form. */
export function parseAddress(text: string): Address | undefined {
  const known = parsedAddresses.get(text);
  if (known) return known;
  const address = compactAddress(text);
  return address && remember(parsedAddresses, text, address);
}

/**
 * The value of an IPv4 address in FOUR_PART_DECIMAL spelling with every part at most 255, read in one
 * pass; undefined for anything else (parseIp then decides). ipaddr.js' parser tries several spellings
 * with regular expressions: a cold process reading 5,000 nodes (10,000 addresses) paid ~10 ms for it.
 */
function fourPartDecimal(text: string): number | undefined {
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 46 /* . */) {
      if (digits === 0 || dots === 3) return undefined;
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (code >= 48 && code <= 57) {
      if (digits === 1 && part === 0) return undefined; // a leading zero (octal in some parsers)
      part = part * 10 + (code - 48);
      digits++;
      if (part > 255) return undefined;
    } else return undefined;
  }
  return dots === 3 && digits > 0 ? value * 256 + part : undefined;
}

/** parseIp, then the compact form; not remembered (a CIDR's address part is remembered as the CIDR). */
function compactAddress(text: string): Address | undefined {
  const ipv4 = fourPartDecimal(text);
  // That spelling is already ipaddr.js' canonical text.
  if (ipv4 !== undefined) return { family: 4, value: ipv4, text };
  const parsed = parseIp(text);
  if (!parsed) return undefined;
  if (parsed.kind() === "ipv4") {
    const [a, b, c, d] = (parsed as ipaddr.IPv4).octets as [number, number, number, number];
    // The strict four-part decimal spelling parseIp accepts is already ipaddr.js' canonical text.
    return { family: 4, value: a * 0x1000000 + ((b << 16) | (c << 8) | d), text };
  }
  const value = (parsed as ipaddr.IPv6).parts.reduce((sum, part) => (sum << 16n) | BigInt(part), 0n);
  return { family: 6, value, text: parsed.toString() };
}

/** The first `prefixLength` bits of an address value, the rest zero: its network at that prefix. */
function networkValue(family: 4, value: number, prefixLength: number): number;
function networkValue(family: 6, value: bigint, prefixLength: number): bigint;
function networkValue(family: Family, value: number | bigint, prefixLength: number): number | bigint {
  // IPv4 in 32-bit integer operations (`>>> 0` makes the result unsigned again); `<< 32` would be `<< 0`.
  if (family === 4) return prefixLength === 0 ? 0 : ((value as number) & (-1 << (32 - prefixLength))) >>> 0;
  const hostBits = BigInt(128 - prefixLength);
  return ((value as bigint) >> hostBits) << hostBits;
}

/** The network address of `address` at `prefixLength` (host bits cleared), as Cidr.network holds it. */
export function addressNetwork(address: Address, prefixLength: number): number | bigint {
  return address.family === 4 ? networkValue(4, address.value, prefixLength) : networkValue(6, address.value, prefixLength);
}

/** The network of `address` at `prefixLength`, as a Cidr (host bits cleared). */
function cidrOf(address: Address, prefixLength: number): Cidr {
  if (address.family === 4) {
    const network = networkValue(4, address.value, prefixLength);
    const octets = [Math.floor(network / 0x1000000), (network >>> 16) & 255, (network >>> 8) & 255, network & 255];
    const text = network === address.value ? address.text : new ipaddr.IPv4(octets).toString();
    return { family: 4, network, prefixLength, text: `${text}/${prefixLength}` };
  }
  const network = networkValue(6, address.value, prefixLength);
  const text = network === address.value ? address.text : new ipaddr.IPv6(groupsOf(network)).toString();
  return { family: 6, network, prefixLength, text: `${text}/${prefixLength}` };
}

/** The eight 16-bit groups of an IPv6 value. */
function groupsOf(value: bigint): number[] {
  return Array.from({ length: 8 }, (_, i) => Number((value >> BigInt(112 - 16 * i)) & 0xffffn));
}

/** Canonical text of an IP address, so that `fd00:0::1` and `fd00::1` compare equal. */
export function canonicalIp(text: string): string | undefined {
  return parseIp(text)?.toString();
}

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; reason: string };

/** Parses `10.200.0.0/24`; refuses host bits (`10.200.0.1/24`) and names the network it meant. */
export function parseCidr(text: string): CidrParse {
  const known = parsedCidrs.get(text);
  if (known) return { ok: true, cidr: known };
  const slash = text.indexOf("/");
  if (slash < 0) return { ok: false, reason: "not a CIDR (expected ADDRESS/PREFIX)" };
  const address = compactAddress(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (!address) return { ok: false, reason: "not a valid IP address before the /" };
  const max = address.family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) {
    return { ok: false, reason: `prefix length must be 0..${max}` };
  }
  const range = cidrOf(address, Number(prefixText));
  if (range.network !== address.value) return { ok: false, reason: `host bits set (the network is ${range.text})` };
  return { ok: true, cidr: remember(parsedCidrs, text, range) };
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

/** True when `address` lies inside `range`. */
export function addressInCidr(address: Address, range: Cidr): boolean {
  return address.family === 4
    ? range.family === 4 && networkValue(4, address.value, range.prefixLength) === range.network
    : range.family === 6 && networkValue(6, address.value, range.prefixLength) === range.network;
}

/** True when `inner` lies wholly inside `outer`. */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  if (inner.prefixLength < outer.prefixLength) return false;
  return inner.family === 4
    ? outer.family === 4 && networkValue(4, inner.network, outer.prefixLength) === outer.network
    : outer.family === 6 && networkValue(6, inner.network, outer.prefixLength) === outer.network;
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

/** specialPurposeRange of one address (its /32 or /128), without making that range. */
export function specialPurposeAddress(address: Address): string | undefined {
  refused ??= refusedRanges();
  const hit = refused.find((special) => addressInCidr(address, special.range));
  return hit ? `${hit.name} ${hit.range.text}` : undefined;
}

/** Two CIDRs overlap exactly when one contains the other. */
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  if (a.family === 4 && b.family === 4) {
    // Two IPv4 ranges overlap when their networks agree on the shorter prefix: one XOR and a shift
    // (this runs for every node against every special-purpose range, 10,000s of times in a cold process).
    const shorter = Math.min(a.prefixLength, b.prefixLength);
    return shorter === 0 || (a.network ^ b.network) >>> (32 - shorter) === 0;
  }
  return cidrContains(a, b) || cidrContains(b, a);
}

/**
 * The seeds' route name: `kubernetes-route-10-200-0-0-24`. IPv6 uses the uncompressed groups without
 * leading zeros (`kubernetes-route-fd00-10-200-0-0-0-0-0-64`), at most 60 characters, so it stays a
 * valid GCP resource name ([a-z]([-a-z0-9]*[a-z0-9])?, 63 characters).
 */
export function routeName(range: Cidr): string {
  if (range.family === 4) {
    // The canonical text with `.` and `/` as `-`, made from the integer: a regular expression per route
    // cost a cold process reading 5,000 nodes about 10 ms. Joined, not a template literal: V8 keeps a
    // template's result as a chain of about 9 concatenation nodes (≈ 290 bytes a name, 1.5 MB of an
    // agent's 5,000 routes, issue 9), a join as one flat string.
    const n = range.network;
    return ["kubernetes-route", Math.floor(n / 0x1000000), (n >>> 16) & 255, (n >>> 8) & 255, n & 255, range.prefixLength].join("-");
  }
  return ["kubernetes-route", ...groupsOf(range.network).map((group) => group.toString(16)), range.prefixLength].join("-");
}

/**
 * The family of a validated (canonical) IP address text: only IPv6 is written with colons. For text
 * already checked, so that picking a node's next hop does not parse its addresses again.
 */
export function familyOfIp(canonical: string): Family {
  return canonical.includes(":") ? 6 : 4;
}

/** The node's internal IP of one family, if it has one. */
export function internalIpOf(node: Node, family: Family): string | undefined {
  return node.internalIPs.find((ip) => familyOfIp(ip) === family);
}

/** Address order: IPv4 before IPv6, then by network address, then wider (shorter prefix) first. */
export function compareRanges(a: Cidr, b: Cidr): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.network < b.network ? -1 : a.network > b.network ? 1 : a.prefixLength - b.prefixLength;
}

/** Sorts CIDR texts in address order (compareRanges), so plans and tables read in address order. */
export function compareCidrs(a: string, b: string): number {
  return compareRanges(cidr(a), cidr(b));
}

/** Sorts values by the CIDR text `key` gives, in address order, looking each CIDR up once. Stable. */
export function sortByCidr<T>(values: T[], key: (value: T) => string): T[] {
  return values
    .map((value) => ({ value, range: cidr(key(value)) }))
    .sort((a, b) => compareRanges(a.range, b.range))
    .map(({ value }) => value);
}

/**
 * Every pair of overlapping CIDRs, in O(n log n): aligned CIDRs either nest or are disjoint, so after
 * sorting in address order (wider first) one stack of the ranges still open finds each overlap.
 * Returns index pairs [earlier in input, later in input] for each range and the nearest range holding it.
 */
export function findOverlaps(ranges: Cidr[]): [number, number][] {
  const order = ranges.map((_, index) => index).sort((a, b) => compareRanges(ranges[a]!, ranges[b]!));
  const pairs: [number, number][] = [];
  const open: number[] = [];
  for (const index of order) {
    while (open.length && !cidrContains(ranges[open.at(-1)!]!, ranges[index]!)) open.pop();
    const holder = open.at(-1);
    if (holder !== undefined) pairs.push(holder < index ? [holder, index] : [index, holder]);
    open.push(index);
  }
  return pairs;
}
