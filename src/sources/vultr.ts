/**
 * `--nodes vultr`: the cluster's nodes are Vultr instances, listed through the Vultr API v2
 * (`GET /v2/instances`, bearer VULTR_API_KEY, cursor pagination), as the Vultr seed does by hand with
 * `vultr-cli instance list | grep worker-0 | awk`. Selected by label (`--vultr-label`, exact) and/or tag
 * (`--vultr-tag`). Each instance's `main_ip` is where podroutes reaches it over SSH, its `internal_ip`
 * (the VPC address) the next hop of its pod CIDR, its label the node name. The pod CIDR comes from an
 * instance tag `pod-cidr=10.200.0.0/24` (several tags, or commas, for dual-stack) or from a nodes file
 * merged by name (`--pod-cidrs FILE`, any format `--nodes FILE` reads).
 *
 * A node is an instance whose subscription is `active`, that is powered on (`power_status` running) and
 * whose operating system is up or coming up (`server_status` other than `none`); others are left out,
 * with a warning. Every request has a time limit; a timed-out, rate-limited (429) or failed (5xx)
 * request is retried with backoff, waiting at least as long as the API's `Retry-After` asks.
 */
import { readFile } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import pRetry, { AbortError } from "p-retry";
import { InputError, type Problem, type RawInventory, type RawNode } from "../inventory.js";
import { UsageError } from "../errors.js";
import { httpUrl, readOption, type FlagValues, type OptionSpec, type ResolvedOptions } from "../options.js";
import { parseNodesFile } from "./file.js";
import type { NodeSourceFactory } from "./registry.js";

export const DEFAULT_VULTR_ENDPOINT = "https://api.vultr.com";
export const POD_CIDR_TAG = "pod-cidr=";

/** The fields of a Vultr instance podroutes reads (the API returns many more). */
export interface VultrInstance {
  id: string;
  label: string;
  hostname?: string;
  main_ip: string;
  v6_main_ip?: string;
  internal_ip: string;
  status: string;
  power_status?: string;
  server_status?: string;
  tag?: string;
  tags?: string[];
}

export interface VultrListOptions {
  endpoint: string;
  apiKey: string;
  tag?: string;
  label?: string;
  perPage?: number;
  /** Retries of a rate-limited (429), failed (5xx, network) or timed-out request. */
  retries?: number;
  minRetryDelayMs?: number;
  /** Time limit of one request. */
  requestTimeoutMs?: number;
}

/** The longest `Retry-After` honoured; a longer one is treated as this (the retry budget stays bounded). */
const MAX_RETRY_AFTER_MS = 60_000;

