/**
 * A local Hetzner Cloud API v1 server for offline tests: networks with their routes, the route actions,
 * servers with their private networks, shaped like the public API (docs.hetzner.cloud, and the JSON
 * schema of hcloud-go, which the real hcloud CLI decodes) so that the real `hcloud` CLI and podroutes'
 * own client both work against it. Listens on 127.0.0.1 only (port 0). What it reproduces, because a
 * route writer depends on it:
 * - `Authorization: Bearer TOKEN`; anything else is 401 `unauthorized`;
 * - errors as `{"error":{"code","message","details"}}` with the documented HTTP status of each code
 *   (invalid_input 400 with `details.fields[{name,messages}]`, not_found 404, conflict 409, locked 423,
 *   resource_limit_exceeded 403, rate_limit_exceeded 429, ...), always `Content-Type: application/json`
 *   (hcloud-go reads an error body only then);
 * - `POST /networks/{id}/actions/add_route|delete_route` answer 201 with an action `running`; the route
 *   appears or disappears when the action ends `success` after `actionDelayMs` (or when the test calls
 *   `finishActions()`, with `actionDelayMs: "manual"`); an action can be made to end `error` instead
 *   (`failNextAction`), changing nothing;
 * - one running action per network: a route write while one runs is refused with `busyError` (409
 *   `conflict`, which the API's reference names for the route actions; or 423 `locked`, the generic
 *   "there is already an action running", as older answers and the controllers' code expect);
 * - route validation as documented: destination an RFC 1918 range (or 0.0.0.0/0) not overlapping a
 *   subnet or another route, gateway inside the network's ip_range, not its first IP nor 172.31.1.1;
 *   `routeLimit` routes per network (100) then `resource_limit_exceeded`; deleting a route that is not
 *   there is `not_found`;
 * - `GET /actions/{id}`, `GET /actions?id=..`, `GET /networks/{id}/actions/{id}`;
 * - lists (`/networks`, `/servers`) with `name`, `label_selector` (=, ==, !=, in, notin, k, !k),
 *   `sort` (id|name|created[:asc|:desc]) and `page`/`per_page` (default 25, at most 50), answered with
 *   `meta.pagination {page, per_page, previous_page, next_page, last_page, total_entries}`;
 * - a rate limit per token: `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (the Unix
 *   time when the budget is full again) on every answer; a budget of `rateLimit.limit` requests refilled
 *   at `rateLimit.refillPerSecond` (the API: 3600 an hour, one a second); an empty budget answers 429
 *   `rate_limit_exceeded`;
 * - injected faults for the next calls that match, each used once: any error code (`injectError`), or a
 *   connection dropped without an answer, before the work or after it was done (`dropConnection`: the
 *   case where a client cannot know whether its write happened).
 * Every call is logged (`requests`) with its answer, so tests can see retries, pacing and polling.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { listenOnLoopback, stopLoopback } from "./loopback-server.js";
import { randomBytes } from "node:crypto";
import ipaddr from "ipaddr.js";

export interface HetznerRoute {
  destination: string;
  gateway: string;
}

export interface HetznerSubnet {
  type: "cloud" | "server" | "vswitch";
  ip_range: string;
  network_zone: string;
  gateway: string;
  vswitch_id?: number | null;
}

export interface HetznerNetwork {
  id: number;
  name: string;
  created: string;
  ip_range: string;
  subnets: HetznerSubnet[];
  routes: HetznerRoute[];
  servers: number[];
  load_balancers: number[];
  protection: { delete: boolean };
  labels: Record<string, string>;
  expose_routes_to_vswitch: boolean;
}

export interface HetznerPrivateNet {
  network: number;
  ip: string;
  alias_ips: string[];
  mac_address: string;
}

/** A server as the API returns it (the fields hcloud-go decodes; the ones podroutes reads first). */
export interface HetznerServer {
  id: number;
  name: string;
  status: string;
  created: string;
  labels: Record<string, string>;
  private_net: HetznerPrivateNet[];
  public_net: unknown;
  server_type: unknown;
  datacenter: unknown;
  image: unknown;
  iso: null;
  rescue_enabled: boolean;
  locked: boolean;
  backup_window: string | null;
  outgoing_traffic: number | null;
  ingoing_traffic: number | null;
  included_traffic: number;
  protection: { delete: boolean; rebuild: boolean };
  volumes: number[];
  load_balancers: number[];
  primary_disk_size: number;
  placement_group: null;
}

