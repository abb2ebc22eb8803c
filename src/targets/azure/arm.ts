/**
 * The Azure Resource Manager calls podroutes makes, through Microsoft's SDK (@azure/arm-network 39, with
 * @azure/identity 4 for credentials), both imported lazily by `createArm` so `--help` and the other
 * targets never load them: a route table read and written whole (one `PUT` with `If-Match` on the ETag
 * read, the long-running operation followed to its end), the subscription's network interfaces (for the
 * nodes' addresses and IP forwarding), a NIC's IP forwarding turned on (read, set, `PUT` with `If-Match`),
 * and the virtual machines of a resource group (Microsoft.Compute, through the same authenticated
 * pipeline: arm-network has no VM calls and one list needs no second SDK).
 *
 * The SDK's pipeline retries 5xx, network errors and 429 (after the Retry-After the API gives, e.g. for
 * RetryableErrorDueToAnotherOperation on a busy route table); what it does not retry is the callers'.
 *
 * Credentials, in this order: a static token (`--azure-token-file`, as a test or a pipeline hands one
 * over), `--azure-credential client-secret` (ClientSecretCredential from AZURE_TENANT_ID, AZURE_CLIENT_ID,
 * AZURE_CLIENT_SECRET at AZURE_AUTHORITY_HOST; instance discovery at login.microsoftonline.com off when
 * that host is another, as for Azure Stack Hub or a test server), else DefaultAzureCredential: the
 * environment, workload identity, managed identity, the az CLI's login.
 */
import { readFileSync } from "node:fs";
import { Agent } from "node:https";
import { rootCertificates } from "node:tls";
import { UsageError } from "../../errors.js";
import { httpUrl, readOption, type CallObserver, type OptionSpec, type ResolvedOptions } from "../../options.js";

export const DEFAULT_ARM_ENDPOINT = "https://management.azure.com";
/** Azure AD hosts MSAL knows (instance discovery is for them only). */
const MICROSOFT_AUTHORITY_HOSTS = ["login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn", "login.partner.microsoftonline.cn"];
const COMPUTE_API_VERSION = "2024-07-01";

export const subscriptionOption: OptionSpec<string> = {
  flags: "--subscription <id>",
  description: "azure: subscription id",
  env: "AZURE_SUBSCRIPTION_ID",
  required: "the Azure subscription of the route table and the nodes (a GUID)",
  parse: (text) => {
    if (!/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(text)) throw new Error("not a subscription id (a GUID)");
    return text.toLowerCase();
  },
};
export const resourceGroupOption: OptionSpec<string> = {
  flags: "--resource-group <name>",
  description: "azure: resource group of the route table (and of the VMs, for --nodes azure)",
  env: "AZURE_DEFAULTS_GROUP",
  required: "the resource group that holds the route table",
  parse: (text) => {
    if (!/^[-\w._()]{1,90}$/.test(text) || text.endsWith(".")) throw new Error("not a resource group name (1-90 letters, digits, - _ . ( ), not ending in .)");
    return text;
  },
};
export const armEndpointOption: OptionSpec<string> = {
  flags: "--arm-endpoint <url>",
  description: `azure: Resource Manager endpoint (default ${DEFAULT_ARM_ENDPOINT}; a sovereign cloud, Azure Stack Hub, a test server)`,
  parse: httpUrl,
};
export const credentialOption: OptionSpec<"default" | "client-secret"> = {
  flags: "--azure-credential <kind>",
  description: "azure: DefaultAzureCredential's chain (default), or client-secret (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_AUTHORITY_HOST only)",
  default: "default",
  choices: ["default", "client-secret"],
};
export const tokenFileOption: OptionSpec<string> = {
  flags: "--azure-token-file <path>",
  description: "azure: file holding an ARM access token, used as it is and read again at least every 5 minutes (instead of --azure-credential)",
};
export const caFileOption: OptionSpec<string> = {
  flags: "--azure-ca-file <path>",
  description: "azure: also trust this CA (PEM) for ARM and the token endpoint (Azure Stack Hub, a test server); NODE_EXTRA_CA_CERTS does it process-wide",
};

