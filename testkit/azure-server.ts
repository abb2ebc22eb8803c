/**
 * A local Azure Resource Manager (ARM) server for offline tests: route tables and their routes, network
 * interfaces, virtual machines, and the Azure AD token endpoint, shaped like the public REST API (the
 * Microsoft.Network and Microsoft.Compute REST references, and the bodies the real `az` CLI and the
 * @azure/arm-network SDK send and decode). Listens on 127.0.0.1 only, over TLS: Azure's SDKs and the CLI
 * insist on HTTPS, so the server makes a test CA and a certificate for 127.0.0.1 at startup (openssl) and
 * hands out the CA (`caFile`, `caPem`) for clients to trust: NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE, or
 * an https.Agent. What it reproduces, because a route writer depends on it:
 * - tokens: `POST /{tenant}/oauth2/v2.0/token` (AAD v2, client credentials: client_id and client_secret
 *   checked) and `POST /adfs/oauth2/token` (an Azure Stack style ADFS authority, which MSAL for Python, in
 *   `az`, accepts without instance discovery at login.microsoftonline.com), with the OpenID metadata each
 *   asks for first; ARM calls need `Authorization: Bearer` with an issued token (or the static `token`),
 *   else 401 `InvalidAuthenticationToken`;
 * - `api-version` required on every ARM call (400 `MissingApiVersionParameter`), any dated version taken;
 * - errors as `{"error":{"code","message"}}`;
 * - ETags (`W/"…"`) on every resource and in the `ETag` header, new on every change of it; `If-Match`
 *   that does not match (or `*` on a missing resource) is 412 `PreconditionFailed`, `If-None-Match: *` on
 *   an existing one likewise; a route table's routes carry the table's ETag, as on Azure;
 * - long-running operations: PUT answers 201 (new) or 200 with `provisioningState: Updating`, DELETE 202,
 *   each with an `Azure-AsyncOperation` URL (and `Location` for DELETE) and `Retry-After`; the operation
 *   reads `InProgress` until `operationDelayMs` passed, then `Succeeded`, and the resource turns
 *   `Succeeded` with it. The change itself is visible at once, as on Azure;
 * - one operation per route table at a time: a write to a table still Updating is answered
 *   `RetryableErrorDueToAnotherOperation` (429 by default, or 409, with Retry-After) — what parallel
 *   per-route calls meet on Azure (kubernetes #88151);
 * - route validation: addressPrefix a CIDR, nextHopType one of Azure's, nextHopIpAddress required for
 *   VirtualAppliance and refused otherwise, no two routes with one prefix, names as Azure allows them,
 *   at most `routeLimit` routes per table (400, Azure's limit);
 * - lists paged by `pageSize` with `nextLink` (a `$skiptoken`);
 * - `subscriptions` and `tenants` lists (what `az login` reads), resource groups.
 * Faults for tests: `beforeNext` runs a function before the next matching request is handled (someone
 * else's write landing between a client's read and its write), `injectError` answers matching requests
 * with an error, `failNextOperation` ends a route table PUT's operation `Failed` (the table left as it
 * was, marked Failed), `holdTable` keeps a table busy with someone else's operation. Every request is logged (`requests`).
 */
import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ipaddr from "ipaddr.js";

export const NEXT_HOP_TYPES = ["VirtualNetworkGateway", "VnetLocal", "Internet", "VirtualAppliance", "None"] as const;
export type NextHopType = (typeof NEXT_HOP_TYPES)[number];

export interface ArmRoute {
  name: string;
  id: string;
  etag: string;
  type: "Microsoft.Network/routeTables/routes";
  properties: { provisioningState: string; addressPrefix: string; nextHopType: NextHopType; nextHopIpAddress?: string; hasBgpOverride: boolean };
}

export interface ArmRouteTable {
  name: string;
  id: string;
  etag: string;
  type: "Microsoft.Network/routeTables";
  location: string;
  tags?: Record<string, string>;
  properties: { provisioningState: string; resourceGuid: string; disableBgpRoutePropagation: boolean; routes: ArmRoute[]; subnets?: { id: string }[] };
}

export interface ArmIpConfiguration {
  name: string;
  id: string;
  etag: string;
  type: "Microsoft.Network/networkInterfaces/ipConfigurations";
  properties: { provisioningState: string; privateIPAddress: string; privateIPAllocationMethod: string; privateIPAddressVersion: "IPv4" | "IPv6"; primary: boolean; subnet?: { id: string } };
}

export interface ArmNetworkInterface {
  name: string;
  id: string;
  etag: string;
  type: "Microsoft.Network/networkInterfaces";
  location: string;
  tags?: Record<string, string>;
  properties: {
    provisioningState: string;
    resourceGuid: string;
    ipConfigurations: ArmIpConfiguration[];
    enableIPForwarding: boolean;
    enableAcceleratedNetworking: boolean;
    macAddress: string;
    primary: boolean;
    virtualMachine?: { id: string };
    dnsSettings: { dnsServers: string[]; appliedDnsServers: string[] };
  };
}

export interface ArmVirtualMachine {
  name: string;
  id: string;
  type: "Microsoft.Compute/virtualMachines";
  location: string;
  tags?: Record<string, string>;
  properties: {
    vmId: string;
    provisioningState: string;
    hardwareProfile: { vmSize: string };
    networkProfile: { networkInterfaces: { id: string; properties: { primary: boolean } }[] };
    osProfile: { computerName: string };
  };
}