export interface HetznerAction {
  id: number;
  command: string;
  status: "running" | "success" | "error";
  progress: number;
  started: string;
  finished: string | null;
  resources: { id: number; type: string }[];
  error: { code: string; message: string } | null;
}

/** The HTTP status the API documents for each error code. */
export const ERROR_STATUS: Record<string, number> = {
  unauthorized: 401,
  forbidden: 403,
  invalid_input: 400,
  json_error: 400,
  locked: 423,
  not_found: 404,
  conflict: 409,
  rate_limit_exceeded: 429,
  resource_limit_exceeded: 403,
  resource_unavailable: 503,
  service_error: 503,
  server_error: 500,
  uniqueness_error: 409,
  protected: 423,
  maintenance: 503,
  unsupported_error: 400,
  timeout: 504,
};

export interface HetznerServerOptions {
  token?: string;
  /** How long an action stays `running`; a function: drawn for each action (a benchmark's latency); "manual": until `finishActions()`. */
  actionDelayMs?: number | (() => number) | "manual";
  /** What a route write gets while the network has an action running. */
  busyError?: "conflict" | "locked";
  /** Routes per network (the API: 100). */
  routeLimit?: number;
  /** The request budget per token (the API: 3600, refilled at one a second). */
  rateLimit?: { limit: number; refillPerSecond: number };
}

/** One API call as the server saw it. */
export interface HetznerRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  token: string;
  body?: unknown;
  /** Milliseconds since the epoch when it arrived. */
  at: number;
  status: number;
  /** The error code answered, if any. */
  error?: string;
  /** Set when the answer came from `injectError`. */
  injected?: true;
  /** Set when the connection was dropped (`dropConnection`): before or after the work was done. */
  dropped?: "before" | "after";
}

export interface InjectedError {
  /** Which calls it answers (default: any). */
  when?: (call: { method: string; path: string }) => boolean;
  code: string;
  message?: string;
  /** How many matching calls get it (default 1). */
  count?: number;
  /** For rate_limit_exceeded: the RateLimit-Reset answered, this many seconds ahead. */
  resetInSeconds?: number;
}

export interface DroppedConnection {
  when?: (call: { method: string; path: string }) => boolean;
  /** Whether the call's work is done before the connection drops (a write that happened, its answer lost). */
  afterWork?: boolean;
  count?: number;
}

class ApiError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details: unknown = null,
  ) {
    super(message);
  }
  get status(): number {
    return ERROR_STATUS[this.code] ?? 500;
  }
}

function invalidInput(field: string, message: string): ApiError {
  return new ApiError("invalid_input", message, { fields: [{ name: field, messages: [message] }] });
}

/** A parsed label selector: every requirement must hold (comma = AND), as the API's syntax defines. */
export type LabelRequirement =
  | { key: string; op: "=" | "!="; value: string }
  | { key: string; op: "in" | "notin"; values: string[] }
  | { key: string; op: "exists" | "!exists" };

const LABEL_KEY = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$/;
const LABEL_VALUE = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?$/;

/** Parses `k=v,k2!=v,k3 in (a,b),!k4,k5`; throws an Error naming the bad part. */
export function parseLabelSelector(selector: string): LabelRequirement[] {
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const ch of selector) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      parts.push(current);
      current = "";
    } else current += ch;
  }
  parts.push(current);
  return parts.map((raw) => {
    const part = raw.trim();
    const bad = () => new Error(`label selector ${JSON.stringify(selector)}: cannot parse ${JSON.stringify(part)}`);
    const key = (k: string) => {
      if (!LABEL_KEY.test(k)) throw bad();
      return k;
    };
    const value = (v: string) => {
      if (!LABEL_VALUE.test(v)) throw bad();
      return v;
    };
    let m: RegExpMatchArray | null;
    if ((m = part.match(/^([^\s=!()]+)\s+(in|notin)\s*\(([^()]*)\)$/))) {
      return { key: key(m[1]!), op: m[2] as "in" | "notin", values: m[3]!.split(",").map((v) => value(v.trim())) };
    }
    if ((m = part.match(/^([^\s=!()]+)\s*(==|=|!=)\s*([^\s=!()]*)$/))) {
      return { key: key(m[1]!), op: m[2] === "!=" ? "!=" : "=", value: value(m[3]!) };
    }
    if ((m = part.match(/^!\s*([^\s=!()]+)$/))) return { key: key(m[1]!), op: "!exists" };
    if ((m = part.match(/^([^\s=!()]+)$/))) return { key: key(m[1]!), op: "exists" };
    throw bad();
  });
}

