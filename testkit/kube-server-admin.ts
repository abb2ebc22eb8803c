/**
 * The admin interface of a standalone Kubernetes API test server: HTTP on a unix socket, reachable from
 * any network namespace (the server may run inside a lab namespace, the test in the root one). Each
 * endpoint calls the in-process server's method of the same name:
 *   GET    /state                          {url, resourceVersion, openWatches}
 *   GET    /objects/RESOURCE               every object (nodes, leases, events)
 *   PUT    /objects/RESOURCE               body: an object; created or replaced
 *   DELETE /objects/RESOURCE/NAME[?namespace=NS]
 *   POST   /faults/dropWatches|closeWatches|expireWatches|compact|bookmark
 *   POST   /faults/failNext {count, code}   /faults/slow {ms}   /faults/stall {on}
 *   GET    /requests   DELETE /requests
 *   PUT    /tokens/TOKEN {user, rules}
 */
import { createServer, request, type Server } from "node:http";
import { rm } from "node:fs/promises";
import type { Grant, KubeApiServer, KubeObject, ResourceName } from "./kube-server.js";

const RESOURCE_NAMES = new Set(["nodes", "leases", "events"]);

export async function serveAdmin(server: KubeApiServer, socketPath: string): Promise<Server> {
  await rm(socketPath, { force: true });
  const admin = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const url = new URL(req.url ?? "/", "http://admin");
    const parts = url.pathname.split("/").filter(Boolean);
    const reply = (code: number, body: unknown) => {
      res.writeHead(code, { "Content-Type": "application/json" });
      res.end(JSON.stringify(body ?? null));
    };
    try {
      const body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
      const resource = parts[1] as ResourceName;
      if (req.method === "GET" && url.pathname === "/state") return reply(200, { url: server.url, resourceVersion: server.resourceVersion, openWatches: server.openWatches });
      if (parts[0] === "objects" && RESOURCE_NAMES.has(resource)) {
        if (req.method === "GET") return reply(200, server.objects(resource));
        if (req.method === "PUT") return reply(200, server.put(resource, body as unknown as KubeObject));
        if (req.method === "DELETE" && parts[2]) return reply(server.remove(resource, parts[2], url.searchParams.get("namespace") ?? undefined) ? 200 : 404, {});
      }
      if (req.method === "POST" && parts[0] === "faults") {
        switch (parts[1]) {
          case "dropWatches":
            return reply(200, server.dropWatches());
          case "closeWatches":
            return reply(200, server.closeWatches());
          case "expireWatches":
            return reply(200, server.expireWatches());
          case "compact":
            return reply(200, server.compact());
          case "bookmark":
            return reply(200, server.bookmark());
          case "failNext":
            return reply(200, server.failNext(Number(body.count ?? 1), Number(body.code ?? 500)));
          case "slow":
            return reply(200, server.slow(Number(body.ms ?? 0)));
          case "stall":
            return reply(200, server.stall(body.on === true));
        }
      }
      if (url.pathname === "/requests" && req.method === "GET") return reply(200, server.requests);
      if (url.pathname === "/requests" && req.method === "DELETE") return reply(200, server.clearRequests());
      if (parts[0] === "tokens" && parts[1] && req.method === "PUT") return reply(200, server.setToken(decodeURIComponent(parts[1]), body as unknown as Grant));
      reply(404, { error: `no admin endpoint ${req.method} ${url.pathname}` });
    } catch (error) {
      reply(400, { error: (error as Error).message });
    }
  });
  await new Promise<void>((resolve, reject) => admin.once("error", reject).listen(socketPath, resolve));
  return admin;
}

/** Calls the admin interface of a standalone server; resolves with the parsed answer, rejects on non-2xx. */
export function adminCall<T = unknown>(socketPath: string, method: string, path: string, body?: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path, headers: { "Content-Type": "application/json" } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        if ((res.statusCode ?? 500) >= 300) reject(new Error(`admin ${method} ${path}: ${res.statusCode} ${text}`));
        else resolve(JSON.parse(text || "null") as T);
      });
    });
    req.on("error", reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}
