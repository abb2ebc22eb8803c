/**
 * A small Hetzner Cloud API v1 client: exactly the calls a route writer makes (networks by name or id
 * with their routes, `add_route` / `delete_route` actions followed to `success` or `error`, servers by
 * label selector with their private IPs), over the global `fetch`, with a bearer token. The token and
 * endpoint default to `HCLOUD_TOKEN` and `HCLOUD_ENDPOINT`, as the hcloud CLI reads them.
 *
 * Why our own and no SDK: the npm packages (hcloud-js, hetzner-sdk-ts) are thin wrappers of the REST
 * calls; none follows an action to its end, retries a busy network, or paces by the RateLimit-* headers,
 * which is all the work here, and the six calls need nothing more than fetch.
 *
 * Retries (p-retry, exponential backoff with jitter):
 * - `conflict` (409) and `locked` (423): the network has an action running (one at a time per network).
 *   That means "not yet", so they are retried until the action deadline, not a number of times;
 * - `rate_limit_exceeded` (429): retried after the time the RateLimit-* headers say one request is
 *   refilled, until the deadline; and every request waits first while the last answer said
 *   `RateLimit-Remaining: 0`, so a paced client does not meet the limit at all;
 * - 5xx, a network error or a timed-out request: retried `retries` times, reads only. A write whose
 *   answer was lost may have been carried out, so it is not repeated blindly: the error is final and the
 *   caller reads the network again (the API refuses a second identical route as overlapping anyway).
 * Anything else (invalid_input, not_found, resource_limit_exceeded, unauthorized, ...) is final.
 *
 * Lists are read whole, 50 a page (the API's most), following `meta.pagination.next_page`.
 */
import { setTimeout as delay } from "node:timers/promises";
import pRetry from "p-retry";
import { UsageError } from "../../errors.js";
import type { CallObserver } from "../../options.js";

export const DEFAULT_HCLOUD_ENDPOINT = "https://api.hetzner.cloud/v1";

export interface HetznerSettings {
  /** Default: HCLOUD_TOKEN. */
  token?: string;
  /** Base URL ending in `/v1`. Default: HCLOUD_ENDPOINT, else the public API. */
  endpoint?: string;
  env?: NodeJS.ProcessEnv;
  /** Per-request time limit. */
  requestTimeoutMs?: number;
  /** How long a write may take in all: waiting for a busy network, then its action. */
  actionTimeoutMs?: number;
  /** Pause between polls of a running action (hcloud's default: 500 ms). */
  pollIntervalMs?: number;
  /**
   * Pause before the first poll. Default: learnt from the actions this client followed (the API's route
   * actions take about 1 to 3 s), starting at pollIntervalMs.
   */
  firstPollMs?: number;
  /** Retries of a read after a server or network error. */
  retries?: number;
  /** First backoff delay; doubles each retry up to maxBackoffMs, randomized. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Aborts every call in flight and refuses new ones. */
  signal?: AbortSignal;
  calls?: CallObserver;
}

export interface NetworkRoute {
  destination: string;
  gateway: string;
}

export interface Network {
  id: number;
  name: string;
  ipRange: string;
  subnets: { type: string; ipRange: string; networkZone: string; gateway: string }[];
  routes: NetworkRoute[];
  /** Ids of the servers attached. */
  servers: number[];
  labels: Record<string, string>;
}

export interface CloudServer {
  id: number;
  name: string;
  status: string;
  labels: Record<string, string>;
  privateNet: { network: number; ip: string; aliasIps: string[] }[];
}

export interface Action {
  id: number;
  command: string;
  status: "running" | "success" | "error";
  error: { code: string; message: string } | null;
}

/** The API's last word on the request budget (the RateLimit-* headers). */
export interface RateLimitState {
  limit: number;
  remaining: number;
  /** Epoch ms when the budget is full again. */
  resetAt: number;
}

/** An error answered by the API: `{"error": {"code", "message", "details"}}` and its HTTP status. */
export class HetznerApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** `METHOD /path` of the call. */
    readonly call: string,
    readonly details: unknown = null,
  ) {
    super(`${call}: ${message} (${code || status})`);
    this.name = "HetznerApiError";
  }
}

