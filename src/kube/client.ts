/**
 * A thin Kubernetes API client over `node:https`/`node:http` with a keep-alive agent: JSON requests and
 * watch streams, nothing generated. Chosen over @kubernetes/client-node because the 2.x line does not load
 * on Node 20 and 1.4.0's informer stops for good on any error but 410 and has no working watch timeout
 * (issue 9 has the evidence); the list-and-watch loop lives in kube/reflector.ts.
 *
 * Every failure is a KubeApiError with the HTTP code, the Status reason and message (or a network, timeout
 * or decode failure), so callers decide on types, never on message text. A 401 makes the credential source
 * forget what it cached (a rotated token file, an expired exec credential) and the request is sent once more.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type RequestOptions } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { createSecureContext } from "node:tls";
import { PodroutesError } from "../errors.js";
import type { CallObserver } from "../options.js";
import { credentialSource, type CredentialSource, type Credentials } from "./credentials.js";
import type { Connection } from "./kubeconfig.js";

/** The API's error body (`kind: Status`). */
export interface KubeStatus {
  kind: "Status";
  apiVersion: "v1";
  status: "Failure" | "Success";
  message?: string;
  reason?: string;
  code?: number;
  details?: { name?: string; kind?: string; group?: string; causes?: { reason?: string; message?: string; field?: string }[]; retryAfterSeconds?: number };
  metadata?: Record<string, unknown>;
}

/** What went wrong, as a word a loop can act on and a metric can count. */
export type ApiFailure =
  | "expired" // 410: a resourceVersion or continue token older than the server keeps
  | "too-large" // 504 with the cause ResourceVersionTooLarge: a resourceVersion newer than the server's (its etcd went back)
  | "unauthorized" // 401
  | "forbidden" // 403
  | "not-found" // 404
  | "conflict" // 409
  | "invalid" // 400, 422
  | "throttled" // 429
  | "server" // 5xx
  | "client" // any other 4xx
  | "network" // no HTTP answer: refused, reset, TLS
  | "timeout" // no answer in time, or a watch silent for too long
  | "decode"; // an answer that is not the JSON it should be

export class KubeApiError extends PodroutesError {
  readonly kind = "target" as const;
  constructor(
    message: string,
    /** HTTP status code; undefined when no answer came. */
    readonly code: number | undefined,
    /** The Status reason (`Expired`, `Forbidden`, `Conflict`), or our own word for network failures. */
    readonly reason: string,
    readonly status?: KubeStatus,
    options?: { cause?: unknown; failure?: ApiFailure },
  ) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = "KubeApiError";
    this.failure = options?.failure ?? failureOf(code, reason);
  }
  readonly failure: ApiFailure;
}

function failureOf(code: number | undefined, reason: string): ApiFailure {
  if (code === undefined) return reason === "Timeout" ? "timeout" : "network";
  if (code === 410 || reason === "Expired" || reason === "Gone") return "expired";
  const byCode: Record<number, ApiFailure> = { 400: "invalid", 401: "unauthorized", 403: "forbidden", 404: "not-found", 409: "conflict", 422: "invalid", 429: "throttled", 504: "timeout" };
  return byCode[code] ?? (code >= 500 ? "server" : "client");
}

/** The error a Status object describes (an HTTP error body or a watch ERROR event). */
export function errorFromStatus(status: unknown, fallbackCode: number | undefined, what: string): KubeApiError {
  const s = (typeof status === "object" && status !== null ? status : {}) as Partial<KubeStatus>;
  const code = typeof s.code === "number" ? s.code : fallbackCode;
  const reason = typeof s.reason === "string" && s.reason ? s.reason : code ? `HTTP${code}` : "Unknown";
  const message = typeof s.message === "string" && s.message ? s.message : `${reason}`;
  return new KubeApiError(`${what}: ${code ?? ""} ${message}`.replace(/: {2}/, ": "), code, reason, s.kind === "Status" ? (s as KubeStatus) : undefined, isTooLargeResourceVersion(s, code, message) ? { failure: "too-large" } : undefined);
}

/**
 * "Too large resource version", as client-go's isTooLargeResourceVersionError reads it: a 504 Timeout
 * whose causes say ResourceVersionTooLarge, or (servers before the cause existed) whose message says so.
 */
function isTooLargeResourceVersion(status: Partial<KubeStatus>, code: number | undefined, message: string): boolean {
  if (code !== 504) return false;
  if (status.details?.causes?.some((cause) => cause?.reason === "ResourceVersionTooLarge")) return true;
  return message.includes("Too large resource version");
}

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";

export interface WatchEvent<T = unknown> {
  type: WatchEventType;
  object: T;
}

export interface RequestOptionsArg {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  /** Default `application/json`; patches name their type (`application/strategic-merge-patch+json`). */
  contentType?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Handed a 2xx answer's text before it is parsed (a list reads its continue token there, to ask for the next page sooner). */
  beforeParse?: (text: string) => void;
  /** Parses a 2xx answer's text instead of JSON.parse (a list parses item by item); throws on bad text. */
  parse?: (text: string) => unknown;
}

