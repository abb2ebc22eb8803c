/**
 * A local Compute Engine API (v1) server for offline tests: routes, global operations, instances and
 * project quotas, shaped like the public API so the real gcloud CLI and podroutes' own client both work
 * against it. Listens on 127.0.0.1 only (port 0). What it reproduces, because podroutes depends on it:
 * - writes answer with an Operation (RUNNING) that becomes DONE after `latencyMs`; the route appears or
 *   disappears only then; `POST .../global/operations/NAME/wait` holds the call until DONE but at most
 *   `waitHoldMs` (about 2 minutes on the real API), then answers RUNNING; a share of waits
 *   (`waitEarlyReturnRate`) answer RUNNING at once, as the real one may ("best effort");
 * - a project's concurrent operations quota (`throttleAbove`): a write that would start an operation while
 *   that many are RUNNING gets what the API answers then, 403 rateLimitExceeded with the ErrorInfo reason
 *   CONCURRENT_OPERATIONS_QUOTA_EXCEEDED;
 * - networks just created (`addNetwork(name, {readyInMs})`): a route insert into one before it is ready
 *   gets 400 resourceNotReady, as the seed's order (network, then routes) meets on the real API;
 * - instances with several network interfaces on different networks (`nics`); a route's next-hop
 *   instance must have one on the route's network;
 * - `filter` expressions `FIELD eq "REGEX"` / `FIELD ne "REGEX"` (RE2-like, full match), several in
 *   parentheses ANDed, as gcloud sends `network eq ".*\bN\b.*"`; `maxResults` and `pageToken` paging;
 * - writes' `requestId` (a UUID): a write repeated with one already received answers the first one's
 *   operation and does nothing again; the operation carries it as `clientOperationId`, which
 *   `globalOperations.list` filters on like any other string field;
 * - error bodies `{"error":{"code","message","errors":[{"reason","message","domain"}]}}` for
 *   400/403/404/409/429/5xx; the multipart batch endpoint (gcloud's multi-delete, podroutes' bursts of
 *   writes): each part is one call, logged and counted as one, with its own answer (and its own faults);
 * - injected faults on any call: 429 rateLimitExceeded, 503 backendError, or a timeout (the connection
 *   is held, then dropped; a write may or may not have been carried out, as on a real network); a part
 *   of a batch gets 429 or 503 alone, a timeout only as the whole batch. At random (`faultRate`), or
 *   scripted for the next call that matches (`injectFault`).
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { listenOnLoopback, stopLoopback } from "./loopback-server.js";
import { randomBytes } from "node:crypto";

export interface GceRoute {
  kind: "compute#route";
  id: string;
  creationTimestamp: string;
  name: string;
  description?: string;
  network: string;
  destRange: string;
  priority: number;
  nextHopIp?: string;
  nextHopInstance?: string;
  nextHopGateway?: string;
  nextHopNetwork?: string;
  tags?: string[];
  selfLink: string;
}

export interface GceInstance {
  name: string;
  zone: string;
  /** nic0's address and network; `nics` instead for an instance with several interfaces. */
  networkIP?: string;
  network?: string;
  /** Every network interface, nic0 first. */
  nics?: { network: string; networkIP: string }[];
  canIpForward?: boolean;
  podCidr?: string;
  tags?: string[];
  labels?: Record<string, string>;
  status?: string;
}

interface Operation {
  kind: "compute#operation";
  id: string;
  name: string;
  operationType: string;
  targetLink: string;
  targetId?: string;
  status: "PENDING" | "RUNNING" | "DONE";
  user: string;
  /** The write's requestId, when it carried one. */
  clientOperationId?: string;
  progress: number;
  insertTime: string;
  startTime: string;
  endTime?: string;
  selfLink: string;
  error?: { errors: { code: string; message: string }[] };
  httpErrorStatusCode?: number;
  httpErrorMessage?: string;
}

export type FaultKind = "429" | "503" | "timeout";

export interface GceServerOptions {
  project?: string;
  /** Time an operation stays RUNNING. */
  latencyMs?: number;
  /** Share of API calls (0..1) answered with a fault instead. */
  faultRate?: number;
  faultKinds?: FaultKind[];
  /** How long a timed-out call is held before the connection is dropped. */
  timeoutHoldMs?: number;
  /** The project's ROUTES quota limit. */
  routesQuota?: number;
  /** Longest a `wait` call is held before it answers RUNNING (the real API: about 2 minutes). */
  waitHoldMs?: number;
  /** Share of `wait` calls (0..1) answered RUNNING at once, before the operation is DONE. */
  waitEarlyReturnRate?: number;
  /** Random source for faults (tests pass a seeded one). */
  random?: () => number;
  /** The concurrent operations quota: writes (insert, delete) are refused while this many operations are RUNNING. */
  throttleAbove?: number;
}

