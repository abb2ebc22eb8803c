/**
 * The iproute2 dialect of a Linux host's routing table, with no I/O: parsing `ip -N -json` output into
 * observed routes, and turning a table's changes into one `ip -batch` script whose failing lines map
 * back to changes. Shared by every host-route target (local, lab, ssh): only how `ip` is run differs.
 *
 * Ownership is the route protocol number. Every line podroutes writes carries it right after the verb
 * (`route add proto 150 DST nhid N`), so no prefix of a line is a valid command without the mark; deletes
 * name the exact route (table, metric, type) as well as the mark.
 */
import { addressInCidr, cidr, cidrsOverlap, parseAddress, parseCidr, parseIp, type Address, type Cidr, type Family, type Route } from "../../model.js";
import type { Change, ChangeResult, ObservedRoute } from "../target.js";

/**
 * Default route protocol number that marks podroutes' routes. 8-bit; chosen outside the numbers in
 * iproute2's rt_protos (0-18, 42, 99, 168, 186-192) so it collides with no routing daemon.
 */
export const DEFAULT_PROTO = 150;

/** First nexthop-object id podroutes tries; ids above it are used upwards, skipping taken ones. */
export const NEXTHOP_ID_BASE = 0x5052_0000; // "PR"

/** A route of `ip -N -json route show table all` as podroutes reads it. */
export interface KernelRoute {
  dst?: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  table?: string;
  type?: string;
  nhid?: number;
  metric?: number;
  nexthops?: unknown[];
}

export interface KernelNexthop {
  id: number;
  gateway?: string;
  dev?: string;
  protocol?: string;
  group?: { id: number }[];
}

/** What one read of a host gives: its routes in every table, nexthop objects, and whether it has them. */
export interface HostState {
  routes: KernelRoute[];
  /** Empty when the read did not ask for them (ROUTES_BATCH). */
  nexthops: KernelNexthop[];
  /** False when the kernel has none, or when the read did not ask for them. */
  nexthopObjects: boolean;
  /** The host's own addresses, to find which node it is. */
  addresses: string[];
}

/** The batch that reads a host in one `ip` process (and one SSH round trip). */
export const READ_BATCH = "route show table all\nnexthop show\naddress show\n";
/**
 * The same read as two batches for two `ip` processes that run at once, where `ip` runs on this host:
 * the kernel dumps the routes and the nexthop objects in about the same time each (5,000 of each: about
 * 18 and 17 ms), so two processes take about half the time of one.
 */
export const READ_PARTS = ["route show table all\n", "nexthop show\naddress show\n"];
/**
 * A host's routes alone. Every read of podroutes takes the nexthop objects too (the review's unused
 * objects, the batch's ids); this is what the benchmark compares a read with.
 */
export const ROUTES_BATCH = "route show table all\n";
export const READ_ARGS = ["-N", "-json", "-force", "-batch", "-"];

/** One read batch (`READ_ARGS`) and what `ip` printed for it. */
export interface HostRead {
  batch: string;
  stdout: string;
  stderr: string;
}

/**
 * The last line of every write batch. `ip -batch` skips it (a comment); a transport that receives the
 * batch over a stream (SSH) runs nothing unless this line arrived, so a cut connection runs no batch.
 */
export const BATCH_END = "# podroutes: end of batch";

/**
 * Parses the output of a read batch (READ_BATCH unless said). Each command prints one JSON array per
 * line, in order; one that fails (`nexthop show` on a kernel without nexthop objects) prints none, and
 * `-force` goes on to the next, saying `Command failed -:LINE` on stderr.
 */
export function parseHostState(stdout: string, stderr: string, batch = READ_BATCH): HostState {
  return parseHostReads([{ batch, stdout, stderr }]);
}

/** Parses the outputs of one or more read batches (READ_BATCH, or READ_PARTS) into one state. */
export function parseHostReads(reads: HostRead[]): HostState {
  const printed = new Map<string, unknown[]>();
  for (const { batch, stdout, stderr } of reads) {
    const arrays = stdout
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line.startsWith("["))
      .map((line) => JSON.parse(line) as unknown[]);
    const failed = new Set([...stderr.matchAll(/Command failed -:(\d+)/g)].map((match) => Number(match[1])));
    let next = 0;
    batch
      .trim()
      .split("\n")
      .forEach((command, index) => {
        if (!failed.has(index + 1)) printed.set(command.split(" ")[0]!, arrays[next++] ?? []);
      });
  }
  const routes = (printed.get("route") ?? []) as KernelRoute[];
  return {
    routes,
    nexthops: (printed.get("nexthop") ?? []) as KernelNexthop[],
    nexthopObjects: printed.has("nexthop"),
    addresses: hostAddresses((printed.get("address") ?? []) as IpLink[]),
  };
}

