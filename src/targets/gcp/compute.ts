/**
 * A small Compute Engine v1 REST client: exactly the calls podroutes makes (routes list/get/insert/
 * delete, global operations wait, instances aggregated list, project quotas), over Node's fetch.
 * Every call is retried with exponential backoff and jitter (p-retry) on 429, 403 rateLimitExceeded,
 * 5xx, and network errors or timeouts; any other error is final. Authentication: a bearer token from
 * `--access-token-file` or Google's own library (Application Default Credentials), imported lazily.
 */
import { readFile } from "node:fs/promises";
import pRetry from "p-retry";
import { UsageError } from "../../errors.js";
import { httpUrl, readOption, type OptionSpec } from "../../options.js";

export const DEFAULT_COMPUTE_ENDPOINT = "https://compute.googleapis.com/compute/v1/";

export interface ComputeSettings {
  project: string;
  /** Base URL ending in `/compute/v1/`. */
  endpoint: string;
  accessTokenFile?: string;
  /** Per-request time limit; a timed-out call is retried. */
  requestTimeoutMs?: number;
  /** Retries per call after the first attempt. */
  retries?: number;
  /** First backoff delay; doubles each retry, randomized (jitter). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  env?: NodeJS.ProcessEnv;
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
  error?: { errors?: { code?: string; message?: string }[] };
  httpErrorStatusCode?: number;
}

/** An error answered by the API (or a failed operation): HTTP status, first reason, message. */
export class ComputeError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "ComputeError";
  }
}

/** Whether the API pushed back on the rate of calls (429, 403 rateLimitExceeded): a signal to slow down. */
export function isThrottle(error: unknown): boolean {
  if (!(error instanceof ComputeError)) return false;
  return error.status === 429 || (error.status === 403 && (error.reason === "rateLimitExceeded" || error.reason === "userRateLimitExceeded"));
}

/** Whether a failure is worth another attempt: throttling, server trouble, the network. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof ComputeError) return isThrottle(error) || error.status >= 500;
  return true; // fetch failed: reset, refused, timed out
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
  /** Calls made, retries included (for benchmarks and tests). */
  readonly calls: { requests: number; retries: number };
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

class ComputeClient implements ComputeApi {
  readonly project: string;
  private readonly base: string;
  readonly calls = { requests: 0, retries: 0 };
  private readonly throttleListeners: (() => void)[] = [];

  constructor(
    private readonly settings: ComputeSettings,
    private readonly token: TokenSource,
  ) {
    this.project = settings.project;
    this.base = settings.endpoint.endsWith("/") ? settings.endpoint : `${settings.endpoint}/`;
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

  /** One call with retries. Token errors are final (AbortError-like: not retried). */
  private async call<T>(method: string, url: string, body?: unknown, retry = true): Promise<T> {
    const authorization = `Bearer ${await this.token()}`;
    const attempt = async (): Promise<T> => {
      this.calls.requests++;
      const response = await fetch(url, {
        method,
        headers: { authorization, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(this.settings.requestTimeoutMs ?? 60_000),
      });
      const text = await response.text();
      if (!response.ok) {
        let reason = "";
        let message = `HTTP ${response.status}`;
        try {
          const parsed = JSON.parse(text) as { error?: { message?: string; errors?: { reason?: string }[] } };
          message = parsed.error?.message ?? message;
          reason = parsed.error?.errors?.[0]?.reason ?? "";
        } catch {
          // Not JSON (a proxy's page): keep the status.
        }
        throw new ComputeError(response.status, reason, message);
      }
      return (text ? JSON.parse(text) : {}) as T;
    };
    if (!retry) return attempt();
    return pRetry(attempt, {
      retries: this.settings.retries ?? 8,
      factor: 2,
      minTimeout: this.settings.minBackoffMs ?? 500,
      maxTimeout: this.settings.maxBackoffMs ?? 32_000,
      randomize: true,
      shouldRetry: ({ error }) => isRetryable(error),
      onFailedAttempt: ({ error, retriesLeft }) => {
        if (retriesLeft > 0 && isRetryable(error)) this.calls.retries++;
        if (isThrottle(error)) for (const listener of this.throttleListeners) listener();
      },
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

  /** Waits for a global operation with `wait` (which may return before DONE: loop), then checks its error. */
  private async wait(operation: Operation): Promise<void> {
    let op = operation;
    while (op.status !== "DONE") op = await this.call<Operation>("POST", this.url(`/global/operations/${op.name}/wait`));
    const first = op.error?.errors?.[0];
    if (first) throw new ComputeError(op.httpErrorStatusCode ?? 400, first.code ?? "", first.message ?? "operation failed");
  }

  async insertRoute(route: ComputeRoute): Promise<void> {
    await this.wait(await this.call<Operation>("POST", this.url("/global/routes"), route));
  }

  async deleteRoute(name: string): Promise<boolean> {
    let op: Operation;
    try {
      op = await this.call<Operation>("DELETE", this.url(`/global/routes/${name}`));
    } catch (error) {
      if (error instanceof ComputeError && error.status === 404) return false;
      throw error;
    }
    await this.wait(op);
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

/** Compute settings from resolved CLI options; a bad or missing flag is a UsageError naming it. */
export function computeSettingsFrom(options: Record<string, unknown> & { env?: NodeJS.ProcessEnv }): ComputeSettings {
  const accessTokenFile = readOption(accessTokenFileOption, options);
  return {
    project: readOption(projectOption, options)!,
    endpoint: readOption(computeEndpointOption, options)!,
    ...(accessTokenFile ? { accessTokenFile } : {}),
    ...(options.env ? { env: options.env } : {}),
  };
}
