/**
 * A local OpenStack for offline tests: Keystone v3 (tokens with a service catalog), Neutron v2.0
 * (routers with extra routes, extensions, networks, subnets, ports) and Nova v2.1 (servers), on one
 * port of 127.0.0.1 under /identity, /network and /compute, shaped like the public APIs (the api-ref
 * pages of docs.openstack.org) so that the real `openstack` CLI (openstacksdk) and podroutes' own client
 * both work against it. What it reproduces, because a route writer depends on it:
 * - `POST /identity/v3/auth/tokens` with the `password` (user by name + domain, or id; project scope by
 *   name + domain, or id) or `application_credential` (id, or name + user) method: 201, the token in
 *   `X-Subject-Token`, the catalog (identity, network, compute; interfaces public/internal/admin, one
 *   region) in the body; a wrong secret is 401. Tokens expire (`tokenTtlMs`); every service call without
 *   a valid `X-Auth-Token` is 401;
 * - version discovery documents at /identity, /identity/v3, /network, /compute, /compute/v2.1;
 * - Neutron errors as `{"NeutronError": {"type", "message", "detail"}}`: RouterNotFound/PortNotFound 404,
 *   InvalidRoutes 400 (bad CIDR or IP, a nexthop on no subnet of the router's interfaces, a duplicate
 *   route), RoutesExhausted 400 (more than `maxRoutes` routes, Neutron's max_routes, default 30),
 *   RevisionNumberConstraintFailed 412 (`If-Match: revision_number=N` not the current revision),
 *   AllowedAddressPairExhausted 400 (more than `maxAllowedAddressPairs`, default 10), DuplicateAddressPair
 *   400, AddressPairAndPortSecurityRequired 409;
 * - `revision_number` on routers and ports, raised by every change;
 * - `PUT /v2.0/routers/{id}` with `routes` replaces the whole list; `PUT .../add_extraroutes` and
 *   `.../remove_extraroutes` (the `extraroute-atomic` extension, listed unless `atomic: false`, which
 *   also answers those paths 404) add and remove routes atomically: adding one that is there, or removing
 *   one that is not, is no error;
 * - lists filtered by any attribute given as a query parameter (`name`, `id`, `device_id`, `network_id`,
 *   `device_owner`, `fixed_ips=ip_address=...`), `fields` honoured, sorted by id, paged by `limit` and
 *   `marker` with `<collection>_links` rel=next/previous, as Neutron and Nova answer;
 * - Nova `GET /compute/v2.1/servers/detail` with `metadata` and `addresses` (fixed IPs with
 *   `OS-EXT-IPS:type`), `GET /servers/{id}`;
 * - a latency per call (`latencyMs`, fixed or a range), and hooks that run before a write is handled (`beforeWrite`), which
 *   is how a test makes another writer change a router between podroutes' read and its write.
 * Every call is logged (`requests`) with its answer.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { randomBytes, randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import ipaddr from "ipaddr.js";
import { listenOnLoopback, stopLoopback } from "./loopback-server.js";

export interface ExtraRoute {
  destination: string;
  nexthop: string;
}

export interface OsRouter {
  id: string;
  name: string;
  description: string;
  status: string;
  admin_state_up: boolean;
  external_gateway_info: null;
  routes: ExtraRoute[];
  revision_number: number;
  tenant_id: string;
  project_id: string;
  tags: string[];
  availability_zone_hints: string[];
  availability_zones: string[];
  distributed: boolean;
  ha: boolean;
  flavor_id: null;
  created_at: string;
  updated_at: string;
}

export interface OsNetwork {
  id: string;
  name: string;
  status: string;
  admin_state_up: boolean;
  subnets: string[];
  shared: boolean;
  mtu: number;
  port_security_enabled: boolean;
  tenant_id: string;
  project_id: string;
  revision_number: number;
  tags: string[];
  "router:external": boolean;
  created_at: string;
  updated_at: string;
}

export interface OsSubnet {
  id: string;
  name: string;
  network_id: string;
  cidr: string;
  gateway_ip: string;
  ip_version: 4 | 6;
  enable_dhcp: boolean;
  allocation_pools: { start: string; end: string }[];
  dns_nameservers: string[];
  host_routes: { destination: string; nexthop: string }[];
  tenant_id: string;
  project_id: string;
  revision_number: number;
  tags: string[];
  created_at: string;
  updated_at: string;
}

export interface AddressPair {
  ip_address: string;
  mac_address: string;
}

export interface OsPort {
  id: string;
  name: string;
  network_id: string;
  mac_address: string;
  fixed_ips: { subnet_id: string; ip_address: string }[];
  device_id: string;
  device_owner: string;
  allowed_address_pairs: AddressPair[];
  port_security_enabled: boolean;
  security_groups: string[];
  status: string;
  admin_state_up: boolean;
  description: string;
  tenant_id: string;
  project_id: string;
  revision_number: number;
  tags: string[];
  created_at: string;
  updated_at: string;
}

export interface OsServer {
  id: string;
  name: string;
  status: string;
  metadata: Record<string, string>;
  addresses: Record<string, { addr: string; version: 4 | 6; "OS-EXT-IPS:type": "fixed" | "floating"; "OS-EXT-IPS-MAC:mac_addr": string }[]>;
  tenant_id: string;
  user_id: string;
  created: string;
  updated: string;
  hostId: string;
  flavor: { id: string };
  image: { id: string };
  key_name: null;
  "OS-EXT-STS:vm_state": string;
  links: { rel: string; href: string }[];
}

export interface OpenStackServerOptions {
  /** The user and project every credential belongs to. */
  user?: { name: string; password: string; domain?: string };
  project?: { name: string; domain?: string };
  /** Application credentials: id, name and secret. */
  applicationCredentials?: { id: string; name: string; secret: string }[];
  region?: string;
  /** Token lifetime (Keystone: one hour). */
  tokenTtlMs?: number;
  /** Neutron's max_routes (30). */
  maxRoutes?: number;
  /** Neutron's max_allowed_address_pair (10). */
  maxAllowedAddressPairs?: number;
  /** List `extraroute-atomic` and answer add/remove_extraroutes (default true). */
  atomic?: boolean;
  /** Time every call takes before it is answered: a fixed time, or uniform between min and max. */
  latencyMs?: number | { min: number; max: number };
}