/** A link of `ip -json address show`, as far as podroutes reads it. */
type IpLink = { addr_info?: { local?: string }[] };

/** The host's own addresses in `ip -json address show` output (parsed JSON). */
function hostAddresses(links: IpLink[]): string[] {
  return links.flatMap((link) => (link.addr_info ?? []).map((a) => a.local).filter((a): a is string => !!a));
}

/** `default`, host routes without a prefix, and IPv6 spellings, all as canonical CIDR text. */
export function canonicalDestination(dst: string | undefined, family: Family): string | undefined {
  if (dst === undefined) return undefined;
  if (dst === "default") return family === 4 ? "0.0.0.0/0" : "::/0";
  const withPrefix = dst.includes("/") ? dst : `${dst}/${dst.includes(":") ? 128 : 32}`;
  const parsed = parseCidr(withPrefix);
  return parsed.ok ? parsed.cidr.text : undefined;
}

function familyOf(route: KernelRoute): Family {
  return route.gateway?.includes(":") || route.dst?.includes(":") ? 6 : 4;
}

/**
 * Where a route sits: the kernel tells routes on one destination apart by table and metric (and a
 * route's type — unicast, blackhole, ... — is part of what a delete must name).
 */
export interface RouteSlot {
  table: string;
  metric: number;
  type: string;
}

/** The metric `ip route add` gives when none is named: 0 for IPv4, 1024 for IPv6. */
function defaultMetric(family: Family): number {
  return family === 4 ? 0 : 1024;
}

const TYPE_NAMES: Record<string, string> = {
  "1": "unicast", "2": "local", "3": "broadcast", "4": "anycast", "5": "multicast",
  "6": "blackhole", "7": "unreachable", "8": "prohibit", "9": "throw", "10": "nat",
};

function slotOf(route: KernelRoute, family: Family): RouteSlot {
  const table = route.table === undefined || route.table === "254" ? "main" : route.table;
  const type = route.type === undefined ? "unicast" : (TYPE_NAMES[route.type] ?? route.type);
  return { table, metric: route.metric ?? defaultMetric(family), type };
}

/** The slot of an observed route, as observedRoutes recorded it. */
function observedSlot(route: ObservedRoute): RouteSlot {
  const details = route.details as Partial<RouteSlot> | undefined;
  return { table: details?.table ?? "main", metric: details?.metric ?? defaultMetric(route.destination.includes(":") ? 6 : 4), type: details?.type ?? "unicast" };
}

/** Identifies one kernel route exactly: the same destination in another table or metric is another route. */
function slotKey(destination: string, slot: RouteSlot): string {
  return `${destination} table ${slot.table} metric ${slot.metric} type ${slot.type}`;
}

/** True when the route sits where podroutes writes its own: the main table, at the default metric. */
export function inOurSlot(route: ObservedRoute): boolean {
  const slot = observedSlot(route);
  return slot.table === "main" && slot.metric === defaultMetric(route.destination.includes(":") ? 6 : 4);
}

/** True when an owned route already is the one podroutes writes: our slot, unicast, healthy, that next hop. */
export function sameHostRoute(desired: { nextHop: string }, observed: ObservedRoute): boolean {
  return observed.nextHop === desired.nextHop && observed.healthy !== false && inOurSlot(observed) && observedSlot(observed).type === "unicast";
}

/**
 * The routes that matter to podroutes: every route carrying the mark, in any table, of any type (so
 * duplicates, blackholes and strays are seen and can be removed), and every foreign route of the main
 * table (it may hold a destination podroutes wants). Owned routes in podroutes' own slot come first on
 * each destination, so the planner, which replaces the first owned route, replaces that one.
 */