/** Counters a test can assert on: what each kind of call did. */
export interface GceStats {
  requests: number;
  faults: Record<FaultKind, number>;
  inserts: number;
  deletes: number;
  waits: number;
  /** `wait` calls answered RUNNING at once (waitEarlyReturnRate). */
  earlyWaits: number;
  /** Route inserts refused because the network was not ready yet. */
  notReadyRefusals: number;
  batches: number;
  byMethod: Record<string, number>;
  /** Writes refused by the concurrent operations quota (`throttleAbove`). */
  throttled: number;
  /** The most operations RUNNING at once. */
  peakRunning: number;
  /** The most `wait` calls held at once. */
  peakWaits: number;
}

type Answer = { status: number; body: unknown; replayed?: true; multipart?: { contentType: string; text: string } };

/** One API call as the server saw it: who made it (the bearer token), when, and what it answered. */
export interface GceRequest {
  method: string;
  path: string;
  token: string;
  /** Milliseconds since the epoch when it arrived. */
  at: number;
  /** The HTTP status answered; 0 when the connection was dropped (an injected timeout). */
  status: number;
  /** The status the API's work came to, even when its answer was then lost (a timeout); unset for injected 429/503. */
  outcome?: number;
  /** A write repeating the requestId of one already received: answered with that one's operation, nothing done. */
  replayed?: true;
  fault?: FaultKind;
  /** A call that came as a part of a batch request (logged after the batch request itself). */
  inBatch?: true;
}

/** A fault for the next call a test names (`injectFault`). */
export interface ScriptedFault {
  when: (call: GceRequest) => boolean;
  fault: FaultKind;
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly details?: unknown[],
  ) {
    super(message);
  }
}

function errorBody(status: number, reason: string, message: string, details?: unknown[]): unknown {
  return { error: { code: status, message, errors: [{ message, domain: "global", reason }], ...(details ? { details } : {}) } };
}

/** A seeded generator (mulberry32), so fault runs are repeatable. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAME = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** The order lists come in: String.prototype.localeCompare's, with its collator made once (not per comparison). */
const byName = new Intl.Collator();
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Evaluates a Compute list filter on one resource: `FIELD eq "REGEX"` or `FIELD ne "REGEX"`, alone or
 * several in parentheses (ANDed). The regex must match the whole value (RE2 full match).
 */
export function matchesFilter(filter: string | null, resource: Record<string, unknown>): boolean {
  return compileFilter(filter)(resource);
}

/**
 * A list filter (see matchesFilter) parsed and its patterns compiled once, for every resource of a list:
 * an operations list of a 1,000-route join tests a thousand operations, and parsing the filter and
 * compiling its regexes for each one put milliseconds on every wave's critical path.
 */
export function compileFilter(filter: string | null): (resource: Record<string, unknown>) => boolean {
  if (!filter || !filter.trim()) return () => true;
  const clauses = [...filter.matchAll(/\(?\s*([a-zA-Z_.]+)\s+(eq|ne)\s+(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([^\s)]+))\s*\)?/g)].map(([, field, op, dq, sq, bare]) => {
    const pattern = dq !== undefined ? dq.replace(/\\"/g, '"') : (sq ?? bare ?? "");
    return { path: field!.split("."), eq: op === "eq", full: new RegExp(`^(?:${pattern})$`) };
  });
  if (!clauses.length) throw new ApiError(400, "invalid", `Invalid value for field 'filter': '${filter}'. Invalid list filter expression.`);
  return (resource) =>
    clauses.every(({ path, eq, full }) => {
      let value: unknown = resource;
      for (const part of path) value = (value as Record<string, unknown> | undefined)?.[part];
      const text = value === undefined || value === null ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
      return full.test(text) === eq;
    });
}