export interface AzureServerOptions {
  /**
   * How long an operation reads InProgress (and its resource Updating); 0: it has ended by the first poll
   * (the PUT's answer still says Updating); "manual": until `finishOperations()`.
   */
  operationDelayMs?: number | "manual";
  /** The Retry-After (seconds) of operations and busy answers: what clients wait before polling (az: 30 s without it). */
  retryAfterSeconds?: number;
  /** The status of `RetryableErrorDueToAnotherOperation`. */
  busyStatus?: 429 | 409;
  /** Routes per table (Azure: 400). */
  routeLimit?: number;
  /** Items per page of a list. */
  pageSize?: number;
  location?: string;
}

export interface ArmRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage["headers"];
  body?: unknown;
  status: number;
  error?: string;
}

export interface InjectedArmError {
  when: (call: { method: string; path: string }) => boolean;
  status: number;
  code: string;
  message?: string;
  count?: number;
}

class ArmError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const ROUTE_NAME = /^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,78}[a-zA-Z0-9_])?$/;
const API_VERSION = /^\d{4}-\d{2}-\d{2}(-preview)?$/;

function newEtag(): string {
  return `W/"${randomUUID()}"`;
}

/** A test CA and a certificate it signs for 127.0.0.1, made with openssl in a temp dir that is removed at once. */
export function makeTestCertificates(): { caPem: string; certPem: string; keyPem: string } {
  const dir = mkdtempSync(join(tmpdir(), "podroutes-azure-ca-"));
  try {
    const run = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
    run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=podroutes Azure test CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    run(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    writeFileSync(join(dir, "ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n");
    run(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf"]);
    return { caPem: readFileSync(join(dir, "ca.pem"), "utf8"), certPem: readFileSync(join(dir, "server.pem"), "utf8"), keyPem: readFileSync(join(dir, "server.key"), "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Operation {
  id: string;
  status: "InProgress" | "Succeeded" | "Failed";
  error?: { code: string; message: string };
  /** Ends the operation: Succeeded, or Failed when a failure was injected for it. */
  finish: () => void;
}

export class AzureServerApi {
  readonly subscriptionId = randomUUID();
  readonly tenantId = randomUUID();
  readonly clientId = randomUUID();
  readonly clientSecret = randomBytes(12).toString("hex");
  /** A token valid without the token endpoint (a static credential's). */
  readonly token = `static-${randomBytes(12).toString("hex")}`;
  readonly requests: ArmRequest[] = [];
  readonly routeTables = new Map<string, ArmRouteTable>();
  readonly networkInterfaces = new Map<string, ArmNetworkInterface>();
  readonly virtualMachines = new Map<string, ArmVirtualMachine>();
  readonly resourceGroups = new Set<string>();
  /** Set to a file holding the CA while the server runs. */
  caFile = "";
  caPem = "";
  endpoint = "";
  private readonly issued = new Set<string>();
  private readonly operations = new Map<string, Operation>();
  /** Tables (by key) with an operation in progress. */
  private readonly busy = new Set<string>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly hooks: { when: (call: { method: string; path: string }) => boolean; run: () => void | Promise<void> }[] = [];
  private readonly injected: InjectedArmError[] = [];
  private readonly failures: { code: string; message: string }[] = [];
  private server?: Server;
  private dir = "";
  private readonly options: Required<AzureServerOptions>;

  constructor(options: AzureServerOptions = {}) {
    this.options = { operationDelayMs: 0, retryAfterSeconds: 1, busyStatus: 429, routeLimit: 400, pageSize: 50, location: "westeurope", ...options };
  }

  async start(): Promise<this> {
    const { caPem, certPem, keyPem } = makeTestCertificates();
    this.caPem = caPem;
    this.dir = mkdtempSync(join(tmpdir(), "podroutes-azure-server-"));
    this.caFile = join(this.dir, "ca.pem");
    writeFileSync(this.caFile, caPem);
    this.server = createServer({ cert: certPem, key: keyPem }, (req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    this.endpoint = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    if (this.server) {
      this.server.closeAllConnections();
      await new Promise<void>((resolve) => this.server!.close(() => resolve()));
      this.server = undefined;
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** The AAD v2 authority host of the token endpoint (`${endpoint}/`), as AZURE_AUTHORITY_HOST. */
  get authorityHost(): string {
    return `${this.endpoint}/`;
  }

  // ---- state, for tests -------------------------------------------------------------------------

  private rgPath(rg: string): string {
    return `/subscriptions/${this.subscriptionId}/resourceGroups/${rg}`;
  }

  addResourceGroup(rg: string): void {
    this.resourceGroups.add(rg.toLowerCase());
  }

  addRouteTable(rg: string, name: string, fields: { routes?: { name: string; addressPrefix: string; nextHopType?: NextHopType; nextHopIpAddress?: string }[]; tags?: Record<string, string> } = {}): ArmRouteTable {
    this.addResourceGroup(rg);
    const id = `${this.rgPath(rg)}/providers/Microsoft.Network/routeTables/${name}`;
    const table: ArmRouteTable = {
      name,
      id,
      etag: newEtag(),
      type: "Microsoft.Network/routeTables",
      location: this.options.location,
      ...(fields.tags ? { tags: fields.tags } : {}),
      properties: { provisioningState: "Succeeded", resourceGuid: randomUUID(), disableBgpRoutePropagation: false, routes: [] },
    };
    table.properties.routes = (fields.routes ?? []).map((r) => this.routeObject(table, r.name, { addressPrefix: r.addressPrefix, nextHopType: r.nextHopType ?? "VirtualAppliance", ...(r.nextHopIpAddress ? { nextHopIpAddress: r.nextHopIpAddress } : {}) }));
    this.routeTables.set(key(rg, name), table);
    return table;
  }

  routeTable(rg: string, name: string): ArmRouteTable | undefined {
    return this.routeTables.get(key(rg, name));
  }

  /** Someone else's route change, straight into the state: the table gets a new ETag. */
  setRoute(rg: string, tableName: string, route: { name: string; addressPrefix: string; nextHopType?: NextHopType; nextHopIpAddress?: string }): void {
    const table = this.routeTable(rg, tableName);
    if (!table) throw new Error(`no route table ${rg}/${tableName}`);
    const rest = table.properties.routes.filter((r) => r.name.toLowerCase() !== route.name.toLowerCase());
    table.properties.routes = [...rest, this.routeObject(table, route.name, { addressPrefix: route.addressPrefix, nextHopType: route.nextHopType ?? "VirtualAppliance", ...(route.nextHopIpAddress ? { nextHopIpAddress: route.nextHopIpAddress } : {}) })];
    this.touchTable(table);
  }

  /** A VM with one NIC per address (the first primary), in `rg`. */
  addVirtualMachine(rg: string, name: string, fields: { addresses: string[]; tags?: Record<string, string>; enableIPForwarding?: boolean }): { vm: ArmVirtualMachine; nics: ArmNetworkInterface[] } {
    this.addResourceGroup(rg);
    const vmId = `${this.rgPath(rg)}/providers/Microsoft.Compute/virtualMachines/${name}`;
    const nics = fields.addresses.map((address, i) => this.addNetworkInterface(rg, `${name}-nic${i}`, { address, primary: i === 0, virtualMachine: vmId, enableIPForwarding: fields.enableIPForwarding ?? false }));
    const vm: ArmVirtualMachine = {
      name,
      id: vmId,
      type: "Microsoft.Compute/virtualMachines",
      location: this.options.location,
      ...(fields.tags ? { tags: fields.tags } : {}),
      properties: {
        vmId: randomUUID(),
        provisioningState: "Succeeded",
        hardwareProfile: { vmSize: "Standard_B2s" },
        networkProfile: { networkInterfaces: nics.map((nic, i) => ({ id: nic.id, properties: { primary: i === 0 } })) },
        osProfile: { computerName: name },
      },
    };
    this.virtualMachines.set(key(rg, name), vm);
    return { vm, nics };
  }

  addNetworkInterface(rg: string, name: string, fields: { address: string; primary?: boolean; virtualMachine?: string; enableIPForwarding?: boolean }): ArmNetworkInterface {
    this.addResourceGroup(rg);
    const id = `${this.rgPath(rg)}/providers/Microsoft.Network/networkInterfaces/${name}`;
    const etag = newEtag();
    const n = this.networkInterfaces.size + 1;
    const nic: ArmNetworkInterface = {
      name,
      id,
      etag,
      type: "Microsoft.Network/networkInterfaces",
      location: this.options.location,
      properties: {
        provisioningState: "Succeeded",
        resourceGuid: randomUUID(),
        ipConfigurations: [
          {
            name: "ipconfig1",
            id: `${id}/ipConfigurations/ipconfig1`,
            etag,
            type: "Microsoft.Network/networkInterfaces/ipConfigurations",
            properties: {
              provisioningState: "Succeeded",
              privateIPAddress: fields.address,
              privateIPAllocationMethod: "Static",
              privateIPAddressVersion: fields.address.includes(":") ? "IPv6" : "IPv4",
              primary: true,
              subnet: { id: `${this.rgPath(rg)}/providers/Microsoft.Network/virtualNetworks/vnet/subnets/nodes` },
            },
          },
        ],
        enableIPForwarding: fields.enableIPForwarding ?? false,
        enableAcceleratedNetworking: false,
        macAddress: `00-0D-3A-${[(n >> 16) & 255, (n >> 8) & 255, n & 255].map((b) => b.toString(16).padStart(2, "0").toUpperCase()).join("-")}`,
        primary: fields.primary ?? true,
        ...(fields.virtualMachine ? { virtualMachine: { id: fields.virtualMachine } } : {}),
        dnsSettings: { dnsServers: [], appliedDnsServers: [] },
      },
    };
    this.networkInterfaces.set(key(rg, name), nic);
    return nic;
  }

  networkInterface(rg: string, name: string): ArmNetworkInterface | undefined {
    return this.networkInterfaces.get(key(rg, name));
  }

  /** Runs `run` before the next request `when` matches is handled (once). */
  beforeNext(when: (call: { method: string; path: string }) => boolean, run: () => void | Promise<void>): void {
    this.hooks.push({ when, run });
  }

  /** The next route table PUT's operation ends Failed with this error (the table left as it was). */
  failNextOperation(code: string, message: string): void {
    this.failures.push({ code, message });
  }

  injectError(error: InjectedArmError): void {
    this.injected.push({ count: 1, ...error });
  }

  /** Ends every operation in progress (with operationDelayMs "manual"). */
  finishOperations(): void {
    for (const op of this.operations.values()) if (op.status === "InProgress") op.finish();
  }

  /**
   * Someone else's operation on a table, in progress until the returned function is called: the table
   * reads Updating, and writes to it meet RetryableErrorDueToAnotherOperation meanwhile.
   */
  holdTable(rg: string, name: string): () => void {
    const table = this.routeTable(rg, name);
    if (!table) throw new Error(`no route table ${rg}/${name}`);
    const k = key(rg, name);
    this.busy.add(k);
    table.properties.provisioningState = "Updating";
    return () => {
      this.busy.delete(k);
      const current = this.routeTables.get(k);
      if (current) current.properties.provisioningState = "Succeeded";
    };
  }

  /** Whether a table has an operation in progress. */
  isBusy(rg: string, name: string): boolean {
    return this.busy.has(key(rg, name));
  }

  // ---- HTTP ---------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.endpoint);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const method = req.method ?? "GET";
    const entry: ArmRequest = { method, path: url.pathname, query: url.searchParams, headers: req.headers, status: 0 };
    this.requests.push(entry);
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      entry.status = status;
      const payload = body === undefined ? "" : JSON.stringify(body);
      res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "x-ms-request-id": randomUUID(), ...headers, ...(payload ? {} : { "Content-Length": "0" }) });
      res.end(payload);
    };
    try {
      const hook = this.hooks.findIndex((h) => h.when({ method, path: url.pathname }));
      if (hook >= 0) await this.hooks.splice(hook, 1)[0]!.run();
      const injected = this.injected.find((e) => (e.count ?? 1) > 0 && e.when({ method, path: url.pathname }));
      if (injected) {
        injected.count = (injected.count ?? 1) - 1;
        throw new ArmError(injected.status, injected.code, injected.message ?? `injected ${injected.code}`);
      }
      if (text && (req.headers["content-type"] ?? "").includes("json")) {
        try {
          entry.body = JSON.parse(text);
        } catch {
          throw new ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized.");
        }
      }
      const auth = this.authEndpoint(method, url, text);
      if (auth) return send(auth.status, auth.body);
      this.authorize(req);
      const apiVersion = url.searchParams.get("api-version");
      if (!apiVersion) throw new ArmError(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.");
      if (!API_VERSION.test(apiVersion)) throw new ArmError(400, "InvalidApiVersionParameter", `The api-version '${apiVersion}' is invalid. The supported versions are dated, as '2023-09-01'.`);
      const answer = this.route(method, url, entry.body, req.headers);
      send(answer.status, answer.body, answer.headers);
    } catch (error) {
      if (error instanceof ArmError) {
        entry.error = error.code;
        send(error.status, { error: { code: error.code, message: error.message } }, error.headers);
      } else {
        entry.error = "InternalServerError";
        send(500, { error: { code: "InternalServerError", message: String(error) } });
      }
    }
  }

  /** The Azure AD endpoints: OpenID metadata and tokens (AAD v2 and ADFS). Undefined: not one of them. */
  private authEndpoint(method: string, url: URL, text: string): { status: number; body: unknown } | undefined {
    const path = url.pathname;
    let m: RegExpMatchArray | null;
    if (method === "GET" && (m = path.match(/^\/([^/]+)\/v2\.0\/\.well-known\/openid-configuration$/))) {
      const base = `${this.endpoint}/${m[1]}`;
      return { status: 200, body: this.openidConfiguration(`${base}/oauth2/v2.0`, `${base}/v2.0`) };
    }
    if (method === "GET" && path === "/adfs/.well-known/openid-configuration") {
      return { status: 200, body: this.openidConfiguration(`${this.endpoint}/adfs/oauth2`, `${this.endpoint}/adfs`) };
    }
    const aad = method === "POST" && path.match(/^\/([^/]+)\/oauth2\/v2\.0\/token$/);
    const adfs = method === "POST" && path === "/adfs/oauth2/token";
    if (!aad && !adfs) return undefined;
    const form = new URLSearchParams(text);
    if (aad && aad[1] !== this.tenantId && aad[1] !== "organizations") {
      return { status: 400, body: { error: "invalid_tenant", error_description: `AADSTS90002: Tenant '${aad[1]}' not found.` } };
    }
    if (form.get("grant_type") !== "client_credentials") {
      return { status: 400, body: { error: "unsupported_grant_type", error_description: "AADSTS70003: The app requested an unsupported grant type." } };
    }
    if (form.get("client_id") !== this.clientId) {
      return { status: 400, body: { error: "unauthorized_client", error_description: `AADSTS700016: Application with identifier '${form.get("client_id")}' was not found.` } };
    }
    if (form.get("client_secret") !== this.clientSecret) {
      return { status: 401, body: { error: "invalid_client", error_description: "AADSTS7000215: Invalid client secret provided." } };
    }
    const token = `token-${randomBytes(16).toString("hex")}`;
    this.issued.add(token);
    return { status: 200, body: { token_type: "Bearer", expires_in: 3599, ext_expires_in: 3599, access_token: token, ...(adfs ? { resource: form.get("resource") ?? "" } : {}) } };
  }

  private openidConfiguration(oauth: string, issuer: string) {
    return {
      token_endpoint: `${oauth}/token`,
      authorization_endpoint: `${oauth}/authorize`,
      device_authorization_endpoint: `${oauth}/devicecode`,
      end_session_endpoint: `${oauth}/logout`,
      jwks_uri: `${issuer}/discovery/keys`,
      issuer,
      token_endpoint_auth_methods_supported: ["client_secret_post", "private_key_jwt", "client_secret_basic"],
      response_types_supported: ["code", "id_token", "code id_token", "id_token token"],
      scopes_supported: ["openid", "profile", "email", "offline_access"],
      tenant_region_scope: "EU",
    };
  }

  private authorize(req: IncomingMessage): void {
    const header = req.headers.authorization ?? "";
    const token = header.startsWith("Bearer ") ? header.slice(7) : "";
    if (!token) {
      throw new ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.", { "WWW-Authenticate": `Bearer authorization_uri="${this.endpoint}/${this.tenantId}", error="invalid_token"` });
    }
    if (token !== this.token && !this.issued.has(token)) {
      throw new ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.", { "WWW-Authenticate": `Bearer authorization_uri="${this.endpoint}/${this.tenantId}", error="invalid_token"` });
    }
  }

  private route(method: string, url: URL, body: unknown, headers: IncomingMessage["headers"]): { status: number; body?: unknown; headers?: Record<string, string> } {
    const path = url.pathname.replace(/\/+$/, "");
    const sub = `/subscriptions/${this.subscriptionId}`;
    if (method === "GET" && path === "/subscriptions") {
      return { status: 200, body: { value: [{ id: sub, subscriptionId: this.subscriptionId, tenantId: this.tenantId, displayName: "podroutes test", state: "Enabled", subscriptionPolicies: { locationPlacementId: "Public_2014-09-01", quotaId: "PayAsYouGo_2014-09-01", spendingLimit: "Off" }, authorizationSource: "RoleBased" }] } };
    }
    if (method === "GET" && path === "/tenants") {
      return { status: 200, body: { value: [{ id: `/tenants/${this.tenantId}`, tenantId: this.tenantId, tenantCategory: "Home", displayName: "podroutes test", defaultDomain: "podroutes.test" }] } };
    }
    let m: RegExpMatchArray | null;
    if ((m = path.match(/^\/subscriptions\/([^/]+)(\/.*)?$/i))) {
      if (m[1] !== this.subscriptionId) throw new ArmError(404, "SubscriptionNotFound", `The subscription '${m[1]}' could not be found.`);
    } else throw new ArmError(404, "NotFound", `No route for ${method} ${path}`);
    const rest = path.slice(sub.length);
    const op = rest.match(/^\/providers\/Microsoft\.Network\/locations\/[^/]+\/operations\/([^/]+)$/i);
    if (op && method === "GET") {
      const found = this.operations.get(op[1]!);
      if (!found) throw new ArmError(404, "OperationNotFound", `Operation ${op[1]} was not found.`);
      return { status: 200, body: { status: found.status, ...(found.status !== "InProgress" ? { endTime: new Date().toISOString() } : {}), ...(found.error ? { error: found.error } : {}) }, headers: found.status === "InProgress" ? { "Retry-After": String(this.options.retryAfterSeconds) } : {} };
    }
    if (method === "GET" && (m = rest.match(/^\/providers\/Microsoft\.(Network|Compute)\/(routeTables|networkInterfaces|virtualMachines)$/i))) {
      return this.list(url, this.collection(m[2]!), undefined);
    }
    if (!(m = rest.match(/^\/resourceGroups\/([^/]+)(\/.*)?$/i))) throw new ArmError(404, "NotFound", `No route for ${method} ${path}`);
    const rg = m[1]!;
    const inRg = m[2] ?? "";
    if (inRg === "") {
      if (method !== "GET") throw new ArmError(405, "MethodNotAllowed", `${method} is not supported on resource groups here`);
      if (!this.resourceGroups.has(rg.toLowerCase())) throw new ArmError(404, "ResourceGroupNotFound", `Resource group '${rg}' could not be found.`);
      return { status: 200, body: { id: this.rgPath(rg), name: rg, type: "Microsoft.Resources/resourceGroups", location: this.options.location, properties: { provisioningState: "Succeeded" } } };
    }
    if (!this.resourceGroups.has(rg.toLowerCase())) throw new ArmError(404, "ResourceGroupNotFound", `Resource group '${rg}' could not be found.`);
    if (method === "GET" && (m = inRg.match(/^\/providers\/Microsoft\.(Network|Compute)\/(routeTables|networkInterfaces|virtualMachines)$/i))) {
      return this.list(url, this.collection(m[2]!), rg);
    }
    if ((m = inRg.match(/^\/providers\/Microsoft\.Network\/routeTables\/([^/]+)$/i))) return this.routeTableCall(method, rg, m[1]!, body, headers);
    if ((m = inRg.match(/^\/providers\/Microsoft\.Network\/routeTables\/([^/]+)\/routes$/i)) && method === "GET") {
      const table = this.mustTable(rg, m[1]!);
      return this.page(url, table.properties.routes);
    }
    if ((m = inRg.match(/^\/providers\/Microsoft\.Network\/routeTables\/([^/]+)\/routes\/([^/]+)$/i))) return this.routeCall(method, rg, m[1]!, m[2]!, body, headers);
    if ((m = inRg.match(/^\/providers\/Microsoft\.Network\/networkInterfaces\/([^/]+)$/i))) return this.nicCall(method, rg, m[1]!, body, headers);
    if ((m = inRg.match(/^\/providers\/Microsoft\.Compute\/virtualMachines\/([^/]+)$/i)) && method === "GET") {
      const vm = this.virtualMachines.get(key(rg, m[1]!));
      if (!vm) throw notFound("Microsoft.Compute/virtualMachines", rg, m[1]!);
      return { status: 200, body: vm };
    }
    throw new ArmError(404, "NotFound", `No route for ${method} ${path}`);
  }

  private collection(kind: string): Map<string, { id: string }> {
    const lower = kind.toLowerCase();
    return lower === "routetables" ? this.routeTables : lower === "networkinterfaces" ? this.networkInterfaces : this.virtualMachines;
  }

  private list(url: URL, items: Map<string, { id: string }>, rg: string | undefined) {
    const all = [...items.entries()].filter(([k]) => rg === undefined || k.startsWith(`${rg.toLowerCase()}/`)).map(([, v]) => v);
    return this.page(url, all);
  }

  /** One page of `items`, with a nextLink to the rest. */
  private page(url: URL, items: unknown[]) {
    const skip = Number(url.searchParams.get("$skiptoken") ?? "0") || 0;
    const size = this.options.pageSize;
    const value = items.slice(skip, skip + size);
    const body: { value: unknown[]; nextLink?: string } = { value };
    if (skip + size < items.length) {
      const next = new URL(url.toString());
      next.searchParams.set("$skiptoken", String(skip + size));
      body.nextLink = next.toString();
    }
    return { status: 200, body };
  }

  private mustTable(rg: string, name: string): ArmRouteTable {
    const table = this.routeTable(rg, name);
    if (!table) throw notFound("Microsoft.Network/routeTables", rg, name);
    return table;
  }

  private checkPreconditions(headers: IncomingMessage["headers"], etag: string | undefined): void {
    const ifMatch = headers["if-match"];
    const ifNoneMatch = headers["if-none-match"];
    if (ifMatch !== undefined && (etag === undefined || (ifMatch !== "*" && ifMatch !== etag))) {
      throw new ArmError(412, "PreconditionFailed", `Precondition failed: the resource's ETag is ${etag ?? "none (it does not exist)"}, the request's If-Match ${ifMatch}.`);
    }
    if (ifNoneMatch === "*" && etag !== undefined) throw new ArmError(412, "PreconditionFailed", "Precondition failed: the resource exists (If-None-Match: *).");
  }

  private checkNotBusy(tableKey: string, name: string): void {
    if (this.busy.has(tableKey)) {
      throw new ArmError(
        this.options.busyStatus,
        "RetryableErrorDueToAnotherOperation",
        `Operation PutRouteTableOperation on route table ${name} is in progress; the call can be retried in ${this.options.retryAfterSeconds} seconds.`,
        { "Retry-After": String(this.options.retryAfterSeconds) },
      );
    }
  }

  private routeTableCall(method: string, rg: string, name: string, body: unknown, headers: IncomingMessage["headers"]) {
    const k = key(rg, name);
    const existing = this.routeTables.get(k);
    if (method === "GET") {
      if (!existing) throw notFound("Microsoft.Network/routeTables", rg, name);
      return { status: 200, body: existing, headers: { ETag: existing.etag } };
    }
    if (method === "PUT") {
      this.checkPreconditions(headers, existing?.etag);
      this.checkNotBusy(k, name);
      const input = (body ?? {}) as { location?: string; tags?: Record<string, string>; properties?: { routes?: unknown[]; disableBgpRoutePropagation?: boolean } };
      const previous = existing ? structuredClone(existing) : undefined;
      const table: ArmRouteTable = existing ? structuredClone(existing) : this.addRouteTableShell(rg, name, input.location);
      const routes = (input.properties?.routes ?? []).map((r, i) => this.parseRoute(r, `properties.routes[${i}]`));
      checkRouteSet(routes, this.options.routeLimit, name);
      const old = new Map(table.properties.routes.map((r) => [r.name.toLowerCase(), r]));
      table.properties.routes = routes.map((r) => {
        const prev = old.get(r.name.toLowerCase());
        return this.routeObject(table, prev?.name ?? r.name, r.properties);
      });
      if (input.tags !== undefined) table.tags = input.tags;
      else delete table.tags;
      if (input.properties?.disableBgpRoutePropagation !== undefined) table.properties.disableBgpRoutePropagation = input.properties.disableBgpRoutePropagation;
      this.routeTables.set(k, table);
      this.touchTable(table);
      return this.startOperation(
        k,
        existing ? 200 : 201,
        table,
        () => table.properties.routes.forEach((r) => (r.properties.provisioningState = "Succeeded")),
        // A failed PUT leaves the table as it was, marked Failed (a later PUT repairs it), as on Azure.
        () => {
          if (!previous) return void this.routeTables.delete(k);
          const restored = { ...structuredClone(previous), properties: { ...structuredClone(previous.properties), provisioningState: "Failed" } };
          this.routeTables.set(k, restored);
          this.touchTable(restored);
        },
      );
    }
    if (method === "DELETE") {
      if (!existing) return { status: 204 };
      this.checkPreconditions(headers, existing.etag);
      this.checkNotBusy(k, name);
      this.routeTables.delete(k);
      return this.startOperation(k, 202, undefined, () => {});
    }
    throw new ArmError(405, "MethodNotAllowed", `${method} is not supported on route tables`);
  }

  private addRouteTableShell(rg: string, name: string, location: string | undefined): ArmRouteTable {
    return {
      name,
      id: `${this.rgPath(rg)}/providers/Microsoft.Network/routeTables/${name}`,
      etag: newEtag(),
      type: "Microsoft.Network/routeTables",
      location: location ?? this.options.location,
      properties: { provisioningState: "Updating", resourceGuid: randomUUID(), disableBgpRoutePropagation: false, routes: [] },
    };
  }

  private routeCall(method: string, rg: string, tableName: string, name: string, body: unknown, headers: IncomingMessage["headers"]) {
    const table = this.mustTable(rg, tableName);
    const k = key(rg, tableName);
    const index = table.properties.routes.findIndex((r) => r.name.toLowerCase() === name.toLowerCase());
    const existing = index >= 0 ? table.properties.routes[index] : undefined;
    if (method === "GET") {
      if (!existing) throw notFound("Microsoft.Network/routeTables/routes", rg, `${tableName}/${name}`);
      return { status: 200, body: existing, headers: { ETag: existing.etag } };
    }
    if (method === "PUT") {
      this.checkPreconditions(headers, existing?.etag);
      this.checkNotBusy(k, tableName);
      const parsed = this.parseRoute({ ...(body as object), name }, "");
      const routes = table.properties.routes.filter((_, i) => i !== index);
      checkRouteSet([...routes, { name: parsed.name, properties: parsed.properties }], this.options.routeLimit, tableName);
      const route = this.routeObject(table, existing?.name ?? name, parsed.properties);
      if (existing) table.properties.routes[index] = route;
      else table.properties.routes.push(route);
      this.touchTable(table);
      return this.startOperation(k, existing ? 200 : 201, route, () => (route.properties.provisioningState = "Succeeded"));
    }
    if (method === "DELETE") {
      if (!existing) return { status: 204 };
      this.checkPreconditions(headers, existing.etag);
      this.checkNotBusy(k, tableName);
      table.properties.routes.splice(index, 1);
      this.touchTable(table);
      return this.startOperation(k, 202, undefined, () => {});
    }
    throw new ArmError(405, "MethodNotAllowed", `${method} is not supported on routes`);
  }

  private nicCall(method: string, rg: string, name: string, body: unknown, headers: IncomingMessage["headers"]) {
    const k = key(rg, name);
    const existing = this.networkInterfaces.get(k);
    if (method === "GET") {
      if (!existing) throw notFound("Microsoft.Network/networkInterfaces", rg, name);
      return { status: 200, body: existing, headers: { ETag: existing.etag } };
    }
    if (method === "PUT") {
      if (!existing) throw new ArmError(400, "InvalidRequestFormat", "This test server creates network interfaces only through its test API (addVirtualMachine).");
      this.checkPreconditions(headers, existing.etag);
      const input = (body ?? {}) as { tags?: Record<string, string>; properties?: { enableIPForwarding?: unknown; ipConfigurations?: unknown } };
      if (input.properties?.enableIPForwarding !== undefined && typeof input.properties.enableIPForwarding !== "boolean") {
        throw new ArmError(400, "InvalidRequestFormat", "Cannot parse the request: properties.enableIPForwarding must be a boolean.");
      }
      if (!Array.isArray(input.properties?.ipConfigurations) || input.properties.ipConfigurations.length === 0) {
        throw new ArmError(400, "NetworkInterfaceMustHaveAtLeastOneIpConfiguration", `Network interface ${existing.id} must have one or more IP configurations.`);
      }
      const nic = structuredClone(existing);
      nic.properties.enableIPForwarding = input.properties.enableIPForwarding === true;
      if (input.tags !== undefined) nic.tags = input.tags;
      nic.etag = newEtag();
      nic.properties.provisioningState = "Updating";
      for (const c of nic.properties.ipConfigurations) c.etag = nic.etag;
      this.networkInterfaces.set(k, nic);
      return this.startOperation(`nic:${k}`, 200, nic, () => (nic.properties.provisioningState = "Succeeded"));
    }
    throw new ArmError(405, "MethodNotAllowed", `${method} is not supported on network interfaces here`);
  }

  private parseRoute(raw: unknown, where: string): { name: string; properties: ArmRoute["properties"] } {
    const r = (raw ?? {}) as { name?: unknown; properties?: { addressPrefix?: unknown; nextHopType?: unknown; nextHopIpAddress?: unknown } };
    const at = where ? ` (${where})` : "";
    if (typeof r.name !== "string" || !ROUTE_NAME.test(r.name)) {
      throw new ArmError(400, "InvalidResourceName", `Resource name ${JSON.stringify(r.name)} is invalid${at}. The name can be up to 80 characters long. It must begin with a word character, and it must end with a word character or with '_'. The name may contain word characters or '.', '-', '_'.`);
    }
    const p = r.properties ?? {};
    if (typeof p.addressPrefix !== "string" || !validCidr(p.addressPrefix)) {
      throw new ArmError(400, "InvalidRequestFormat", `Cannot parse the request${at}: route ${r.name} has an invalid addressPrefix ${JSON.stringify(p.addressPrefix)}.`);
    }
    if (typeof p.nextHopType !== "string" || !(NEXT_HOP_TYPES as readonly string[]).includes(p.nextHopType)) {
      throw new ArmError(400, "InvalidRequestFormat", `Cannot parse the request${at}: route ${r.name} has an invalid nextHopType ${JSON.stringify(p.nextHopType)}.`);
    }
    const type = p.nextHopType as NextHopType;
    if (type === "VirtualAppliance") {
      if (typeof p.nextHopIpAddress !== "string" || !ipaddr.isValid(p.nextHopIpAddress)) {
        throw new ArmError(400, "InvalidNextHopIpAddress", `Route ${r.name} has next hop type VirtualAppliance and needs a valid nextHopIpAddress, not ${JSON.stringify(p.nextHopIpAddress)}.`);
      }
    } else if (p.nextHopIpAddress !== undefined && p.nextHopIpAddress !== null && p.nextHopIpAddress !== "") {
      throw new ArmError(400, "NextHopIpAddressNotAllowed", `Route ${r.name}: a next hop IP address is only allowed with next hop type VirtualAppliance, not ${type}.`);
    }
    return {
      name: r.name,
      properties: { provisioningState: "Updating", addressPrefix: p.addressPrefix, nextHopType: type, ...(type === "VirtualAppliance" ? { nextHopIpAddress: p.nextHopIpAddress as string } : {}), hasBgpOverride: false },
    };
  }

  private routeObject(table: ArmRouteTable, name: string, properties: Omit<ArmRoute["properties"], "provisioningState" | "hasBgpOverride"> & { provisioningState?: string }): ArmRoute {
    return {
      name,
      id: `${table.id}/routes/${name}`,
      etag: table.etag,
      type: "Microsoft.Network/routeTables/routes",
      properties: { provisioningState: properties.provisioningState ?? "Succeeded", addressPrefix: properties.addressPrefix, nextHopType: properties.nextHopType, ...(properties.nextHopIpAddress ? { nextHopIpAddress: properties.nextHopIpAddress } : {}), hasBgpOverride: false },
    };
  }

  /** A change of the table: a new ETag on it and on its routes, as Azure gives them. */
  private touchTable(table: ArmRouteTable): void {
    table.etag = newEtag();
    for (const route of table.properties.routes) route.etag = table.etag;
  }

  /** Starts a long-running operation on `resourceKey`; the answer carries its Azure-AsyncOperation URL. */
  private startOperation(resourceKey: string, status: number, resource: { properties: { provisioningState: string } } | undefined, onDone: () => void, onFail?: () => void) {
    const id = randomUUID();
    if (resource) resource.properties.provisioningState = "Updating";
    const table = resourceKey.startsWith("nic:") ? undefined : this.routeTables.get(resourceKey);
    if (table) table.properties.provisioningState = "Updating";
    const operation: Operation = {
      id,
      status: "InProgress",
      finish: () => {
        if (operation.status !== "InProgress") return;
        const failure = onFail ? this.failures.shift() : undefined;
        if (failure) {
          operation.status = "Failed";
          operation.error = failure;
          onFail!();
          this.busy.delete(resourceKey);
          return;
        }
        operation.status = "Succeeded";
        onDone();
        if (resource) resource.properties.provisioningState = "Succeeded";
        const current = this.routeTables.get(resourceKey);
        if (current) current.properties.provisioningState = "Succeeded";
        this.busy.delete(resourceKey);
      },
    };
    this.operations.set(id, operation);
    this.busy.add(resourceKey);
    // The answer shows the resource as the PUT left it: Updating, whenever the operation ends.
    const answer = resource ? structuredClone(resource) : undefined;
    const delayMs = this.options.operationDelayMs;
    // 0: the operation has ended by the time anyone polls it (the first poll reads Succeeded).
    if (delayMs === 0) operation.finish();
    else if (delayMs !== "manual") {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        operation.finish();
      }, delayMs);
      this.timers.add(timer);
    }
    const operationUrl = `${this.endpoint}/subscriptions/${this.subscriptionId}/providers/Microsoft.Network/locations/${this.options.location}/operations/${id}?api-version=2023-09-01`;
    const headers: Record<string, string> = { "Azure-AsyncOperation": operationUrl, "Retry-After": String(this.options.retryAfterSeconds) };
    if (status === 202) headers.Location = `${this.endpoint}/subscriptions/${this.subscriptionId}/providers/Microsoft.Network/locations/${this.options.location}/operationResults/${id}?api-version=2023-09-01`;
    return { status, body: answer, headers: resource && "etag" in resource ? { ...headers, ETag: String((resource as { etag: string }).etag) } : headers };
  }
}

function key(rg: string, name: string): string {
  return `${rg.toLowerCase()}/${name.toLowerCase()}`;
}

function notFound(type: string, rg: string, name: string): ArmError {
  return new ArmError(404, "ResourceNotFound", `The Resource '${type}/${name}' under resource group '${rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix`);
}

function validCidr(text: string): boolean {
  try {
    ipaddr.parseCIDR(text);
    return true;
  } catch {
    return false;
  }
}

/** Azure's checks over a table's whole route set: one route per prefix and per name, at most `limit`. */
function checkRouteSet(routes: { name: string; properties: { addressPrefix: string } }[], limit: number, table: string): void {
  if (routes.length > limit) {
    throw new ArmError(400, "RouteTableRoutesLimitReached", `Route table ${table} would have ${routes.length} routes; a route table can have at most ${limit} routes.`);
  }
  const names = new Set<string>();
  const prefixes = new Map<string, string>();
  for (const route of routes) {
    const lower = route.name.toLowerCase();
    if (names.has(lower)) throw new ArmError(400, "InvalidRequestFormat", `Route table ${table} has two routes named ${route.name}.`);
    names.add(lower);
    const [address, bits] = ipaddr.parseCIDR(route.properties.addressPrefix);
    const canonical = `${ipaddr.fromByteArray(networkBytes(address.toByteArray(), bits)).toString()}/${bits}`;
    const other = prefixes.get(canonical);
    if (other) throw new ArmError(400, "RouteConflict", `Routes ${other} and ${route.name} of route table ${table} have the same address prefix ${route.properties.addressPrefix}.`);
    prefixes.set(canonical, route.name);
  }
}

function networkBytes(bytes: number[], bits: number): number[] {
  return bytes.map((b, i) => {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    return b & (0xff << (8 - keep)) & 0xff;
  });
}

export async function startAzureServer(options: AzureServerOptions = {}): Promise<AzureServerApi> {
  return new AzureServerApi(options).start();
}
