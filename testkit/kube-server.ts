/**
 * A Kubernetes API test server (no real kube-apiserver can run here), faithful where podroutes, kubectl
 * and @kubernetes/client-node depend on it. HTTPS with its own CA (src/lab/kubernetes/pki.ts), bearer tokens or client
 * certificates, and per-token RBAC-like rules (verb × resource[/subresource]) answered with real 403
 * Status bodies, so a test can prove an agent needs exactly the permissions it is given.
 *
 * Resources: core/v1 Nodes (with the status subresource), Events and ConfigMaps, coordination.k8s.io/v1 Leases.
 * - get, list (`limit`/`continue` paging, `labelSelector` with =, ==, !=, in, notin, exists and !key,
 *   `fieldSelector` on metadata.name/namespace), create, update (PUT; a stale resourceVersion is 409
 *   Conflict), patch (strategic merge with Node conditions and addresses merged by `type`, JSON merge,
 *   JSON patch), delete;
 * - watch: events after the given resourceVersion from a history of `historyWindow` changes (older →
 *   410 Expired, as an ERROR event in a 200 stream, as kube-apiserver's watch cache answers, or as the HTTP
 *   answer with `expiredWatchAs: "http"`), BOOKMARK events when `allowWatchBookmarks`, `timeoutSeconds`,
 *   `sendInitialEvents` (synthetic ADDED then a BOOKMARK annotated `k8s.io/initial-events-end`; it needs
 *   `resourceVersionMatch=NotOlderThan` and bookmarks, else 422, as the real server checks), objects
 *   leaving or entering a label selector seen as DELETED/ADDED; a watch from a version newer than the
 *   server's (after `rewind`) is answered as kube-apiserver's watch cache answers it (seen on the real
 *   one, v1.37): 200 and silence, no event and no bookmark, until the revision passes that version, and
 *   then only what came after it; a list at such a version (`resourceVersion`, with or without
 *   `resourceVersionMatch=NotOlderThan`) is a 504 "Too large resource version" with the cause
 *   ResourceVersionTooLarge (the real one waits 3 s for its revision to get there first; no wait here);
 * - an expired continue token is an HTTP 410; all error bodies are `kind: Status`;
 * - discovery: /version, /api, /apis, /api/v1, /apis/coordination.k8s.io[/v1]; lists are plain JSON
 *   (kubectl falls back from the Table format it asks for).
 * Simplification: a later list page is read from the current state, not from a snapshot at the first
 * page's version (a watch from that version then replays what changed in between).
 *
 * Faults on demand: drop every watch (connections reset), close them cleanly, end them with an ERROR 410,
 * compact the history, fail the next N requests with an HTTP code, slow every answer, stop answering
 * (requests are held and watches fall silent until resumed). Every request is recorded (method, path,
 * query, token, user, verb, resource, code).
 *
 * It runs in-process (`startKubeServer`) or as its own process (kube-server-main.ts), whose admin
 * interface is HTTP on a unix socket (reachable from any network namespace) calling the same methods.
 */
import { createServer as createHttpsServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { matchesSelector, parseSelector, SelectorError, type Requirement } from "../src/kube/selector.js";
import { applyPatch, PATCH_TYPES, PatchError } from "./kube-patch.js";
import { issueClientCertificate, makePki, type Pki } from "../src/lab/kubernetes/pki.js";

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string; labels?: Record<string, string>; [key: string]: unknown };
  spec?: unknown;
  status?: unknown;
}

export type ResourceName = "nodes" | "events" | "leases" | "configmaps";

interface ResourceInfo {
  kind: string;
  listKind: string;
  apiVersion: string;
  group: string;
  namespaced: boolean;
  /** Strategic-merge patch merge keys by dotted path. */
  mergeKeys: Record<string, string>;
  hasStatus: boolean;
  verbs: string[];
  shortNames?: string[];
}

const RESOURCES: Record<ResourceName, ResourceInfo> = {
  nodes: { kind: "Node", listKind: "NodeList", apiVersion: "v1", group: "", namespaced: false, mergeKeys: { "status.conditions": "type", "status.addresses": "type" }, hasStatus: true, verbs: ["create", "delete", "get", "list", "patch", "update", "watch"], shortNames: ["no"] },
  configmaps: { kind: "ConfigMap", listKind: "ConfigMapList", apiVersion: "v1", group: "", namespaced: true, mergeKeys: {}, hasStatus: false, verbs: ["create", "delete", "get", "list", "patch", "update", "watch"], shortNames: ["cm"] },
  events: { kind: "Event", listKind: "EventList", apiVersion: "v1", group: "", namespaced: true, mergeKeys: {}, hasStatus: false, verbs: ["create", "delete", "get", "list", "patch", "update", "watch"], shortNames: ["ev"] },
  leases: { kind: "Lease", listKind: "LeaseList", apiVersion: "coordination.k8s.io/v1", group: "coordination.k8s.io", namespaced: true, mergeKeys: {}, hasStatus: false, verbs: ["create", "delete", "get", "list", "patch", "update", "watch"] },
};

/**
 * What a token or a client certificate's user may do: `verbs` on `resources` (`nodes`, `nodes/status`,
 * `*`), in `namespaces` only when given (a Role's rules, bound in those namespaces).
 */
export interface Rule {
  verbs: string[];
  resources: string[];
  namespaces?: string[];
  /** Only these objects (a rule's resourceNames); a create or a list is never by name, so never allowed by it. */
  names?: string[];
}

export interface Grant {
  user: string;
  /** `"*"`: everything (cluster-admin). */
  rules: Rule[] | "*";
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  token?: string;
  user?: string;
  verb?: string;
  resource?: string;
  code: number;
  /** Milliseconds since the epoch when it arrived. */
  at: number;
}

