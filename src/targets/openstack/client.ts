/**
 * A small OpenStack client: exactly the calls a route writer makes, over the global `fetch`. Keystone v3
 * gives a token and the service catalog; Neutron's endpoint (and Nova's, for `--nodes openstack`) comes
 * from that catalog, as every OpenStack client finds it. Neutron: extensions, routers by name or id,
 * their extra routes (the atomic `add_extraroutes` / `remove_extraroutes`, or the whole list with
 * `If-Match: revision_number=N`), ports and their allowed address pairs. Nova: servers with metadata.
 *
 * Credentials as the openstack CLI reads them (pure, `cloudConfigFrom`): `--os-cloud NAME` or OS_CLOUD
 * picks an entry of clouds.yaml (OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/clouds.yaml,
 * /etc/openstack/clouds.yaml; secure.yaml beside it merged in); else the OS_* variables. Two methods:
 * `password` (user by name and domain, or id; project by name and domain, or id) and
 * `v3applicationcredential` (id, or name and user, with the secret).
 *
 * Why our own and no SDK: npm's OpenStack packages (openstack-wrapper, openclient) are unmaintained thin
 * wrappers without Keystone v3 application credentials, revision guards or the atomic extra routes; the
 * dozen calls need nothing but fetch.
 *
 * Retries (p-retry, exponential backoff with jitter): 5xx, 429 and lost connections, `retries` times.
 * Every call repeated is safe to repeat: reads; the atomic extra-route calls (adding a route that is
 * there, or removing one that is not, is no error); and writes of a whole list or a port's pairs that
 * carry the revision they were computed from, so a repeat of one that landed is a 412, never a lost
 * update (a whole-list write without a revision is never repeated). A 401
 * logs in again once (the token expired). Lists follow `<collection>_links` rel=next (limit/marker).
 */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import pRetry from "p-retry";
import { UsageError } from "../../errors.js";
import type { CallObserver } from "../../options.js";
import { yaml } from "../../yaml.js";

/** Where and how to log in: what clouds.yaml's `auth` or the OS_* variables say. */
export interface CloudConfig {
  authUrl: string;
  authType: "password" | "v3applicationcredential";
  username?: string;
  userId?: string;
  password?: string;
  userDomainName?: string;
  userDomainId?: string;
  projectName?: string;
  projectId?: string;
  projectDomainName?: string;
  projectDomainId?: string;
  applicationCredentialId?: string;
  applicationCredentialName?: string;
  applicationCredentialSecret?: string;
  region?: string;
  /** Catalog interface: public (the default), internal or admin. */
  interface: string;
  /** Where the settings came from, for errors: `OS_* variables`, `clouds.yaml cloud "x" (/path)`. */
  source: string;
}

/** A clouds.yaml (or secure.yaml) as read: its path and text. */
export interface ConfigFile {
  path: string;
  text: string;
}

const AUTH_KEYS: Record<string, keyof CloudConfig> = {
  auth_url: "authUrl",
  username: "username",
  user_id: "userId",
  password: "password",
  user_domain_name: "userDomainName",
  user_domain_id: "userDomainId",
  project_name: "projectName",
  tenant_name: "projectName",
  project_id: "projectId",
  tenant_id: "projectId",
  project_domain_name: "projectDomainName",
  project_domain_id: "projectDomainId",
  application_credential_id: "applicationCredentialId",
  application_credential_name: "applicationCredentialName",
  application_credential_secret: "applicationCredentialSecret",
};

function authType(text: string | undefined, where: string): CloudConfig["authType"] {
  const type = (text ?? "password").toLowerCase();
  if (type === "password" || type === "v3password") return "password";
  if (type === "v3applicationcredential" || type === "applicationcredential" || type === "application_credential") return "v3applicationcredential";
  throw new UsageError(`openstack: ${where}: auth type ${JSON.stringify(text)} is not supported (password, v3applicationcredential)`);
}