export interface OsRequest {
  method: string;
  /** The path below the service prefix's version: `/v2.0/routers/ID`. */
  path: string;
  service: "identity" | "network" | "compute";
  query: URLSearchParams;
  headers: Record<string, string | string[] | undefined>;
  body?: unknown;
  status: number;
  error?: string;
}

class NeutronError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

const PROJECT_ID = "5b2f8a4e6c0d4b8e9f1a2b3c4d5e6f70";
const USER_ID = "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f";
const NOW = "2026-01-01T00:00:00Z";

function cidrOf(text: unknown): [ipaddr.IPv4 | ipaddr.IPv6, number] | undefined {
  if (typeof text !== "string") return undefined;
  try {
    return ipaddr.parseCIDR(text);
  } catch {
    return undefined;
  }
}

function ipOf(text: unknown): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  if (typeof text !== "string" || !ipaddr.isValid(text)) return undefined;
  return ipaddr.parse(text);
}

function inCidr(ip: ipaddr.IPv4 | ipaddr.IPv6, cidr: string): boolean {
  const range = ipaddr.parseCIDR(cidr);
  return ip.kind() === range[0].kind() && ip.match(range);
}

/** Canonical CIDR text, as Neutron stores a route's destination (`10.1.2.0/24`). */
function canonicalCidr(text: string): string {
  const [address, bits] = ipaddr.parseCIDR(text);
  const network = ipaddr.IPv4.isValid(address.toString())
    ? ipaddr.IPv4.networkAddressFromCIDR(`${address.toString()}/${bits}`)
    : ipaddr.IPv6.networkAddressFromCIDR(`${address.toString()}/${bits}`);
  return `${network.toString()}/${bits}`;
}

export interface OpenStackServerApi {
  /** OS_AUTH_URL: `http://127.0.0.1:PORT/identity/v3`. */
  readonly authUrl: string;
  readonly base: string;
  readonly options: Required<Omit<OpenStackServerOptions, "atomic">> & { atomic: boolean };
  readonly routers: OsRouter[];
  readonly networks: OsNetwork[];
  readonly subnets: OsSubnet[];
  readonly ports: OsPort[];
  readonly servers: OsServer[];
  readonly requests: OsRequest[];
  /** The OS_* variables of the password credential (the CLI's and podroutes' own). */
  env(): Record<string, string>;
  /** A network with one subnet (gateway: its first address). */
  addNetwork(fields: { name: string; cidr: string }): { network: OsNetwork; subnet: OsSubnet };
  /** A router with an interface (a port at the subnet's gateway IP) on each subnet. */
  addRouter(fields: { name: string; subnets: OsSubnet[]; routes?: ExtraRoute[] }): OsRouter;
  /** A server with one port on the subnet, at `ip`. */
  addServer(fields: { name: string; subnet: OsSubnet; ip: string; metadata?: Record<string, string>; portSecurity?: boolean }): { server: OsServer; port: OsPort };
  /** Changes a router as another writer would (revision raised). */
  setRoutes(router: OsRouter, routes: ExtraRoute[]): void;
  /** Runs before the next write that matches is handled (once). */
  beforeWrite(when: (call: { method: string; path: string }) => boolean, run: () => void): void;
  stop(): Promise<void>;
}

