/**
 * What `ip -N monitor route nexthop link address` prints, as events, and which of them mean the kernel
 * table may have drifted from what the agent keeps there. Pure: no I/O.
 *
 * iproute2 6.1 prints text even with `-j` (measured), one object per line, continuation lines indented;
 * removals start with `Deleted `. With `-N`, protocols and route types are numbers. When a link goes
 * down the kernel flushes its IPv4 routes WITHOUT a notification per route (measured), and deleting a
 * nexthop object silently takes the routes using it; so link and address events always count, and route
 * events are only half the story.
 */
import { canonicalDestination } from "../targets/linux/iproute.js";
import { canonicalIp } from "../model.js";

export type KernelEvent =
  | {
      object: "route";
      deleted: boolean;
      /** Canonical CIDR text (`0.0.0.0/0` for default). */
      destination: string;
      /** Route type number (`2` local, `3` broadcast, ...); undefined for unicast, which prints none. */
      type?: string;
      table?: string;
      protocol?: string;
      gateway?: string;
      nhid?: number;
      dev?: string;
    }
  | { object: "nexthop"; deleted: boolean; id: number; protocol?: string; gateway?: string; dev?: string }
  | { object: "link"; deleted: boolean; index: number; name: string }
  | { object: "address"; deleted: boolean; index: number; dev: string; address: string }
  /** A line this parser does not know: treated as possible drift, never ignored silently. */
  | { object: "unknown"; deleted: boolean; line: string };

const ROUTE_TYPES = new Set(["unicast", "local", "broadcast", "multicast", "anycast", "blackhole", "unreachable", "prohibit", "throw", "nat"]);

/** One line of monitor output; undefined for continuation lines (indented) and blank ones. */
export function parseMonitorLine(raw: string): KernelEvent | undefined {
  if (!raw.trim() || /^\s/.test(raw)) return undefined;
  let line = raw.trimEnd();
  const deleted = line.startsWith("Deleted ");
  if (deleted) line = line.slice("Deleted ".length);

  const link = /^(\d+): ([^\s:@]+)(?:@[^\s:]+)?: </.exec(line);
  if (link) return { object: "link", deleted, index: Number(link[1]), name: link[2]! };
  const address = /^(\d+): (\S+)\s+inet6? (\S+)/.exec(line);
  if (address) return { object: "address", deleted, index: Number(address[1]), dev: address[2]!, address: address[3]! };

  const words = line.split(/\s+/);
  if (words[0] === "id" && /^\d+$/.test(words[1] ?? "")) {
    const fields = keyValues(words.slice(2));
    return {
      object: "nexthop",
      deleted,
      id: Number(words[1]),
      ...(fields.proto !== undefined ? { protocol: fields.proto } : {}),
      ...(fields.via !== undefined ? { gateway: canonicalIp(fields.via) ?? fields.via } : {}),
      ...(fields.dev !== undefined ? { dev: fields.dev } : {}),
    };
  }

  let type: string | undefined;
  if (/^\d+$/.test(words[0] ?? "") || ROUTE_TYPES.has(words[0] ?? "")) type = words.shift();
  const dst = words.shift();
  const fields = keyValues(words);
  const family = dst?.includes(":") || fields.via?.includes(":") ? 6 : 4;
  const destination = dst === undefined ? undefined : canonicalDestination(dst, family);
  if (!destination) return { object: "unknown", deleted, line };
  return {
    object: "route",
    deleted,
    destination,
    ...(type !== undefined && type !== "unicast" && type !== "1" ? { type } : {}),
    ...(fields.table !== undefined ? { table: fields.table } : {}),
    ...(fields.proto !== undefined ? { protocol: fields.proto } : {}),
    ...(fields.via !== undefined ? { gateway: canonicalIp(fields.via) ?? fields.via } : {}),
    ...(fields.nhid !== undefined ? { nhid: Number(fields.nhid) } : {}),
    ...(fields.dev !== undefined ? { dev: fields.dev } : {}),
  };
}