export function observedRoutes(state: HostState, proto: number): ObservedRoute[] {
  const routes: ObservedRoute[] = [];
  for (const route of state.routes) {
    const family = familyOf(route);
    const destination = canonicalDestination(route.dst, family);
    if (!destination) continue;
    const owned = route.protocol === String(proto);
    const slot = slotOf(route, family);
    if (!owned && slot.table !== "main") continue;
    const gateway = route.gateway ? parseAddress(route.gateway)?.text : undefined;
    // Built field by field (in the order `list -o json` shows), not with spreads: this runs for every
    // route of the host, and a cold process pays for each temporary object in garbage collection.
    const details = slot as RouteSlot & { nhid?: number };
    if (route.nhid !== undefined) details.nhid = route.nhid;
    const observed: ObservedRoute = { destination, nextHop: route.nexthops ? undefined : gateway, nextHopLabel: route.gateway ?? (route.nexthops ? "multipath" : slot.type !== "unicast" ? slot.type : "direct"), owned };
    if (route.dev) observed.device = route.dev;
    observed.protocol = protocolName(route.protocol);
    // An owned blackhole (or unreachable, ...) route carries no traffic to a node: broken, to be replaced.
    if (owned && slot.type !== "unicast") observed.healthy = false;
    observed.details = details as unknown as Record<string, unknown>;
    routes.push(observed);
  }
  // Owned routes in our slot first, then the rest, each in the kernel's order (a stable partition).
  const first: ObservedRoute[] = [];
  const rest: ObservedRoute[] = [];
  for (const route of routes) (route.owned && inOurSlot(route) ? first : rest).push(route);
  for (const route of rest) first.push(route);
  return first;
}

/** iproute2's names for the kernel's own protocol numbers; others stay numbers. */
const PROTOCOL_NAMES: Record<string, string> = { "2": "kernel", "3": "boot", "4": "static", "16": "dhcp", "186": "bgp", "188": "ospf" };

function protocolName(protocol: string | undefined): string {
  return PROTOCOL_NAMES[protocol ?? "3"] ?? protocol!;
}

/** The host's connected networks: main-table link-scope routes without a gateway, and the device of each. */
export function connectedNetworks(state: HostState): { dev: string; range: Cidr }[] {
  const networks: { dev: string; range: Cidr }[] = [];
  for (const route of state.routes) {
    if (route.gateway || !route.dev || route.nexthops || route.nhid !== undefined) continue;
    const family = familyOf(route);
    const slot = slotOf(route, family);
    if (slot.table !== "main" || slot.type !== "unicast") continue;
    const destination = canonicalDestination(route.dst, family);
    if (!destination || destination.endsWith("/0")) continue;
    const range = cidr(destination);
    // IPv4 connected routes have link scope (253); IPv6 ones print no scope, but have no gateway either.
    if (range.family === 4 && route.scope !== "253" && route.scope !== "link") continue;
    networks.push({ dev: route.dev, range });
  }
  return networks.sort((a, b) => b.range.prefixLength - a.range.prefixLength);
}

/** What refusalOf judges a route against: the host's connected networks and its own addresses, parsed once. */
export interface HostNetworks {
  connected: { dev: string; range: Cidr }[];
  addresses: Address[];
}

export function hostNetworks(state: HostState): HostNetworks {
  const addresses: Address[] = [];
  for (const text of state.addresses) {
    const address = parseAddress(text);
    if (address) addresses.push(address);
  }
  return { connected: connectedNetworks(state), addresses };
}

/** The device that reaches `gateway` directly: the most specific connected network holding it. */
export function onLinkDevice(networks: { dev: string; range: Cidr }[], gateway: string): string | undefined {
  const address = parseAddress(gateway);
  return address && networks.find(({ range }) => addressInCidr(address, range))?.dev;
}

/** One line of the batch and the changes that fail with it. */
interface BatchLine {
  text: string;
  changes: Change[];
}

export interface WriteBatch {
  /** The `ip -batch` script, ending with BATCH_END; empty when there is nothing to write. */
  script: string;
  lines: BatchLine[];
  /** Changes refused before writing (next hop not on-link, a host network hijacked), with the reason. */
  refused: ChangeResult[];
}

/** What the batch builder needs to know besides the host's state. */
export interface BatchOptions {
  proto: number;
  nodeOfNextHop: (nextHop: string) => string;
  /** Each route's refusalOf against the same state, where the caller has it already (a review of that state). */
  refusals?: Map<Route, string | undefined>;
}

