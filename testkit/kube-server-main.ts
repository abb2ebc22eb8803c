/**
 * The Kubernetes API test server as its own process, for tests that run it inside a lab namespace:
 *
 *   node dist/testkit/kube-server-main.js --listen 10.240.0.10:6443 --state-dir DIR \
 *     [--token TOKEN[=RULES]]... [--nodes NODES.json] [--history-window N] [--bookmark-interval-ms MS] \
 *     [--expired-watch-as event|http] [--admin-socket PATH] [--first-revision N]
 *
 * RULES is `verbs:resources` groups separated by `;` (`get,list,watch:nodes;patch:nodes/status;create:events`);
 * a token without rules may do everything. NODES.json is a list of Node objects. The CA and certificates go
 * to DIR; once listening, the process writes DIR/server.json and prints the same line on stdout:
 * `{"url","caFile","adminSocket","pid"}`. The admin interface (kube-server-admin.ts) listens on a unix
 * socket, DIR/admin.sock by default. SIGTERM or SIGINT stops it. Started again with the same DIR it keeps its
 * CA and certificate; `--first-revision` above the last one's revision (GET /state) makes it a restart.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { serveAdmin } from "./kube-server-admin.js";
import { startKubeServer, type Grant, type KubeObject, type Rule } from "./kube-server.js";

export function parseRules(text: string): Rule[] {
  return text.split(";").filter(Boolean).map((group) => {
    const [verbs, resources] = group.split(":");
    if (!verbs || !resources) throw new Error(`--token rules ${JSON.stringify(group)}: expected verbs:resources`);
    return { verbs: verbs.split(","), resources: resources.split(",") };
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      listen: { type: "string", default: "127.0.0.1:0" },
      "state-dir": { type: "string" },
      token: { type: "string", multiple: true, default: [] },
      nodes: { type: "string" },
      "history-window": { type: "string" },
      "bookmark-interval-ms": { type: "string" },
      "expired-watch-as": { type: "string" },
      "admin-socket": { type: "string" },
      "first-revision": { type: "string" },
    },
  });
  const stateDir = values["state-dir"];
  if (!stateDir) throw new Error("--state-dir is required");
  const listen = values.listen!;
  const colon = listen.lastIndexOf(":");
  const host = listen.slice(0, colon).replace(/^\[|\]$/g, "");
  const port = Number(listen.slice(colon + 1));
  const tokens: Record<string, Grant> = {};
  for (const spec of values.token!) {
    const [token, rules] = spec.split("=", 2) as [string, string | undefined];
    tokens[token] = { user: `token-${Object.keys(tokens).length}`, rules: rules ? parseRules(rules) : "*" };
  }
  const nodes = values.nodes ? (JSON.parse(await readFile(values.nodes, "utf8")) as KubeObject[]) : [];
  const server = await startKubeServer({
    host,
    port,
    stateDir,
    ...(Object.keys(tokens).length ? { tokens } : {}),
    nodes,
    ...(values["history-window"] ? { historyWindow: Number(values["history-window"]) } : {}),
    ...(values["bookmark-interval-ms"] ? { bookmarkIntervalMs: Number(values["bookmark-interval-ms"]) } : {}),
    ...(values["expired-watch-as"] === "http" ? { expiredWatchAs: "http" as const } : {}),
    ...(values["first-revision"] ? { firstRevision: Number(values["first-revision"]) } : {}),
  });
  const adminSocket = values["admin-socket"] ?? join(stateDir, "admin.sock");
  const admin = await serveAdmin(server, adminSocket);
  const ready = JSON.stringify({ url: server.url, caFile: server.caFile, adminSocket, pid: process.pid });
  await writeFile(join(stateDir, "server.json"), `${ready}\n`);
  process.stdout.write(`${ready}\n`);
  const stop = async () => {
    admin.close();
    await server.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop());
  process.on("SIGINT", () => void stop());
}

main().catch((error: unknown) => {
  process.stderr.write(`kube-server: ${(error as Error).message}\n`);
  process.exit(1);
});