/** `via 10.0.0.1 dev eth0 proto 150` → {via, dev, proto}; `via inet6 fe80::1` keeps the address. */
function keyValues(words: string[]): Record<string, string> {
  const fields: Record<string, string> = {};
  for (let i = 0; i < words.length; i++) {
    const key = words[i]!;
    if (!["via", "dev", "proto", "table", "nhid", "scope", "metric", "src"].includes(key)) continue;
    let value = words[i + 1];
    if (key === "via" && (value === "inet" || value === "inet6")) value = words[++i + 1];
    if (value !== undefined) fields[key] = value;
    i++;
  }
  return fields;
}

/** What the agent last planned for this host: enough to tell its own writes from drift. */
export interface DesiredView {
  proto: number;
  /** Canonical destination → the route there (its next hop is what the kernel's should be). */
  routes: ReadonlyMap<string, { readonly nextHop: string }>;
  /** Every next hop of `routes`. */
  nextHops: { has(nextHop: string): boolean };
}

export function desiredView(proto: number, routes: { destination: string; nextHop: string }[]): DesiredView {
  const view = new DesiredRoutes(proto);
  for (const route of routes) view.set(route);
  return view;
}

/**
 * A DesiredView kept up to date route by route (one Node's change touches its routes, not all 5,000).
 * It keeps the route objects it is given, so a caller that needs the whole routes (the agent's
 * reconciler) keeps them here rather than in a second map of 5,000 (issue 9's memory).
 */
export class DesiredRoutes<R extends { readonly destination: string; readonly nextHop: string } = { destination: string; nextHop: string }> implements DesiredView {
  readonly routes = new Map<string, R>();
  /** Next hop → how many desired routes use it. */
  private readonly uses = new Map<string, number>();
  readonly nextHops = { has: (nextHop: string) => this.uses.has(nextHop) };

  constructor(readonly proto: number) {}

  /** Sets the route on its destination, replacing the one there. */
  set(route: R): void {
    this.delete(route.destination);
    this.routes.set(route.destination, route);
    this.uses.set(route.nextHop, (this.uses.get(route.nextHop) ?? 0) + 1);
  }

  delete(destination: string): void {
    const route = this.routes.get(destination);
    if (route === undefined) return;
    this.routes.delete(destination);
    const left = this.uses.get(route.nextHop)! - 1;
    if (left) this.uses.set(route.nextHop, left);
    else this.uses.delete(route.nextHop);
  }
}

/**
 * Why an event means the table may differ from the plan (a reconcile is due), or undefined when it
 * cannot: the agent's own writes (an owned route as planned, a nexthop to a planned next hop, the removal
 * of a route it no longer wants) and routes elsewhere (other tables, other destinations).
 */
export function driftReason(event: KernelEvent, desired: DesiredView): string | undefined {
  const ours = (protocol: string | undefined) => protocol === String(desired.proto);
  switch (event.object) {
    case "link":
      return `link ${event.name} ${event.deleted ? "removed" : "changed"} (a link going down flushes its IPv4 routes without a notice per route)`;
    case "address":
      return `address ${event.address} on ${event.dev} ${event.deleted ? "removed" : "added"}`;
    case "unknown":
      return `unrecognized monitor line: ${event.line}`;
    case "nexthop":
      if (!ours(event.protocol)) return undefined;
      if (event.deleted) return event.gateway !== undefined && desired.nextHops.has(event.gateway) ? `owned nexthop ${event.id} via ${event.gateway} removed` : undefined;
      return event.gateway !== undefined && desired.nextHops.has(event.gateway) ? undefined : `owned nexthop ${event.id} now via ${event.gateway ?? "?"}`;
    case "route": {
      if (event.table !== undefined && event.table !== "254" && event.table !== "main") return undefined;
      if (event.type !== undefined && !ours(event.protocol) && !desired.routes.has(event.destination)) return undefined;
      const wanted = desired.routes.get(event.destination)?.nextHop;
      if (ours(event.protocol)) {
        if (event.deleted) return wanted !== undefined ? `owned route ${event.destination} removed` : undefined;
        return wanted !== undefined && event.gateway === wanted ? undefined : `owned route ${event.destination} now via ${event.gateway ?? event.type ?? "?"}`;
      }
      if (wanted !== undefined) return `foreign route on ${event.destination} ${event.deleted ? "removed" : "added"}`;
      // A connected network appearing may make a refused next hop on-link again.
      if (!event.deleted && event.gateway === undefined && event.nhid === undefined && event.type === undefined) return `connected route ${event.destination} added`;
      return undefined;
    }
  }
}
