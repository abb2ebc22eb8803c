/**
 * A small Compute Engine v1 REST client: exactly the calls podroutes makes (routes list/get/insert/
 * delete, global operations wait, instances aggregated list, project quotas), over Node's http(s) with
 * keep-alive connections.
 * Every call is retried with exponential backoff and jitter (p-retry) on 429, 403 rateLimitExceeded,
 * 5xx, and network errors or timeouts, a bounded number of times; errors that only mean "not yet" (400
 * resourceNotReady: a network just created; 403 CONCURRENT_OPERATIONS_QUOTA_EXCEEDED: the project's
 * operations in flight) are retried, with the same backoff, until the operation deadline instead, as
 * Google's Terraform provider does. Any other error is final.
 *
 * Writes (route inserts and deletes) started in the same turn of the event loop go out together in one
 * batch request (batch.ts), at most `batchCalls` in one: a burst of 200 writes is then two HTTP requests,
 * not 200, which is what a burst costs the client's CPU (each inner call still counts against the
 * project's quota, and `calls.requests` counts it). Each write gets its own part's answer and is retried
 * on its own as any call; a batch that fails whole (network, timeout, 429, 5xx) is retried whole, its
 * requestIds unchanged. A lone write, or every write once the endpoint refused a batch (404, 400), is
 * its own request.
 * Operations are awaited with `globalOperations.wait`, which the API holds for up to about 2 minutes
 * and may answer early, still RUNNING: the wait loop gives each call more time than the API holds it,
 * paces re-calls, and stops at a deadline of its own (an hour, as the Kubernetes route controller's).
 * Operations pending together are confirmed together: one wait on the newest, then one list of the DONE
 * operations their requestIds name (every call counts against the project's API quota). Each write
 * carries a requestId, so a retried write whose answer was lost gets the first one's operation back.
 * Authentication: a bearer token from `--access-token-file` or Google's own library (Application
 * Default Credentials), imported lazily.
 */
import { randomUUID } from "node:crypto";
import { Agent as HttpAgent, request as httpRequest, type OutgoingHttpHeaders } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { readFile } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import { performance } from "node:perf_hooks";
import pRetry from "p-retry";
import { UsageError } from "../../errors.js";
import { httpUrl, readOption, wholeNumber, type CallObserver, type OptionSpec } from "../../options.js";
import { decodeBatch, encodeBatch, MAX_BATCH_CALLS, type PartAnswer } from "./batch.js";

export const DEFAULT_COMPUTE_ENDPOINT = "https://compute.googleapis.com/compute/v1/";

/**
 * Writes in one batch request at most, by default: the controller's 200 in flight go as two requests.
 * Well under the API's 1,000, so a batch that fails whole (and is retried whole) holds few writes, and
 * the server's answer to one is not held up by hundreds of others.
 */
export const DEFAULT_BATCH_CALLS = 100;

export interface ComputeSettings {
  project: string;
  /** Base URL ending in `/compute/v1/`. */
  endpoint: string;
  accessTokenFile?: string;
  /** Per-request time limit; a timed-out call is retried. */
  requestTimeoutMs?: number;
  /** Time limit of one `wait` call: longer than the API holds it (about 2 minutes). */
  waitTimeoutMs?: number;
  /** How long an operation (and a write waiting for room to start one) may take in all. */
  operationTimeoutMs?: number;
  /** Retries per call after the first attempt. */
  retries?: number;
  /** First backoff delay (and pause before re-calling an unfinished wait); doubles each retry, randomized (jitter). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Writes sent together in one batch request at most (1: each write its own request). */
  batchCalls?: number;
  env?: NodeJS.ProcessEnv;
  /** Aborts every call in flight and refuses new ones (a controller's leadership ended). */
  signal?: AbortSignal;
  calls?: CallObserver;
}

export interface ComputeRoute {
  name: string;
  description?: string;
  network: string;
  destRange: string;
  priority?: number;
  nextHopIp?: string;
  nextHopInstance?: string;
  nextHopGateway?: string;
  nextHopNetwork?: string;
  nextHopVpnTunnel?: string;
  nextHopPeering?: string;
  nextHopIlb?: string;
  tags?: string[];
  selfLink?: string;
}

export interface ComputeInstance {
  name: string;
  zone: string;
  status?: string;
  canIpForward?: boolean;
  networkInterfaces?: { network?: string; networkIP?: string; ipv6Address?: string }[];
  metadata?: { items?: { key: string; value?: string }[] };
  tags?: { items?: string[] };
  labels?: Record<string, string>;
  selfLink: string;
}