/** What a config lacks to log in, or nothing. */
function missing(config: CloudConfig): string[] {
  const out: string[] = [];
  if (!config.authUrl) out.push("auth_url (OS_AUTH_URL)");
  if (config.authType === "password") {
    if (!config.username && !config.userId) out.push("username (OS_USERNAME) or user_id");
    if (!config.password) out.push("password (OS_PASSWORD)");
    if (!config.projectName && !config.projectId) out.push("project_name (OS_PROJECT_NAME) or project_id (OS_PROJECT_ID)");
  } else {
    if (!config.applicationCredentialSecret) out.push("application_credential_secret (OS_APPLICATION_CREDENTIAL_SECRET)");
    if (!config.applicationCredentialId && !(config.applicationCredentialName && (config.username || config.userId))) {
      out.push("application_credential_id (OS_APPLICATION_CREDENTIAL_ID), or its name and the user");
    }
  }
  return out;
}

function deepMerge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const mine = out[key];
    out[key] = value && typeof value === "object" && !Array.isArray(value) && mine && typeof mine === "object" ? deepMerge(mine as Record<string, unknown>, value as Record<string, unknown>) : value;
  }
  return out;
}

/**
 * The login settings (pure): clouds.yaml's entry `cloud` when one is named (secure.yaml merged over it),
 * else the OS_* variables. Throws a UsageError naming what is missing or wrong, and where.
 */
export function cloudConfigFrom(input: { env: NodeJS.ProcessEnv; cloud?: string; clouds?: ConfigFile; secure?: ConfigFile }): CloudConfig {
  const { env } = input;
  const cloud = input.cloud || env.OS_CLOUD;
  let config: CloudConfig;
  if (cloud) {
    if (!input.clouds) {
      throw new UsageError(`openstack: cloud ${JSON.stringify(cloud)} (--os-cloud or OS_CLOUD) needs a clouds.yaml: none in OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/clouds.yaml or /etc/openstack/clouds.yaml`);
    }
    const parse = (file: ConfigFile) => {
      try {
        return (yaml().parse(file.text) ?? {}) as { clouds?: Record<string, Record<string, unknown>> };
      } catch (error) {
        throw new UsageError(`openstack: ${file.path}: not YAML: ${(error as Error).message}`, { cause: error });
      }
    };
    const all = parse(input.clouds).clouds ?? {};
    let entry = all[cloud];
    if (!entry) throw new UsageError(`openstack: ${input.clouds.path} has no cloud ${JSON.stringify(cloud)} (it has: ${Object.keys(all).join(", ") || "none"})`);
    const secret = input.secure ? parse(input.secure).clouds?.[cloud] : undefined;
    if (secret) entry = deepMerge(entry, secret);
    const where = `clouds.yaml cloud ${JSON.stringify(cloud)} (${input.clouds.path})`;
    config = { authUrl: "", authType: authType(entry.auth_type as string | undefined, where), interface: String(entry.interface ?? "public"), source: where };
    if (entry.region_name !== undefined) config.region = String(entry.region_name);
    for (const [key, value] of Object.entries((entry.auth ?? {}) as Record<string, unknown>)) {
      const field = AUTH_KEYS[key];
      if (field && value !== undefined && value !== null) (config as unknown as Record<string, unknown>)[field] = String(value);
    }
  } else {
    const where = "the OS_* variables";
    config = { authUrl: env.OS_AUTH_URL ?? "", authType: authType(env.OS_AUTH_TYPE, where), interface: env.OS_INTERFACE || env.OS_ENDPOINT_TYPE || "public", source: where };
    for (const [key, field] of Object.entries(AUTH_KEYS)) {
      const value = env[`OS_${key.toUpperCase()}`];
      if (value) (config as unknown as Record<string, unknown>)[field] ??= value;
    }
    if (env.OS_REGION_NAME) config.region = env.OS_REGION_NAME;
  }
  config.interface = config.interface.replace(/URL$/, "");
  const lacking = missing(config);
  if (lacking.length) throw new UsageError(`openstack: ${config.source} lack ${lacking.join(", ")}`);
  try {
    const url = new URL(config.authUrl);
    if (url.protocol !== "https:" && url.protocol !== "http:") throw new Error("not http(s)");
  } catch {
    throw new UsageError(`openstack: ${config.source}: auth_url ${JSON.stringify(config.authUrl)} is not an http(s) URL`);
  }
  return config;
}