/** An API answer podroutes cannot work with; the message says what to do. */
export class VultrError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    options?: { cause?: unknown; retryAfterMs?: number },
  ) {
    super(`vultr: ${message}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "VultrError";
    this.retryAfterMs = options?.retryAfterMs;
  }
  /** How long the API asked to wait before the next request (its `Retry-After`). */
  readonly retryAfterMs: number | undefined;
}

/** `Retry-After` in milliseconds: delay-seconds or an HTTP date (RFC 9110 10.2.3); undefined if absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (!header) return undefined;
  const text = header.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

function apiMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: string };
    if (parsed.error) return parsed.error;
  } catch {
    // not JSON
  }
  return body.trim().slice(0, 200);
}

async function getPage(url: URL, apiKey: string, options: VultrListOptions): Promise<{ instances: VultrInstance[]; next: string }> {
  return pRetry(
    async () => {
      const timeoutMs = options.requestTimeoutMs ?? 30_000;
      let response: Response;
      try {
        response = await fetch(url, { headers: { Authorization: `Bearer ${apiKey}`, Accept: "application/json" }, signal: AbortSignal.timeout(timeoutMs) });
      } catch (error) {
        const why = (error as Error).name === "TimeoutError" ? `no answer within ${timeoutMs / 1000} s` : `${(error as Error).message}${(error as Error).cause instanceof Error ? `: ${((error as Error).cause as Error).message}` : ""}`;
        throw new VultrError(`GET ${url.origin}${url.pathname} failed (${why}); retried with backoff`, undefined, { cause: error });
      }
      const body = await response.text();
      const wait = retryAfterMs(response.headers.get("retry-after"));
      if (response.status === 401 || response.status === 403) {
        throw new AbortError(
          new VultrError(`the API refused the key (${response.status} ${apiMessage(body)}): check VULTR_API_KEY, and that this machine's IP is allowed by the key's access control`, response.status),
        );
      }
      if (response.status === 429) {
        throw new VultrError(`rate limited (429 ${apiMessage(body)}); retried with backoff and still limited`, 429, wait === undefined ? {} : { retryAfterMs: wait });
      }
      if (response.status >= 500) throw new VultrError(`the API failed (${response.status} ${apiMessage(body)})`, response.status, wait === undefined ? {} : { retryAfterMs: wait });
      if (!response.ok) throw new AbortError(new VultrError(`GET ${url.pathname} failed: ${response.status} ${apiMessage(body)}`, response.status));
      let parsed: { instances?: VultrInstance[]; meta?: { links?: { next?: string } } };
      try {
        parsed = JSON.parse(body);
      } catch (error) {
        throw new AbortError(new VultrError(`GET ${url.pathname} returned no JSON: ${body.slice(0, 100)}`, response.status, { cause: error }));
      }
      if (!Array.isArray(parsed.instances)) throw new AbortError(new VultrError(`GET ${url.pathname} returned no "instances" list`));
      return { instances: parsed.instances, next: parsed.meta?.links?.next ?? "" };
    },
    {
      retries: options.retries ?? 5,
      minTimeout: options.minRetryDelayMs ?? 500,
      factor: 2,
      maxTimeout: 10_000,
      // p-retry has no per-error delay: wait out Retry-After here; its own backoff follows.
      onFailedAttempt: async ({ error, retriesLeft }) => {
        if (retriesLeft > 0 && error instanceof VultrError && error.retryAfterMs) await delay(Math.min(error.retryAfterMs, MAX_RETRY_AFTER_MS));
      },
    },
  );
}

/** Every instance the filters select, following `meta.links.next` cursors. */
export async function listVultrInstances(options: VultrListOptions): Promise<VultrInstance[]> {
  const instances: VultrInstance[] = [];
  const seen = new Set<string>();
  let cursor = "";
  for (let page = 0; ; page++) {
    const url = new URL("/v2/instances", options.endpoint);
    url.searchParams.set("per_page", String(options.perPage ?? 100));
    if (options.tag) url.searchParams.set("tag", options.tag);
    if (options.label) url.searchParams.set("label", options.label);
    if (cursor) url.searchParams.set("cursor", cursor);
    const result = await getPage(url, options.apiKey, options);
    instances.push(...result.instances);
    if (!result.next) return instances;
    if (seen.has(result.next) || page > 10_000) throw new VultrError(`the API returned the cursor ${result.next} twice; stopping instead of looping`);
    seen.add(result.next);
    cursor = result.next;
  }
}

/** Why an instance is no node that carries pods now, or undefined when it is one. */
function notRunning(instance: VultrInstance): string | undefined {
  if (instance.status !== "active") return `is ${instance.status}, not active`;
  if (instance.power_status !== undefined && instance.power_status !== "running") return `is powered off (power_status ${instance.power_status})`;
  if (instance.server_status === "none") return "has no operating system running (server_status none)";
  return undefined;
}

function podCidrTags(instance: VultrInstance): string[] {
  const tags = [...(instance.tags ?? []), ...(instance.tag ? [instance.tag] : [])];
  return [
    ...new Set(
      tags
        .filter((tag) => tag.startsWith(POD_CIDR_TAG))
        .flatMap((tag) => tag.slice(POD_CIDR_TAG.length).split(","))
        .map((cidr) => cidr.trim())
        .filter(Boolean),
    ),
  ];
}

/**
 * Instances → nodes. The label filter is applied again here (exactly), so a server that ignores it
 * cannot widen the selection. `podCidrs`: pod CIDRs by node name, from --pod-cidrs.
 */
export function instancesToInventory(
  instances: VultrInstance[],
  options: { label?: string; tag?: string; podCidrs?: Map<string, string[]>; source: string; warn?: (message: string) => void },
): RawInventory {
  const problems: Problem[] = [];
  const nodes: RawNode[] = [];
  const selected = instances.filter(
    (i) => (options.label === undefined || i.label === options.label) && (options.tag === undefined || i.tag === options.tag || (i.tags ?? []).includes(options.tag)),
  );
  for (const instance of selected) {
    const name = instance.label || instance.hostname || instance.id;
    const down = notRunning(instance);
    if (down) {
      options.warn?.(`vultr: instance ${name} (${instance.id}) ${down}: left out`);
      continue;
    }
    const fromTags = podCidrTags(instance);
    const fromFile = options.podCidrs?.get(name);
    const podCIDRs = fromTags.length ? fromTags : (fromFile ?? []);
    if (fromTags.length && fromFile && fromFile.join(",") !== fromTags.join(",")) {
      problems.push({ node: name, message: `its tag says pod CIDR ${fromTags.join(",")}, but --pod-cidrs says ${fromFile.join(",")}` });
    }
    if (podCIDRs.length === 0) {
      problems.push({
        node: name,
        message: `instance ${instance.id} has no pod CIDR: tag it (vultr-cli instance tags ${instance.id} --tags pod-cidr=10.200.N.0/24) or list ${name} in --pod-cidrs FILE`,
      });
      continue;
    }
    if (!instance.internal_ip) {
      problems.push({ node: name, message: `instance ${instance.id} has no internal_ip: attach it to a VPC; its pods' traffic must go over the private network` });
      continue;
    }
    nodes.push({
      name,
      internalIPs: [instance.internal_ip],
      podCIDRs,
      ...(instance.main_ip && instance.main_ip !== "0.0.0.0" ? { sshAddress: instance.main_ip } : {}),
      labels: { "podroutes.io/vultr-id": instance.id },
    });
  }
  if (problems.length) throw new InputError(problems, "vultr nodes");
  if (nodes.length === 0) {
    throw new InputError([{ message: `no active instance matches${options.label ? ` label ${options.label}` : ""}${options.tag ? ` tag ${options.tag}` : ""}` }], "vultr nodes");
  }
  return { nodes: nodes.sort((a, b) => (a.name ?? "").localeCompare(b.name ?? "")), source: options.source };
}