export async function startOpenStackServer(given: OpenStackServerOptions = {}): Promise<OpenStackServerApi> {
  const options = {
    user: { domain: "Default", ...(given.user ?? { name: "podroutes-test", password: "test-password" }) },
    project: { domain: "Default", ...(given.project ?? { name: "podroutes-test" }) },
    applicationCredentials: given.applicationCredentials ?? [{ id: "ac0123456789abcdef0123456789abcd", name: "podroutes", secret: "test-app-secret" }],
    region: given.region ?? "RegionOne",
    tokenTtlMs: given.tokenTtlMs ?? 3_600_000,
    maxRoutes: given.maxRoutes ?? 30,
    maxAllowedAddressPairs: given.maxAllowedAddressPairs ?? 10,
    atomic: given.atomic ?? true,
    latencyMs: given.latencyMs ?? 0,
  };
  const tokens = new Map<string, number>();
  const routers: OsRouter[] = [];
  const networks: OsNetwork[] = [];
  const subnets: OsSubnet[] = [];
  const ports: OsPort[] = [];
  const servers: OsServer[] = [];
  const requests: OsRequest[] = [];
  const hooks: { when: (call: { method: string; path: string }) => boolean; run: () => void }[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let base = "";
  let macs = 0;

  const extensions = () =>
    [
      ["router", "Neutron L3 Router"],
      ["extraroute", "Neutron Extra Route"],
      ...(options.atomic ? [["extraroute-atomic", "Atomically add/remove extra routes"]] : []),
      ["allowed-address-pairs", "Allowed Address Pairs"],
      ["port-security", "Port Security"],
      ["standard-attr-revisions", "Resource revision numbers"],
      ["revision-if-match", "If-Match constraints based on revision_number"],
      ["pagination", "Pagination support"],
      ["sorting", "Sorting support"],
      ["standard-attr-tag", "Tag support for resources with standard attribute"],
    ].map(([alias, name]) => ({ alias, name, description: name, updated: "2019-01-01T00:00:00-00:00", links: [] }));

  const catalog = () =>
    (
      [
        ["identity", "keystone", `${base}/identity`],
        ["network", "neutron", `${base}/network`],
        ["compute", "nova", `${base}/compute/v2.1`],
      ] as const
    ).map(([type, name, url]) => ({
      type,
      name,
      id: `${name}-service`,
      endpoints: ["public", "internal", "admin"].map((iface) => ({ id: `${name}-${iface}`, interface: iface, region: options.region, region_id: options.region, url })),
    }));

  const touch = (resource: { revision_number: number; updated_at?: string }) => {
    resource.revision_number++;
    if ("updated_at" in resource) resource.updated_at = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  };

  /** The subnets a router has an interface on. */
  const routerSubnets = (router: OsRouter) =>
    ports
      .filter((p) => p.device_id === router.id && p.device_owner.startsWith("network:router_interface"))
      .flatMap((p) => p.fixed_ips.map((f) => subnets.find((s) => s.id === f.subnet_id)!))
      .filter(Boolean);

  /** Neutron's checks of a router's routes (extraroute_db._validate_routes). */
  const validateRoutes = (raw: unknown): ExtraRoute[] => {
    if (!Array.isArray(raw)) throw new NeutronError(400, "HTTPBadRequest", `Invalid input for routes. Reason: '${JSON.stringify(raw)}' is not a list.`);
    const out: ExtraRoute[] = [];
    for (const item of raw as { destination?: unknown; nexthop?: unknown }[]) {
      const cidr = cidrOf(item?.destination);
      const hop = ipOf(item?.nexthop);
      if (!cidr) throw new NeutronError(400, "HTTPBadRequest", `Invalid input for routes. Reason: '${String(item?.destination)}' is not a valid IP subnet.`);
      if (!hop) throw new NeutronError(400, "HTTPBadRequest", `Invalid input for routes. Reason: '${String(item?.nexthop)}' is not a valid IP address.`);
      const route = { destination: canonicalCidr(item.destination as string), nexthop: hop.toString() };
      if (out.some((r) => r.destination === route.destination && r.nexthop === route.nexthop)) {
        throw new NeutronError(400, "HTTPBadRequest", `Invalid input for routes. Reason: Duplicate items in the list: '${JSON.stringify(route)}'.`);
      }
      out.push(route);
    }
    return out;
  };

  const checkRoutes = (router: OsRouter, routes: ExtraRoute[]) => {
    if (routes.length > options.maxRoutes) {
      throw new NeutronError(400, "RoutesExhausted", `Unable to complete operation for ${router.id}. The number of routes exceeds the maximum ${options.maxRoutes}.`);
    }
    const connected = routerSubnets(router);
    for (const route of routes) {
      const hop = ipaddr.parse(route.nexthop);
      if (!connected.some((s) => inCidr(hop, s.cidr))) {
        throw new NeutronError(400, "InvalidRoutes", `Invalid format for routes: ${JSON.stringify([route])}, the nexthop is not connected with router`);
      }
      if (connected.some((s) => s.gateway_ip === route.nexthop) || ports.some((p) => p.device_id === router.id && p.fixed_ips.some((f) => f.ip_address === route.nexthop))) {
        throw new NeutronError(400, "InvalidRoutes", `Invalid format for routes: ${JSON.stringify([route])}, the nexthop is used by router`);
      }
    }
  };

  const checkIfMatch = (req: IncomingMessage, resource: { revision_number: number }) => {
    const header = req.headers["if-match"];
    if (!header) return;
    const wanted = String(header).match(/^revision_number=(\d+)$/);
    if (!wanted) throw new NeutronError(400, "HTTPBadRequest", `If-Match header must be of the form revision_number=N: ${header}`);
    if (Number(wanted[1]) !== resource.revision_number) {
      throw new NeutronError(412, "RevisionNumberConstraintFailed", `Constrained to ${wanted[1]}, but current revision is ${resource.revision_number}`);
    }
  };

  /** Neutron's and Nova's list semantics: attribute filters, sort by id, limit/marker, links. */
  const listing = <T extends { id: string }>(items: T[], query: URLSearchParams, collection: string, url: string, matches?: (item: T, key: string, values: string[]) => boolean | undefined) => {
    let found = [...items];
    for (const key of new Set(query.keys())) {
      if (["limit", "marker", "fields", "sort_key", "sort_dir", "page_reverse"].includes(key)) continue;
      const values = query.getAll(key);
      found = found.filter((item) => {
        const custom = matches?.(item, key, values);
        if (custom !== undefined) return custom;
        const value = (item as Record<string, unknown>)[key];
        return value !== undefined && values.includes(String(value));
      });
    }
    found.sort((a, b) => a.id.localeCompare(b.id));
    const marker = query.get("marker");
    if (marker) {
      const at = found.findIndex((item) => item.id === marker);
      if (at < 0) throw new NeutronError(404, "MarkerNotFound", `Marker ${marker} could not be found.`);
      found = found.slice(at + 1);
    }
    const limit = query.has("limit") ? Number(query.get("limit")) : undefined;
    const links: { rel: string; href: string }[] = [];
    if (limit !== undefined && limit > 0 && found.length > limit) {
      found = found.slice(0, limit);
      const next = new URLSearchParams(query);
      next.set("marker", found[found.length - 1]!.id);
      links.push({ rel: "next", href: `${url}?${next}` });
    }
    if (marker && limit !== undefined) {
      const previous = new URLSearchParams(query);
      previous.set("marker", found[0]?.id ?? marker);
      previous.set("page_reverse", "True");
      links.push({ rel: "previous", href: `${url}?${previous}` });
    }
    const fields = query.getAll("fields");
    const shaped = fields.length ? found.map((item) => Object.fromEntries(fields.filter((f) => f in item).map((f) => [f, (item as Record<string, unknown>)[f]]))) : found;
    return { [collection]: shaped, ...(links.length ? { [`${collection}_links`]: links } : {}) };
  };

  const routerOr404 = (id: string) => {
    const router = routers.find((r) => r.id === id);
    if (!router) throw new NeutronError(404, "RouterNotFound", `Router ${id} could not be found`);
    return router;
  };
  const portOr404 = (id: string) => {
    const port = ports.find((p) => p.id === id);
    if (!port) throw new NeutronError(404, "PortNotFound", `Port ${id} could not be found.`);
    return port;
  };

  const fixedIpMatches = (port: OsPort, key: string, values: string[]) => {
    if (key !== "fixed_ips") return undefined;
    return values.every((value) => {
      const [k, v] = value.split("=", 2) as [string, string];
      return port.fixed_ips.some((f) => (k === "ip_address" ? f.ip_address === v : k === "subnet_id" ? f.subnet_id === v : false));
    });
  };

  const network = (req: IncomingMessage, path: string, query: URLSearchParams, body: any): [number, unknown] => {
    const method = req.method!;
    if (path === "" || path === "/") {
      return [200, { versions: [{ id: "v2.0", status: "CURRENT", links: [{ href: `${base}/network/v2.0/`, rel: "self" }] }] }];
    }
    const url = `${base}/network${path}`;
    if (method === "GET" && (path === "/v2.0" || path === "/v2.0/")) {
      return [200, { resources: ["routers", "ports", "networks", "subnets", "extensions"].map((name) => ({ name, collection: name, links: [{ href: `${base}/network/v2.0/${name}`, rel: "self" }] })) }];
    }
    if (method === "GET" && path === "/v2.0/extensions") return [200, { extensions: extensions() }];
    let m: RegExpMatchArray | null;
    if ((m = path.match(/^\/v2\.0\/extensions\/([^/]+)$/)) && method === "GET") {
      const found = extensions().find((e) => e.alias === m![1]);
      if (!found) throw new NeutronError(404, "ExtensionNotFound", `Extension with alias ${m[1]} does not exist`);
      return [200, { extension: found }];
    }
    if (method === "GET" && path === "/v2.0/routers") return [200, listing(routers, query, "routers", url)];
    if (method === "GET" && path === "/v2.0/networks") return [200, listing(networks, query, "networks", url)];
    if (method === "GET" && path === "/v2.0/subnets") return [200, listing(subnets, query, "subnets", url)];
    if (method === "GET" && path === "/v2.0/ports") return [200, listing(ports, query, "ports", url, fixedIpMatches)];
    if ((m = path.match(/^\/v2\.0\/networks\/([^/]+)$/)) && method === "GET") {
      const found = networks.find((n) => n.id === m![1]);
      if (!found) throw new NeutronError(404, "NetworkNotFound", `Network ${m[1]} could not be found.`);
      return [200, { network: found }];
    }
    if ((m = path.match(/^\/v2\.0\/subnets\/([^/]+)$/)) && method === "GET") {
      const found = subnets.find((s) => s.id === m![1]);
      if (!found) throw new NeutronError(404, "SubnetNotFound", `Subnet ${m[1]} could not be found.`);
      return [200, { subnet: found }];
    }
    if ((m = path.match(/^\/v2\.0\/routers\/([^/]+)$/))) {
      const router = routerOr404(m[1]!);
      if (method === "GET") return [200, { router }];
      if (method === "PUT") {
        const update = body?.router;
        if (!update || typeof update !== "object") throw new NeutronError(400, "HTTPBadRequest", "Resource body required");
        checkIfMatch(req, router);
        for (const key of Object.keys(update)) {
          if (!["routes", "name", "description", "admin_state_up"].includes(key)) throw new NeutronError(400, "HTTPBadRequest", `Attribute '${key}' not allowed in PUT`);
        }
        if ("routes" in update) {
          const routes = validateRoutes(update.routes);
          checkRoutes(router, routes);
          router.routes = routes;
        }
        if (typeof update.name === "string") router.name = update.name;
        if (typeof update.description === "string") router.description = update.description;
        touch(router);
        return [200, { router }];
      }
    }
    if ((m = path.match(/^\/v2\.0\/routers\/([^/]+)\/(add|remove)_extraroutes$/)) && method === "PUT" && options.atomic) {
      const router = routerOr404(m[1]!);
      const given = validateRoutes(body?.router?.routes);
      const same = (a: ExtraRoute, b: ExtraRoute) => a.destination === b.destination && a.nexthop === b.nexthop;
      let routes: ExtraRoute[];
      if (m[2] === "add") {
        routes = [...router.routes, ...given.filter((g) => !router.routes.some((r) => same(r, g)))];
        checkRoutes(router, routes);
      } else routes = router.routes.filter((r) => !given.some((g) => same(r, g)));
      router.routes = routes;
      touch(router);
      return [200, { router }];
    }
    if ((m = path.match(/^\/v2\.0\/ports\/([^/]+)$/))) {
      const port = portOr404(m[1]!);
      if (method === "GET") return [200, { port }];
      if (method === "PUT") {
        const update = body?.port;
        if (!update || typeof update !== "object") throw new NeutronError(400, "HTTPBadRequest", "Resource body required");
        checkIfMatch(req, port);
        if ("allowed_address_pairs" in update) {
          const raw = update.allowed_address_pairs;
          if (!Array.isArray(raw)) throw new NeutronError(400, "HTTPBadRequest", "Invalid input for allowed_address_pairs. Reason: not a list.");
          if (raw.length && !port.port_security_enabled) {
            throw new NeutronError(409, "AddressPairAndPortSecurityRequired", "Port Security must be enabled in order to have allowed address pairs on a port.");
          }
          if (raw.length > options.maxAllowedAddressPairs) {
            throw new NeutronError(400, "AllowedAddressPairExhausted", `The number of allowed address pair exceeds the maximum ${options.maxAllowedAddressPairs}.`);
          }
          const pairs: AddressPair[] = [];
          for (const item of raw as { ip_address?: unknown; mac_address?: unknown }[]) {
            if (!ipOf(item?.ip_address) && !cidrOf(item?.ip_address)) {
              throw new NeutronError(400, "HTTPBadRequest", `Invalid input for allowed_address_pairs. Reason: '${String(item?.ip_address)}' is not a valid IP address.`);
            }
            const pair = { ip_address: String(item.ip_address), mac_address: typeof item.mac_address === "string" ? item.mac_address : port.mac_address };
            if (pairs.some((p) => p.ip_address === pair.ip_address && p.mac_address === pair.mac_address)) {
              throw new NeutronError(400, "DuplicateAddressPairInRequest", `Request contains duplicate address pair: mac_address ${pair.mac_address} ip_address ${pair.ip_address}.`);
            }
            pairs.push(pair);
          }
          port.allowed_address_pairs = pairs;
        }
        for (const key of ["name", "description"] as const) if (typeof update[key] === "string") port[key] = update[key];
        touch(port);
        return [200, { port }];
      }
    }
    throw new NeutronError(404, "HTTPNotFound", "The resource could not be found.");
  };

  const compute = (method: string, path: string, query: URLSearchParams): [number, unknown] => {
    if (path === "" || path === "/") {
      return [200, { versions: [{ id: "v2.1", status: "CURRENT", version: "2.96", min_version: "2.1", updated: "2013-07-23T11:33:21Z", links: [{ rel: "self", href: `${base}/compute/v2.1/` }] }] }];
    }
    if (path === "/v2.1" || path === "/v2.1/") {
      return [200, { version: { id: "v2.1", status: "CURRENT", version: "2.96", min_version: "2.1", updated: "2013-07-23T11:33:21Z", links: [{ rel: "self", href: `${base}/compute/v2.1/` }], "media-types": [{ base: "application/json", type: "application/vnd.openstack.compute+json;version=2.1" }] } }];
    }
    if (method === "GET" && path === "/v2.1/servers/detail") {
      const body = listing(servers, query, "servers", `${base}/compute${path}`, (server, key, values) => (key === "name" ? values.some((v) => new RegExp(v).test(server.name)) : undefined));
      return [200, body];
    }
    let m: RegExpMatchArray | null;
    if (method === "GET" && (m = path.match(/^\/v2\.1\/servers\/([^/]+)$/))) {
      const server = servers.find((s) => s.id === m![1]);
      if (!server) return [404, { itemNotFound: { code: 404, message: "Instance could not be found." } }];
      return [200, { server }];
    }
    return [404, { itemNotFound: { code: 404, message: "The resource could not be found." } }];
  };

  const identityVersion = () => ({
    id: "v3.14",
    status: "stable",
    updated: "2020-04-07T00:00:00Z",
    links: [{ rel: "self", href: `${base}/identity/v3/` }],
    "media-types": [{ base: "application/json", type: "application/vnd.openstack.identity-v3+json" }],
  });

  const unauthorized = (message = "The request you have made requires authentication."): [number, unknown] => [401, { error: { code: 401, message, title: "Unauthorized" } }];

  const identity = (method: string, path: string, body: any, res: ServerResponse): [number, unknown] => {
    if (path === "" || path === "/") return [300, { versions: { values: [identityVersion()] } }];
    if (path === "/v3" || path === "/v3/") return [200, { version: identityVersion() }];
    if (path !== "/v3/auth/tokens" || method !== "POST") return [404, { error: { code: 404, message: "The resource could not be found.", title: "Not Found" } }];
    const identityBody = body?.auth?.identity;
    const methods: unknown = identityBody?.methods;
    if (!Array.isArray(methods) || methods.length !== 1) return [400, { error: { code: 400, message: "Expecting to find identity methods in auth.", title: "Bad Request" } }];
    const domainOk = (domain: any) => domain && (domain.name === options.user.domain || domain.id === options.user.domain.toLowerCase() || domain.id === "default");
    let methodName: string;
    if (methods[0] === "password") {
      const user = identityBody.password?.user;
      const who = user?.id === USER_ID || (user?.name === options.user.name && domainOk(user?.domain));
      if (!who || user?.password !== options.user.password) return unauthorized();
      const project = body.auth.scope?.project;
      if (project && !(project.id === PROJECT_ID || (project.name === options.project.name && domainOk(project.domain)))) {
        return unauthorized(`User ${USER_ID} has no access to project ${project.id ?? project.name}`);
      }
      methodName = "password";
    } else if (methods[0] === "application_credential") {
      const credential = identityBody.application_credential;
      const found = options.applicationCredentials.find(
        (c) => c.id === credential?.id || (c.name === credential?.name && (credential?.user?.id === USER_ID || credential?.user?.name === options.user.name)),
      );
      if (!found || credential?.secret !== found.secret) return unauthorized();
      methodName = "application_credential";
    } else return unauthorized(`Attempted to authenticate with an unsupported method.`);
    const token = `gAAAAA${randomBytes(24).toString("hex")}`;
    const expires = Date.now() + options.tokenTtlMs;
    tokens.set(token, expires);
    res.setHeader("X-Subject-Token", token);
    return [
      201,
      {
        token: {
          methods: [methodName],
          audit_ids: [randomBytes(8).toString("hex")],
          issued_at: new Date().toISOString(),
          expires_at: new Date(expires).toISOString(),
          user: { id: USER_ID, name: options.user.name, domain: { id: "default", name: options.user.domain }, password_expires_at: null },
          project: { id: PROJECT_ID, name: options.project.name, domain: { id: "default", name: options.project.domain } },
          is_domain: false,
          roles: [{ id: "r-member", name: "member" }, { id: "r-reader", name: "reader" }],
          catalog: catalog(),
          ...(methodName === "application_credential" ? { application_credential: { id: options.applicationCredentials[0]!.id, name: options.applicationCredentials[0]!.name, restricted: true } } : {}),
        },
      },
    ];
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", base);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString();
    const prefix = url.pathname.match(/^\/(identity|network|compute)(\/.*)?$/);
    const service = (prefix?.[1] ?? "identity") as OsRequest["service"];
    const path = (prefix?.[2] ?? "").replace(/\/$/, "") || (prefix?.[2] ?? "");
    const entry: OsRequest = { method: req.method!, path, service, query: url.searchParams, headers: req.headers, status: 0 };
    requests.push(entry);
    const latency = typeof options.latencyMs === "number" ? options.latencyMs : options.latencyMs.min + Math.random() * (options.latencyMs.max - options.latencyMs.min);
    if (latency > 0) await delay(latency);
    let status: number;
    let answer: unknown;
    try {
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        throw new NeutronError(400, "HTTPBadRequest", "Malformed request body");
      }
      entry.body = body;
      if (!prefix) [status, answer] = [404, { error: { code: 404, message: "not found", title: "Not Found" } }];
      else if (service === "identity") [status, answer] = identity(req.method!, path, body, res);
      else {
        const token = String(req.headers["x-auth-token"] ?? "");
        const expires = tokens.get(token);
        const discovery = path === "" || path === "/" || path === "/v2.1";
        if (!discovery && (expires === undefined || expires < Date.now())) [status, answer] = unauthorized();
        else {
          if (req.method !== "GET") {
            const hook = hooks.findIndex((h) => h.when({ method: req.method!, path }));
            if (hook >= 0) hooks.splice(hook, 1)[0]!.run();
          }
          [status, answer] = service === "network" ? network(req, path, url.searchParams, body) : compute(req.method!, path, url.searchParams);
        }
      }
    } catch (error) {
      if (!(error instanceof NeutronError)) throw error;
      [status, answer] = [error.status, { NeutronError: { type: error.type, message: error.message, detail: "" } }];
      entry.error = error.type;
    }
    entry.status = status;
    const json = JSON.stringify(answer);
    res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(json), "X-Openstack-Request-Id": `req-${randomUUID()}` });
    res.end(json);
  };

  const { server, port } = await listenOnLoopback((req, res) => {
    handle(req, res).catch((error: unknown) => {
      res.writeHead(500, { "Content-Type": "application/json" });
      res.end(JSON.stringify({ NeutronError: { type: "HTTPInternalServerError", message: String(error), detail: "" } }));
    });
  });
  base = `http://127.0.0.1:${port}`;

  const mac = () => {
    const n = ++macs;
    return `fa:16:3e:${[(n >> 16) & 255, (n >> 8) & 255, n & 255].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
  };
  const stamp = { tenant_id: PROJECT_ID, project_id: PROJECT_ID, revision_number: 1, tags: [] as string[], created_at: NOW, updated_at: NOW };
  const newPort = (fields: { name: string; network_id: string; subnet: OsSubnet; ip: string; device_id: string; device_owner: string; portSecurity?: boolean }): OsPort => {
    const port: OsPort = {
      id: randomUUID(),
      name: fields.name,
      network_id: fields.network_id,
      mac_address: mac(),
      fixed_ips: [{ subnet_id: fields.subnet.id, ip_address: fields.ip }],
      device_id: fields.device_id,
      device_owner: fields.device_owner,
      allowed_address_pairs: [],
      port_security_enabled: fields.portSecurity ?? true,
      security_groups: fields.portSecurity === false ? [] : ["sg-default"],
      status: "ACTIVE",
      admin_state_up: true,
      description: "",
      ...stamp,
      tags: [],
    };
    ports.push(port);
    return port;
  };

  const api: OpenStackServerApi = {
    authUrl: `${base}/identity/v3`,
    base,
    options,
    routers,
    networks,
    subnets,
    ports,
    servers,
    requests,
    env: () => ({
      OS_AUTH_URL: `${base}/identity/v3`,
      OS_AUTH_TYPE: "password",
      OS_USERNAME: options.user.name,
      OS_PASSWORD: options.user.password,
      OS_USER_DOMAIN_NAME: options.user.domain,
      OS_PROJECT_NAME: options.project.name,
      OS_PROJECT_DOMAIN_NAME: options.project.domain,
      OS_REGION_NAME: options.region,
      OS_INTERFACE: "public",
      OS_IDENTITY_API_VERSION: "3",
    }),
    addNetwork({ name, cidr }) {
      const net: OsNetwork = {
        id: randomUUID(),
        name,
        status: "ACTIVE",
        admin_state_up: true,
        subnets: [],
        shared: false,
        mtu: 1450,
        port_security_enabled: true,
        "router:external": false,
        ...stamp,
        tags: [],
      };
      const [address] = ipaddr.parseCIDR(cidr);
      const bytes = address.toByteArray();
      bytes[bytes.length - 1]! |= 1;
      const gateway = ipaddr.fromByteArray(bytes).toString();
      const subnet: OsSubnet = {
        id: randomUUID(),
        name: `${name}-subnet`,
        network_id: net.id,
        cidr: canonicalCidr(cidr),
        gateway_ip: gateway,
        ip_version: address.kind() === "ipv4" ? 4 : 6,
        enable_dhcp: true,
        allocation_pools: [],
        dns_nameservers: [],
        host_routes: [],
        ...stamp,
        tags: [],
      };
      net.subnets.push(subnet.id);
      networks.push(net);
      subnets.push(subnet);
      return { network: net, subnet };
    },
    addRouter({ name, subnets: attached, routes = [] }) {
      const router: OsRouter = {
        id: randomUUID(),
        name,
        description: "",
        status: "ACTIVE",
        admin_state_up: true,
        external_gateway_info: null,
        routes: routes.map((r) => ({ ...r })),
        availability_zone_hints: [],
        availability_zones: ["nova"],
        distributed: false,
        ha: false,
        flavor_id: null,
        ...stamp,
        tags: [],
      };
      routers.push(router);
      for (const subnet of attached) {
        newPort({ name: "", network_id: subnet.network_id, subnet, ip: subnet.gateway_ip, device_id: router.id, device_owner: "network:router_interface", portSecurity: false });
      }
      return router;
    },
    addServer({ name, subnet, ip, metadata = {}, portSecurity }) {
      const id = randomUUID();
      const port = newPort({ name: "", network_id: subnet.network_id, subnet, ip, device_id: id, device_owner: "compute:nova", ...(portSecurity === undefined ? {} : { portSecurity }) });
      const net = networks.find((n) => n.id === subnet.network_id)!;
      const server: OsServer = {
        id,
        name,
        status: "ACTIVE",
        metadata: { ...metadata },
        addresses: { [net.name]: [{ addr: ip, version: subnet.ip_version, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": port.mac_address }] },
        tenant_id: PROJECT_ID,
        user_id: USER_ID,
        created: NOW,
        updated: NOW,
        hostId: randomBytes(28).toString("hex"),
        flavor: { id: "m1.small" },
        image: { id: "debian-12" },
        key_name: null,
        "OS-EXT-STS:vm_state": "active",
        links: [{ rel: "self", href: `${base}/compute/v2.1/servers/${id}` }],
      };
      servers.push(server);
      return { server, port };
    },
    setRoutes(router, routes) {
      router.routes = routes.map((r) => ({ ...r }));
      touch(router);
    },
    beforeWrite(when, run) {
      hooks.push({ when, run });
    },
    stop: () => stopLoopback(server as Server, timers),
  };
  return api;
}