/** The clouds.yaml the openstack CLI would read (the first that exists), and secure.yaml beside it. */
export function readConfigFiles(env: NodeJS.ProcessEnv, cwd = process.cwd()): { clouds?: ConfigFile; secure?: ConfigFile } {
  const home = env.HOME ?? homedir();
  const candidates = [env.OS_CLIENT_CONFIG_FILE, join(cwd, "clouds.yaml"), join(home, ".config/openstack/clouds.yaml"), "/etc/openstack/clouds.yaml"].filter((p): p is string => !!p);
  const path = candidates.find((p) => existsSync(p));
  if (!path) return {};
  const securePath = join(dirname(path), "secure.yaml");
  return {
    clouds: { path, text: readFileSync(path, "utf8") },
    ...(existsSync(securePath) ? { secure: { path: securePath, text: readFileSync(securePath, "utf8") } } : {}),
  };
}

/** The body of `POST /v3/auth/tokens` for a config (pure). */
export function tokenRequest(config: CloudConfig): unknown {
  const domain = (name?: string, id?: string) => (id ? { id } : name ? { name } : { id: "default" });
  const user = config.userId ? { id: config.userId } : config.username ? { name: config.username, domain: domain(config.userDomainName, config.userDomainId) } : undefined;
  if (config.authType === "v3applicationcredential") {
    const credential = config.applicationCredentialId
      ? { id: config.applicationCredentialId, secret: config.applicationCredentialSecret }
      : { name: config.applicationCredentialName, secret: config.applicationCredentialSecret, user };
    // An application credential is scoped to its project already: a scope would be refused.
    return { auth: { identity: { methods: ["application_credential"], application_credential: credential } } };
  }
  const project = config.projectId
    ? { id: config.projectId }
    : { name: config.projectName, domain: domain(config.projectDomainName ?? config.userDomainName, config.projectDomainId ?? config.userDomainId) };
  return { auth: { identity: { methods: ["password"], password: { user: { ...user, password: config.password } } }, scope: { project } } };
}

export interface CatalogEntry {
  type: string;
  name?: string;
  endpoints: { interface: string; region?: string; region_id?: string; url: string }[];
}

/** The URL of a service in a token's catalog (pure): its type, the interface, the region when one is set. */
export function endpointFrom(catalog: CatalogEntry[], type: string, iface: string, region?: string): string | undefined {
  const service = catalog.find((entry) => entry.type === type);
  const endpoint = service?.endpoints.find((e) => e.interface === iface && (!region || e.region === region || e.region_id === region));
  return endpoint?.url.replace(/\/+$/, "");
}

/** Keystone's v3 root from an auth URL with or without the version. */
export function identityV3(authUrl: string): string {
  const trimmed = authUrl.replace(/\/+$/, "");
  return /\/v3$/.test(trimmed) ? trimmed : `${trimmed}/v3`;
}

export interface ExtraRoute {
  destination: string;
  nexthop: string;
}

export interface Router {
  id: string;
  name: string;
  routes: ExtraRoute[];
  revision: number;
}

export interface AddressPair {
  ip_address: string;
  mac_address?: string;
}

export interface Port {
  id: string;
  name: string;
  networkId: string;
  macAddress: string;
  fixedIps: { subnetId: string; ipAddress: string }[];
  deviceId: string;
  deviceOwner: string;
  allowedAddressPairs: AddressPair[];
  portSecurity: boolean;
  revision: number;
}

export interface Server {
  id: string;
  name: string;
  status: string;
  metadata: Record<string, string>;
  /** Network name → its addresses. */
  addresses: Record<string, { addr: string; version: number; type?: string }[]>;
}