interface Operation {
  name: string;
  status: string;
  /** The write's requestId, when it carried one. */
  clientOperationId?: string;
  error?: { errors?: { code?: string; message?: string }[] };
  httpErrorStatusCode?: number;
}

/** An error answered by the API (or a failed operation): HTTP status, first reason, message, ErrorInfo reasons. */
export class ComputeError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    /** `error.details[]` ErrorInfo reasons (`CONCURRENT_OPERATIONS_QUOTA_EXCEEDED`), the API's precise cause. */
    readonly infoReasons: string[] = [],
  ) {
    super(message);
    this.name = "ComputeError";
  }
}

/** A call whose connection failed (refused, reset, closed mid-answer): the socket's error is its cause. */
export class ComputeNetworkError extends Error {
  constructor(what: string, cause: unknown) {
    super(`${what}: the connection failed`, { cause });
    this.name = "ComputeNetworkError";
  }
}

/** An API error body: `{"error": {"code", "message", "errors": [{"reason"}], "details": [{"@type", "reason"}]}}`. */
export function computeErrorFrom(status: number, text: string): ComputeError {
  try {
    const parsed = JSON.parse(text) as { error?: { message?: string; errors?: { reason?: string }[]; details?: { "@type"?: string; reason?: string }[] } };
    const infoReasons = (parsed.error?.details ?? []).filter((d) => d["@type"]?.endsWith("google.rpc.ErrorInfo") && d.reason).map((d) => d.reason!);
    return new ComputeError(status, parsed.error?.errors?.[0]?.reason ?? "", parsed.error?.message ?? `HTTP ${status}`, infoReasons);
  } catch {
    return new ComputeError(status, "", `HTTP ${status}`); // not JSON (a proxy's page): keep the status
  }
}

/**
 * Errors that mean "not yet" rather than "too fast": a resource the call needs is still being created,
 * or the project has as many operations in flight as its quota allows. Waiting is the remedy, for as
 * long as it takes, so they are retried until the operation deadline rather than a number of times.
 */
export function waitsForCapacity(error: unknown): boolean {
  if (!(error instanceof ComputeError)) return false;
  if (error.status === 400 && error.reason === "resourceNotReady") return true;
  return error.status === 403 && error.infoReasons.includes("CONCURRENT_OPERATIONS_QUOTA_EXCEEDED");
}

/** Whether the API pushed back on the rate of calls (429, 403 rateLimitExceeded): a signal to slow down. */
export function isThrottle(error: unknown): boolean {
  if (!(error instanceof ComputeError)) return false;
  return error.status === 429 || (error.status === 403 && (error.reason === "rateLimitExceeded" || error.reason === "userRateLimitExceeded"));
}

/** Whether a failure is worth another attempt: throttling, server trouble, the network, "not yet". */
export function isRetryable(error: unknown): boolean {
  if (error instanceof ComputeError) return isThrottle(error) || error.status >= 500 || waitsForCapacity(error);
  if (!(error instanceof Error)) return false;
  // A request that timed out, or the connection failed; never a bug of ours, which would fail the same way again.
  return error.name === "TimeoutError" || error instanceof ComputeNetworkError;
}

/** The API's own words for an error, for results and messages. */
export function computeErrorText(error: unknown): string {
  if (error instanceof ComputeError) return `${error.message} (${error.status}${error.reason ? ` ${error.reason}` : ""})`;
  if (error instanceof Error) return error.cause instanceof Error ? `${error.message}: ${error.cause.message}` : error.message;
  return String(error);
}

export interface ComputeApi {
  readonly project: string;
  /** The URL of a network of the project, as routes name it. */
  networkUrl(network: string): string;
  listRoutes(filter?: string): Promise<ComputeRoute[]>;
  getRoute(name: string): Promise<ComputeRoute | undefined>;
  /** Inserts and waits for the operation; throws ComputeError (409 alreadyExists, quota, ...). */
  insertRoute(route: ComputeRoute): Promise<void>;
  /** Deletes and waits; false when the route did not exist (404). */
  deleteRoute(name: string): Promise<boolean>;
  listInstances(filter?: string): Promise<ComputeInstance[]>;
  quota(metric: string): Promise<{ limit: number; usage: number } | undefined>;
  /**
   * Calls made, retries included (for benchmarks and tests): `requests` counts every API call, each
   * call inside a batch too (each counts against the quota); `httpRequests` the HTTP requests they took.
   */
  readonly calls: { requests: number; retries: number; httpRequests: number };
  /** Calls `listener` each time the API throttles a call (which is then retried): how targets pace their writes. */
  onThrottle?(listener: () => void): void;
}