/**
 * Why a route must not be written on this host, or undefined: its next hop is not on-link, or its
 * destination overlaps a network the host is connected to (or one of its own addresses), which would
 * send part of the host's own network to another node.
 */
export function refusalOf(
  route: { destination: string; nextHop: string; node: string },
  host: HostNetworks,
  nodeOfNextHop: (nextHop: string) => string,
): string | undefined {
  const destination = cidr(route.destination);
  const hijacked = host.connected.find(({ range }) => cidrsOverlap(range, destination));
  if (hijacked) {
    return `pod CIDR ${route.destination} of node ${route.node} overlaps ${hijacked.range.text}, a network this host is connected to on ${hijacked.dev}: routing it to another node would cut the host off from part of its own network`;
  }
  const own = host.addresses.find((address) => addressInCidr(address, destination));
  if (own) {
    return `pod CIDR ${route.destination} of node ${route.node} holds ${own.text}, an address of this host`;
  }
  if (!onLinkDevice(host.connected, route.nextHop)) {
    return `next hop ${route.nextHop} of node ${nodeOfNextHop(route.nextHop)} is not on-link here (no connected network holds it)`;
  }
  const broadcastOf = broadcastNetwork(host.connected, route.nextHop);
  if (broadcastOf) {
    return `next hop ${route.nextHop} of node ${nodeOfNextHop(route.nextHop)} is the broadcast address of ${broadcastOf.range.text}, a network this host is connected to on ${broadcastOf.dev}: the kernel refuses it as a gateway`;
  }
  return undefined;
}

/**
 * The connected IPv4 network whose broadcast address (its last, for prefixes up to /30) `gateway` is,
 * if any: the kernel holds a broadcast route for it and refuses it as a next hop ("Nexthop has invalid
 * gateway"), so such a route is refused in the plan rather than failing in the write.
 */
export function broadcastNetwork(networks: { dev: string; range: Cidr }[], gateway: string): { dev: string; range: Cidr } | undefined {
  const address = parseAddress(gateway);
  if (address?.family !== 4) return undefined;
  return networks.find(({ range }) => range.family === 4 && range.prefixLength <= 30 && addressInCidr(address, range) && address.value === range.network + 2 ** (32 - range.prefixLength) - 1);
}

/**
 * Whether refusalOf's refusal of `route` is the route's own and lasts while the Node and the host's
 * networks stay as they are: a pod CIDR over a network or an address of this host; a next hop on none
 * of the host's networks while the host is on networks of that family (192.0.2.7 beside 10.240.0.0/24),
 * or has no address of that family at all (an IPv6 next hop on an IPv4-only host). Not the route's: a
 * host with addresses of the family but no connected network of it (its link is down, which took the
 * connected routes with it): every route of the family is refused until it is back, a failure of the host.
 * Loopback and link-local addresses make no host "of a family" (every IPv4-only host has ::1 and fe80::).
 */
export function refusalLasts(route: { nextHop: string }, host: HostNetworks): boolean {
  const nextHop = parseAddress(route.nextHop);
  if (!nextHop || onLinkDevice(host.connected, route.nextHop)) return true;
  const routable = (address: Address) => !(address.family === 4 ? /^(127\.|169\.254\.)/.test(address.text) : /^(::1$|fe[89ab])/i.test(address.text));
  const connectedOfFamily = host.connected.some(({ range }) => range.family === nextHop.family && !(range.family === 6 && /^fe[89ab]/i.test(range.text)));
  const addressOfFamily = host.addresses.some((address) => address.family === nextHop.family && routable(address));
  return connectedOfFamily || !addressOfFamily;
}

/** `route del` naming exactly one route: the mark, its type, destination, table and metric. */
function deleteLine(route: ObservedRoute, proto: number): string {
  const slot = observedSlot(route);
  return `route del proto ${proto} ${slot.type === "unicast" ? "" : `${slot.type} `}${route.destination} table ${slot.table} metric ${slot.metric}`;
}