export function matchesLabels(requirements: LabelRequirement[], labels: Record<string, string>): boolean {
  return requirements.every((r) => {
    const has = Object.hasOwn(labels, r.key);
    const v = labels[r.key];
    switch (r.op) {
      case "=":
        return has && v === r.value;
      case "!=":
        return !has || v !== r.value;
      case "in":
        return has && r.values.includes(v!);
      case "notin":
        return !has || !r.values.includes(v!);
      case "exists":
        return has;
      case "!exists":
        return !has;
    }
  });
}

function parseCidr(text: unknown): [ipaddr.IPv4, number] | undefined {
  if (typeof text !== "string" || !ipaddr.IPv4.isValidCIDR(text)) return undefined;
  return ipaddr.IPv4.parseCIDR(text) as [ipaddr.IPv4, number];
}

function networkAddress([ip, bits]: [ipaddr.IPv4, number]): number {
  const n = ip.toByteArray().reduce((a, b) => a * 256 + b, 0);
  const size = 2 ** (32 - bits);
  return n - (n % size);
}

function toInt(ip: ipaddr.IPv4): number {
  return ip.toByteArray().reduce((a, b) => a * 256 + b, 0);
}

function fromInt(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

function overlaps(a: [ipaddr.IPv4, number], b: [ipaddr.IPv4, number]): boolean {
  const [sa, sb] = [networkAddress(a), networkAddress(b)];
  const [ea, eb] = [sa + 2 ** (32 - a[1]), sb + 2 ** (32 - b[1])];
  return sa < eb && sb < ea;
}

function contains(range: [ipaddr.IPv4, number], ip: ipaddr.IPv4): boolean {
  return ip.match(ipaddr.IPv4.parse(fromInt(networkAddress(range))), range[1]);
}

const RFC1918 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"].map((c) => parseCidr(c)!);

/** A full server object, with the given name, labels and private networks. */
export function hetznerServerObject(fields: { id: number; name: string; labels?: Record<string, string>; privateNet?: { network: number; ip: string; aliasIps?: string[] }[]; status?: string }): HetznerServer {
  const n = fields.id;
  return {
    id: n,
    name: fields.name,
    status: fields.status ?? "running",
    created: "2026-01-01T00:00:00+00:00",
    labels: fields.labels ?? {},
    private_net: (fields.privateNet ?? []).map((p) => ({
      network: p.network,
      ip: p.ip,
      alias_ips: p.aliasIps ?? [],
      mac_address: `86:00:00:${[(n >> 16) & 255, (n >> 8) & 255, n & 255].map((b) => b.toString(16).padStart(2, "0")).join(":")}`,
    })),
    public_net: {
      ipv4: { id: 1_000_000 + n, ip: `203.0.113.${n % 250}`, blocked: false, dns_ptr: `static.${n}.example.invalid` },
      ipv6: { id: 2_000_000 + n, ip: `2001:db8:${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}::/64`, blocked: false, dns_ptr: [] },
      floating_ips: [],
      firewalls: [],
    },
    server_type: {
      id: 104,
      name: "cx22",
      description: "CX22",
      cores: 2,
      memory: 4,
      disk: 40,
      deprecated: false,
      prices: [],
      storage_type: "local",
      cpu_type: "shared",
      architecture: "x86",
    },
    datacenter: {
      id: 4,
      name: "fsn1-dc14",
      description: "Falkenstein 1 virtual DC 14",
      location: { id: 1, name: "fsn1", description: "Falkenstein DC Park 1", country: "DE", city: "Falkenstein", latitude: 50.47612, longitude: 12.370071, network_zone: "eu-central" },
      server_types: { supported: [104], available: [104], available_for_migration: [104] },
    },
    image: { id: 114690387, type: "system", status: "available", name: "debian-12", description: "Debian 12", image_size: null, disk_size: 5, created: "2023-06-13T06:00:02+00:00", created_from: null, bound_to: null, os_flavor: "debian", os_version: "12", rapid_deploy: true, protection: { delete: false }, deprecated: null, labels: {}, deleted: null, architecture: "x86" },
    iso: null,
    rescue_enabled: false,
    locked: false,
    backup_window: null,
    outgoing_traffic: 0,
    ingoing_traffic: 0,
    included_traffic: 21990232555520,
    protection: { delete: false, rebuild: false },
    volumes: [],
    load_balancers: [],
    primary_disk_size: 40,
    placement_group: null,
  };
}

export class HetznerServerApi {
  readonly token: string;
  actionDelayMs: number | (() => number) | "manual";
  busyError: "conflict" | "locked";
  routeLimit: number;
  rateLimit: { limit: number; refillPerSecond: number };
  readonly networks: HetznerNetwork[] = [];
  readonly servers: HetznerServer[] = [];
  readonly actions = new Map<number, HetznerAction>();
  /** Every call, in arrival order. */
  readonly requests: HetznerRequest[] = [];
  private readonly injected: (InjectedError & { count: number })[] = [];
  private readonly drops: (DroppedConnection & { count: number })[] = [];
  /** Failures for the next actions that match, each used once. */
  private readonly actionFailures: { command?: string; code: string; message: string }[] = [];
  /** Work to do when a running action ends, by action id. */
  private readonly pending = new Map<number, { networkId: number; apply: () => void; fail?: { code: string; message: string } }>();
  private readonly budgets = new Map<string, { remaining: number; at: number }>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private server: Server | undefined;
  private nextId = 4_711_000;
  private nextActionId = 13_000_000;
  port = 0;

  constructor(options: HetznerServerOptions = {}) {
    this.token = options.token ?? "test-hcloud-token";
    this.actionDelayMs = options.actionDelayMs ?? 20;
    this.busyError = options.busyError ?? "conflict";
    this.routeLimit = options.routeLimit ?? 100;
    this.rateLimit = options.rateLimit ?? { limit: 3600, refillPerSecond: 1 };
  }

  /** What `HCLOUD_ENDPOINT` takes: `http://127.0.0.1:PORT/v1`. */
  get endpoint(): string {
    return `http://127.0.0.1:${this.port}/v1`;
  }

  async start(): Promise<this> {
    ({ server: this.server, port: this.port } = await listenOnLoopback((req, res) => void this.serve(req, res)));
    return this;
  }

  async stop(): Promise<void> {
    await stopLoopback(this.server, this.timers);
  }

  /** Adds a network; its first subnet (a `cloud` one) is `subnet` or the whole ip_range. */
  addNetwork(fields: { name: string; ipRange: string; subnets?: string[]; labels?: Record<string, string>; routes?: HetznerRoute[] }): HetznerNetwork {
    const range = parseCidr(fields.ipRange);
    if (!range) throw new Error(`addNetwork ${fields.name}: ip range ${fields.ipRange} is not an IPv4 CIDR`);
    const gateway = fromInt(networkAddress(range) + 1);
    const network: HetznerNetwork = {
      id: this.nextId++,
      name: fields.name,
      created: new Date().toISOString().replace(/\.\d+Z$/, "+00:00"),
      ip_range: fields.ipRange,
      subnets: (fields.subnets ?? [fields.ipRange]).map((ip_range) => ({ type: "cloud", ip_range, network_zone: "eu-central", gateway, vswitch_id: null })),
      routes: [...(fields.routes ?? [])],
      servers: [],
      load_balancers: [],
      protection: { delete: false },
      labels: fields.labels ?? {},
      expose_routes_to_vswitch: false,
    };
    this.networks.push(network);
    return network;
  }

  /** Adds a server attached to the given networks at the given IPs (the networks list it). */
  addServer(fields: { name: string; labels?: Record<string, string>; privateNet?: { network: number; ip: string; aliasIps?: string[] }[]; status?: string }): HetznerServer {
    const server = hetznerServerObject({ id: this.nextId++, ...fields });
    for (const p of server.private_net) this.networks.find((n) => n.id === p.network)?.servers.push(server.id);
    this.servers.push(server);
    return server;
  }

  /** The next `count` calls that match answer this error instead (tests script faults with it). */
  injectError(fault: InjectedError): void {
    this.injected.push({ count: 1, ...fault });
  }

  /** The next `count` calls that match get no answer: the connection is closed, before or after the work. */
  dropConnection(fault: DroppedConnection = {}): void {
    this.drops.push({ count: 1, ...fault });
  }

  /** The next action (of `command`, if given) ends `error` with this code, changing nothing. */
  failNextAction(fault: { command?: "add_route" | "delete_route"; code?: string; message?: string }): void {
    this.actionFailures.push({ ...(fault.command ? { command: fault.command } : {}), code: fault.code ?? "action_failed", message: fault.message ?? "Action failed" });
  }

  /** Ends every running action now (what `actionDelayMs: "manual"` waits for). */
  finishActions(): void {
    for (const id of [...this.pending.keys()]) this.finish(id);
  }

  /** The network's running action, if any. */
  runningAction(networkId: number): HetznerAction | undefined {
    for (const [id, p] of this.pending) if (p.networkId === networkId) return this.actions.get(id);
    return undefined;
  }

  private finish(actionId: number): void {
    const work = this.pending.get(actionId);
    const action = this.actions.get(actionId);
    if (!work || !action) return;
    this.pending.delete(actionId);
    action.finished = new Date().toISOString();
    action.progress = 100;
    if (work.fail) {
      action.status = "error";
      action.error = work.fail;
    } else {
      work.apply();
      action.status = "success";
    }
  }

  private startAction(command: string, network: HetznerNetwork, apply: () => void): HetznerAction {
    const action: HetznerAction = {
      id: this.nextActionId++,
      command,
      status: "running",
      progress: 0,
      started: new Date().toISOString(),
      finished: null,
      resources: [{ id: network.id, type: "network" }],
      error: null,
    };
    this.actions.set(action.id, action);
    const i = this.actionFailures.findIndex((f) => !f.command || f.command === command);
    const fail = i >= 0 ? this.actionFailures.splice(i, 1)[0] : undefined;
    this.pending.set(action.id, { networkId: network.id, apply, ...(fail ? { fail: { code: fail.code, message: fail.message } } : {}) });
    if (this.actionDelayMs !== "manual") {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.finish(action.id);
      }, typeof this.actionDelayMs === "function" ? this.actionDelayMs() : this.actionDelayMs);
      this.timers.add(timer);
    }
    return action;
  }

  /** Takes one request from the token's budget; answers the RateLimit-* headers' values. */
  private spend(token: string): { limit: number; remaining: number; reset: number; ok: boolean } {
    const { limit, refillPerSecond } = this.rateLimit;
    const now = Date.now();
    const budget = this.budgets.get(token) ?? { remaining: limit, at: now };
    budget.remaining = Math.min(limit, budget.remaining + ((now - budget.at) / 1000) * refillPerSecond);
    budget.at = now;
    const ok = budget.remaining >= 1;
    if (ok) budget.remaining -= 1;
    this.budgets.set(token, budget);
    const reset = Math.ceil((now + ((limit - budget.remaining) / refillPerSecond) * 1000) / 1000);
    return { limit, remaining: Math.floor(budget.remaining), reset, ok };
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString("utf8");
    const auth = req.headers.authorization ?? "";
    const token = auth.startsWith("Bearer ") ? auth.slice(7) : "";
    const entry: HetznerRequest = { method: req.method ?? "GET", path: url.pathname, query: url.searchParams, token, at: Date.now(), status: 0 };
    this.requests.push(entry);
    const headers: Record<string, string> = { "Content-Type": "application/json", "X-Correlation-Id": randomBytes(8).toString("hex") };
    const send = (status: number, body: unknown) => {
      entry.status = status;
      res.writeHead(status, headers);
      res.end(JSON.stringify(body));
    };
    const sendError = (error: ApiError) => {
      entry.error = error.code;
      send(error.status, { error: { code: error.code, message: error.message, details: error.details } });
    };
    if (token !== this.token) return sendError(new ApiError("unauthorized", "unable to authenticate"));
    const budget = this.spend(token);
    headers["RateLimit-Limit"] = String(budget.limit);
    headers["RateLimit-Remaining"] = String(budget.remaining);
    headers["RateLimit-Reset"] = String(budget.reset);
    if (!budget.ok) return sendError(new ApiError("rate_limit_exceeded", `limit of ${budget.limit} requests per hour reached`));
    const call = { method: entry.method, path: url.pathname.replace(/^\/v1/, "") };
    let bodyError: ApiError | undefined;
    if (raw) {
      try {
        entry.body = JSON.parse(raw);
      } catch {
        bodyError = new ApiError("json_error", "invalid JSON in request body");
      }
    }
    const drop = this.drops.findIndex((d) => !d.when || d.when(call));
    if (drop >= 0) {
      const d = this.drops[drop]!;
      if (--d.count <= 0) this.drops.splice(drop, 1);
      entry.dropped = d.afterWork ? "after" : "before";
      if (d.afterWork && !bodyError) {
        try {
          this.route(call.method, call.path, url.searchParams, entry.body);
        } catch {
          // refused: nothing done, and the client is not told either
        }
      }
      res.socket?.destroy();
      return;
    }
    const fault = this.injected.findIndex((f) => !f.when || f.when(call));
    if (fault >= 0) {
      const f = this.injected[fault]!;
      if (--f.count <= 0) this.injected.splice(fault, 1);
      entry.injected = true;
      if (f.code === "rate_limit_exceeded") {
        headers["RateLimit-Remaining"] = "0";
        headers["RateLimit-Reset"] = String(Math.ceil(Date.now() / 1000) + (f.resetInSeconds ?? 1));
      }
      return sendError(new ApiError(f.code, f.message ?? `injected ${f.code}`, f.code === "invalid_input" ? { fields: [] } : null));
    }
    try {
      if (bodyError) throw bodyError;
      const [status, body] = this.route(call.method, call.path, url.searchParams, entry.body);
      send(status, body);
    } catch (error) {
      if (error instanceof ApiError) return sendError(error);
      sendError(new ApiError("server_error", String(error)));
    }
  }

  private route(method: string, path: string, query: URLSearchParams, body: unknown): [number, unknown] {
    let m: RegExpMatchArray | null;
    if (method === "GET" && path === "/networks") {
      return [200, this.list("networks", this.networks, query)];
    }
    if (method === "GET" && (m = path.match(/^\/networks\/([^/]+)$/))) {
      return [200, { network: this.network(m[1]!) }];
    }
    if (method === "POST" && (m = path.match(/^\/networks\/([^/]+)\/actions\/(add_route|delete_route)$/))) {
      return [201, { action: this.routeAction(this.network(m[1]!), m[2] as "add_route" | "delete_route", body) }];
    }
    if (method === "GET" && (m = path.match(/^\/networks\/([^/]+)\/actions\/(\d+)$/))) {
      const network = this.network(m[1]!);
      const action = this.actions.get(Number(m[2]));
      if (!action || !action.resources.some((r) => r.type === "network" && r.id === network.id)) throw new ApiError("not_found", "action not found");
      return [200, { action }];
    }
    if (method === "GET" && (m = path.match(/^\/actions\/(\d+)$/))) {
      const action = this.actions.get(Number(m[1]));
      if (!action) throw new ApiError("not_found", "action not found");
      return [200, { action }];
    }
    if (method === "GET" && path === "/actions") {
      const ids = query.getAll("id").map(Number);
      if (ids.length === 0) throw invalidInput("id", "at least one id is required");
      const statuses = query.getAll("status");
      const found = ids.flatMap((id) => this.actions.get(id) ?? []).filter((a) => statuses.length === 0 || statuses.includes(a.status));
      return [200, this.paginate("actions", found, query)];
    }
    if (method === "GET" && path === "/servers") {
      return [200, this.list("servers", this.servers, query)];
    }
    if (method === "GET" && (m = path.match(/^\/servers\/(\d+)$/))) {
      const server = this.servers.find((s) => s.id === Number(m![1]));
      if (!server) throw new ApiError("not_found", "server not found");
      return [200, { server }];
    }
    throw new ApiError("not_found", `no such endpoint: ${method} ${path}`);
  }

  private network(id: string): HetznerNetwork {
    const network = /^\d+$/.test(id) ? this.networks.find((n) => n.id === Number(id)) : undefined;
    if (!network) throw new ApiError("not_found", "network not found");
    return network;
  }

  private list<T extends { id: number; name: string; created: string; labels: Record<string, string> }>(key: string, items: T[], query: URLSearchParams): unknown {
    let selected = [...items];
    const name = query.get("name");
    if (name !== null) selected = selected.filter((i) => i.name === name);
    const selector = query.get("label_selector");
    if (selector) {
      let requirements: LabelRequirement[];
      try {
        requirements = parseLabelSelector(selector);
      } catch (error) {
        throw invalidInput("label_selector", (error as Error).message);
      }
      selected = selected.filter((i) => matchesLabels(requirements, i.labels));
    }
    for (const sort of query.getAll("sort").reverse()) {
      const [field, direction = "asc"] = sort.split(":");
      if (!["id", "name", "created"].includes(field!) || !["asc", "desc"].includes(direction)) throw invalidInput("sort", `invalid sort ${JSON.stringify(sort)}`);
      const sign = direction === "desc" ? -1 : 1;
      const value = (i: T) => (field === "id" ? i.id : field === "name" ? i.name : i.created);
      selected.sort((a, b) => (value(a) < value(b) ? -sign : value(a) > value(b) ? sign : 0));
    }
    return this.paginate(key, selected, query);
  }

  private paginate(key: string, items: unknown[], query: URLSearchParams): unknown {
    const number = (name: string, fallback: number) => {
      const text = query.get(name);
      if (text === null) return fallback;
      if (!/^\d+$/.test(text) || Number(text) < 1) throw invalidInput(name, `${name} must be a positive integer`);
      return Number(text);
    };
    const page = number("page", 1);
    const perPage = Math.min(50, number("per_page", 25));
    const lastPage = Math.max(1, Math.ceil(items.length / perPage));
    return {
      [key]: items.slice((page - 1) * perPage, page * perPage),
      meta: {
        pagination: {
          page,
          per_page: perPage,
          previous_page: page > 1 ? Math.min(page - 1, lastPage) : null,
          next_page: page < lastPage ? page + 1 : null,
          last_page: lastPage,
          total_entries: items.length,
        },
      },
    };
  }

  private routeAction(network: HetznerNetwork, command: "add_route" | "delete_route", body: unknown): HetznerAction {
    const fields = (body ?? {}) as Record<string, unknown>;
    if (typeof fields.destination !== "string") throw invalidInput("destination", "destination is required");
    if (typeof fields.gateway !== "string") throw invalidInput("gateway", "gateway is required");
    const destination = parseCidr(fields.destination);
    if (!destination) throw invalidInput("destination", "invalid destination: not an IPv4 network in CIDR notation");
    if (fromInt(networkAddress(destination)) !== destination[0].toString()) throw invalidInput("destination", "invalid destination: host bits set");
    if (!ipaddr.IPv4.isValidFourPartDecimal(fields.gateway)) throw invalidInput("gateway", "invalid gateway");
    const gateway = ipaddr.IPv4.parse(fields.gateway);
    const route = { destination: fields.destination, gateway: gateway.toString() };
    if (this.runningAction(network.id)) {
      throw this.busyError === "locked"
        ? new ApiError("locked", "The network is locked. There is already an action running.")
        : new ApiError("conflict", "the resource has changed during the request, please retry");
    }
    if (command === "delete_route") {
      const i = network.routes.findIndex((r) => r.destination === route.destination && r.gateway === route.gateway);
      if (i < 0) throw new ApiError("not_found", "route not found");
      return this.startAction(command, network, () => {
        const at = network.routes.findIndex((r) => r.destination === route.destination && r.gateway === route.gateway);
        if (at >= 0) network.routes.splice(at, 1);
      });
    }
    const range = parseCidr(network.ip_range)!;
    const isDefault = route.destination === "0.0.0.0/0";
    if (!isDefault && !RFC1918.some((p) => destination[1] >= p[1] && overlaps(p, destination))) {
      throw invalidInput("destination", "invalid destination: must be in a private IPv4 range (RFC 1918) or 0.0.0.0/0");
    }
    if (!isDefault && network.subnets.some((s) => overlaps(parseCidr(s.ip_range)!, destination))) throw invalidInput("destination", "invalid destination: overlaps with a subnet of the network");
    if (!isDefault && network.routes.some((r) => overlaps(parseCidr(r.destination)!, destination))) throw invalidInput("destination", "invalid destination: overlaps with the destination of another route");
    if (!contains(range, gateway) || toInt(gateway) === networkAddress(range) + 1 || route.gateway === "172.31.1.1") throw invalidInput("gateway", "invalid gateway");
    if (network.routes.length >= this.routeLimit) throw new ApiError("resource_limit_exceeded", `route limit of ${this.routeLimit} reached for this network`);
    return this.startAction(command, network, () => network.routes.push(route));
  }
}

export async function startHetznerServer(options: HetznerServerOptions = {}): Promise<HetznerServerApi> {
  return new HetznerServerApi(options).start();
}