/** An error answered by Neutron (`{"NeutronError": {type, message}}`), Keystone or Nova, with its HTTP status. */
export class OpenStackApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    readonly detail: string,
    /** `METHOD /path` of the call. */
    readonly call: string,
  ) {
    super(`${call}: ${detail} (${status ? `HTTP ${status}` : "no answer"}${type ? ` ${type}` : ""})`);
    this.name = "OpenStackApiError";
  }
}

/** A call whose connection failed (refused, reset): the fetch error is its cause. */
export class OpenStackNetworkError extends Error {
  constructor(call: string, cause: unknown) {
    super(`${call}: the connection failed${cause instanceof Error && cause.cause instanceof Error ? ` (${cause.cause.message})` : ""}`, { cause });
    this.name = "OpenStackNetworkError";
  }
}

export function isTransient(error: unknown): boolean {
  if (error instanceof OpenStackApiError) return error.status >= 500 || error.status === 429;
  return error instanceof OpenStackNetworkError || (error instanceof Error && error.name === "TimeoutError");
}

/** The revision guard failed: the resource changed since it was read. */
export function isRevisionConflict(error: unknown): boolean {
  return error instanceof OpenStackApiError && error.status === 412;
}

export interface OpenStackSettings {
  config: CloudConfig;
  requestTimeoutMs?: number;
  retries?: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Items asked for per page of a list (Neutron's and Nova's `limit`). */
  pageSize?: number;
  signal?: AbortSignal;
  calls?: CallObserver;
}

export interface OpenStackApi {
  /** The aliases of Neutron's extensions (`extraroute-atomic`, `revision-if-match`, ...). */
  extensions(): Promise<Set<string>>;
  /** A router by id, else by name (which must be unique); undefined when there is none. */
  findRouter(nameOrId: string): Promise<Router | undefined>;
  getRouter(id: string): Promise<Router>;
  addExtraRoutes(routerId: string, routes: ExtraRoute[]): Promise<Router>;
  removeExtraRoutes(routerId: string, routes: ExtraRoute[]): Promise<Router>;
  /** Replaces the whole list; with `ifRevision`, only if the router is still at that revision (else a 412). */
  setRoutes(routerId: string, routes: ExtraRoute[], ifRevision?: number): Promise<Router>;
  listPorts(filter: Record<string, string | string[]>): Promise<Port[]>;
  /** Replaces a port's pairs, only if the port is still at that revision (else a 412). */
  setAllowedAddressPairs(portId: string, pairs: AddressPair[], ifRevision: number): Promise<Port>;
  listServers(): Promise<Server[]>;
  /** Told of each throttling answer (429), which the client retries. */
  onThrottle(listener: () => void): void;
  readonly calls: { requests: number; retries: number; logins: number };
}

type RawRouter = { id: string; name: string; routes?: ExtraRoute[] | null; revision_number?: number };
type RawPort = {
  id: string;
  name?: string;
  network_id: string;
  mac_address: string;
  fixed_ips?: { subnet_id: string; ip_address: string }[];
  device_id?: string;
  device_owner?: string;
  allowed_address_pairs?: AddressPair[] | null;
  port_security_enabled?: boolean;
  revision_number?: number;
};
type RawServer = { id: string; name: string; status: string; metadata?: Record<string, string>; addresses?: Record<string, { addr: string; version: number; "OS-EXT-IPS:type"?: string }[]> };

function routerFrom(raw: RawRouter): Router {
  return { id: raw.id, name: raw.name, routes: (raw.routes ?? []).map((r) => ({ destination: r.destination, nexthop: r.nexthop })), revision: raw.revision_number ?? 0 };
}

function portFrom(raw: RawPort): Port {
  return {
    id: raw.id,
    name: raw.name ?? "",
    networkId: raw.network_id,
    macAddress: raw.mac_address,
    fixedIps: (raw.fixed_ips ?? []).map((f) => ({ subnetId: f.subnet_id, ipAddress: f.ip_address })),
    deviceId: raw.device_id ?? "",
    deviceOwner: raw.device_owner ?? "",
    allowedAddressPairs: raw.allowed_address_pairs ?? [],
    portSecurity: raw.port_security_enabled !== false,
    revision: raw.revision_number ?? 0,
  };
}