type TokenSource = () => Promise<string>;

async function tokenSource(settings: ComputeSettings): Promise<TokenSource> {
  if (settings.accessTokenFile) {
    const file = settings.accessTokenFile;
    let token: string;
    try {
      token = (await readFile(file, "utf8")).trim();
    } catch (error) {
      throw new UsageError(`--access-token-file ${file}: cannot read it: ${(error as Error).message}`, { flag: "--access-token-file", cause: error });
    }
    if (!token) throw new UsageError(`--access-token-file ${file}: the file is empty`, { flag: "--access-token-file" });
    return async () => token;
  }
  // Application Default Credentials: a service-account key, gcloud's user credentials, or GCE metadata.
  const { GoogleAuth } = await import("google-auth-library");
  const auth = new GoogleAuth({ scopes: ["https://www.googleapis.com/auth/compute"] });
  return async () => {
    try {
      const token = await auth.getAccessToken();
      if (!token) throw new Error("no access token");
      return token;
    } catch (error) {
      throw new Error(
        `gcp: no credentials (${(error as Error).message}); run \`gcloud auth application-default login\`, set GOOGLE_APPLICATION_CREDENTIALS, or pass --access-token-file`,
        { cause: error },
      );
    }
  };
}

export async function createCompute(settings: ComputeSettings): Promise<ComputeApi> {
  const token = await tokenSource(settings);
  return new ComputeClient(settings, token);
}

/** A write's operation awaiting confirmation, with the wave its requestId names. */
interface PendingOperation {
  op: Operation;
  wave: string;
  deadline: number;
  resolve(op: Operation): void;
  reject(error: unknown): void;
}

/** A write waiting for the end of this turn of the event loop, to go out in a batch with the others. */
interface QueuedWrite {
  method: string;
  url: string;
  authorization: string;
  body: string | undefined;
  resolve(answer: PartAnswer): void;
  reject(error: unknown): void;
}

/** `xxxxxxxx-xxxx-`: the part of a requestId (a UUID) that names its wave (hex and dashes: a regex as it is). */
const WAVE_PREFIX_LENGTH = 14;
const newWave = () => randomUUID().slice(0, WAVE_PREFIX_LENGTH);

class ComputeClient implements ComputeApi {
  readonly project: string;
  private readonly base: string;
  readonly calls = { requests: 0, retries: 0, httpRequests: 0 };
  private readonly throttleListeners: (() => void)[] = [];
  /** Operations awaited, in the order they started; confirmWaves runs while there are any. */
  private readonly pending = new Map<string, PendingOperation>();
  private confirming = false;
  private wave = newWave();
  /** The API refused the operations filter: each operation gets its own waits. */
  private filterRefused = false;
  /** Insert and delete calls awaiting their answer (not those waiting to be retried). */
  private writesOnWire = 0;
  private readonly wireQuiet: (() => void)[] = [];
  /** Writes of this turn of the event loop, sent together when it ends (or when a batch is full). */
  private batchQueue: QueuedWrite[] = [];
  private batchScheduled = false;
  /** The endpoint refused a batch request (404, 400): each write is its own request from then on. */
  private batchRefused = false;
  private readonly batchCalls: number;
  private readonly batchUrl: string;
  /** Errors whose retries were already spent on a batch retried whole: the write is not retried again. */
  private readonly retriesSpent = new WeakSet<object>();
  /** Connections kept open between calls: a burst of writes reuses them instead of a handshake each. */
  private readonly agent: HttpAgent;
  private readonly send: typeof httpRequest;

  constructor(
    private readonly settings: ComputeSettings,
    private readonly token: TokenSource,
  ) {
    this.project = settings.project;
    this.base = settings.endpoint.endsWith("/") ? settings.endpoint : `${settings.endpoint}/`;
    const tls = this.base.startsWith("https:");
    this.agent = tls ? new HttpsAgent({ keepAlive: true }) : new HttpAgent({ keepAlive: true });
    this.send = tls ? httpsRequest : httpRequest;
    this.batchCalls = Math.min(settings.batchCalls ?? DEFAULT_BATCH_CALLS, MAX_BATCH_CALLS);
    // The API's batchPath, beside its servicePath: `.../compute/v1/` → `.../batch/compute/v1`.
    this.batchUrl = new URL("../../batch/compute/v1", this.base).href;
  }