export interface WatchOptions {
  query?: Record<string, string | number | boolean | undefined>;
  signal?: AbortSignal;
  /** No bytes for this long → the stream fails with a `timeout` KubeApiError (Node's HTTP/1.1 has no pings). */
  idleTimeoutMs?: number;
}

export interface KubeClientOptions {
  credentials?: CredentialSource;
  /** A plain request that takes longer fails with `timeout` (default 30 s). */
  requestTimeoutMs?: number;
  userAgent?: string;
  /** Told of every request and watch (by verb and resource) and its result, for metrics. */
  calls?: CallObserver;
}

const USER_AGENT = "podroutes/0.1.0";

export class KubeClient {
  readonly connection: Connection;
  private readonly credentials: CredentialSource;
  private readonly requestTimeoutMs: number;
  private readonly userAgent: string;
  private readonly calls: CallObserver | undefined;
  /** One keep-alive agent per client certificate (an exec plugin may rotate it). */
  private agents = new Map<Buffer | undefined, HttpAgent>();

  constructor(connection: Connection, options: KubeClientOptions = {}) {
    this.connection = connection;
    this.credentials = options.credentials ?? credentialSource(connection);
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.userAgent = options.userAgent ?? USER_AGENT;
    this.calls = options.calls;
  }

  /** Where the API is, for messages. */
  get server(): string {
    return this.connection.server.origin;
  }

  /** A JSON request; resolves with the parsed answer of a 2xx, throws KubeApiError otherwise. */
  async request<T>(method: string, path: string, options: RequestOptionsArg = {}): Promise<T> {
    const finished = this.calls?.started(kubeCallName(method, path));
    try {
      const answer = await this.requestOnce<T>(method, path, options);
      finished?.("ok");
      return answer;
    } catch (error) {
      finished?.(error instanceof KubeApiError ? error.failure : "error");
      if (error instanceof KubeApiError && error.failure === "throttled") this.calls?.throttled();
      throw error;
    }
  }

  private async requestOnce<T>(method: string, path: string, options: RequestOptionsArg): Promise<T> {
    const what = `${method} ${path}`;
    const timeout = AbortSignal.timeout(options.timeoutMs ?? this.requestTimeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    const body = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
    const response = await this.send(method, path, options.query, signal, body, options.contentType);
    const text = await readBody(response, what, signal);
    const code = response.statusCode ?? 0;
    if (code < 200 || code > 299) throw errorFromStatus(tryJson(text), code, what);
    options.beforeParse?.(text);
    try {
      return (options.parse ? options.parse(text) : JSON.parse(text)) as T;
    } catch (error) {
      throw new KubeApiError(`${what}: the answer is not JSON: ${text.slice(0, 200)}`, code, "Decode", undefined, { cause: error, failure: "decode" });
    }
  }

  /**
   * Opens a watch (`watch=true` is added) and yields its events. A non-200 answer throws before the first
   * event; a clean end of the stream ends the iteration; a broken or silent stream throws KubeApiError.
   * Aborting the signal ends the iteration quietly.
   */
  async *watch<T = unknown>(path: string, options: WatchOptions = {}): AsyncGenerator<WatchEvent<T>> {
    const what = `WATCH ${path}`;
    const local = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, local.signal]) : local.signal;
    this.calls?.started(kubeCallName("WATCH", path))("opened");
    const response = await this.send("GET", path, { ...options.query, watch: true }, signal);
    const code = response.statusCode ?? 0;
    if (code !== 200) throw errorFromStatus(tryJson(await readBody(response, what, signal)), code, what);