function serverFrom(raw: RawServer): Server {
  const addresses: Server["addresses"] = {};
  for (const [network, list] of Object.entries(raw.addresses ?? {})) {
    addresses[network] = list.map((a) => ({ addr: a.addr, version: a.version, ...(a["OS-EXT-IPS:type"] ? { type: a["OS-EXT-IPS:type"] } : {}) }));
  }
  return { id: raw.id, name: raw.name, status: raw.status, metadata: raw.metadata ?? {}, addresses };
}

const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

export function createOpenStackApi(settings: OpenStackSettings): OpenStackApi {
  return new OpenStackClient(settings);
}

class OpenStackClient implements OpenStackApi {
  readonly calls = { requests: 0, retries: 0, logins: 0 };
  private readonly throttleListeners: (() => void)[] = [];
  private session?: Promise<{ token: string; expiresAt: number; network: string; compute?: string }>;

  constructor(private readonly settings: OpenStackSettings) {}

  private login(): Promise<{ token: string; expiresAt: number; network: string; compute?: string }> {
    const { config } = this.settings;
    const url = `${identityV3(config.authUrl)}/auth/tokens`;
    return this.retrying("POST /v3/auth/tokens", async () => {
      this.calls.logins++;
      const response = await this.fetch("POST", url, "POST /v3/auth/tokens", { "Content-Type": "application/json" }, tokenRequest(config));
      const token = response.headers.get("x-subject-token");
      const body = (await this.body(response, "POST /v3/auth/tokens")) as { token?: { expires_at?: string; catalog?: CatalogEntry[] } };
      if (!token) throw new OpenStackApiError(response.status, "", "Keystone answered without X-Subject-Token", "POST /v3/auth/tokens");
      const catalog = body.token?.catalog ?? [];
      const network = endpointFrom(catalog, "network", config.interface, config.region);
      if (!network) {
        throw new OpenStackApiError(0, "EndpointNotFound", `the catalog has no ${config.interface} network endpoint${config.region ? ` in region ${config.region}` : ""} (Neutron)`, "POST /v3/auth/tokens");
      }
      const compute = endpointFrom(catalog, "compute", config.interface, config.region);
      return {
        token,
        expiresAt: body.token?.expires_at ? Date.parse(body.token.expires_at) : Date.now() + 3_600_000,
        network: /\/v2\.0$/.test(network) ? network : `${network}/v2.0`,
        ...(compute ? { compute: /\/v2(\.1)?(\/|$)/.test(compute) ? compute : `${compute}/v2.1` } : {}),
      };
    });
  }

  /** A token good for another minute, logging in again when it is not (or `fresh`: after a 401). */
  private async current(fresh = false) {
    const session = this.session ? await this.session.catch(() => undefined) : undefined;
    if (!fresh && session && session.expiresAt - 60_000 > Date.now()) return session;
    const next = this.login();
    this.session = next;
    next.catch(() => {
      if (this.session === next) this.session = undefined;
    });
    return next;
  }

  private async fetch(method: string, url: string, call: string, headers: Record<string, string>, body?: unknown): Promise<Response> {
    this.settings.signal?.throwIfAborted();
    this.calls.requests++;
    const timeout = AbortSignal.timeout(this.settings.requestTimeoutMs ?? 30_000);
    const signal = this.settings.signal ? AbortSignal.any([timeout, this.settings.signal]) : timeout;
    try {
      return await fetch(url, {
        method,
        headers: { Accept: "application/json", "User-Agent": "podroutes", ...headers },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal,
      });
    } catch (error) {
      if ((error as Error)?.name === "TimeoutError" || (error as Error)?.name === "AbortError") throw error;
      throw new OpenStackNetworkError(call, error);
    }
  }