async function podCidrFile(path: string): Promise<Map<string, string[]>> {
  const raw = parseNodesFile(await readFile(path, "utf8"), path);
  const byName = new Map<string, string[]>();
  for (const node of raw.nodes) if (node.name) byName.set(node.name, node.podCIDRs);
  return byName;
}

const endpointOption: OptionSpec<string> = { flags: "--vultr-endpoint <url>", description: "vultr nodes: API base URL", default: DEFAULT_VULTR_ENDPOINT, parse: httpUrl };

/** The API key travels in the environment, as vultr-cli's does. */
function apiKeyOf(options: FlagValues): string {
  const apiKey = options.env.VULTR_API_KEY;
  if (!apiKey) throw new UsageError("--nodes vultr: VULTR_API_KEY is not set (create a key at https://my.vultr.com/settings/#settingsapi)", { flag: "--nodes" });
  return apiKey;
}

export const vultrSource: NodeSourceFactory = {
  name: "vultr",
  description: "Vultr instances (API v2, VULTR_API_KEY): main_ip for SSH, internal_ip as next hop, pod-cidr=… tag",
  options: [
    { flags: "--vultr-label <label>", description: "vultr nodes: only the instance with this label" },
    { flags: "--vultr-tag <tag>", description: "vultr nodes: only instances with this tag (e.g. kubernetes-the-hard-way)" },
    endpointOption,
    { flags: "--pod-cidrs <file>", description: "vultr nodes: pod CIDRs by node name, for instances without a pod-cidr= tag (any nodes-file format)" },
  ],
  check: (options) => void apiKeyOf(options),
  async read(options: ResolvedOptions) {
    const apiKey = apiKeyOf(options);
    const endpoint = readOption(endpointOption, options)!;
    const label = options.vultrLabel === undefined ? undefined : String(options.vultrLabel);
    const tag = options.vultrTag === undefined ? undefined : String(options.vultrTag);
    const podCidrs = options.podCidrs ? await podCidrFile(String(options.podCidrs)) : undefined;
    const instances = await listVultrInstances({ endpoint, apiKey, ...(label ? { label } : {}), ...(tag ? { tag } : {}) });
    return instancesToInventory(instances, {
      ...(label ? { label } : {}),
      ...(tag ? { tag } : {}),
      ...(podCidrs ? { podCidrs } : {}),
      source: `vultr${tag ? ` tag ${tag}` : ""}${label ? ` label ${label}` : ""}`,
      warn: options.warn,
    });
  },
};