/**
 * Builds one table's whole diff as one batch. With nexthop objects (kernel ≥ 5.3), each next hop is one
 * object and routes point at it: the kernel then does not compare gateways route by route, which is
 * what makes thousands of distinct gateways slow. New objects are created with `nexthop add` under ids
 * nobody holds, which fails instead of taking over an id someone else created meanwhile; podroutes
 * never rewrites a nexthop object. Owned objects no longer used are removed last, and only when
 * nothing at all (a route in any table, a nexthop group, ours or not) still uses them.
 *
 * A replace writes podroutes' slot (main table, default metric): `route replace` when the replaced
 * route sits there, else `route add` there and a delete of the old route after it (make before break).
 */
export function buildWriteBatch(state: HostState, changes: Change[], options: BatchOptions): WriteBatch {
  const proto = options.proto;
  const refused: ChangeResult[] = [];
  const useNexthops = state.nexthopObjects;

  const ownedNexthops = new Map<string, KernelNexthop>();
  const takenIds = new Set<number>(state.nexthops.map((nh) => nh.id));
  for (const nh of state.nexthops) {
    if (nh.protocol === String(proto) && nh.gateway && !nh.group) ownedNexthops.set(parseIp(nh.gateway)!.toString(), nh);
  }
  let nextId = NEXTHOP_ID_BASE;
  const allocate = (): number => {
    while (takenIds.has(nextId)) nextId++;
    takenIds.add(nextId);
    return nextId;
  };

  const nexthopLines = new Map<string, BatchLine & { id: number }>();
  const routeLines: BatchLine[] = [];
  const deleteLines: BatchLine[] = [];
  /** Exact keys of the owned routes this batch removes or rewrites: their nexthops lose a user. */
  const released = new Set<string>();

  const host = hostNetworks(state);
  for (const change of changes) {
    if (change.action === "delete") {
      deleteLines.push({ text: deleteLine(change.current, proto), changes: [change] });
      released.add(slotKey(change.current.destination, observedSlot(change.current)));
      continue;
    }
    const { route } = change;
    const refusal = options.refusals?.has(route) ? options.refusals.get(route) : refusalOf(route, host, options.nodeOfNextHop);
    if (refusal) {
      refused.push({ change, ok: false, error: `${refusal}; nothing was written for ${route.destination}`, ...(refusalLasts(route, host) ? { refused: true } : {}) });
      continue;
    }
    const device = onLinkDevice(host.connected, route.nextHop)!;
    const rewrite = change.action === "replace" && inOurSlot(change.current);
    if (change.action === "replace") {
      released.add(slotKey(change.current.destination, observedSlot(change.current)));
      if (!rewrite) deleteLines.push({ text: deleteLine(change.current, proto), changes: [change] });
    }
    const verb = rewrite ? "replace" : "add";
    if (!useNexthops) {
      routeLines.push({ text: `route ${verb} proto ${proto} ${route.destination} via ${route.nextHop} dev ${device}`, changes: [change] });
      continue;
    }
    let nexthop = nexthopLines.get(route.nextHop);
    if (!nexthop) {
      const existing = ownedNexthops.get(route.nextHop);
      const reuse = existing !== undefined && existing.dev === device;
      const id = reuse ? existing.id : allocate();
      nexthop = { id, text: reuse ? "" : `nexthop add id ${id} proto ${proto} via ${route.nextHop} dev ${device}`, changes: [] };
      nexthopLines.set(route.nextHop, nexthop);
    }
    nexthop.changes.push(change);
    routeLines.push({ text: `route ${verb} proto ${proto} ${route.destination} nhid ${nexthop.id}`, changes: [change] });
  }

  const cleanup = useNexthops ? unusedNexthopLines(state, proto, released, new Set([...nexthopLines.values()].map((line) => line.id))) : [];

  // One loop, no spread into push: a table of 150,000 routes must not be bounded by the call stack.
  const lines: BatchLine[] = [];
  for (const group of [[...nexthopLines.values()], routeLines, deleteLines, cleanup]) {
    for (const line of group) if (line.text) lines.push(line);
  }
  const script = lines.length ? `${lines.map((line) => `${line.text}\n`).join("")}${BATCH_END}\n` : "";
  return { script, lines, refused };
}

/**
 * `nexthop del` lines for podroutes' nexthop objects that nothing uses once the batch has run: not a
 * route in any table (except the owned routes the batch removes or rewrites, `released`), not a nexthop
 * group that stays, not a new route line (`kept`). Unused owned groups go first, then plain objects.
 */