  /** The parsed body of a good answer, or the service's error. */
  private async body(response: Response, call: string): Promise<unknown> {
    const text = await response.text();
    if (response.ok) return text ? JSON.parse(text) : {};
    let type = "";
    let detail = `HTTP ${response.status}`;
    try {
      const parsed = JSON.parse(text) as Record<string, { type?: string; message?: string; title?: string }>;
      const inner = parsed.NeutronError ?? parsed.error ?? Object.values(parsed)[0];
      type = inner?.type ?? inner?.title ?? "";
      detail = inner?.message ?? detail;
    } catch {
      if (text) detail = text.slice(0, 200);
    }
    throw new OpenStackApiError(response.status, type, detail, call);
  }

  private retrying<T>(call: string, attempt: () => Promise<T>, retries = this.settings.retries ?? 4): Promise<T> {
    let attempts = 0;
    return pRetry(
      async () => {
        if (attempts++ > 0) this.calls.retries++;
        return attempt();
      },
      {
        retries,
        factor: 2,
        minTimeout: this.settings.minBackoffMs ?? 300,
        maxTimeout: this.settings.maxBackoffMs ?? 5_000,
        randomize: true,
        shouldRetry: ({ error }) => isTransient(error),
        onFailedAttempt: ({ error }) => {
          if (error instanceof OpenStackApiError && error.status === 429) {
            this.settings.calls?.throttled();
            for (const listener of this.throttleListeners) listener();
          }
        },
        ...(this.settings.signal ? { signal: this.settings.signal } : {}),
      },
    );
  }

  /** One call to a service, under the token (logging in again once on a 401), with the retries above. */
  private call<T>(service: "network" | "compute", method: string, path: string, body?: unknown, headers: Record<string, string> = {}, repeatable = true): Promise<T> {
    const call = `${method} ${path.replace(/\?.*$/, "")}`;
    const retries = repeatable ? undefined : 0;
    return this.retrying(call, async () => {
      const finished = this.settings.calls?.started(callName(method, path));
      let outcome = "ok";
      try {
        for (let loggedIn = false; ; loggedIn = true) {
          const session = await this.current(loggedIn);
          const root = service === "network" ? session.network : session.compute;
          if (!root) throw new OpenStackApiError(0, "EndpointNotFound", `the catalog has no ${this.settings.config.interface} compute endpoint (Nova)`, call);
          const url = /^https?:/.test(path) ? path : `${root}${path}`;
          const response = await this.fetch(method, url, call, { "X-Auth-Token": session.token, ...(body === undefined ? {} : { "Content-Type": "application/json" }), ...headers }, body);
          if (response.status === 401 && !loggedIn) {
            await response.body?.cancel();
            continue;
          }
          return (await this.body(response, call)) as T;
        }
      } catch (error) {
        outcome = error instanceof OpenStackApiError ? error.type || String(error.status) : this.settings.signal?.aborted ? "cancelled" : "network";
        throw error;
      } finally {
        finished?.(outcome);
      }
    }, retries);
  }

  /** Every item of a list, page by page (`limit`, then the `next` links). */
  private async list<T>(service: "network" | "compute", path: string, key: string, query: URLSearchParams): Promise<T[]> {
    query.set("limit", String(this.settings.pageSize ?? 1000));
    const out: T[] = [];
    let next: string | undefined = `${path}?${query}`;
    while (next) {
      const body: Record<string, unknown> = await this.call<Record<string, unknown>>(service, "GET", next);
      const page = (body[key] as T[] | undefined) ?? [];
      out.push(...page);
      const link = (body[`${key}_links`] as { rel: string; href: string }[] | undefined)?.find((l) => l.rel === "next")?.href;
      // A next link on an empty page would loop for ever.
      next = link && page.length ? link : undefined;
    }
    return out;
  }

  onThrottle(listener: () => void): void {
    this.throttleListeners.push(listener);
  }

  async extensions(): Promise<Set<string>> {
    const body = await this.call<{ extensions?: { alias: string }[] }>("network", "GET", "/extensions");
    return new Set((body.extensions ?? []).map((e) => e.alias));
  }