/** An action that ended `error`: nothing it was to do was done. */
export class HetznerActionError extends Error {
  constructor(readonly action: Action) {
    super(`action ${action.id} (${action.command}) failed: ${action.error?.message ?? "no message"} (${action.error?.code ?? "unknown"})`);
    this.name = "HetznerActionError";
  }
}

/** An action still running at the deadline: it may yet end either way; read the network again to know. */
export class HetznerActionTimeoutError extends Error {
  constructor(readonly action: Action, timeoutMs: number) {
    super(`action ${action.id} (${action.command}) still running after ${timeoutMs} ms`);
    this.name = "HetznerActionTimeoutError";
  }
}

/** A call whose connection failed (refused, reset): the fetch error is its cause. */
export class HetznerNetworkError extends Error {
  constructor(call: string, cause: unknown) {
    super(`${call}: the connection failed`, { cause });
    this.name = "HetznerNetworkError";
  }
}

/** The network has an action running: "not yet", retried until the action deadline. */
export function isBusy(error: unknown): boolean {
  return error instanceof HetznerApiError && (error.code === "conflict" || error.code === "locked");
}

export function isRateLimited(error: unknown): boolean {
  return error instanceof HetznerApiError && (error.code === "rate_limit_exceeded" || error.status === 429);
}

/** Server trouble or a lost connection: worth another attempt, for a read. */
export function isTransient(error: unknown): boolean {
  if (error instanceof HetznerApiError) return error.status >= 500;
  return error instanceof HetznerNetworkError || (error instanceof Error && error.name === "TimeoutError");
}

/** How long until one request is refilled, by the headers: the budget refills evenly until resetAt. */
export function refillDelayMs(rate: RateLimitState, now: number): number {
  const missing = Math.max(1, rate.limit - rate.remaining);
  return Math.max(0, (rate.resetAt - now) / missing);
}

export interface HetznerApi {
  /** A network by id (digits) or name; undefined when there is none. */
  findNetwork(nameOrId: string): Promise<Network | undefined>;
  getNetwork(id: number): Promise<Network>;
  listNetworks(filter?: { name?: string; labelSelector?: string }): Promise<Network[]>;
  /** Adds a route and waits for its action: HetznerApiError when refused, HetznerActionError when it failed. */
  addRoute(networkId: number, route: NetworkRoute): Promise<Action>;
  /** Deletes a route and waits for its action; false when the network has no such route (not_found). */
  deleteRoute(networkId: number, route: NetworkRoute): Promise<boolean>;
  /** Polls an action until it ends; throws HetznerActionError when it ends `error`. */
  waitForAction(action: Action, deadline?: number): Promise<Action>;
  listServers(filter?: { name?: string; labelSelector?: string }): Promise<CloudServer[]>;
  /** The servers (by label selector) attached to a network, each with its private IP there. */
  serversOnNetwork(networkId: number, labelSelector?: string): Promise<{ server: CloudServer; ip: string }[]>;
  /** Calls made, retries and polls included. */
  readonly calls: { requests: number; retries: number; polls: number };
  readonly rateLimit: RateLimitState | undefined;
}

export function createHetznerApi(settings: HetznerSettings = {}): HetznerApi {
  return new HetznerClient(settings);
}

type RawNetwork = { id: number; name: string; ip_range: string; subnets?: { type: string; ip_range: string; network_zone: string; gateway: string }[]; routes?: NetworkRoute[] | null; servers?: number[] | null; labels?: Record<string, string> };
type RawServer = { id: number; name: string; status: string; labels?: Record<string, string>; private_net?: { network: number; ip: string; alias_ips?: string[] | null }[] | null };
type Page = { meta?: { pagination?: { next_page?: number | null } } };