  networkUrl(network: string): string {
    return `${this.base}projects/${this.project}/global/networks/${network}`;
  }

  onThrottle(listener: () => void): void {
    this.throttleListeners.push(listener);
  }

  private url(path: string, query: Record<string, string | undefined> = {}): string {
    const url = new URL(`projects/${this.project}${path}`, this.base);
    for (const [key, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(key, value);
    return url.href;
  }

  /** One request, no retry; `timeoutMs` overrides the per-request time limit. A write may go in a batch. */
  private async attempt<T>(method: string, url: string, body?: unknown, timeoutMs = this.requestTimeoutMs): Promise<T> {
    const authorization = `Bearer ${await this.token()}`;
    this.settings.signal?.throwIfAborted();
    this.calls.requests++;
    const finished = this.settings.calls?.started(callName(method, url));
    const write = method !== "GET" && !url.includes("/global/operations/");
    const json = body === undefined ? undefined : JSON.stringify(body);
    let outcome: string | undefined;
    if (write) this.writesOnWire++;
    try {
      const { status, text } =
        write && this.batching
          ? await new Promise<PartAnswer>((resolve, reject) => this.enqueueWrite({ method, url, authorization, body: json, resolve, reject }))
          : await this.exchange(method, url, authorization, json, this.callSignal(timeoutMs));
      const ok = status >= 200 && status < 300;
      outcome = ok ? "ok" : String(status);
      if (!ok) throw computeErrorFrom(status, text);
      return (text ? JSON.parse(text) : {}) as T;
    } catch (error) {
      outcome ??= error instanceof ComputeError ? String(error.status) : this.settings.signal?.aborted ? "cancelled" : (error as Error)?.name === "TimeoutError" ? "timeout" : "network";
      throw error;
    } finally {
      finished?.(outcome!);
      if (write && --this.writesOnWire === 0) for (const resolve of this.wireQuiet.splice(0)) resolve();
    }
  }

  private get requestTimeoutMs(): number {
    return this.settings.requestTimeoutMs ?? 60_000;
  }

  /** A request's signal: its time limit, and the client's own abort. */
  private callSignal(timeoutMs: number): AbortSignal {
    const timeout = AbortSignal.timeout(timeoutMs);
    return this.settings.signal ? AbortSignal.any([timeout, this.settings.signal]) : timeout;
  }

  private get batching(): boolean {
    return this.batchCalls > 1 && !this.batchRefused;
  }

  /**
   * Queues a write for this turn's batch; a full batch goes at once, the rest once the promise callbacks
   * now running are done (process.nextTick runs after them): every write a burst of results lets start is
   * in it, and it leaves before work those results deferred to later callbacks (a controller's condition
   * patches, setImmediate), as the writes did when each was its own request.
   */
  private enqueueWrite(write: QueuedWrite): void {
    this.batchQueue.push(write);
    if (this.batchQueue.length >= this.batchCalls) void this.sendWrites(this.batchQueue.splice(0, this.batchCalls));
    else if (!this.batchScheduled) {
      this.batchScheduled = true;
      process.nextTick(() => {
        this.batchScheduled = false;
        const writes = this.batchQueue.splice(0);
        if (writes.length) void this.sendWrites(writes);
      });
    }
  }

  /**
   * Sends queued writes: one alone (or every one, once batches were refused) as its own request, several
   * as one batch request, retried whole (the same parts, so the same requestIds) while it fails whole.
   * Each write then gets its own part's answer; a part the answer lacks fails as a lost answer would.
   */
  private async sendWrites(writes: QueuedWrite[]): Promise<void> {
    if (writes.length === 1 || this.batchRefused) {
      for (const w of writes) this.exchange(w.method, w.url, w.authorization, w.body, this.callSignal(this.requestTimeoutMs)).then(w.resolve, w.reject);
      return;
    }
    const boundary = `batch_${randomUUID()}`;
    const payload = encodeBatch(
      writes.map((w, i) => {
        const { pathname, search } = new URL(w.url);
        return { id: String(i), method: w.method, path: pathname + search, ...(w.body === undefined ? {} : { body: w.body }) };
      }),
      boundary,
    );
    let answers: Map<string, PartAnswer> | "refused";
    try {
      answers = await this.withRetries(
        async () => {
          const answer = await this.exchange("POST", this.batchUrl, writes[0]!.authorization, payload, this.callSignal(this.requestTimeoutMs), `multipart/mixed; boundary=${boundary}`);
          if (answer.status === 404 || answer.status === 400) return "refused" as const;
          if (answer.status < 200 || answer.status >= 300) throw computeErrorFrom(answer.status, answer.text);
          return decodeBatch(answer.contentType, answer.text);
        },
        () => {
          // Every call of the batch is sent again, and counts again.
          this.calls.requests += writes.length;
          this.calls.retries += writes.length;
        },
      );
    } catch (error) {
      if (error !== null && typeof error === "object") this.retriesSpent.add(error);
      for (const w of writes) w.reject(error);
      return;
    }
    if (answers === "refused") {
      this.batchRefused = true;
      return this.sendWrites(writes);
    }
    for (const [i, w] of writes.entries()) {
      const answer = answers.get(String(i));
      if (answer) w.resolve(answer);
      else w.reject(new ComputeNetworkError(`${w.method} ${new URL(w.url).pathname}`, new Error("the batch answer has no part for this call")));
    }
  }

  /**
   * One HTTP exchange over the client's keep-alive connections: the status and the body as text. Node's
   * `http.request` rather than `fetch`: at 200 calls in flight fetch's streams and per-request objects
   * cost the client about 0.6 ms of CPU a call (a CPU profile of 1,000 route inserts), which is the time
   * each wave of inserts takes to leave. A failed connection is a ComputeNetworkError; an abort or a
   * timeout rejects with the signal's own reason, as fetch did.
   */
  private exchange(method: string, url: string, authorization: string, body: string | undefined, signal: AbortSignal, contentType = "application/json"): Promise<{ status: number; text: string; contentType: string }> {
    return new Promise((resolve, reject) => {
      const fail = (error: unknown) => reject(signal.aborted ? signal.reason : new ComputeNetworkError(`${method} ${new URL(url).pathname}`, error));
      const headers: OutgoingHttpHeaders = { authorization, accept: "application/json" };
      if (body !== undefined) {
        headers["content-type"] = contentType;
        headers["content-length"] = Buffer.byteLength(body);
      }
      const request = this.send(url, { method, headers, agent: this.agent, signal }, (response) => {
        response.setEncoding("utf8");
        let text = "";
        response.on("data", (chunk: string) => (text += chunk));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, text, contentType: response.headers["content-type"] ?? "" }));
        response.on("error", fail); // also a connection closed mid-answer (ECONNRESET "aborted")
      });
      request.on("error", fail);
      this.calls.httpRequests++;
      request.end(body);
    });
  }

  /** Resolves when no write call is on the wire, or after `limitMs`: a burst's operations are all known then. */
  private async writesAnswered(limitMs: number): Promise<void> {
    if (this.writesOnWire === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([new Promise<void>((resolve) => this.wireQuiet.push(resolve)), new Promise<void>((resolve) => (timer = setTimeout(resolve, limitMs)))]);
    clearTimeout(timer);
  }

  private throttled(): void {
    this.settings.calls?.throttled();
    for (const listener of this.throttleListeners) listener();
  }

  /**
   * One call with retries: `retries` times for throttling, server and network errors; until the
   * operation deadline for errors that wait for capacity. Token errors are final.
   */
  private async call<T>(method: string, url: string, body?: unknown): Promise<T> {
    return this.withRetries(
      () => this.attempt<T>(method, url, body),
      () => this.calls.retries++,
    );
  }

  /** Runs `run` again, with backoff, while it fails in a way worth another attempt (see call); `retried` counts each. */
  private withRetries<T>(run: () => Promise<T>, retried: () => void): Promise<T> {
    const retries = this.settings.retries ?? 8;
    let counted = 0;
    return pRetry(run, {
      retries: Infinity,
      maxRetryTime: this.operationTimeoutMs,
      factor: 2,
      minTimeout: this.minPause,
      maxTimeout: this.maxPause,
      randomize: true,
      shouldRetry: ({ error }) => {
        const again = !this.retriesSpent.has(error) && isRetryable(error) && (waitsForCapacity(error) || ++counted <= retries);
        if (again) retried();
        return again;
      },
      onFailedAttempt: ({ error }) => {
        if (isThrottle(error)) this.throttled();
      },
      ...(this.settings.signal ? { signal: this.settings.signal } : {}),
    });
  }

  private async list<T>(path: string, filter: string | undefined, collect: (page: any) => T[]): Promise<T[]> {
    const out: T[] = [];
    let pageToken: string | undefined;
    do {
      const page = await this.call<any>("GET", this.url(path, { filter, maxResults: "500", pageToken }));
      out.push(...collect(page));
      pageToken = page.nextPageToken;
    } while (pageToken);
    return out;
  }

  listRoutes(filter?: string): Promise<ComputeRoute[]> {
    return this.list("/global/routes", filter, (page) => (page.items ?? []) as ComputeRoute[]);
  }

  async getRoute(name: string): Promise<ComputeRoute | undefined> {
    try {
      return await this.call<ComputeRoute>("GET", this.url(`/global/routes/${name}`));
    } catch (error) {
      if (error instanceof ComputeError && error.status === 404) return undefined;
      throw error;
    }
  }

  /**
   * Waits for one global operation until DONE or the operation deadline, and returns it DONE. Each
   * `wait` call may take longer than other requests (the API holds it up to about 2 minutes) and may
   * come back early, still RUNNING; a failed call (timeout, 429, 5xx) is just another early return.
   * The next call starts no sooner than a pause after the previous one started, the pause doubling
   * (with jitter) up to the longest backoff: a server answering at once is not called in a tight loop.
   * Used for every operation once the API refused the operations filter (confirmWaves).
   */
  private async waitOne(operation: Operation): Promise<Operation> {
    const deadline = performance.now() + this.operationTimeoutMs;
    let op = operation;
    for (let pause = this.minPause; op.status !== "DONE"; pause = Math.min(pause * 2, this.maxPause)) {
      if (deadline - performance.now() <= 0) throw this.timedOut(op);
      const started = performance.now();
      op = (await this.waitCall(op, deadline)) ?? op;
      if (op.status === "DONE") break;
      await this.pauseAfter(started, pause, deadline);
    }
    return op;
  }

  private get operationTimeoutMs(): number {
    return this.settings.operationTimeoutMs ?? 3_600_000;
  }
  private get minPause(): number {
    return this.settings.minBackoffMs ?? 500;
  }
  private get maxPause(): number {
    return this.settings.maxBackoffMs ?? 32_000;
  }

  private timedOut(op: Operation): ComputeError {
    return new ComputeError(408, "operationTimeout", `operation ${op.name} is still ${op.status} after ${Math.round(this.operationTimeoutMs / 1000)} s; it may yet finish: re-run plan to see`);
  }

  /** One `wait` call; undefined when it failed in a way worth another call (an early return, in effect). */
  private async waitCall(op: Operation, deadline: number): Promise<Operation | undefined> {
    try {
      return await this.attempt<Operation>("POST", this.url(`/global/operations/${op.name}/wait`), undefined, Math.ceil(Math.min(this.settings.waitTimeoutMs ?? 150_000, deadline - performance.now())));
    } catch (error) {
      if (!isRetryable(error) || this.settings.signal?.aborted) throw error;
      this.calls.retries++;
      if (isThrottle(error)) this.throttled();
      return undefined;
    }
  }

  /** Sleeps what is left of `pause` (randomized upwards) since `started`, never past the deadline. */
  private async pauseAfter(started: number, pause: number, deadline: number): Promise<void> {
    const rest = pause * (1 + Math.random()) - (performance.now() - started);
    if (rest > 0) await delay(Math.min(rest, Math.max(0, deadline - performance.now())), undefined, this.settings.signal ? { signal: this.settings.signal } : {});
  }

  /**
   * A write's operation, DONE, its error thrown. Operations pending together are confirmed together
   * (confirmWaves), not with one `wait` each: a join of 1,000 nodes then costs a few calls beyond its
   * 1,000 inserts instead of 1,000 more, and every call counts against the project's API quota.
   */
  private async finish(op: Operation, requestId: string): Promise<void> {
    let done = op;
    if (op.status !== "DONE") {
      done = this.filterRefused
        ? await this.waitOne(op)
        : await new Promise<Operation>((resolve, reject) => {
            this.pending.set(op.name, { op, wave: requestId.slice(0, WAVE_PREFIX_LENGTH), deadline: performance.now() + this.operationTimeoutMs, resolve, reject });
            if (!this.confirming) void this.confirmWaves();
          });
    }
    const first = done.error?.errors?.[0];
    if (first) throw new ComputeError(done.httpErrorStatusCode ?? 400, first.code ?? "", first.message ?? "operation failed");
  }

  /**
   * Confirms every pending operation, a wave at a time: one `wait` on the newest pending operation (held
   * by the API until it is DONE), then, when others are pending, one list of the DONE operations whose
   * requestId carries the prefix of a pending wave (`clientOperationId`; the wave changes with each
   * list, so a list covers only operations still awaited and the few of their wave). Operations started
   * together finish together, so a wave of 200 inserts is confirmed by about two calls. Each cycle
   * settles at least the operation it waited on; an early answer pauses as `waitOne` does. An API that
   * refuses the filter (400) or has no list (404) gets one `wait` per operation from then on, every
   * pending operation's at once (they are at most the writes in flight).
   */
  private async confirmWaves(): Promise<void> {
    this.confirming = true;
    try {
      await this.confirmEach();
    } catch (error) {
      for (const entry of this.pending.values()) entry.reject(error); // a bug of ours: fail the writes, never hang them
      this.pending.clear();
    } finally {
      this.confirming = false; // in the same turn as the loop's last look at `pending`: nothing is missed
    }
  }

  private async confirmEach(): Promise<void> {
    let pause = this.minPause;
    while (this.pending.size) {
      const now = performance.now();
      for (const [name, entry] of this.pending) {
        if (this.settings.signal?.aborted) entry.reject(this.settings.signal.reason);
        else if (entry.deadline <= now) entry.reject(this.timedOut(entry.op));
        else continue;
        this.pending.delete(name);
      }
      if (this.filterRefused) {
        for (const entry of this.pending.values()) this.waitOne(entry.op).then(entry.resolve, entry.reject);
        this.pending.clear();
        break;
      }
      // The newest of a burst finishes last: wait on it once every write of the burst has its operation.
      await this.writesAnswered(this.minPause);
      const newest = [...this.pending.values()].at(-1);
      if (!newest) break;
      const started = performance.now();
      let answer: Operation | undefined;
      try {
        answer = await this.waitCall(newest.op, newest.deadline);
      } catch (error) {
        this.pending.delete(newest.op.name);
        newest.reject(error);
        continue;
      }
      if (answer?.status === "DONE") {
        this.pending.delete(newest.op.name);
        // Settled after the list, with the operations it finds: the writes their callers start next then
        // leave together, in as few batch requests (and connections) as they fill, not one of them alone.
        if (this.pending.size) await this.confirmListed();
        newest.resolve(answer);
        pause = this.minPause;
        continue;
      }
      await this.pauseAfter(started, pause, newest.deadline).catch(() => {});
      pause = Math.min(pause * 2, this.maxPause);
    }
  }

  /** Lists the DONE operations of the pending waves and settles those it finds; a new wave starts. */
  private async confirmListed(): Promise<void> {
    const waves = [...new Set([...this.pending.values()].map((entry) => entry.wave))];
    this.wave = newWave();
    let listed: Operation[];
    try {
      listed = await this.list("/global/operations", `(clientOperationId eq "(${waves.join("|")}).*") (status eq "DONE")`, (page) => (page.items ?? []) as Operation[]);
    } catch (error) {
      // A filter the API does not take (400), or no operations list at all (404: emulators, proxies): one
      // wait per operation from then on, all at once. Anything else: the next cycle waits again.
      if (error instanceof ComputeError && (error.status === 400 || error.status === 404)) this.filterRefused = true;
      return;
    }
    // An API that ignored the filter would answer every operation of the project: never ask it again.
    if (listed.some((op) => op.status !== "DONE" || !waves.some((wave) => op.clientOperationId?.startsWith(wave)))) this.filterRefused = true;
    for (const op of listed) {
      const entry = this.pending.get(op.name);
      if (!entry || op.status !== "DONE") continue;
      this.pending.delete(op.name);
      entry.resolve(op);
    }
  }

  /** A requestId for a write: a UUID whose first groups name the current wave. */
  private requestId(): string {
    return `${this.wave}${randomUUID().slice(WAVE_PREFIX_LENGTH)}`;
  }

  async insertRoute(route: ComputeRoute): Promise<void> {
    // The requestId makes a retried insert (its answer lost) return the first one's operation, not a 409.
    const requestId = this.requestId();
    await this.finish(await this.call<Operation>("POST", this.url("/global/routes", { requestId }), route), requestId);
  }

  async deleteRoute(name: string): Promise<boolean> {
    const requestId = this.requestId();
    let op: Operation;
    try {
      op = await this.call<Operation>("DELETE", this.url(`/global/routes/${name}`, { requestId }));
    } catch (error) {
      if (error instanceof ComputeError && error.status === 404) return false;
      throw error;
    }
    await this.finish(op, requestId);
    return true;
  }

  listInstances(filter?: string): Promise<ComputeInstance[]> {
    return this.list("/aggregated/instances", filter, (page) =>
      Object.values((page.items ?? {}) as Record<string, { instances?: ComputeInstance[] }>).flatMap((scope) => scope.instances ?? []),
    );
  }

  async quota(metric: string): Promise<{ limit: number; usage: number } | undefined> {
    const project = await this.call<{ quotas?: { metric: string; limit: number; usage: number }[] }>("GET", this.url(""));
    const found = project.quotas?.find((q) => q.metric === metric);
    return found ? { limit: found.limit, usage: found.usage } : undefined;
  }
}