export interface KubeServerOptions {
  host?: string;
  port?: number;
  /** Where certificates go (default: a new temp dir, removed on close). */
  stateDir?: string;
  /** More addresses for the server certificate (the listen host and 127.0.0.1 are always in it). */
  extraSANs?: string[];
  /** token → grant. Default: `{ "admin-token": { user: "admin", rules: "*" } }`. */
  tokens?: Record<string, Grant>;
  /** Client-certificate user (CN) → rules. */
  certificateUsers?: Record<string, Rule[] | "*">;
  nodes?: KubeObject[];
  /** How many changes a watch can resume from; older versions are Expired. */
  historyWindow?: number;
  bookmarkIntervalMs?: number;
  /** How a watch from a too-old version is refused: an ERROR event (watch cache) or an HTTP 410. */
  expiredWatchAs?: "event" | "http";
  /** `refuse`: answer `sendInitialEvents` with 422, as servers without the feature do. */
  sendInitialEvents?: "implement" | "refuse";
  /** Used for timestamps (tests may pin it). */
  now?: () => Date;
  /**
   * The revision the server starts at (default 1), for a server restarted over the state of an earlier
   * one: as kube-apiserver keeps etcd's revision across a restart, versions never go back, and a watch
   * from before the restart is Expired (410), so clients list again.
   */
  firstRevision?: number;
}

interface Change {
  rv: number;
  resource: ResourceName;
  type: "ADDED" | "MODIFIED" | "DELETED";
  object: KubeObject;
  previous?: KubeObject;
}

interface Watcher {
  resource: ResourceName;
  namespace?: string;
  selector: Requirement[];
  fieldName?: string;
  bookmarks: boolean;
  /** The version it was opened from: nothing at or before it is sent (events, bookmarks). */
  from: number;
  response: ServerResponse;
  /** The bearer token that opened it. */
  token?: string;
  /** Events held while the server is stalled. */
  held: string[];
  timers: NodeJS.Timeout[];
}

interface Route {
  resource?: ResourceName;
  namespace?: string;
  name?: string;
  subresource?: string;
  discovery?: string;
}

export const DEFAULT_ADMIN_TOKEN = "admin-token";
const VERSION = { major: "1", minor: "32", gitVersion: "v1.32.0-podroutes-test", gitCommit: "0000000000000000000000000000000000000000", gitTreeState: "clean", buildDate: "2026-01-01T00:00:00Z", goVersion: "go1.23.0", compiler: "gc", platform: "linux/amd64" };

export class KubeApiServer {
  readonly requests: RecordedRequest[] = [];
  /** Called with each request as it arrives, before it is served: a test's hook to inject a fault mid-sequence. */
  onRequest: ((request: RecordedRequest) => void) | undefined;
  url = "";
  port = 0;
  pki!: Pki;
  private server!: Server;
  private readonly store: Record<ResourceName, Map<string, KubeObject>> = { nodes: new Map(), events: new Map(), leases: new Map(), configmaps: new Map() };
  /**
   * Each resource's keys in order, made again only after a key came or went: etcd reads a page as a
   * range of its sorted keys, where sorting all 5,000 keys for every page of 100 made this server pay
   * O(n log n) per page (issue 9: a fifth of its CPU per list of 5,000 Nodes).
   */
  private readonly sortedKeys: Partial<Record<ResourceName, string[]>> = {};
  /**
   * Each object's JSON, made as it is stored (etcd, too, holds each object encoded): stored objects and
   * the objects of recorded changes are never changed in place (a write stores a new copy), so a list
   * or a watch event writes the text made then. Why: the benchmarks run this server on the same cores
   * as the process they measure, where a real API server runs on other machines, and its
   * JSON.stringify of every object on every list was most of its CPU (issue 9).
   */
  private readonly jsonOfObject = new WeakMap<object, string>();
  private history: Change[] = [];
  private revision = 1;
  /** The oldest version a watch may start from. */
  private compactedRevision = 1;
  private readonly watchers = new Set<Watcher>();
  private readonly tokens: Map<string, Grant>;
  private readonly certificateUsers: Map<string, Rule[] | "*">;
  private failures: { remaining: number; code: number } = { remaining: 0, code: 500 };
  private randomFailures: { rate: number; random: () => number } = { rate: 0, random: Math.random };
  private delayMs = 0;
  private stalled = false;
  private heldRequests: (() => void)[] = [];
  private ownStateDir = false;
  private readonly partitioned = new Set<string>();

  constructor(private readonly options: KubeServerOptions = {}) {
    this.revision = this.compactedRevision = options.firstRevision ?? 1;
    this.tokens = new Map(Object.entries(options.tokens ?? { [DEFAULT_ADMIN_TOKEN]: { user: "admin", rules: "*" } }));
    this.certificateUsers = new Map(Object.entries(options.certificateUsers ?? {}));
  }

  get caFile(): string {
    return this.pki.caFile;
  }