function networkFrom(raw: RawNetwork): Network {
  return {
    id: raw.id,
    name: raw.name,
    ipRange: raw.ip_range,
    subnets: (raw.subnets ?? []).map((s) => ({ type: s.type, ipRange: s.ip_range, networkZone: s.network_zone, gateway: s.gateway })),
    routes: (raw.routes ?? []).map((r) => ({ destination: r.destination, gateway: r.gateway })),
    servers: raw.servers ?? [],
    labels: raw.labels ?? {},
  };
}

function serverFrom(raw: RawServer): CloudServer {
  return {
    id: raw.id,
    name: raw.name,
    status: raw.status,
    labels: raw.labels ?? {},
    privateNet: (raw.private_net ?? []).map((p) => ({ network: p.network, ip: p.ip, aliasIps: p.alias_ips ?? [] })),
  };
}

class HetznerClient implements HetznerApi {
  readonly calls = { requests: 0, retries: 0, polls: 0 };
  rateLimit: RateLimitState | undefined;
  /** The first poll's wait, learnt from the actions followed (learnFirstPoll); unset until one ended. */
  private learntFirstPollMs: number | undefined;
  private readonly base: string;
  private readonly token: string;

  constructor(private readonly settings: HetznerSettings) {
    const env = settings.env ?? process.env;
    const token = settings.token ?? env.HCLOUD_TOKEN;
    if (!token) throw new UsageError("hetzner: no API token: set HCLOUD_TOKEN (a Hetzner Cloud project's API token)");
    this.token = token;
    const endpoint = settings.endpoint ?? env.HCLOUD_ENDPOINT ?? DEFAULT_HCLOUD_ENDPOINT;
    try {
      const url = new URL(endpoint);
      if (url.protocol !== "https:" && url.protocol !== "http:") throw new Error("not http(s)");
    } catch {
      throw new UsageError(`hetzner: HCLOUD_ENDPOINT ${JSON.stringify(endpoint)} is not an http(s) URL`);
    }
    this.base = endpoint.replace(/\/+$/, "");
  }

  private get actionTimeoutMs(): number {
    return this.settings.actionTimeoutMs ?? 10 * 60_000;
  }

  async findNetwork(nameOrId: string): Promise<Network | undefined> {
    if (/^\d+$/.test(nameOrId)) {
      try {
        return await this.getNetwork(Number(nameOrId));
      } catch (error) {
        if (error instanceof HetznerApiError && error.code === "not_found") return undefined;
        throw error;
      }
    }
    const [found] = await this.listNetworks({ name: nameOrId });
    return found;
  }

  async getNetwork(id: number): Promise<Network> {
    const body = await this.call<{ network: RawNetwork }>("GET", `/networks/${id}`);
    return networkFrom(body.network);
  }

  async listNetworks(filter: { name?: string; labelSelector?: string } = {}): Promise<Network[]> {
    return (await this.list<RawNetwork>("/networks", "networks", filter)).map(networkFrom);
  }

  async listServers(filter: { name?: string; labelSelector?: string } = {}): Promise<CloudServer[]> {
    return (await this.list<RawServer>("/servers", "servers", filter)).map(serverFrom);
  }

  async serversOnNetwork(networkId: number, labelSelector?: string): Promise<{ server: CloudServer; ip: string }[]> {
    const servers = await this.listServers(labelSelector ? { labelSelector } : {});
    return servers.flatMap((server) => {
      const attached = server.privateNet.find((p) => p.network === networkId);
      return attached ? [{ server, ip: attached.ip }] : [];
    });
  }

  async addRoute(networkId: number, route: NetworkRoute): Promise<Action> {
    const deadline = Date.now() + this.actionTimeoutMs;
    const { action } = await this.call<{ action: Action }>("POST", `/networks/${networkId}/actions/add_route`, route, deadline);
    return this.waitForAction(action, deadline);
  }

  async deleteRoute(networkId: number, route: NetworkRoute): Promise<boolean> {
    const deadline = Date.now() + this.actionTimeoutMs;
    let action: Action;
    try {
      ({ action } = await this.call<{ action: Action }>("POST", `/networks/${networkId}/actions/delete_route`, route, deadline));
    } catch (error) {
      if (error instanceof HetznerApiError && error.code === "not_found" && error.status === 404) return false;
      throw error;
    }
    await this.waitForAction(action, deadline);
    return true;
  }