/** Flags the GCP target and node source share (one option each on the command line). */
export const projectOption: OptionSpec<string> = {
  flags: "--project <id>",
  description: "gcp: project id",
  env: "CLOUDSDK_CORE_PROJECT",
  required: "the GCP project (as gcloud's --project)",
  parse: (text) => {
    if (!/^[a-z][-a-z0-9:.]{4,61}[a-z0-9]$/.test(text)) throw new Error("not a project id");
    return text;
  },
};
export const computeEndpointOption: OptionSpec<string> = {
  flags: "--compute-endpoint <url>",
  description: "gcp: Compute Engine API base URL (as gcloud's override)",
  env: "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE",
  default: DEFAULT_COMPUTE_ENDPOINT,
  parse: httpUrl,
};
export const accessTokenFileOption: OptionSpec<string> = {
  flags: "--access-token-file <path>",
  description: "gcp: file holding an OAuth access token (default: Application Default Credentials)",
  env: "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
};

/** `--compute-batch`: how many writes go in one batch request at most; 1 turns batching off. */
export const batchCallsOption: OptionSpec<number> = {
  flags: "--compute-batch <n>",
  description: `gcp: route writes started together go in one batch request of at most this many calls (each still one call of the quota; 1: each write its own request; 1-${MAX_BATCH_CALLS})`,
  default: String(DEFAULT_BATCH_CALLS),
  parse: wholeNumber(1, MAX_BATCH_CALLS),
};