function unusedNexthopLines(state: HostState, proto: number, released: Set<string>, kept: Set<number>): BatchLine[] {
  const used = new Set(kept);
  const mark = String(proto);
  for (const route of state.routes) {
    if (route.nhid === undefined) continue;
    // Only an owned route the batch removes or rewrites gives its nexthop up (its key is made only then).
    if (released.size && route.protocol === mark) {
      const family = familyOf(route);
      const destination = canonicalDestination(route.dst, family);
      if (destination !== undefined && released.has(slotKey(destination, slotOf(route, family)))) continue;
    }
    used.add(route.nhid);
  }
  const owned = (nh: KernelNexthop) => nh.protocol === String(proto);
  const groups = state.nexthops.filter((nh) => nh.group);
  const removedGroups = groups.filter((group) => owned(group) && !used.has(group.id));
  for (const group of groups) {
    if (!removedGroups.includes(group)) for (const member of group.group!) used.add(member.id);
  }
  const plain = state.nexthops.filter((nh) => !nh.group && owned(nh) && !used.has(nh.id));
  return [...removedGroups, ...plain].map((nh) => ({ text: `nexthop del id ${nh.id}`, changes: [] }));
}

/** Podroutes' nexthop objects that nothing uses now (left by a crash or a foreign delete): ids. */
export function unusedNexthops(state: HostState, proto: number): number[] {
  return state.nexthopObjects ? unusedNexthopLines(state, proto, new Set(), new Set()).map((line) => Number(line.text.split(" ").pop())) : [];
}

/** True when the host holds anything carrying the mark: a route in any table, or a nexthop object. */
export function holdsOwned(state: HostState, proto: number): boolean {
  return state.routes.some((route) => route.protocol === String(proto)) || state.nexthops.some((nh) => nh.protocol === String(proto));
}

/**
 * Maps `ip -force -batch` errors back to changes. iproute2 prints the error, then
 * `Command failed -:LINE` (or `Command failed FILE:LINE`); a failed nexthop line fails the routes that use it.
 */
export function batchResults(batch: WriteBatch, changes: Change[], stderr: string): ChangeResult[] {
  const failures = batchFailures(stderr);
  const errors = new Map<Change, string>();
  batch.lines.forEach((line, index) => {
    const error = failures.get(index + 1);
    if (error === undefined) return;
    for (const change of line.changes) if (!errors.has(change)) errors.set(change, `${line.text}: ${error}`);
  });
  const refused = new Set(batch.refused.map((r) => r.change));
  const results: ChangeResult[] = [...batch.refused];
  for (const change of changes) {
    if (refused.has(change)) continue;
    const error = errors.get(change);
    results.push(error === undefined ? { change, ok: true } : { change, ok: false, error });
  }
  return results;
}

/** Line number → error text, from `ip -force -batch` stderr. */
export function batchFailures(stderr: string): Map<number, string> {
  const failures = new Map<number, string>();
  let pending: string[] = [];
  for (const line of stderr.split("\n")) {
    const failed = /^Command failed \S*:(\d+)/.exec(line);
    if (failed) {
      failures.set(Number(failed[1]), pending.join(" ").trim() || "ip reported a failure");
      pending = [];
    } else if (line.trim()) {
      pending.push(line.trim());
    }
  }
  return failures;
}

/**
 * What became of each change, judged from the table itself: used when `ip` stopped partway (killed, or
 * a line it could not parse), so no line numbers say which lines ran. A create or replace is done when
 * an owned route in podroutes' slot sends the destination to the node; a delete when that exact route
 * is gone.
 */
export function resultsFromState(state: HostState, proto: number, changes: Change[], why: string): ChangeResult[] {
  const now = observedRoutes(state, proto).filter((route) => route.owned);
  const present = new Set(now.map((route) => slotKey(route.destination, observedSlot(route))));
  return changes.map((change): ChangeResult => {
    const done =
      change.action === "delete"
        ? !present.has(slotKey(change.current.destination, observedSlot(change.current)))
        : now.some((route) => route.destination === change.route.destination && sameHostRoute(change.route, route));
    return done ? { change, ok: true } : { change, ok: false, error: `not done: ${why}` };
  });
}