  async waitForAction(action: Action, deadline = Date.now() + this.actionTimeoutMs): Promise<Action> {
    const interval = this.settings.pollIntervalMs ?? 500;
    const first = this.settings.firstPollMs ?? this.learntFirstPollMs ?? interval;
    const began = Date.now();
    let pause = first;
    let polls = 0;
    /** When the last poll that found the action still running was sent: the action lasted at least until then. */
    let runningAt: number | undefined;
    let current = action;
    while (current.status === "running") {
      if (Date.now() + pause > deadline) throw new HetznerActionTimeoutError(current, this.actionTimeoutMs);
      await delay(pause, undefined, this.settings.signal ? { signal: this.settings.signal } : {});
      pause = interval;
      this.calls.polls++;
      polls++;
      const sent = Date.now();
      current = (await this.call<{ action: Action }>("GET", `/actions/${action.id}`, undefined, deadline)).action;
      if (current.status === "running") runningAt = sent;
    }
    if (polls > 0 && this.settings.firstPollMs === undefined) this.learnFirstPoll(first, interval, runningAt === undefined ? undefined : runningAt - began);
    if (current.status === "error") throw new HetznerActionError(current);
    return current;
  }

  /**
   * How long the next action's first poll waits, learnt from the last one followed, so that the polls of
   * the time every route action takes (the API's take about 1 to 3 s) are not spent. One found ended at
   * the first poll may have ended well before it, so the wait shrinks by a poll interval; one found still
   * running lasted at least `lastedAtLeastMs`, and the wait grows toward that by a quarter of one. So it
   * settles where about one action in five ends before its first poll: that one waits a little past its
   * end, the others are polled as often as before, and the polls of each action's first second or so
   * are saved. Never below the interval: no first poll comes sooner than hcloud's.
   */
  private learnFirstPoll(first: number, interval: number, lastedAtLeastMs: number | undefined): void {
    this.learntFirstPollMs = nextFirstPollMs(first, interval, lastedAtLeastMs);
  }

  private async list<T>(path: string, key: string, filter: { name?: string; labelSelector?: string }): Promise<T[]> {
    const out: T[] = [];
    let page: number | null | undefined = 1;
    while (page) {
      const query = new URLSearchParams({ page: String(page), per_page: "50" });
      if (filter.name !== undefined) query.set("name", filter.name);
      if (filter.labelSelector) query.set("label_selector", filter.labelSelector);
      const body: Page & Record<string, unknown> = await this.call<Page & Record<string, unknown>>("GET", `${path}?${query}`);
      out.push(...((body[key] as T[] | undefined) ?? []));
      page = body.meta?.pagination?.next_page;
    }
    return out;
  }

  /** One call with the retries described at the top; `deadline` bounds the waits for a busy network and the rate limit. */
  private call<T>(method: string, path: string, body?: unknown, deadline = Date.now() + this.actionTimeoutMs): Promise<T> {
    const retries = this.settings.retries ?? 5;
    const min = this.settings.minBackoffMs ?? 500;
    const max = this.settings.maxBackoffMs ?? 8_000;
    let transientSpent = 0;
    let attempt = 0;
    return pRetry(
      async () => {
        if (attempt++ > 0) this.calls.retries++;
        return this.attempt<T>(method, path, body);
      },
      {
        retries: Infinity,
        factor: 2,
        minTimeout: min,
        maxTimeout: max,
        randomize: true,
        shouldRetry: async ({ error }) => {
          if (isBusy(error)) return Date.now() + min <= deadline;
          if (isRateLimited(error)) {
            // p-retry's own backoff follows; the wait for the refill comes first
            const wait = this.rateLimit ? refillDelayMs(this.rateLimit, Date.now()) : 0;
            if (Date.now() + wait > deadline) return false;
            return true;
          }
          return method === "GET" && isTransient(error) && ++transientSpent <= retries;
        },
        onFailedAttempt: ({ error }) => {
          if (isRateLimited(error)) this.settings.calls?.throttled();
        },
        ...(this.settings.signal ? { signal: this.settings.signal } : {}),
      },
    );
  }