export interface ArmSettings {
  subscription: string;
  endpoint: string;
  /** `token`: a token as it is; `token-file`: read from the file at each use (a sidecar may refresh it). */
  credential: { kind: "default" } | { kind: "client-secret" } | { kind: "token"; token: string } | { kind: "token-file"; path: string };
  /** Extra CA (PEM) trusted besides the system's. */
  caPem?: string;
  /** Pause between polls of an operation when the API gives no Retry-After (the SDK's default: 2 s). */
  pollIntervalMs?: number;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
  calls?: CallObserver;
}

/** A route as ARM holds it (the SDK's flattened model). */
export interface ArmRoute {
  name?: string;
  id?: string;
  addressPrefix?: string;
  nextHopType?: string;
  nextHopIpAddress?: string;
  provisioningState?: string;
}

export interface ArmRouteTable {
  id?: string;
  name?: string;
  location?: string;
  etag?: string;
  tags?: Record<string, string>;
  routes?: ArmRoute[];
  disableBgpRoutePropagation?: boolean;
  disablePeeringRoute?: string;
  provisioningState?: string;
  subnets?: { id?: string }[];
}

export interface ArmNic {
  id: string;
  name: string;
  etag?: string;
  enableIPForwarding: boolean;
  /** Private IPs of its IP configurations. */
  addresses: string[];
  virtualMachine?: string;
}

export interface ArmVm {
  id: string;
  name: string;
  tags: Record<string, string>;
  provisioningState?: string;
  /** NIC ids, the primary one first. */
  nicIds: string[];
}

export interface ArmApi {
  readonly subscription: string;
  getRouteTable(resourceGroup: string, name: string): Promise<ArmRouteTable>;
  /** PUT of the whole table with If-Match on `etag`, followed to the operation's end; the table as it is then. */
  putRouteTable(resourceGroup: string, name: string, table: ArmRouteTable, etag: string): Promise<ArmRouteTable>;
  /** Every network interface of the subscription. */
  listNetworkInterfaces(): Promise<ArmNic[]>;
  /** Turns IP forwarding on (a no-op when it is); read, set, PUT with If-Match, a 412 read again. */
  enableIpForwarding(nicId: string): Promise<void>;
  /** The VMs of a resource group, or of the whole subscription. */
  listVirtualMachines(resourceGroup?: string): Promise<ArmVm[]>;
  close(): void;
}

/** What an ARM error says: `CODE (HTTP n): message`. */
export function armErrorText(error: unknown): string {
  const e = error as { code?: unknown; statusCode?: unknown; message?: unknown; details?: { error?: { code?: string; message?: string } } };
  const inner = e?.details?.error;
  const code = inner?.code ?? (typeof e?.code === "string" ? e.code : undefined);
  const message = inner?.message ?? (typeof e?.message === "string" ? e.message : String(error));
  const status = typeof e?.statusCode === "number" ? ` (HTTP ${e.statusCode})` : "";
  return code && !message.startsWith(code) ? `${code}${status}: ${message}` : `${message}${status}`;
}

export function armStatus(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown })?.statusCode;
  return typeof status === "number" ? status : undefined;
}

export function armErrorCode(error: unknown): string | undefined {
  const e = error as { code?: unknown; details?: { error?: { code?: string } } };
  return e?.details?.error?.code ?? (typeof e?.code === "string" ? e.code : undefined);
}

/** `/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/networkInterfaces/NAME` → {rg, name}. */
export function parseResourceId(id: string): { subscription: string; resourceGroup: string; name: string } | undefined {
  const m = id.match(/^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/[^/]+\/[^/]+\/([^/]+)$/i);
  return m ? { subscription: m[1]!.toLowerCase(), resourceGroup: m[2]!, name: m[3]! } : undefined;
}