    let idleTimer: NodeJS.Timeout | undefined;
    const armIdle = () => {
      if (!options.idleTimeoutMs) return;
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => {
        response.destroy(new KubeApiError(`${what}: no data for ${options.idleTimeoutMs} ms`, undefined, "Timeout", undefined, { failure: "timeout" }));
      }, options.idleTimeoutMs);
    };
    armIdle();
    let buffered = "";
    try {
      for await (const chunk of response) {
        armIdle();
        buffered += (chunk as Buffer).toString("utf8");
        let newline: number;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, newline).trim();
          buffered = buffered.slice(newline + 1);
          if (line) yield parseEvent<T>(line, what);
        }
      }
      if (buffered.trim()) yield parseEvent<T>(buffered.trim(), what);
    } catch (error) {
      if (signal.aborted && options.signal?.aborted) return;
      throw asApiError(error, what);
    } finally {
      clearTimeout(idleTimer);
      local.abort();
      response.destroy();
    }
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
  }

  private agentFor(credentials: Credentials): HttpAgent {
    let agent = this.agents.get(credentials.cert);
    if (agent) return agent;
    const c = this.connection;
    agent =
      c.server.protocol === "https:"
        ? new HttpsAgent({
            keepAlive: true,
            // One TLS context for every connection of the agent: given `ca`/`cert`/`key` instead, each new
            // connection parses them again (≈ 0.4 ms of CPU each, when a controller opens its 32).
            secureContext: createSecureContext({
              ...(c.ca ? { ca: c.ca } : {}),
              ...(credentials.cert && credentials.key ? { cert: credentials.cert, key: credentials.key } : {}),
            }),
            rejectUnauthorized: !c.insecureSkipTLSVerify,
            ...(c.tlsServerName ? { servername: c.tlsServerName } : {}),
          })
        : new HttpAgent({ keepAlive: true });
    // A rotated certificate replaces the agent of the old one.
    for (const old of this.agents.values()) old.destroy();
    this.agents = new Map([[credentials.cert, agent]]);
    return agent;
  }

  private async send(method: string, path: string, query: RequestOptionsArg["query"], signal: AbortSignal, body?: Buffer, contentType?: string): Promise<IncomingMessage> {
    const what = `${method} ${path}`;
    for (let attempt = 0; ; attempt++) {
      let credentials: Credentials;
      try {
        credentials = await this.credentials.current(signal);
      } catch (error) {
        throw error instanceof PodroutesError ? error : asApiError(error, what);
      }
      const response = await this.sendOnce(method, path, query, signal, credentials, body, contentType);
      if (response.statusCode === 401 && attempt === 0 && this.credentials.invalidate()) {
        response.resume();
        continue;
      }
      return response;
    }
  }

  private sendOnce(method: string, path: string, query: RequestOptionsArg["query"], signal: AbortSignal, credentials: Credentials, body?: Buffer, contentType?: string): Promise<IncomingMessage> {
    const what = `${method} ${path}`;
    const server = this.connection.server;
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(query ?? {})) if (value !== undefined) search.set(key, String(value));
    const prefix = server.pathname.replace(/\/$/, "");
    const options: RequestOptions = {
      method,
      protocol: server.protocol,
      hostname: server.hostname.replace(/^\[|\]$/g, ""),
      port: server.port || (server.protocol === "https:" ? 443 : 80),
      path: `${prefix}${path}${search.size ? `?${search}` : ""}`,
      agent: this.agentFor(credentials),
      signal,
      headers: {
        Accept: "application/json",
        "User-Agent": this.userAgent,
        ...(credentials.authorization ? { Authorization: credentials.authorization } : {}),
        ...(body ? { "Content-Type": contentType ?? "application/json", "Content-Length": body.length } : {}),
      },
    };
    return new Promise((resolve, reject) => {
      const request = (server.protocol === "https:" ? httpsRequest : httpRequest)(options, resolve);
      request.on("error", (error) => reject(asApiError(error, what, signal)));
      request.end(body);
    });
  }
}

/** `PATCH nodes/status`, `PUT leases`, `WATCH nodes`: a request's verb and resource, for metrics. */
export function kubeCallName(method: string, path: string): string {
  const parts = path.split("?")[0]!.split("/").filter(Boolean);
  let rest = parts[0] === "api" ? parts.slice(2) : parts[0] === "apis" ? parts.slice(3) : parts;
  if (rest[0] === "namespaces" && rest.length > 2) rest = rest.slice(2);
  const resource = rest[2] ? `${rest[0]}/${rest[2]}` : (rest[0] ?? path);
  return `${method} ${resource}`;
}

/** Builds a client from a discovered connection. */
export function createKubeClient(connection: Connection, options: KubeClientOptions = {}): KubeClient {
  return new KubeClient(connection, options);
}

function parseEvent<T>(line: string, what: string): WatchEvent<T> {
  let event: unknown;
  try {
    event = JSON.parse(line);
  } catch (error) {
    throw new KubeApiError(`${what}: a watch event is not JSON: ${line.slice(0, 200)}`, 200, "Decode", undefined, { cause: error, failure: "decode" });
  }
  const e = event as Partial<WatchEvent<T>>;
  if (typeof e !== "object" || e === null || typeof e.type !== "string" || typeof e.object !== "object" || e.object === null) {
    throw new KubeApiError(`${what}: a watch event has no type or object: ${line.slice(0, 200)}`, 200, "Decode", undefined, { failure: "decode" });
  }
  return e as WatchEvent<T>;
}

function tryJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { message: text.slice(0, 300) };
  }
}

async function readBody(response: IncomingMessage, what: string, signal?: AbortSignal): Promise<string> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of response) chunks.push(chunk as Buffer);
  } catch (error) {
    throw asApiError(error, what, signal);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Any thrown value as a KubeApiError: ours pass through, network and timeout failures are named. */
function asApiError(error: unknown, what: string, signal?: AbortSignal): KubeApiError {
  if (error instanceof KubeApiError) return error;
  const timedOut = signal?.aborted && (signal.reason as Error | undefined)?.name === "TimeoutError";
  if (timedOut) return new KubeApiError(`${what}: no answer in time`, undefined, "Timeout", undefined, { cause: error, failure: "timeout" });
  const code = (error as NodeJS.ErrnoException).code;
  const aborted = (error as Error).name === "AbortError";
  return new KubeApiError(`${what}: ${aborted ? "aborted" : (error as Error).message}${code && !aborted ? ` (${code})` : ""}`, undefined, aborted ? "Aborted" : "ConnectionFailed", undefined, { cause: error, failure: "network" });
}