/**
 * The VPC network: where `--target gcp` writes routes (there it is required), and whose interface gives
 * `--nodes gcp` a node's IP.
 */
export const networkOption: OptionSpec<string> = {
  flags: "--network <name>",
  description: "gcp: VPC network (the routes' network; the interface a node's IP is read from)",
  parse: (text) => {
    if (!/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(text)) throw new Error("not a network name");
    return text;
  },
};

/** A network interface of an instance on `network` (a name), if it has one. */
export function interfaceOn(instance: ComputeInstance, network: string): { network?: string; networkIP?: string; ipv6Address?: string } | undefined {
  return instance.networkInterfaces?.find((nic) => nic.network?.replace(/\/+$/, "").split("/").pop() === network);
}

/** Compute settings from resolved CLI options; a bad or missing flag is a UsageError naming it. */
export function computeSettingsFrom(options: Record<string, unknown> & { env?: NodeJS.ProcessEnv; signal?: AbortSignal; calls?: CallObserver }): ComputeSettings {
  const accessTokenFile = readOption(accessTokenFileOption, options);
  return {
    project: readOption(projectOption, options)!,
    endpoint: readOption(computeEndpointOption, options)!,
    batchCalls: readOption(batchCallsOption, options)!,
    ...(accessTokenFile ? { accessTokenFile } : {}),
    ...(options.env ? { env: options.env } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.calls ? { calls: options.calls } : {}),
  };
}

/** The API's name for a call (`routes.insert`, `globalOperations.wait`), for metrics. */
export function callName(method: string, url: string): string {
  const path = new URL(url).pathname.replace(/^.*\/projects\/[^/]+/, "");
  if (path === "") return "projects.get";
  if (path === "/global/operations") return "globalOperations.list";
  if (path.startsWith("/global/operations/")) return "globalOperations.wait";
  if (path === "/aggregated/instances") return "instances.aggregatedList";
  if (path === "/global/routes") return method === "POST" ? "routes.insert" : "routes.list";
  if (path.startsWith("/global/routes/")) return method === "DELETE" ? "routes.delete" : "routes.get";
  return `${method} ${path}`;
}