  async findRouter(nameOrId: string): Promise<Router | undefined> {
    if (UUID.test(nameOrId)) {
      try {
        return await this.getRouter(nameOrId);
      } catch (error) {
        if (!(error instanceof OpenStackApiError && error.status === 404)) throw error;
      }
    }
    const found = await this.list<RawRouter>("network", "/routers", "routers", new URLSearchParams({ name: nameOrId }));
    if (found.length > 1) throw new UsageError(`openstack: ${found.length} routers are named ${JSON.stringify(nameOrId)} (${found.map((r) => r.id).join(", ")}): give --router its id`);
    return found[0] && routerFrom(found[0]);
  }

  async getRouter(id: string): Promise<Router> {
    return routerFrom((await this.call<{ router: RawRouter }>("network", "GET", `/routers/${encodeURIComponent(id)}`)).router);
  }

  async addExtraRoutes(routerId: string, routes: ExtraRoute[]): Promise<Router> {
    return routerFrom((await this.call<{ router: RawRouter }>("network", "PUT", `/routers/${encodeURIComponent(routerId)}/add_extraroutes`, { router: { routes } })).router);
  }

  async removeExtraRoutes(routerId: string, routes: ExtraRoute[]): Promise<Router> {
    return routerFrom((await this.call<{ router: RawRouter }>("network", "PUT", `/routers/${encodeURIComponent(routerId)}/remove_extraroutes`, { router: { routes } })).router);
  }

  async setRoutes(routerId: string, routes: ExtraRoute[], ifRevision?: number): Promise<Router> {
    const headers: Record<string, string> = ifRevision === undefined ? {} : { "If-Match": `revision_number=${ifRevision}` };
    // Unguarded, a repeat of a write that landed could undo another writer's change made in between: never repeated.
    return routerFrom((await this.call<{ router: RawRouter }>("network", "PUT", `/routers/${encodeURIComponent(routerId)}`, { router: { routes } }, headers, ifRevision !== undefined)).router);
  }

  async listPorts(filter: Record<string, string | string[]>): Promise<Port[]> {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(filter)) for (const v of ([] as string[]).concat(value)) query.append(key, v);
    return (await this.list<RawPort>("network", "/ports", "ports", query)).map(portFrom);
  }

  async setAllowedAddressPairs(portId: string, pairs: AddressPair[], ifRevision: number): Promise<Port> {
    const body = { port: { allowed_address_pairs: pairs } };
    return portFrom((await this.call<{ port: RawPort }>("network", "PUT", `/ports/${encodeURIComponent(portId)}`, body, { "If-Match": `revision_number=${ifRevision}` })).port);
  }

  async listServers(): Promise<Server[]> {
    return (await this.list<RawServer>("compute", "/servers/detail", "servers", new URLSearchParams())).map(serverFrom);
  }
}

/** The API's name of a call, for metrics: `routers.add_extraroutes`, `ports.list`, `servers.list`. */
export function callName(method: string, path: string): string {
  const p = path.replace(/^https?:\/\/[^/]+/, "").replace(/\?.*$/, "").replace(/^.*\/v2\.[01]/, "");
  const m = p.match(/^\/(routers|ports|extensions|servers)(\/[^/]+)?(\/\w+)?$/);
  if (!m) return `${method} ${p}`;
  if (m[3]) return `${m[1]}.${m[3].slice(1)}`;
  if (m[1] === "servers" && m[2] === "/detail") return "servers.list";
  if (!m[2]) return `${m[1]}.list`;
  return `${m[1]}.${method === "GET" ? "get" : "update"}`;
}

/** An error's words for a report: the API's message, or the connection's. */
export function openstackErrorText(error: unknown): string {
  if (error instanceof OpenStackApiError || error instanceof OpenStackNetworkError || error instanceof UsageError) return error.message;
  if (error instanceof Error && error.name === "TimeoutError") return "the request timed out";
  return error instanceof Error ? error.message : String(error);
}