/** The settings from the flags (bad ones already refused by readOptions). */
export function armSettingsFrom(options: ResolvedOptions): ArmSettings {
  const subscription = readOption(subscriptionOption, options)!;
  const endpoint = (readOption(armEndpointOption, options) ?? DEFAULT_ARM_ENDPOINT).replace(/\/+$/, "");
  const tokenFile = readOption(tokenFileOption, options);
  const caFile = readOption(caFileOption, options);
  const readText = (flag: string, path: string) => {
    try {
      return readFileSync(path, "utf8");
    } catch (error) {
      throw new UsageError(`${flag} ${path}: cannot read it: ${(error as Error).message}`, { flag });
    }
  };
  let credential: ArmSettings["credential"];
  if (tokenFile) {
    if (!readText("--azure-token-file", tokenFile).trim()) throw new UsageError(`--azure-token-file ${tokenFile}: the file is empty`, { flag: "--azure-token-file" });
    credential = { kind: "token-file", path: tokenFile };
  } else credential = { kind: readOption(credentialOption, options)! };
  return {
    subscription,
    endpoint,
    credential,
    ...(caFile ? { caPem: readText("--azure-ca-file", caFile) } : {}),
    env: options.env,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.calls ? { calls: options.calls } : {}),
  };
}

type Sdk = typeof import("@azure/arm-network");
type Identity = typeof import("@azure/identity");
type TokenCredential = import("@azure/identity").TokenCredential;

async function makeCredential(settings: ArmSettings, identity: () => Promise<Identity>, agent: Agent | undefined): Promise<TokenCredential> {
  const c = settings.credential;
  if (c.kind === "token" || c.kind === "token-file") {
    // ARM tokens live about an hour; the pipeline asks again before that, and a file is read again then.
    const token = () => (c.kind === "token" ? c.token : readFileSync(c.path, "utf8").trim());
    return { getToken: async () => ({ token: token(), expiresOnTimestamp: Date.now() + 300_000 }) };
  }
  const { ClientSecretCredential, DefaultAzureCredential } = await identity();
  const common = agent ? { agent } : {};
  if (c.kind === "client-secret") {
    const env = settings.env ?? process.env;
    const missing = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"].filter((name) => !env[name]);
    if (missing.length) throw new UsageError(`--azure-credential client-secret: ${missing.join(", ")} not set`, { flag: "--azure-credential" });
    const authorityHost = env.AZURE_AUTHORITY_HOST || "https://login.microsoftonline.com/";
    const known = MICROSOFT_AUTHORITY_HOSTS.includes(new URL(authorityHost).hostname);
    return new ClientSecretCredential(env.AZURE_TENANT_ID!, env.AZURE_CLIENT_ID!, env.AZURE_CLIENT_SECRET!, { ...common, authorityHost, disableInstanceDiscovery: !known });
  }
  return new DefaultAzureCredential(common);
}

