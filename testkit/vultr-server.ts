/**
 * A local stand-in for the Vultr API v2 (`GET /v2/instances`), on 127.0.0.1 and a free port, answering
 * in the public API's JSON: `{instances: [...], meta: {total, links: {next, prev}}}` with opaque cursors,
 * `per_page`, `tag` and `label` filters, 401 `{"error": ..., "status": 401}` for a wrong bearer key,
 * injectable 429s (with a `Retry-After` header when asked, as rate-limited APIs send), and requests left
 * unanswered (a stalled connection). It records every request, with when it arrived, so tests can check
 * pagination, retries and how long a client waited.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import type { VultrInstance } from "../src/sources/vultr.js";

export interface VultrServer {
  endpoint: string;
  apiKey: string;
  instances: VultrInstance[];
  /** The next N requests answer 429, with `Retry-After: retryAfterSeconds` when given. */
  rateLimitNext(count: number, options?: { retryAfterSeconds?: number }): void;
  /** The next N requests get no answer at all (until the server closes). */
  stallNext(count: number): void;
  /** Every request, with its arrival time (performance.now()). */
  requests: { path: string; query: Record<string, string>; at: number }[];
  close(): Promise<void>;
}

/** A full instance object as the API returns it, with the fields podroutes reads set from `fields`. */
export function vultrInstance(fields: Partial<VultrInstance> & { label: string }): VultrInstance {
  return {
    id: fields.id ?? `cb676a46-66fd-4dfb-b839-${Buffer.from(fields.label).toString("hex").padEnd(12, "0").slice(0, 12)}`,
    os: "Debian 12 x64 (bookworm)",
    ram: 2048,
    disk: 55,
    main_ip: "0.0.0.0",
    vcpu_count: 1,
    region: "ewr",
    plan: "vc2-1c-2gb",
    date_created: "2024-01-01T00:00:00+00:00",
    status: "active",
    allowed_bandwidth: 2,
    netmask_v4: "255.255.254.0",
    gateway_v4: "0.0.0.0",
    power_status: "running",
    server_status: "ok",
    v6_network: "",
    v6_main_ip: "",
    v6_network_size: 0,
    hostname: fields.label,
    internal_ip: "",
    kvm: "",
    tag: "",
    tags: [],
    os_id: 2136,
    app_id: 0,
    image_id: "",
    firewall_group_id: "",
    features: [],
    user_scheme: "root",
    ...fields,
  } as VultrInstance;
}

export async function startVultrServer(options: { apiKey?: string; instances?: VultrInstance[] } = {}): Promise<VultrServer> {
  const apiKey = options.apiKey ?? "test-vultr-key";
  let limited = 0;
  let retryAfter: number | undefined;
  let stalled = 0;
  const state = { instances: options.instances ?? [], requests: [] as VultrServer["requests"] };
  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? "/", "http://127.0.0.1");
    const query = Object.fromEntries(url.searchParams.entries());
    state.requests.push({ path: url.pathname, query, at: performance.now() });
    if (stalled > 0) {
      stalled--;
      return; // never answered
    }
    const send = (status: number, body: unknown) => {
      response.writeHead(status, { "Content-Type": "application/json" });
      response.end(JSON.stringify(body));
    };
    if (request.headers.authorization !== `Bearer ${apiKey}`) return send(401, { error: "Invalid API token.", status: 401 });
    if (limited > 0) {
      limited--;
      if (retryAfter !== undefined) response.setHeader("Retry-After", String(retryAfter));
      return send(429, { error: "Rate limit reached - please try your request again later.", status: 429 });
    }
    if (request.method !== "GET" || url.pathname !== "/v2/instances") return send(404, { error: "Invalid API endpoint", status: 404 });
    const matching = state.instances.filter(
      (i) => (!query.tag || i.tag === query.tag || (i.tags ?? []).includes(query.tag)) && (!query.label || i.label === query.label),
    );
    const perPage = Math.min(500, Math.max(1, Number(query.per_page ?? 100)));
    const offset = query.cursor ? Number(Buffer.from(query.cursor, "base64").toString("utf8").replace(/^next__/, "")) : 0;
    if (!Number.isInteger(offset) || offset < 0) return send(400, { error: "Invalid cursor", status: 400 });
    const page = matching.slice(offset, offset + perPage);
    const cursor = (n: number) => Buffer.from(`next__${n}`).toString("base64");
    send(200, {
      instances: page,
      meta: { total: matching.length, links: { next: offset + perPage < matching.length ? cursor(offset + perPage) : "", prev: offset > 0 ? cursor(Math.max(0, offset - perPage)) : "" } },
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    apiKey,
    get instances() {
      return state.instances;
    },
    set instances(value) {
      state.instances = value;
    },
    rateLimitNext: (count, limits = {}) => {
      limited = count;
      retryAfter = limits.retryAfterSeconds;
    },
    stallNext: (count) => {
      stalled = count;
    },
    requests: state.requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * `node dist/testkit/vultr-server.js INSTANCES.json`: serves those instances and prints the endpoint,
 * so a test can run the server inside a lab namespace (next to podroutes) and end it by pid.
 */
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, "/")) && process.argv[2]) {
  const { readFileSync } = await import("node:fs");
  const server = await startVultrServer({ instances: JSON.parse(readFileSync(process.argv[2], "utf8")) as VultrInstance[], ...(process.argv[3] ? { apiKey: process.argv[3] } : {}) });
  process.stdout.write(`${server.endpoint}\n`);
}