  /** Waits while the last answer said the budget is spent, until one request is refilled. */
  private async pace(): Promise<void> {
    const rate = this.rateLimit;
    if (!rate || rate.remaining > 0) return;
    const wait = refillDelayMs(rate, Date.now());
    if (wait > 0) await delay(wait * 1.1 + 10, undefined, this.settings.signal ? { signal: this.settings.signal } : {});
    // one request is spent by this call: the next waits again unless an answer says otherwise
  }

  private async attempt<T>(method: string, path: string, body?: unknown): Promise<T> {
    this.settings.signal?.throwIfAborted();
    await this.pace();
    const call = `${method} ${path.replace(/\?.*$/, "")}`;
    this.calls.requests++;
    const finished = this.settings.calls?.started(callName(method, path));
    let outcome = "ok";
    try {
      const timeout = AbortSignal.timeout(this.settings.requestTimeoutMs ?? 30_000);
      const signal = this.settings.signal ? AbortSignal.any([timeout, this.settings.signal]) : timeout;
      let response: Response;
      try {
        response = await fetch(`${this.base}${path}`, {
          method,
          headers: { Authorization: `Bearer ${this.token}`, Accept: "application/json", ...(body === undefined ? {} : { "Content-Type": "application/json" }), "User-Agent": "podroutes" },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
          signal,
        });
      } catch (error) {
        if ((error as Error)?.name === "TimeoutError" || (error as Error)?.name === "AbortError") throw error;
        throw new HetznerNetworkError(call, error);
      }
      this.readRateLimit(response.headers);
      const text = await response.text();
      if (!response.ok) {
        let parsed: { error?: { code?: string; message?: string; details?: unknown } } = {};
        try {
          parsed = JSON.parse(text) as typeof parsed;
        } catch {
          // not JSON (a proxy's page): the status alone
        }
        throw new HetznerApiError(response.status, parsed.error?.code ?? "", parsed.error?.message ?? `HTTP ${response.status}`, call, parsed.error?.details ?? null);
      }
      return (text ? JSON.parse(text) : {}) as T;
    } catch (error) {
      outcome = error instanceof HetznerApiError ? error.code || String(error.status) : this.settings.signal?.aborted ? "cancelled" : (error as Error)?.name === "TimeoutError" ? "timeout" : "network";
      throw error;
    } finally {
      finished?.(outcome);
    }
  }

  private readRateLimit(headers: Headers): void {
    const limit = Number(headers.get("ratelimit-limit"));
    const remaining = Number(headers.get("ratelimit-remaining"));
    const reset = Number(headers.get("ratelimit-reset"));
    if (headers.has("ratelimit-limit") && headers.has("ratelimit-remaining") && headers.has("ratelimit-reset") && [limit, remaining, reset].every(Number.isFinite)) {
      this.rateLimit = { limit, remaining, resetAt: reset * 1000 };
    }
  }
}

/** The rule of HetznerClient.learnFirstPoll: the next first poll's wait after one action. Pure. */
export function nextFirstPollMs(first: number, interval: number, lastedAtLeastMs: number | undefined): number {
  return lastedAtLeastMs === undefined ? Math.max(interval, first - interval) : Math.max(interval, first, Math.min(first + interval / 4, lastedAtLeastMs));
}

/** The API's name of a call, for metrics: `networks.add_route`, `actions.get`, `servers.list`. */
export function callName(method: string, path: string): string {
  const p = path.replace(/\?.*$/, "");
  if (p === "/networks") return "networks.list";
  if (/^\/networks\/\d+$/.test(p)) return "networks.get";
  const action = p.match(/^\/networks\/\d+\/actions\/(\w+)$/);
  if (action && method === "POST") return `networks.${action[1]}`;
  if (/^\/actions\/\d+$/.test(p) || /^\/networks\/\d+\/actions\/\d+$/.test(p)) return "actions.get";
  if (p === "/servers") return "servers.list";
  return `${method} ${p}`;
}