export async function createArm(settings: ArmSettings): Promise<ArmApi> {
  const agent = settings.caPem ? new Agent({ keepAlive: true, ca: [...rootCertificates, settings.caPem] }) : undefined;
  const credential = await makeCredential(settings, () => import("@azure/identity"), agent);
  const sdk: Sdk = await import("@azure/arm-network");
  const { createDefaultHttpClient, createPipelineRequest } = await import("@azure/core-rest-pipeline");
  const client = new sdk.NetworkManagementClient(credential, settings.subscription, {
    endpoint: settings.endpoint,
    ...(agent ? { agent } : {}),
    // Each throttling answer the SDK's retry policy meets (and waits out) is told to the metrics.
    additionalPolicies: [
      {
        position: "perRetry",
        policy: {
          name: "podroutesThrottleObserver",
          sendRequest: async (request, next) => {
            const response = await next(request);
            if (response.status === 429) settings.calls?.throttled();
            return response;
          },
        },
      },
    ],
  });
  const httpClient = createDefaultHttpClient();
  const poll = settings.pollIntervalMs !== undefined ? { updateIntervalInMs: settings.pollIntervalMs } : {};
  const signal = settings.signal ? { abortSignal: settings.signal } : {};
  const observe = async <T>(method: string, call: () => Promise<T>): Promise<T> => {
    const done = settings.calls?.started(method);
    try {
      const result = await call();
      done?.("ok");
      return result;
    } catch (error) {
      done?.(armErrorCode(error) ?? "error");
      throw error;
    }
  };
  const nicOf = (nic: import("@azure/arm-network").NetworkInterface): ArmNic => ({
    id: nic.id ?? "",
    name: nic.name ?? "",
    ...(nic.etag ? { etag: nic.etag } : {}),
    enableIPForwarding: nic.enableIPForwarding === true,
    addresses: (nic.ipConfigurations ?? []).map((c) => c.privateIPAddress).filter((a): a is string => !!a),
    ...(nic.virtualMachine?.id ? { virtualMachine: nic.virtualMachine.id } : {}),
  });
  return {
    subscription: settings.subscription,
    getRouteTable: (resourceGroup, name) => observe("routeTables.get", () => client.routeTables.get(resourceGroup, name, { ...signal }) as Promise<ArmRouteTable>),
    putRouteTable: (resourceGroup, name, table, etag) =>
      observe("routeTables.createOrUpdate", async () => {
        const poller = client.routeTables.createOrUpdate(resourceGroup, name, table as import("@azure/arm-network").RouteTable, {
          ...poll,
          ...signal,
          requestOptions: { headers: { "If-Match": etag } },
        });
        return (await poller.pollUntilDone()) as ArmRouteTable;
      }),
    listNetworkInterfaces: () =>
      observe("networkInterfaces.listAll", async () => {
        const out: ArmNic[] = [];
        for await (const nic of client.networkInterfaces.listAll({ ...signal })) out.push(nicOf(nic));
        return out;
      }),
    enableIpForwarding: (nicId) =>
      observe("networkInterfaces.createOrUpdate", async () => {
        const ref = parseResourceId(nicId);
        if (!ref) throw new Error(`not a network interface id: ${nicId}`);
        for (let attempt = 0; ; attempt++) {
          const nic = await client.networkInterfaces.get(ref.resourceGroup, ref.name, { ...signal });
          if (nic.enableIPForwarding === true) return;
          try {
            await client.networkInterfaces
              .createOrUpdate(ref.resourceGroup, ref.name, { ...nic, enableIPForwarding: true }, { ...poll, ...signal, requestOptions: { headers: { "If-Match": nic.etag ?? "*" } } })
              .pollUntilDone();
            return;
          } catch (error) {
            // Someone changed the NIC between the read and the write: read it again, keep their change.
            if (armStatus(error) !== 412 || attempt >= 4) throw error;
          }
        }
      }),
    listVirtualMachines: (resourceGroup) =>
      observe("virtualMachines.list", async () => {
        const out: ArmVm[] = [];
        const scope = resourceGroup === undefined ? "" : `/resourceGroups/${encodeURIComponent(resourceGroup)}`;
        let url: string | undefined = `${settings.endpoint}/subscriptions/${encodeURIComponent(settings.subscription)}${scope}/providers/Microsoft.Compute/virtualMachines?api-version=${COMPUTE_API_VERSION}`;
        while (url) {
          // Through the client's own pipeline: its token, agent and retries.
          const response = await client.pipeline.sendRequest(httpClient, createPipelineRequest({ url, method: "GET", ...(settings.signal ? { abortSignal: settings.signal } : {}) }));
          const body = JSON.parse(response.bodyAsText ?? "{}") as { value?: RawVm[]; nextLink?: string; error?: { code?: string; message?: string } };
          if (response.status !== 200) {
            throw Object.assign(new Error(body.error?.message ?? `HTTP ${response.status}`), { statusCode: response.status, code: body.error?.code });
          }
          for (const vm of body.value ?? []) out.push(vmOf(vm));
          url = body.nextLink;
        }
        return out;
      }),
    close: () => agent?.destroy(),
  };
}

interface RawVm {
  id?: string;
  name?: string;
  tags?: Record<string, string>;
  properties?: { provisioningState?: string; networkProfile?: { networkInterfaces?: { id?: string; properties?: { primary?: boolean } }[] } };
}

function vmOf(vm: RawVm): ArmVm {
  const nics = vm.properties?.networkProfile?.networkInterfaces ?? [];
  const sorted = [...nics].sort((a, b) => Number(b.properties?.primary === true) - Number(a.properties?.primary === true));
  return {
    id: vm.id ?? "",
    name: vm.name ?? "",
    tags: vm.tags ?? {},
    ...(vm.properties?.provisioningState ? { provisioningState: vm.properties.provisioningState } : {}),
    nicIds: sorted.map((n) => n.id).filter((id): id is string => !!id),
  };
}