export class GceServer {
  readonly project: string;
  latencyMs: number;
  faultRate: number;
  faultKinds: FaultKind[];
  timeoutHoldMs: number;
  routesQuota: number;
  waitHoldMs: number;
  waitEarlyReturnRate: number;
  throttleAbove: number | undefined;
  /**
   * How `globalOperations.list` treats a filter: as the API documents it, refused (400), ignored (every
   * operation), or the list missing altogether (404: emulators, proxies).
   */
  operationsFilter: "honour" | "refuse" | "ignore" | "missing" = "honour";
  /** An endpoint without the batch path (a proxy, an emulator): batch requests get 404. */
  refuseBatches = false;
  private random: () => number;
  /** Networks created with addNetwork: when each becomes ready (epoch ms). */
  private readonly networks = new Map<string, number>();
  /** Operations not yet DONE. */
  private running = 0;
  /** `wait` calls being held. */
  private waitsHeld = 0;
  readonly routes = new Map<string, GceRoute>();
  /** Names with an insert in flight: taken (409), not yet visible. */
  private readonly pendingInserts = new Set<string>();
  readonly instances: GceInstance[] = [];
  private readonly operations = new Map<string, { op: Operation; done: Promise<void> }>();
  /** requestId → the operation it started: a write repeated with the same requestId is not redone. */
  private readonly byRequestId = new Map<string, string>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private server: Server | undefined;
  private nextId = 1000;
  port = 0;
  stats: GceStats = GceServer.emptyStats();
  /** Every call, in arrival order (tests count a client's writes by its token). */
  readonly requestLog: GceRequest[] = [];
  /** Faults for the next calls that match, each used once, in the order given. */
  private readonly scriptedFaults: ScriptedFault[] = [];

  constructor(options: GceServerOptions = {}) {
    this.project = options.project ?? "podroutes-test";
    this.latencyMs = options.latencyMs ?? 0;
    this.faultRate = options.faultRate ?? 0;
    this.faultKinds = options.faultKinds ?? ["429", "503", "timeout"];
    this.timeoutHoldMs = options.timeoutHoldMs ?? 1500;
    this.routesQuota = options.routesQuota ?? 250;
    this.waitHoldMs = options.waitHoldMs ?? 120_000;
    this.waitEarlyReturnRate = options.waitEarlyReturnRate ?? 0;
    this.random = options.random ?? Math.random;
    this.throttleAbove = options.throttleAbove;
  }

  private static emptyStats(): GceStats {
    return {
      requests: 0,
      faults: { "429": 0, "503": 0, timeout: 0 },
      inserts: 0,
      deletes: 0,
      waits: 0,
      earlyWaits: 0,
      notReadyRefusals: 0,
      batches: 0,
      byMethod: {},
      throttled: 0,
      peakRunning: 0,
      peakWaits: 0,
    };
  }

  /** `http://127.0.0.1:PORT/` */
  get origin(): string {
    return `http://127.0.0.1:${this.port}/`;
  }

  /** What gcloud's CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE and podroutes' --compute-endpoint take. */
  get endpoint(): string {
    return `${this.origin}compute/v1/`;
  }

  networkUrl(network: string): string {
    return `${this.endpoint}projects/${this.project}/global/networks/${network}`;
  }

  instanceUrl(instance: GceInstance): string {
    return `${this.endpoint}projects/${this.project}/zones/${instance.zone}/instances/${instance.name}`;
  }

  async start(): Promise<this> {
    ({ server: this.server, port: this.port } = await listenOnLoopback((req, res) => void this.serve(req, res)));
    return this;
  }

  async stop(): Promise<void> {
    await stopLoopback(this.server, this.timers);
  }

