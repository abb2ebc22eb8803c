/**
 * The Compute Engine test server as its own process, for tests that run it inside a network namespace
 * (beside a real kube-apiserver there): `node gce-server-main.js LATENCY_MS [INSTANCES_JSON | @FILE]
 * [REQUEST_LOG_FILE]` prints `{"endpoint","project"}` on one line once it listens on that namespace's
 * 127.0.0.1, and stops on SIGTERM. INSTANCES_JSON, a JSON array of GceInstance (or `@` and a file
 * holding it: a thousand instances are more than one argument may carry), gives it the cluster's
 * instances (the route controller's GCE routes point at them). With REQUEST_LOG_FILE, SIGUSR2 writes
 * its request log there (JSON, written to FILE.tmp then renamed, so a reader never sees half of it):
 * how a benchmark in another process counts the calls. GCE_ROUTES_QUOTA in the environment sets the
 * project's ROUTES quota (the server's default is GCP's, 250).
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { startGceServer, type GceInstance } from "./gce-server.js";

const [latency, instancesArg, requestLogFile] = process.argv.slice(2);
const server = await startGceServer({ latencyMs: Number(latency ?? 20), ...(process.env.GCE_ROUTES_QUOTA ? { routesQuota: Number(process.env.GCE_ROUTES_QUOTA) } : {}) });
const instances = instancesArg?.startsWith("@") ? readFileSync(instancesArg.slice(1), "utf8") : (instancesArg ?? "[]");
for (const instance of JSON.parse(instances) as GceInstance[]) server.addInstance(instance);
if (requestLogFile) {
  process.on("SIGUSR2", () => {
    writeFileSync(`${requestLogFile}.tmp`, JSON.stringify(server.requestLog));
    renameSync(`${requestLogFile}.tmp`, requestLogFile);
  });
}
process.stdout.write(`${JSON.stringify({ endpoint: server.endpoint, project: server.project })}\n`);
process.once("SIGTERM", () => void server.stop().then(() => process.exit(0)));
