/**
 * The iproute2 dialect of a Linux host's routing table, with no I/O: parsing `ip -N -json` output into
 * observed routes, and turning a table's changes into one `ip -batch` script whose failing lines map
 * back to changes. Shared by every host-route target (local, lab, ssh): only how `ip` is run differs.
 */
import { addressInCidr, cidr, parseAddress, parseCidr, parseIp, type Cidr } from "../../model.js";
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
  group?: unknown[];
}

/** What one read of a host gives: its main-table routes, nexthop objects, and whether it has them. */
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
 * What a plan reads of a host: its routes alone. Nexthop objects matter only to a write, which reads
 * the host again with READ_BATCH; thousands of them would cost a plan's read about as much again.
 */
export const ROUTES_BATCH = "route show table all\n";
export const READ_ARGS = ["-N", "-json", "-force", "-batch", "-"];

/**
 * Parses the output of a read batch (READ_BATCH unless said). Each command prints one JSON array per
 * line, in order; one that fails (`nexthop show` on a kernel without nexthop objects) prints none, and
 * `-force` goes on to the next, saying `Command failed -:LINE` on stderr.
 */
export function parseHostState(stdout: string, stderr: string, batch = READ_BATCH): HostState {
  const arrays = stdout
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.startsWith("["))
    .map((line) => JSON.parse(line) as unknown[]);
  const failed = new Set([...stderr.matchAll(/Command failed -:(\d+)/g)].map((match) => Number(match[1])));
  const printed = new Map<string, unknown[]>();
  let next = 0;
  batch
    .trim()
    .split("\n")
    .forEach((command, index) => {
      if (!failed.has(index + 1)) printed.set(command.split(" ")[0]!, arrays[next++] ?? []);
    });
  const routes = (printed.get("route") ?? []) as KernelRoute[];
  return {
    routes: routes.filter((route) => route.table === undefined || route.table === "254" || route.table === "main"),
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
export function canonicalDestination(dst: string | undefined, family: 4 | 6): string | undefined {
  if (dst === undefined) return undefined;
  if (dst === "default") return family === 4 ? "0.0.0.0/0" : "::/0";
  const withPrefix = dst.includes("/") ? dst : `${dst}/${dst.includes(":") ? 128 : 32}`;
  const parsed = parseCidr(withPrefix);
  return parsed.ok ? parsed.cidr.text : undefined;
}

/** Unicast main-table routes, as observed routes; `owned` is the protocol tag. */
export function observedRoutes(state: HostState, proto: number): ObservedRoute[] {
  const routes: ObservedRoute[] = [];
  for (const route of state.routes) {
    if (route.type !== undefined && route.type !== "1" && route.type !== "unicast") {
      // blackhole/unreachable/prohibit routes: foreign by nature, but they still sit on a destination.
      if (route.protocol === String(proto)) continue;
    }
    const family = route.gateway?.includes(":") || route.dst?.includes(":") ? 6 : 4;
    const destination = canonicalDestination(route.dst, family);
    if (!destination) continue;
    const gateway = route.gateway ? parseAddress(route.gateway)?.text : undefined;
    routes.push({
      destination,
      nextHop: route.nexthops ? undefined : gateway,
      nextHopLabel: route.gateway ?? (route.nexthops ? "multipath" : route.type ? typeName(route.type) : "direct"),
      owned: route.protocol === String(proto),
      ...(route.dev ? { device: route.dev } : {}),
      protocol: protocolName(route.protocol),
      details: { ...(route.nhid !== undefined ? { nhid: route.nhid } : {}), ...(route.metric !== undefined ? { metric: route.metric } : {}) },
    });
  }
  return routes;
}

/** iproute2's names for the kernel's own protocol numbers; others stay numbers. */
const PROTOCOL_NAMES: Record<string, string> = { "2": "kernel", "3": "boot", "4": "static", "16": "dhcp", "186": "bgp", "188": "ospf" };
const TYPE_NAMES: Record<string, string> = { "6": "blackhole", "7": "unreachable", "8": "prohibit" };

function protocolName(protocol: string | undefined): string {
  return PROTOCOL_NAMES[protocol ?? "3"] ?? protocol!;
}

function typeName(type: string): string {
  return TYPE_NAMES[type] ?? `type ${type}`;
}

/** The host's connected networks: link-scope routes without a gateway, and the device of each. */
export function connectedNetworks(state: HostState): { dev: string; range: Cidr }[] {
  const networks: { dev: string; range: Cidr }[] = [];
  for (const route of state.routes) {
    if (route.gateway || !route.dev || route.nexthops || route.nhid !== undefined) continue;
    if (route.type !== undefined && route.type !== "1" && route.type !== "unicast") continue;
    const destination = canonicalDestination(route.dst, route.dst?.includes(":") ? 6 : 4);
    if (!destination || destination.endsWith("/0")) continue;
    const range = cidr(destination);
    // IPv4 connected routes have link scope (253); IPv6 ones print no scope, but have no gateway either.
    if (range.family === 4 && route.scope !== "253" && route.scope !== "link") continue;
    networks.push({ dev: route.dev, range });
  }
  return networks.sort((a, b) => b.range.prefixLength - a.range.prefixLength);
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
  /** The `ip -batch` script; empty when every change was refused before writing. */
  script: string;
  lines: BatchLine[];
  /** Changes refused before writing (next hop not on-link), with the reason. */
  refused: ChangeResult[];
}

/**
 * Builds one table's whole diff as one batch. With nexthop objects (kernel ≥ 5.3), each next hop is one
 * object and routes point at it: the kernel then does not compare gateways route by route, which is
 * what makes thousands of distinct gateways slow. Owned nexthop objects no longer used are removed last,
 * and only when no route at all (ours or not) still uses them.
 */
export function buildWriteBatch(
  state: HostState,
  changes: Change[],
  options: { proto: number; nodeOfNextHop: (nextHop: string) => string },
): WriteBatch {
  const proto = options.proto;
  const lines: BatchLine[] = [];
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

  const connected = connectedNetworks(state);
  for (const change of changes) {
    if (change.action === "delete") {
      deleteLines.push({ text: `route del ${change.current.destination} proto ${proto}`, changes: [change] });
      continue;
    }
    const { route } = change;
    const device = onLinkDevice(connected, route.nextHop);
    if (!device) {
      refused.push({
        change,
        ok: false,
        error: `next hop ${route.nextHop} of node ${options.nodeOfNextHop(route.nextHop)} is not on-link here (no connected network holds it); nothing was written for ${route.destination}`,
      });
      continue;
    }
    const verb = change.action === "create" ? "add" : "replace";
    if (!useNexthops) {
      routeLines.push({ text: `route ${verb} ${route.destination} via ${route.nextHop} dev ${device} proto ${proto}`, changes: [change] });
      continue;
    }
    let nexthop = nexthopLines.get(route.nextHop);
    if (!nexthop) {
      const existing = ownedNexthops.get(route.nextHop);
      const id = existing && existing.dev === device ? existing.id : allocate();
      nexthop = { id, text: existing && existing.dev === device ? "" : `nexthop replace id ${id} via ${route.nextHop} dev ${device} proto ${proto}`, changes: [] };
      nexthopLines.set(route.nextHop, nexthop);
    }
    nexthop.changes.push(change);
    routeLines.push({ text: `route ${verb} ${route.destination} nhid ${nexthop.id} proto ${proto}`, changes: [change] });
  }

  // Owned nexthop objects that no route will use after this batch.
  const cleanup: BatchLine[] = [];
  if (useNexthops) {
    const deleted = new Set(changes.filter((c) => c.action !== "create").map((c) => (c.action === "delete" ? c.current.destination : c.route.destination)));
    const stillUsed = new Set<number>();
    for (const route of state.routes) {
      if (route.nhid === undefined) continue;
      const destination = canonicalDestination(route.dst, route.dst?.includes(":") ? 6 : 4);
      const isOursAndChanging = route.protocol === String(proto) && destination !== undefined && deleted.has(destination);
      if (!isOursAndChanging) stillUsed.add(route.nhid);
    }
    for (const line of nexthopLines.values()) stillUsed.add(line.id);
    for (const nh of ownedNexthops.values()) {
      if (!stillUsed.has(nh.id)) cleanup.push({ text: `nexthop del id ${nh.id}`, changes: [] });
    }
  }

  lines.push(...[...nexthopLines.values()].filter((line) => line.text), ...routeLines, ...deleteLines, ...cleanup);
  return { script: lines.map((line) => `${line.text}\n`).join(""), lines, refused };
}

/**
 * Maps `ip -force -batch` errors back to changes. iproute2 prints the error, then
 * `Command failed -:LINE`; a failed nexthop line fails the routes that use it.
 */
export function batchResults(batch: WriteBatch, changes: Change[], stderr: string): ChangeResult[] {
  const failures = new Map<number, string>();
  const errorLines = stderr.split("\n");
  let pending: string[] = [];
  for (const line of errorLines) {
    const failed = /^Command failed -:(\d+)/.exec(line);
    if (failed) {
      failures.set(Number(failed[1]), pending.join(" ").trim() || "ip reported a failure");
      pending = [];
    } else if (line.trim()) {
      pending.push(line.trim());
    }
  }
  const errors = new Map<Change, string>();
  batch.lines.forEach((line, index) => {
    const error = failures.get(index + 1);
    if (error === undefined) return;
    for (const change of line.changes) if (!errors.has(change)) errors.set(change, `${line.text}: ${error}`);
  });
  const refused = new Set(batch.refused.map((r) => r.change));
  return [
    ...batch.refused,
    ...changes
      .filter((change) => !refused.has(change))
      .map((change): ChangeResult => {
        const error = errors.get(change);
        return error === undefined ? { change, ok: true } : { change, ok: false, error };
      }),
  ];
}