  /** A `wait` call's answer: held until DONE, or at most waitHoldMs (the real API: about 2 minutes); callers loop. */
  private async waitAnswer(entry: { op: Operation; done: Promise<void> }): Promise<Answer> {
    if (entry.op.status !== "DONE" && this.waitEarlyReturnRate > 0 && this.random() < this.waitEarlyReturnRate) {
      this.stats.earlyWaits++;
      return { status: 200, body: { ...entry.op } };
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([entry.done, new Promise((resolve) => (timer = setTimeout(resolve, this.waitHoldMs)).unref())]);
    clearTimeout(timer);
    return { status: 200, body: { ...entry.op } };
  }

  /** Clears routes, networks, instances, operations, faults, limits and counters. */
  reset(): void {
    this.routes.clear();
    this.pendingInserts.clear();
    this.networks.clear();
    this.instances.length = 0;
    this.operations.clear();
    this.byRequestId.clear();
    this.faultRate = 0;
    this.latencyMs = 0;
    this.waitHoldMs = 120_000;
    this.waitEarlyReturnRate = 0;
    this.throttleAbove = undefined;
    this.operationsFilter = "honour";
    this.refuseBatches = false;
    this.faultKinds = ["429", "503", "timeout"];
    this.timeoutHoldMs = 1500;
    this.stats = GceServer.emptyStats();
    this.requestLog.length = 0;
    this.scriptedFaults.length = 0;
  }

  /** The next call (or batch part) for which `when` holds gets `fault` instead of its answer; once. */
  injectFault(when: (call: GceRequest) => boolean, fault: FaultKind): void {
    this.scriptedFaults.push({ when, fault });
  }

  /** The fault a call gets, if any: a scripted one first, else by `faultRate`; a batch part never times out alone. */
  private faultFor(call: GceRequest): FaultKind | undefined {
    const scripted = this.scriptedFaults.findIndex((f) => f.when(call) && !(call.inBatch && f.fault === "timeout"));
    if (scripted >= 0) return this.scriptedFaults.splice(scripted, 1)[0]!.fault;
    if (!(this.faultRate > 0 && this.random() < this.faultRate)) return undefined;
    const kind = this.faultKinds[Math.floor(this.random() * this.faultKinds.length)];
    return call.inBatch && kind === "timeout" ? undefined : kind;
  }

  /** The answer of an injected 429 or 503, counted. */
  private faultAnswer(fault: "429" | "503"): Answer {
    this.stats.faults[fault]++;
    return fault === "429" ? { status: 429, body: errorBody(429, "rateLimitExceeded", "Rate Limit Exceeded") } : { status: 503, body: errorBody(503, "backendError", "Backend Error") };
  }

  /** A network created now, ready for routes `readyInMs` later (until then inserts get resourceNotReady). */
  addNetwork(name: string, options: { readyInMs?: number } = {}): void {
    this.networks.set(name, Date.now() + (options.readyInMs ?? 0));
  }

  setRandom(random: () => number): void {
    this.random = random;
  }

  /** Adds a route directly (the network's default routes, someone else's route). */
  addRoute(route: Partial<GceRoute> & { name: string; network: string; destRange: string }): GceRoute {
    const full: GceRoute = {
      kind: "compute#route",
      id: String(this.nextId++),
      creationTimestamp: new Date().toISOString(),
      priority: 1000,
      ...route,
      network: route.network.startsWith("http") ? route.network : this.networkUrl(route.network),
      selfLink: `${this.endpoint}projects/${this.project}/global/routes/${route.name}`,
    };
    this.routes.set(full.name, full);
    return full;
  }

  addInstance(instance: GceInstance): void {
    this.instances.push(instance);
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks).toString("utf8");
    this.stats.requests++;
    const url = new URL(req.url ?? "/", this.origin);
    const logged: GceRequest = { method: req.method ?? "GET", path: url.pathname, token: (req.headers.authorization ?? "").replace(/^Bearer /, ""), at: Date.now(), status: 0 };
    this.requestLog.push(logged);

    const fault = this.faultFor(logged);
    if (fault) logged.fault = fault;
    if (fault === "429" || fault === "503") {
      const answer = this.faultAnswer(fault);
      logged.status = answer.status;
      return this.send(res, answer);
    }

    const batch = req.method === "POST" && url.pathname === "/batch/compute/v1" && !this.refuseBatches;
    const answer = batch ? await this.batch(req.headers["content-type"] ?? "", body, logged.token) : await this.dispatch(req.method ?? "GET", url, body);
    logged.outcome = answer.status;
    if (answer.replayed) logged.replayed = true;
    if (fault === "timeout") {
      // The call may have taken effect; its answer is lost, as when a connection times out.
      this.stats.faults.timeout++;
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        res.socket?.destroy();
      }, this.timeoutHoldMs);
      this.timers.add(timer);
      return;
    }
    logged.status = answer.status;
    this.send(res, answer);
  }

  private send(res: ServerResponse, answer: Answer): void {
    const text = answer.multipart?.text ?? JSON.stringify(answer.body);
    res.writeHead(answer.status, { "content-type": answer.multipart?.contentType ?? "application/json; charset=UTF-8", "content-length": Buffer.byteLength(text) });
    res.end(text);
  }

  /** One API call, by method and path; also used for each part of a batch. */
  async dispatch(method: string, url: URL, body: string): Promise<Answer> {
    const key = `${method} ${url.pathname.replace(/\/projects\/[^/]+/, "/projects/P").replace(/\/(routes|operations|instances|zones)\/[^/]+/g, "/$1/X")}`;
    this.stats.byMethod[key] = (this.stats.byMethod[key] ?? 0) + 1;
    try {
      const match = url.pathname.match(/^\/compute\/v1\/projects\/([^/]+)(\/.*)?$/);
      if (!match) throw new ApiError(404, "notFound", `The requested URL ${url.pathname} was not found on this server.`);
      const [, project, rest = ""] = match;
      if (project !== this.project) throw new ApiError(404, "notFound", `The resource 'projects/${project}' was not found`);
      let m: RegExpMatchArray | null;
      if (rest === "" && method === "GET") return { status: 200, body: this.projectResource() };
      if (rest === "/global/routes" && method === "GET") return { status: 200, body: this.list("compute#routeList", [...this.routes.values()], url, `global/routes`) };
      if (method !== "GET" && url.searchParams.has("requestId")) {
        // A retried write with the requestId of one already received: the first one's operation, nothing redone.
        const requestId = url.searchParams.get("requestId")!;
        if (!UUID.test(requestId) || /^[0-]+$/.test(requestId)) throw new ApiError(400, "invalid", `Invalid value for field 'requestId': '${requestId}'. The request ID must be a valid UUID with the exception that zero UUID is not supported (00000000-0000-0000-0000-000000000000).`);
        const earlier = this.byRequestId.get(requestId);
        if (earlier) return { status: 200, body: { ...this.operations.get(earlier)!.op }, replayed: true };
      }
      if (rest === "/global/routes" && method === "POST") return this.insertRoute(body, url.searchParams.get("requestId") ?? undefined);
      if (rest === "/global/operations" && method === "GET" && this.operationsFilter === "missing") throw new ApiError(404, "notFound", "Not Found");
      if (rest === "/global/operations" && method === "GET" && this.operationsFilter !== "honour" && url.searchParams.has("filter")) {
        if (this.operationsFilter === "refuse") throw new ApiError(400, "invalid", `Invalid value for field 'filter': '${url.searchParams.get("filter")}'. Invalid list filter expression.`);
        url.searchParams.delete("filter");
      }
      if (rest === "/global/operations" && method === "GET") return { status: 200, body: this.list("compute#operationList", [...this.operations.values()].map((entry) => entry.op), url, "global/operations") };
      if ((m = rest.match(/^\/global\/routes\/([^/]+)$/))) {
        const route = this.routes.get(m[1]!);
        if (method === "GET") {
          if (!route) throw new ApiError(404, "notFound", `The resource 'projects/${this.project}/global/routes/${m[1]}' was not found`);
          return { status: 200, body: route };
        }
        if (method === "DELETE") return this.deleteRoute(m[1]!, url.searchParams.get("requestId") ?? undefined);
      }
      if ((m = rest.match(/^\/global\/operations\/([^/]+)(\/wait)?$/))) {
        const entry = this.operations.get(m[1]!);
        if (!entry) throw new ApiError(404, "notFound", `The resource 'projects/${this.project}/global/operations/${m[1]}' was not found`);
        if (m[2] && method === "POST") {
          this.stats.waits++;
          this.waitsHeld++;
          this.stats.peakWaits = Math.max(this.stats.peakWaits, this.waitsHeld);
          try {
            return await this.waitAnswer(entry);
          } finally {
            this.waitsHeld--;
          }
        }
        if (!m[2] && method === "GET") return { status: 200, body: entry.op };
      }
      if (rest === "/global/networks" && method === "GET") {

        const names = [...new Set([...this.routes.values()].map((r) => r.network.split("/").pop()!))];
        return { status: 200, body: this.list("compute#networkList", names.map((n) => ({ kind: "compute#network", name: n, selfLink: this.networkUrl(n) })), url, "global/networks") };
      }
      if (rest === "/aggregated/instances" && method === "GET") {
        const items: Record<string, { instances: unknown[] }> = {};
        const matches = compileFilter(url.searchParams.get("filter"));
        const page = this.page(this.instances.map((i) => this.instanceResource(i)).filter(matches), url);
        for (const instance of page.items) {
          const zone = `zones/${String((instance as { zone: string }).zone).split("/").pop()}`;
          (items[zone] ??= { instances: [] }).instances.push(instance);
        }
        return {
          status: 200,
          body: { kind: "compute#instanceAggregatedList", id: `projects/${this.project}/aggregated/instances`, items, ...(page.next ? { nextPageToken: page.next } : {}), selfLink: url.href },
        };
      }
      if ((m = rest.match(/^\/zones\/([^/]+)\/instances$/)) && method === "GET") {
        const zone = m[1]!;
        return { status: 200, body: this.list("compute#instanceList", this.instances.filter((i) => i.zone === zone).map((i) => this.instanceResource(i)), url, `zones/${zone}/instances`) };
      }
      if ((m = rest.match(/^\/zones\/([^/]+)\/instances\/([^/]+)$/)) && method === "GET") {
        const instance = this.instances.find((i) => i.zone === m![1] && i.name === m![2]);
        if (!instance) throw new ApiError(404, "notFound", `The resource 'projects/${this.project}/zones/${m[1]}/instances/${m[2]}' was not found`);
        return { status: 200, body: this.instanceResource(instance) };
      }
      throw new ApiError(404, "notFound", `The requested URL ${url.pathname} was not found on this server.`);
    } catch (error) {
      if (error instanceof ApiError) return { status: error.status, body: errorBody(error.status, error.reason, error.message, error.details) };
      if (error instanceof SyntaxError) return { status: 400, body: errorBody(400, "parseError", `Invalid JSON payload received. ${error.message}`) };
      return { status: 500, body: errorBody(500, "backendError", String(error)) };
    }
  }

  private projectResource(): unknown {
    return {
      kind: "compute#project",
      id: "1234567890",
      name: this.project,
      quotas: [
        { metric: "NETWORKS", limit: 15, usage: new Set([...this.routes.values()].map((r) => r.network)).size },
        { metric: "ROUTES", limit: this.routesQuota, usage: this.routes.size + this.pendingInserts.size },
        { metric: "FIREWALLS", limit: 200, usage: 0 },
      ],
      selfLink: `${this.endpoint}projects/${this.project}`,
    };
  }

  private instanceResource(instance: GceInstance): Record<string, unknown> {
    const zoneUrl = `${this.endpoint}projects/${this.project}/zones/${instance.zone}`;
    return {
      kind: "compute#instance",
      id: String(Math.abs([...instance.name].reduce((h, c) => (h * 31 + c.charCodeAt(0)) | 0, 7))),
      name: instance.name,
      zone: zoneUrl,
      status: instance.status ?? "RUNNING",
      canIpForward: instance.canIpForward ?? false,
      networkInterfaces: nicsOf(instance).map((nic, i) => ({ kind: "compute#networkInterface", name: `nic${i}`, network: this.networkUrl(nic.network), networkIP: nic.networkIP })),
      metadata: { kind: "compute#metadata", items: instance.podCidr ? [{ key: "pod-cidr", value: instance.podCidr }] : [] },
      tags: { items: instance.tags ?? [] },
      labels: instance.labels ?? {},
      selfLink: this.instanceUrl(instance),
    };
  }

  private page<T>(items: T[], url: URL): { items: T[]; next?: string } {
    const max = Math.min(500, Math.max(1, Number(url.searchParams.get("maxResults") ?? 500) || 500));
    const token = url.searchParams.get("pageToken");
    const start = token ? Number(Buffer.from(token, "base64url").toString("utf8")) : 0;
    if (!Number.isInteger(start) || start < 0) throw new ApiError(400, "invalid", "Invalid value for field 'pageToken'");
    const slice = items.slice(start, start + max);
    return { items: slice, ...(start + max < items.length ? { next: Buffer.from(String(start + max)).toString("base64url") } : {}) };
  }

  private list(kind: string, resources: unknown[], url: URL, path: string): unknown {
    const matches = compileFilter(url.searchParams.get("filter"));
    const sorted = resources.filter((r) => matches(r as Record<string, unknown>)).sort((a, b) => byName.compare(String((a as { name: string }).name), String((b as { name: string }).name)));
    const page = this.page(sorted, url);
    return {
      kind,
      id: `projects/${this.project}/${path}`,
      items: page.items,
      ...(page.next ? { nextPageToken: page.next } : {}),
      selfLink: `${this.endpoint}projects/${this.project}/${path}`,
    };
  }

  /**
   * The project's concurrent operations quota (`throttleAbove`): a write that would start one operation
   * too many gets what the API answers then, 403 rateLimitExceeded with the ErrorInfo reason
   * CONCURRENT_OPERATIONS_QUOTA_EXCEEDED (https://cloud.google.com/compute/operations-quota).
   */
  private admitWrite(type: string): void {
    if (this.throttleAbove === undefined || this.running < this.throttleAbove) return;
    this.stats.throttled++;
    throw new ApiError(403, "rateLimitExceeded", "Rate Limit Exceeded", [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        reason: "CONCURRENT_OPERATIONS_QUOTA_EXCEEDED",
        domain: "compute.googleapis.com",
        metadatas: {
          containerType: "PROJECT",
          containerId: this.project,
          quotaMetric: "compute.googleapis.com/global_concurrent_operations",
          quotaLimit: String(this.throttleAbove),
          operationType: type,
          location: "global",
        },
      },
      {
        "@type": "type.googleapis.com/google.rpc.Help",
        links: [{ description: "Concurrent operations quota documentation.", url: "https://cloud.google.com/compute/operations-quota#concurrent_operation_limits" }],
      },
    ]);
  }

  /** Starts an operation; `effect` runs when it turns DONE (after latencyMs). */
  private operation(type: string, targetLink: string, requestId: string | undefined, effect: () => void): Operation {
    this.running++;
    this.stats.peakRunning = Math.max(this.stats.peakRunning, this.running);
    const name = `operation-${Date.now()}-${randomBytes(6).toString("hex")}`;
    const now = new Date().toISOString();
    const op: Operation = {
      kind: "compute#operation",
      id: String(this.nextId++),
      name,
      operationType: type,
      targetLink,
      status: "RUNNING",
      user: "test@podroutes.invalid",
      ...(requestId ? { clientOperationId: requestId } : {}),
      progress: 0,
      insertTime: now,
      startTime: now,
      selfLink: `${this.endpoint}projects/${this.project}/global/operations/${name}`,
    };
    const done = new Promise<void>((resolve) => {
      const finish = () => {
        this.running--;
        effect();
        op.status = "DONE";
        op.progress = 100;
        op.endTime = new Date().toISOString();
        resolve();
      };
      if (this.latencyMs <= 0) queueMicrotask(finish);
      else {
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          finish();
        }, this.latencyMs);
        this.timers.add(timer);
      }
    });
    this.operations.set(name, { op: { ...op } as Operation, done });
    // Keep one object: later reads see the status change.
    this.operations.set(name, { op, done });
    if (requestId) this.byRequestId.set(requestId, name);
    return { ...op };
  }

  private insertRoute(body: string, requestId: string | undefined): Answer {
    this.admitWrite("insert");
    const input = JSON.parse(body || "{}") as Partial<GceRoute>;
    for (const field of ["name", "network", "destRange"] as const) {
      if (!input[field]) throw new ApiError(400, "required", `Required field '${field}' not specified`);
    }
    if (!NAME.test(input.name!)) throw new ApiError(400, "invalid", `Invalid value for field 'resource.name': '${input.name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'`);
    const hops = ["nextHopIp", "nextHopInstance", "nextHopGateway", "nextHopNetwork"].filter((k) => (input as Record<string, unknown>)[k]);
    if (hops.length !== 1) throw new ApiError(400, "invalid", "Invalid value for field 'resource': exactly one next hop must be specified");
    if (this.routes.has(input.name!) || this.pendingInserts.has(input.name!)) {
      throw new ApiError(409, "alreadyExists", `The resource 'projects/${this.project}/global/routes/${input.name}' already exists`);
    }
    if (this.routes.size + this.pendingInserts.size >= this.routesQuota) {
      throw new ApiError(403, "quotaExceeded", `Quota 'ROUTES' exceeded.  Limit: ${this.routesQuota}.0 globally.`);
    }
    const network = input.network!.replace(/^https?:\/\/[^/]+\/compute\/v1\//, "").replace(/^projects\/[^/]+\/global\/networks\//, "");
    const networkName = network.split("/").pop()!;
    const readyAt = this.networks.get(networkName);
    if (readyAt !== undefined && Date.now() < readyAt) {
      this.stats.notReadyRefusals++;
      throw new ApiError(400, "resourceNotReady", `The resource 'projects/${this.project}/global/networks/${networkName}' is not ready`);
    }
    if (input.nextHopInstance) {
      const instance = this.instances.find((i) => input.nextHopInstance!.endsWith(`/zones/${i.zone}/instances/${i.name}`));
      if (!instance) throw new ApiError(404, "notFound", `The resource '${input.nextHopInstance}' was not found`);
      if (!nicsOf(instance).some((nic) => nic.network === networkName)) {
        throw new ApiError(400, "invalid", `Invalid value for field 'resource.nextHopInstance': '${input.nextHopInstance}'. The instance has no network interface in network '${networkName}'.`);
      }
    }
    this.stats.inserts++;
    const name = input.name!;
    this.pendingInserts.add(name);
    const selfLink = `${this.endpoint}projects/${this.project}/global/routes/${name}`;
    const op = this.operation("insert", selfLink, requestId, () => {
      this.pendingInserts.delete(name);
      this.addRoute({
        name,
        network: this.networkUrl(network.split("/").pop()!),
        destRange: input.destRange!,
        priority: input.priority ?? 1000,
        ...(input.description ? { description: input.description } : {}),
        ...(input.nextHopIp ? { nextHopIp: input.nextHopIp } : {}),
        ...(input.nextHopInstance ? { nextHopInstance: input.nextHopInstance } : {}),
        ...(input.nextHopGateway ? { nextHopGateway: input.nextHopGateway } : {}),
        ...(input.tags ? { tags: input.tags } : {}),
      });
    });
    return { status: 200, body: op };
  }

  private deleteRoute(name: string, requestId: string | undefined): Answer {
    this.admitWrite("delete");
    const route = this.routes.get(name);
    if (!route) throw new ApiError(404, "notFound", `The resource 'projects/${this.project}/global/routes/${name}' was not found`);
    this.stats.deletes++;
    return { status: 200, body: this.operation("delete", route.selfLink, requestId, () => void this.routes.delete(name)) };
  }

  /**
   * `POST /batch/compute/v1`: multipart/mixed, one `application/http` request per part, each logged and
   * answered as a call of its own (`Content-ID: <response-ID>`), in order.
   */
  private async batch(contentType: string, body: string, token: string): Promise<Answer> {
    this.stats.batches++;
    const boundary = contentType.match(/boundary="?([^";]+)"?/)?.[1];
    if (!boundary) return { status: 400, body: errorBody(400, "badRequest", "multipart boundary missing") };
    const parts = body.split(`--${boundary}`).slice(1).filter((p) => !p.startsWith("--"));
    const answers: string[] = [];
    for (const part of parts) {
      const text = part.replace(/^\r?\n/, "");
      const [outer = "", inner = ""] = splitOnce(text, /\r?\n\r?\n/);
      const contentId = outer.match(/content-id:\s*<?([^>\r\n]+)>?/i)?.[1] ?? "";
      const [head = "", innerBody = ""] = splitOnce(inner, /\r?\n\r?\n/);
      const requestLine = head.split(/\r?\n/)[0] ?? "";
      const [method = "GET", target = "/"] = requestLine.split(" ");
      const url = new URL(target, this.origin);
      const logged: GceRequest = { method, path: url.pathname, token, at: Date.now(), status: 0, inBatch: true };
      this.requestLog.push(logged);
      const fault = this.faultFor(logged);
      if (fault) logged.fault = fault;
      const answer = fault === "429" || fault === "503" ? this.faultAnswer(fault) : await this.dispatch(method, url, innerBody.trim());
      logged.status = answer.status;
      if (!fault) logged.outcome = answer.status;
      if (answer.replayed) logged.replayed = true;
      const json = JSON.stringify(answer.body);
      answers.push(
        `--batch_response\r\nContent-Type: application/http\r\nContent-ID: <response-${contentId}>\r\n\r\n` +
          `HTTP/1.1 ${answer.status} ${answer.status < 300 ? "OK" : "Error"}\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: ${Buffer.byteLength(json)}\r\n\r\n${json}\r\n`,
      );
    }
    return { status: 200, body: undefined, multipart: { contentType: "multipart/mixed; boundary=batch_response", text: `${answers.join("")}--batch_response--\r\n` } };
  }
}

/** An instance's network interfaces, nic0 first. */
export function nicsOf(instance: GceInstance): { network: string; networkIP: string }[] {
  return instance.nics ?? [{ network: instance.network ?? "default", networkIP: instance.networkIP ?? "" }];
}

function splitOnce(text: string, separator: RegExp): [string, string] {
  const match = separator.exec(text);
  if (!match) return [text, ""];
  return [text.slice(0, match.index), text.slice(match.index + match[0].length)];
}

export async function startGceServer(options: GceServerOptions = {}): Promise<GceServer> {
  return new GceServer(options).start();
}