  async start(): Promise<this> {
    const host = this.options.host ?? "127.0.0.1";
    let dir = this.options.stateDir;
    if (!dir) {
      dir = await mkdtemp(join(tmpdir(), "podroutes-kube-"));
      this.ownStateDir = true;
    }
    this.pki = await makePki(dir, { ips: ["127.0.0.1", ...(host === "0.0.0.0" || host === "127.0.0.1" ? [] : [host]), ...(this.options.extraSANs ?? [])], dns: ["localhost", "kubernetes", "kubernetes.default.svc"] });
    this.server = createHttpsServer(
      { cert: await readFile(this.pki.certFile), key: await readFile(this.pki.keyFile), ca: await readFile(this.pki.caFile), requestCert: true, rejectUnauthorized: false },
      (request, response) => void this.handle(request, response),
    );
    this.server.keepAliveTimeout = 60_000;
    for (const node of this.options.nodes ?? []) this.put("nodes", node);
    await new Promise<void>((resolve, reject) => this.server.once("error", reject).listen(this.options.port ?? 0, host, resolve));
    this.port = (this.server.address() as AddressInfo).port;
    this.url = `https://${host.includes(":") ? `[${host}]` : host}:${this.port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const release of this.heldRequests.splice(0)) release();
    for (const watcher of this.watchers) this.endWatch(watcher, "destroy");
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.ownStateDir) await rm(this.pki.dir, { recursive: true, force: true });
  }

  // ---- state, for tests and the admin interface ----

  /** The current resourceVersion (etcd's revision). */
  get resourceVersion(): string {
    return String(this.revision);
  }

  objects(resource: ResourceName): KubeObject[] {
    return [...this.store[resource].values()].map((o) => structuredClone(o));
  }

  object(resource: ResourceName, name: string, namespace?: string): KubeObject | undefined {
    const found = this.store[resource].get(keyOf(name, namespace));
    return found && structuredClone(found);
  }

  /** Creates or replaces an object (no precondition), as an administrator would; returns the stored copy. */
  put(resource: ResourceName, object: KubeObject): KubeObject {
    return structuredClone(this.write(resource, object));
  }

  /** Stores a copy of `object` and tells the watchers; returns the stored object itself (never to be changed). */
  private write(resource: ResourceName, object: KubeObject): KubeObject {
    const info = RESOURCES[resource];
    const key = keyOf(object.metadata.name, object.metadata.namespace);
    const previous = this.store[resource].get(key);
    const copy = structuredClone(object);
    // Set before stamp() stores it and caches its JSON: a stored object is never changed afterwards.
    copy.apiVersion = info.apiVersion;
    copy.kind = info.kind;
    const stored = this.stamp(resource, copy, previous);
    this.record(resource, previous ? "MODIFIED" : "ADDED", stored, previous);
    return stored;
  }

  /** Changes a stored object with `mutate`; returns the new copy. */
  update(resource: ResourceName, name: string, mutate: (object: KubeObject) => void, namespace?: string): KubeObject {
    const current = this.store[resource].get(keyOf(name, namespace));
    if (!current) throw new Error(`${resource} ${name} does not exist`);
    const next = structuredClone(current);
    mutate(next);
    return this.put(resource, next);
  }

  remove(resource: ResourceName, name: string, namespace?: string): boolean {
    const key = keyOf(name, namespace);
    const current = this.store[resource].get(key);
    if (!current) return false;
    this.store[resource].delete(key);
    delete this.sortedKeys[resource];
    const gone = structuredClone(current);
    gone.metadata.resourceVersion = String(++this.revision);
    this.record(resource, "DELETED", gone, current);
    return true;
  }

  setToken(token: string, grant: Grant): void {
    this.tokens.set(token, grant);
  }

  /** The token is no longer accepted (401), as an expired service-account token. */
  revokeToken(token: string): void {
    this.tokens.delete(token);
  }

  // ---- faults ----

  /** The next `count` API requests (discovery excluded) answer `code` with an InternalError-style Status. */
  failNext(count: number, code = 500): void {
    this.failures = { remaining: count, code };
  }

  /**
   * From now on a share `rate` (0..1) of API requests (discovery aside), whoever sends them, answer an
   * error instead: half 500 InternalError, half 429 TooManyRequests (with Retry-After 1), as an overloaded
   * API server does. 0 stops it.
   */
  failRandomly(rate: number, random: () => number = Math.random): void {
    this.randomFailures = { rate, random };
  }

  /** Every answer waits this long first (0: none). */
  slow(ms: number): void {
    this.delayMs = ms;
  }

  /** Stop answering: requests are held and watches fall silent (events are held) until `stall(false)`. */
  stall(on: boolean): void {
    this.stalled = on;
    if (on) return;
    for (const release of this.heldRequests.splice(0)) release();
    for (const watcher of this.watchers) for (const line of watcher.held.splice(0)) watcher.response.write(line);
  }

  /**
   * Cuts the client holding `token` off, as a network partition would: its requests get their connection
   * reset, its watches are cut; every other client is served as before. `on = false` heals it.
   */
  partition(token: string, on = true): void {
    if (!on) {
      this.partitioned.delete(token);
      return;
    }
    this.partitioned.add(token);
    for (const watcher of [...this.watchers]) if (watcher.token === token) this.endWatch(watcher, "destroy");
  }

  /** Resets every watch connection, as a restarting API server or a broken network does. */
  dropWatches(): number {
    const count = this.watchers.size;
    for (const watcher of [...this.watchers]) this.endWatch(watcher, "destroy");
    return count;
  }

  /**
   * The revision goes back to `revision` (an etcd restored from a backup, a fresh store under the same
   * address): the history is gone and every watch is cut, the objects stay. A client that watches again
   * from its newer version hears nothing (see the watch), and a list at it is "Too large resource version".
   */
  rewind(revision: number): void {
    this.revision = this.compactedRevision = revision;
    this.history = [];
    this.dropWatches();
  }

  /** Ends every watch cleanly (as `timeoutSeconds` does). */
  closeWatches(): number {
    const count = this.watchers.size;
    for (const watcher of [...this.watchers]) this.endWatch(watcher, "end");
    return count;
  }

  /** Ends every watch with an ERROR event carrying 410 Expired, as the real server does to a watcher it drops. */
  expireWatches(): number {
    const count = this.watchers.size;
    for (const watcher of [...this.watchers]) {
      this.send(watcher, { type: "ERROR", object: statusBody(410, "Expired", `too old resource version: ${this.compactedRevision} (${this.revision})`) });
      this.endWatch(watcher, "end");
    }
    return count;
  }

  /** Forgets the history: a watch or a continue token from any earlier version is Expired now. */
  compact(): void {
    this.history = [];
    this.compactedRevision = this.revision;
  }

  /** Sends a BOOKMARK at the current version to every watch that asked for bookmarks. */
  bookmark(): void {
    for (const watcher of this.watchers) if (watcher.bookmarks) this.sendBookmark(watcher);
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  /** A client certificate for `user`, signed by the server's CA. */
  issueClientCertificate(user: string, rules: Rule[] | "*" = "*"): Promise<{ certFile: string; keyFile: string }> {
    this.certificateUsers.set(user, rules);
    return issueClientCertificate(this.pki, user);
  }

  /** Writes a kubeconfig for this server (kubectl, podroutes and the client library read it). */
  async writeKubeconfig(path: string, options: Omit<KubeconfigSettings, "server" | "caFile"> & { server?: string } = {}): Promise<string> {
    await writeFile(path, kubeconfigYaml({ server: this.url, caFile: this.pki.caFile, ...options }));
    return path;
  }

  // ---- the API ----

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", "https://server");
    const query = Object.fromEntries(url.searchParams);
    const recorded: RecordedRequest = { method: request.method ?? "GET", path: url.pathname, query, code: 0, at: Date.now() };
    this.requests.push(recorded);
    this.onRequest?.(recorded);
    const bearer = request.headers.authorization?.startsWith("Bearer ") ? request.headers.authorization.slice(7).trim() : undefined;
    if (bearer && this.partitioned.has(bearer)) {
      recorded.token = bearer;
      request.socket.destroy();
      return;
    }
    const answer = (code: number, body: unknown) => {
      recorded.code = code;
      const text = body instanceof EncodedJson ? body.text : JSON.stringify(body);
      response.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
      response.end(text);
    };
    try {
      const body = await readBody(request);
      if (this.stalled) await new Promise<void>((resolve) => this.heldRequests.push(resolve));
      if (this.delayMs) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
      if (response.destroyed) return;

      const route = routeOf(url.pathname);
      if (!route) return answer(404, statusBody(404, "NotFound", "the server could not find the requested resource"));
      if (route.discovery === "version" || route.discovery === "healthz") return answer(200, route.discovery === "version" ? VERSION : "ok");

      const who = this.authenticate(request, recorded);
      if (!who) return answer(401, statusBody(401, "Unauthorized", "Unauthorized"));
      if (route.discovery) return answer(200, discovery(route.discovery));

      const resource = route.resource!;
      const verb = verbOf(request.method ?? "GET", route, query);
      if (!verb) return answer(405, statusBody(405, "MethodNotAllowed", `the server does not allow this method on the requested resource`));
      const resourcePath = route.subresource ? `${resource}/${route.subresource}` : resource;
      recorded.verb = verb;
      recorded.resource = resourcePath;
      if (!allowed(who.rules, verb, resourcePath, route.namespace, route.name)) {
        const info = RESOURCES[resource];
        const subject = route.name ? `${resourcePath.split("/")[0]} ${JSON.stringify(route.name)}` : resource;
        const scope = route.namespace ? `in the namespace ${JSON.stringify(route.namespace)}` : "at the cluster scope";
        return answer(403, statusBody(403, "Forbidden", `${subject} is forbidden: User ${JSON.stringify(who.user)} cannot ${verb} resource ${JSON.stringify(resourcePath)} in API group ${JSON.stringify(info.group)} ${scope}`, { ...(route.name ? { name: route.name } : {}), ...(info.group ? { group: info.group } : {}), kind: resource }));
      }
      if (this.failures.remaining > 0) {
        this.failures.remaining--;
        return answer(this.failures.code, statusBody(this.failures.code, this.failures.code >= 500 ? "InternalError" : "BadRequest", `Internal error occurred: injected fault`));
      }
      if (this.randomFailures.rate > 0 && this.randomFailures.random() < this.randomFailures.rate) {
        if (this.randomFailures.random() < 0.5) return answer(500, statusBody(500, "InternalError", "Internal error occurred: injected fault"));
        response.setHeader("Retry-After", "1");
        return answer(429, statusBody(429, "TooManyRequests", "the server has received too many requests and has asked us to try again later", { retryAfterSeconds: 1 }));
      }
      if (route.subresource && (route.subresource !== "status" || !RESOURCES[resource].hasStatus)) return answer(404, statusBody(404, "NotFound", "the server could not find the requested resource"));

      const result = this.serve(verb, resource, route, query, body, request, response, recorded);
      if (result) answer(result.code, result.body);
    } catch (error) {
      if (!response.headersSent) answer(500, statusBody(500, "InternalError", `Internal error occurred: ${(error as Error).message}`));
    }
  }

  private authenticate(request: IncomingMessage, recorded: RecordedRequest): { user: string; rules: Rule[] | "*" } | undefined {
    const header = request.headers.authorization;
    if (header?.startsWith("Bearer ")) {
      const token = header.slice("Bearer ".length).trim();
      recorded.token = token;
      const grant = this.tokens.get(token);
      if (!grant) return undefined;
      recorded.user = grant.user;
      return grant;
    }
    const socket = request.socket as TLSSocket;
    const certificate = socket.authorized ? socket.getPeerCertificate?.() : undefined;
    const cn = certificate?.subject?.CN;
    const user = typeof cn === "string" ? cn : undefined;
    if (user && this.certificateUsers.has(user)) {
      recorded.user = user;
      return { user, rules: this.certificateUsers.get(user)! };
    }
    return undefined;
  }

  private serve(verb: string, resource: ResourceName, route: Route, query: Record<string, string>, body: string, request: IncomingMessage, response: ServerResponse, recorded: RecordedRequest): { code: number; body: unknown } | undefined {
    const info = RESOURCES[resource];
    const map = this.store[resource];
    const name = route.name;
    const key = name ? keyOf(name, route.namespace) : "";
    const notFound = () => ({ code: 404, body: statusBody(404, "NotFound", `${qualified(resource)} ${JSON.stringify(name)} not found`, { name: name!, ...(info.group ? { group: info.group } : {}), kind: resource }) });
    const parse = (): KubeObject | { code: number; body: unknown } => {
      try {
        const parsed = JSON.parse(body) as KubeObject;
        if (typeof parsed !== "object" || parsed === null || typeof parsed.metadata !== "object" || parsed.metadata === null) throw new Error("no metadata");
        return parsed;
      } catch (error) {
        return { code: 400, body: statusBody(400, "BadRequest", `the body of the request was in an unknown format: ${(error as Error).message}`) };
      }
    };

    switch (verb) {
      case "get": {
        const object = map.get(key);
        return object ? { code: 200, body: object } : notFound();
      }
      case "list":
      case "watch": {
        let selector: Requirement[];
        let field: { name?: string; namespace?: string };
        try {
          selector = parseSelector(query.labelSelector ?? "");
          field = parseFieldSelector(query.fieldSelector ?? "");
        } catch (error) {
          return { code: 400, body: statusBody(400, "BadRequest", (error as Error).message) };
        }
        const namespace = route.namespace ?? field.namespace;
        const matches = (object: KubeObject) => (!namespace || object.metadata.namespace === namespace) && (!field.name || object.metadata.name === field.name) && matchesSelector(selector, object.metadata.labels);
        if (verb === "watch") return this.watch(resource, { namespace, selector, fieldName: field.name }, matches, query, request, response, recorded);
        return this.list(resource, matches, query);
      }
      case "create": {
        const object = parse();
        if (!("metadata" in object)) return object;
        if (route.namespace && object.metadata.namespace && object.metadata.namespace !== route.namespace) {
          return { code: 400, body: statusBody(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request") };
        }
        if (!object.metadata.name && typeof object.metadata.generateName === "string") object.metadata.name = `${object.metadata.generateName}${randomUUID().slice(0, 5)}`;
        if (!object.metadata.name) return { code: 422, body: statusBody(422, "Invalid", `${info.kind} "" is invalid: metadata.name: Required value: name or generateName is required`, { kind: info.kind }) };
        if (route.namespace) object.metadata.namespace = route.namespace;
        const createKey = keyOf(object.metadata.name, object.metadata.namespace);
        if (map.has(createKey)) return { code: 409, body: statusBody(409, "AlreadyExists", `${qualified(resource)} ${JSON.stringify(object.metadata.name)} already exists`, { name: object.metadata.name, ...(info.group ? { group: info.group } : {}), kind: resource }) };
        delete object.metadata.resourceVersion;
        return { code: 201, body: new EncodedJson(this.json(this.write(resource, object))) };
      }
      case "update":
      case "patch": {
        const current = map.get(key);
        if (!current) return notFound();
        let next: KubeObject;
        let precondition: string | undefined;
        if (verb === "update") {
          const object = parse();
          if (!("metadata" in object)) return object;
          if (object.metadata.name !== name) return { code: 400, body: statusBody(400, "BadRequest", `the name of the object (${object.metadata.name}) does not match the name on the URL (${name})`) };
          precondition = object.metadata.resourceVersion;
          next = object;
        } else {
          const type = PATCH_TYPES[(request.headers["content-type"] ?? "").split(";")[0]!.trim() as keyof typeof PATCH_TYPES];
          if (!type) return { code: 415, body: statusBody(415, "UnsupportedMediaType", `the body of the request was in an unknown format - accepted media types include: ${Object.keys(PATCH_TYPES).join(", ")}`) };
          let patch: unknown;
          try {
            patch = JSON.parse(body);
            const patched = applyPatch(type, current, patch, info.mergeKeys) as KubeObject;
            if (typeof patched !== "object" || patched === null || typeof patched.metadata !== "object") throw new PatchError("the patched object has no metadata");
            next = patched;
          } catch (error) {
            return { code: error instanceof PatchError ? 422 : 400, body: statusBody(error instanceof PatchError ? 422 : 400, error instanceof PatchError ? "Invalid" : "BadRequest", (error as Error).message) };
          }
          const patchedVersion = next.metadata.resourceVersion;
          if (patchedVersion !== current.metadata.resourceVersion) precondition = patchedVersion;
        }
        if (precondition !== undefined && precondition !== "" && precondition !== current.metadata.resourceVersion) {
          return { code: 409, body: statusBody(409, "Conflict", `Operation cannot be fulfilled on ${qualified(resource)} ${JSON.stringify(name)}: the object has been modified; please apply your changes to the latest version and try again`, { name: name!, ...(info.group ? { group: info.group } : {}), kind: resource }) };
        }
        next.metadata = { ...next.metadata, name: current.metadata.name, ...(current.metadata.namespace ? { namespace: current.metadata.namespace } : {}) };
        if (info.hasStatus) {
          // The status subresource changes only status; the main resource changes everything but status.
          // Shallow: the write stores a deep copy, and `current` is never changed in place.
          if (route.subresource === "status") next = { ...current, status: next.status };
          else next.status = current.status;
        }
        if (JSON.stringify(withoutVersion(next)) === JSON.stringify(withoutVersion(current))) return { code: 200, body: new EncodedJson(this.json(current)) };
        return { code: 200, body: new EncodedJson(this.json(this.write(resource, next))) };
      }
      case "delete": {
        const current = map.get(key);
        if (!current) return notFound();
        this.remove(resource, name!, route.namespace);
        return { code: 200, body: current };
      }
    }
    return { code: 405, body: statusBody(405, "MethodNotAllowed", "the server does not allow this method on the requested resource") };
  }

  private list(resource: ResourceName, matches: (object: KubeObject) => boolean, query: Record<string, string>): { code: number; body: unknown } {
    const info = RESOURCES[resource];
    const at = Number(query.resourceVersion ?? "");
    if (query.resourceVersion && !query.continue && Number.isInteger(at) && at > this.revision) return { code: 504, body: tooLargeStatus(at, this.revision) };
    let after = "";
    let listRevision = this.revision;
    if (query.continue) {
      let token: { rv: number; after: string };
      try {
        token = JSON.parse(Buffer.from(query.continue, "base64url").toString("utf8")) as { rv: number; after: string };
        if (typeof token.rv !== "number" || typeof token.after !== "string") throw new Error("bad token");
      } catch {
        return { code: 400, body: statusBody(400, "BadRequest", "continue key is not valid: illegal base64 data") };
      }
      if (token.rv < this.compactedRevision) {
        return {
          code: 410,
          body: statusBody(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."),
        };
      }
      after = token.after;
      listRevision = token.rv;
    }
    const store = this.store[resource];
    const keys = (this.sortedKeys[resource] ??= [...store.keys()].sort());
    const limit = Number(query.limit ?? 0);
    const page: [string, KubeObject][] = [];
    let remaining = 0;
    for (let at = firstAfter(keys, after); at < keys.length; at++) {
      const object = store.get(keys[at]!)!;
      if (!matches(object)) continue;
      remaining++;
      if (!(limit > 0) || page.length < limit) page.push([keys[at]!, object]); // NaN too: no limit
    }
    const metadata: Record<string, unknown> = { resourceVersion: String(listRevision) };
    if (page.length < remaining) {
      metadata.continue = Buffer.from(JSON.stringify({ rv: listRevision, after: page[page.length - 1]![0] })).toString("base64url");
      metadata.remainingItemCount = remaining - page.length;
    }
    // The list as the API server writes it: its metadata, then the items (each object's JSON made once).
    const head = JSON.stringify({ kind: info.listKind, apiVersion: info.apiVersion, metadata }).slice(0, -1);
    return { code: 200, body: new EncodedJson(`${head},"items":[${page.map(([, object]) => this.json(object)).join(",")}]}`) };
  }

  /** An object's JSON, made at its first use (see jsonOfObject). */
  private json(object: object): string {
    let text = this.jsonOfObject.get(object);
    if (text === undefined) {
      text = JSON.stringify(object);
      this.jsonOfObject.set(object, text);
    }
    return text;
  }

  private watch(
    resource: ResourceName,
    scope: { namespace?: string; selector: Requirement[]; fieldName?: string },
    matches: (object: KubeObject) => boolean,
    query: Record<string, string>,
    request: IncomingMessage,
    response: ServerResponse,
    recorded: RecordedRequest,
  ): { code: number; body: unknown } | undefined {
    const bookmarks = query.allowWatchBookmarks === "true" || query.allowWatchBookmarks === "1";
    const initialEvents = query.sendInitialEvents === "true" || query.sendInitialEvents === "1";
    if (initialEvents) {
      if (this.options.sendInitialEvents === "refuse") return { code: 422, body: statusBody(422, "Invalid", "sendInitialEvents is not supported by this server (the WatchList feature is off)") };
      if (query.resourceVersionMatch !== "NotOlderThan" || !bookmarks) {
        return { code: 422, body: statusBody(422, "Invalid", `ListOptions.meta.k8s.io "" is invalid: sendInitialEvents: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks to true`) };
      }
    }
    const version = query.resourceVersion ?? "";
    const from = version === "" || version === "0" ? undefined : Number(version);
    if (from !== undefined && !Number.isInteger(from)) return { code: 400, body: statusBody(400, "BadRequest", `resourceVersion: Invalid value: ${JSON.stringify(version)}: must be an integer`) };
    const expired = from !== undefined && from < this.compactedRevision;
    const expiredStatus = statusBody(410, "Expired", `too old resource version: ${from} (${this.compactedRevision})`);
    if (expired && this.options.expiredWatchAs === "http") return { code: 410, body: expiredStatus };

    recorded.code = 200;
    response.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked", "Cache-Control": "no-cache, private" });
    response.flushHeaders();
    const watcher: Watcher = { resource, ...(recorded.token ? { token: recorded.token } : {}), ...(scope.namespace ? { namespace: scope.namespace } : {}), selector: scope.selector, ...(scope.fieldName ? { fieldName: scope.fieldName } : {}), bookmarks, from: from ?? this.revision, response, held: [], timers: [] };
    if (expired) {
      this.send(watcher, { type: "ERROR", object: expiredStatus });
      response.end();
      return undefined;
    }
    this.watchers.add(watcher);
    const stop = () => this.endWatch(watcher, "none");
    request.on("close", stop);
    response.on("close", stop);

    if (from === undefined || initialEvents) {
      // No version (or initial events asked for): the current state as synthetic ADDED events first.
      for (const object of this.store[resource].values()) if (matches(object)) this.send(watcher, { type: "ADDED", object });
      if (initialEvents) this.sendBookmark(watcher, { "k8s.io/initial-events-end": "true" });
    } else {
      for (const change of this.history) if (change.resource === resource && change.rv > from) this.deliver(watcher, change, matches);
    }

    const timeoutSeconds = Number(query.timeoutSeconds ?? 0);
    const limitMs = timeoutSeconds > 0 ? timeoutSeconds * 1000 : 30 * 60_000;
    // A stalled server is a dead connection: it does not even close the watch at its timeout.
    watcher.timers.push(setTimeout(() => !this.stalled && this.endWatch(watcher, "end"), limitMs));
    if (bookmarks) watcher.timers.push(setInterval(() => this.sendBookmark(watcher), this.options.bookmarkIntervalMs ?? 60_000));
    return undefined;
  }

  private deliver(watcher: Watcher, change: Change, matches: (object: KubeObject) => boolean): void {
    if (change.rv <= watcher.from) return;
    const now = matches(change.object);
    const before = change.previous ? matches(change.previous) : false;
    if (change.type === "DELETED") {
      if (before || now) this.send(watcher, { type: "DELETED", object: change.object });
    } else if (now && (before || change.type === "ADDED")) this.send(watcher, { type: change.type === "ADDED" ? "ADDED" : "MODIFIED", object: change.object });
    else if (now) this.send(watcher, { type: "ADDED", object: change.object });
    else if (before) this.send(watcher, { type: "DELETED", object: change.object });
  }

  private watcherMatches(watcher: Watcher): (object: KubeObject) => boolean {
    return (object) =>
      (!watcher.namespace || object.metadata.namespace === watcher.namespace) && (!watcher.fieldName || object.metadata.name === watcher.fieldName) && matchesSelector(watcher.selector, object.metadata.labels);
  }

  private sendBookmark(watcher: Watcher, annotations?: Record<string, string>): void {
    // The watch cache sends nothing at or before the version a watch started from.
    if (this.revision < watcher.from) return;
    const info = RESOURCES[watcher.resource];
    this.send(watcher, { type: "BOOKMARK", object: { kind: info.kind, apiVersion: info.apiVersion, metadata: { resourceVersion: String(this.revision), ...(annotations ? { annotations } : {}) } } });
  }

  private send(watcher: Watcher, event: { type: string; object: object }): void {
    const line = `{"type":${JSON.stringify(event.type)},"object":${this.json(event.object)}}\n`;
    if (this.stalled) watcher.held.push(line);
    else if (!watcher.response.destroyed && !watcher.response.writableEnded) watcher.response.write(line);
  }

  private endWatch(watcher: Watcher, how: "end" | "destroy" | "none"): void {
    if (!this.watchers.delete(watcher) && how === "none") return;
    for (const timer of watcher.timers) clearTimeout(timer);
    if (how === "destroy") watcher.response.socket?.destroy();
    else if (how === "end" && !watcher.response.writableEnded) watcher.response.end();
  }

  private stamp(resource: ResourceName, object: KubeObject, previous: KubeObject | undefined): KubeObject {
    const info = RESOURCES[resource];
    object.metadata.uid = previous?.metadata.uid ?? object.metadata.uid ?? randomUUID();
    object.metadata.creationTimestamp = (previous?.metadata.creationTimestamp as string | undefined) ?? (object.metadata.creationTimestamp as string | undefined) ?? (this.options.now?.() ?? new Date()).toISOString().replace(/\.\d+Z$/, "Z");
    object.metadata.resourceVersion = String(++this.revision);
    if (!info.namespaced) delete object.metadata.namespace;
    const key = keyOf(object.metadata.name, object.metadata.namespace);
    if (!this.store[resource].has(key)) delete this.sortedKeys[resource];
    this.store[resource].set(key, object);
    this.json(object);
    return object;
  }

  private record(resource: ResourceName, type: Change["type"], object: KubeObject, previous?: KubeObject): void {
    // The stored object itself: nothing changes a stored object in place (a write stores a new one).
    const change: Change = { rv: Number(object.metadata.resourceVersion), resource, type, object, ...(previous ? { previous } : {}) };
    this.history.push(change);
    const window = this.options.historyWindow ?? 1000;
    if (this.history.length > window) {
      const dropped = this.history.splice(0, this.history.length - window);
      this.compactedRevision = dropped[dropped.length - 1]!.rv;
    }
    for (const watcher of this.watchers) if (watcher.resource === resource) this.deliver(watcher, change, this.watcherMatches(watcher));
  }
}

/** kube-apiserver's answer to a version newer than its own (storage.NewTooLargeResourceVersionError), as the real one gives it. */
function tooLargeStatus(asked: number, current: number): object {
  return statusBody(504, "Timeout", `Timeout: Too large resource version: ${asked}, current: ${current}`, {
    causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }],
    retryAfterSeconds: 1,
  });
}

export interface KubeconfigSettings {
  server: string;
  /** The CA to trust; without it, `cluster` lines decide (insecure-skip-tls-verify) or the system's CAs. */
  caFile?: string;
  token?: string;
  certificate?: { certFile: string; keyFile: string };
  /** Raw YAML lines of the user entry (indented four spaces), for exec plugins and token files. */
  user?: string;
  /** Raw YAML lines added to the cluster entry. */
  cluster?: string;
  context?: string;
}

/** A kubeconfig with one cluster, user and context, the current one. */
export function kubeconfigYaml(settings: KubeconfigSettings): string {
  const context = settings.context ?? "test";
  const user =
    settings.user ??
    (settings.certificate ? `    client-certificate: ${settings.certificate.certFile}\n    client-key: ${settings.certificate.keyFile}\n` : `    token: ${settings.token ?? DEFAULT_ADMIN_TOKEN}\n`);
  return `apiVersion: v1
kind: Config
clusters:
- name: ${context}
  cluster:
    server: ${settings.server}
${settings.caFile ? `    certificate-authority: ${settings.caFile}\n` : ""}${settings.cluster ?? ""}users:
- name: ${context}
  user:
${user}contexts:
- name: ${context}
  context:
    cluster: ${context}
    user: ${context}
current-context: ${context}
`;
}

/** Starts a server (see KubeServerOptions); close it with `close()`. */
export async function startKubeServer(options: KubeServerOptions = {}): Promise<KubeApiServer> {
  return new KubeApiServer(options).start();
}

export function statusBody(code: number, reason: string, message: string, details?: Record<string, unknown>): Record<string, unknown> {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, ...(details ? { details } : {}), code };
}

/** A body already written as JSON (a list made of each object's cached JSON): answered as it is. */
class EncodedJson {
  constructor(readonly text: string) {}
}

/** The index of the first key after `after` in sorted `keys` (a binary search: a page starts there). */
function firstAfter(keys: string[], after: string): number {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (keys[middle]! <= after) low = middle + 1;
    else high = middle;
  }
  return low;
}

function keyOf(name: string, namespace?: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

function qualified(resource: ResourceName): string {
  const group = RESOURCES[resource].group;
  return group ? `${resource}.${group}` : resource;
}

function withoutVersion(object: KubeObject): KubeObject {
  return { ...object, metadata: { ...object.metadata, resourceVersion: "" } };
}

function allowed(rules: Rule[] | "*", verb: string, resource: string, namespace: string | undefined, name: string | undefined): boolean {
  if (rules === "*") return true;
  return rules.some(
    (rule) =>
      (rule.verbs.includes("*") || rule.verbs.includes(verb)) &&
      (rule.resources.includes("*") || rule.resources.includes(resource)) &&
      (rule.namespaces === undefined || (namespace !== undefined && rule.namespaces.includes(namespace))) &&
      (rule.names === undefined || (name !== undefined && rule.names.includes(name))),
  );
}

function verbOf(method: string, route: Route, query: Record<string, string>): string | undefined {
  const watching = query.watch === "true" || query.watch === "1";
  switch (method) {
    case "GET":
      return route.name ? (watching ? "watch" : "get") : watching ? "watch" : "list";
    case "POST":
      return route.name ? undefined : "create";
    case "PUT":
      return route.name ? "update" : undefined;
    case "PATCH":
      return route.name ? "patch" : undefined;
    case "DELETE":
      return route.name ? "delete" : undefined;
  }
  return undefined;
}

function parseFieldSelector(text: string): { name?: string; namespace?: string } {
  const result: { name?: string; namespace?: string } = {};
  for (const part of text.split(",").filter(Boolean)) {
    const match = /^(metadata\.name|metadata\.namespace)(==|=)(.*)$/.exec(part.trim());
    if (!match) throw new SelectorError(text, `field selector ${JSON.stringify(part)}: only metadata.name= and metadata.namespace= are supported`);
    if (match[1] === "metadata.name") result.name = match[3]!;
    else result.namespace = match[3]!;
  }
  return result;
}

function routeOf(path: string): Route | undefined {
  const parts = path.split("/").filter(Boolean);
  const joined = parts.join("/");
  if (joined === "version") return { discovery: "version" };
  if (["healthz", "livez", "readyz"].includes(joined)) return { discovery: "healthz" };
  if (["api", "apis", "api/v1", "apis/coordination.k8s.io", "apis/coordination.k8s.io/v1"].includes(joined)) return { discovery: joined };
  let rest: string[];
  let group: string;
  if (parts[0] === "api" && parts[1] === "v1") {
    rest = parts.slice(2);
    group = "";
  } else if (parts[0] === "apis" && parts[1] === "coordination.k8s.io" && parts[2] === "v1") {
    rest = parts.slice(3);
    group = "coordination.k8s.io";
  } else return undefined;
  let namespace: string | undefined;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const resource = rest[0] as ResourceName | undefined;
  if (!resource || !(resource in RESOURCES) || RESOURCES[resource].group !== group || rest.length > 3) return undefined;
  if (namespace && !RESOURCES[resource].namespaced) return undefined;
  if (!namespace && RESOURCES[resource].namespaced && rest.length > 1) return undefined;
  return { resource, ...(namespace ? { namespace } : {}), ...(rest[1] ? { name: rest[1] } : {}), ...(rest[2] ? { subresource: rest[2] } : {}) };
}

function discovery(path: string): unknown {
  const resourceList = (groupVersion: string, names: ResourceName[]) => ({
    kind: "APIResourceList",
    apiVersion: "v1",
    groupVersion,
    resources: names.flatMap((name) => {
      const info = RESOURCES[name];
      const main = { name, singularName: info.kind.toLowerCase(), namespaced: info.namespaced, kind: info.kind, verbs: info.verbs, ...(info.shortNames ? { shortNames: info.shortNames } : {}) };
      return info.hasStatus ? [main, { name: `${name}/status`, singularName: "", namespaced: info.namespaced, kind: info.kind, verbs: ["get", "patch", "update"] }] : [main];
    }),
  });
  const coordination = { groupVersion: "coordination.k8s.io/v1", version: "v1" };
  switch (path) {
    case "api":
      return { kind: "APIVersions", versions: ["v1"], serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: "127.0.0.1:6443" }] };
    case "apis":
      return { kind: "APIGroupList", apiVersion: "v1", groups: [{ name: "coordination.k8s.io", versions: [coordination], preferredVersion: coordination }] };
    case "apis/coordination.k8s.io":
      return { kind: "APIGroup", apiVersion: "v1", name: "coordination.k8s.io", versions: [coordination], preferredVersion: coordination };
    case "api/v1":
      return resourceList("v1", ["nodes", "events"]);
    default:
      return resourceList("coordination.k8s.io/v1", ["leases"]);
  }
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    request.on("error", reject);
  });
}
