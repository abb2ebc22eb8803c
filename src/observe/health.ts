/**
 * The HTTP endpoints kubelet probes and Prometheus scrapes: `/livez` and `/healthz` (the process is not
 * wedged), `/readyz` (it has done what readiness means for it), `/metrics` (the exposition text). Each
 * check answers 200 or 503 with a one-line reason, as kube-apiserver's own health endpoints do.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { EXPOSITION_CONTENT_TYPE } from "./metrics.js";

export interface CheckResult {
  ok: boolean;
  /** Why, in a few words: `first sync done`, `a reconcile has run for 95 s`. */
  detail: string;
}

export interface HealthEndpoints {
  live(): CheckResult;
  ready(): CheckResult;
  metrics(): string;
  /** More GET pages by path (`/debug/paths`): JSON bodies. */
  pages?: Record<string, () => object>;
}

/** `HOST:PORT` or `[IPv6]:PORT`, port 0-65535 (0: any free port). Pure; throws saying what is wrong. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new Error("must be HOST:PORT (0.0.0.0:9465, [::]:9465, 127.0.0.1:0)");
  return { host: match[1] ?? match[2]!, port };
}

export interface HealthServer {
  /** Where it listens (the real port when 0 was asked). */
  address: { host: string; port: number };
  close(): Promise<void>;
}

export async function serveHealth(listen: { host: string; port: number }, endpoints: HealthEndpoints): Promise<HealthServer> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { Allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/metrics") {
      response.writeHead(200, { "Content-Type": EXPOSITION_CONTENT_TYPE }).end(request.method === "HEAD" ? undefined : endpoints.metrics());
      return;
    }
    const page = endpoints.pages && Object.hasOwn(endpoints.pages, path!) ? endpoints.pages[path!] : undefined;
    if (page) {
      response.writeHead(200, { "Content-Type": "application/json" }).end(request.method === "HEAD" ? undefined : `${JSON.stringify(page(), null, 2)}\n`);
      return;
    }
    const check = path === "/livez" || path === "/healthz" ? endpoints.live() : path === "/readyz" ? endpoints.ready() : undefined;
    if (!check) {
      response.writeHead(404, { "Content-Type": "text/plain" }).end(`not found: /healthz, /livez, /readyz, /metrics${Object.keys(endpoints.pages ?? {}).map((p) => `, ${p}`).join("")}\n`);
      return;
    }
    response.writeHead(check.ok ? 200 : 503, { "Content-Type": "text/plain" }).end(`${check.ok ? "ok" : "not ok"}: ${check.detail}\n`);
  });
  // Probes and scrapes are short; a slow client must not hold a socket for ever.
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  return {
    address: { host: listen.host, port: bound.port },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
