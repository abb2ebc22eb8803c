/**
 * The Compute Engine test server as its own process, for tests that run it inside a network namespace
 * (beside a real kube-apiserver there): `node gce-server-main.js LATENCY_MS [INSTANCES_JSON]` prints
 * `{"endpoint","project"}` on one line once it listens on that namespace's 127.0.0.1, and stops on SIGTERM.
 * INSTANCES_JSON, a JSON array of GceInstance, gives it the cluster's instances (the route controller's
 * GCE routes point at them).
 */
import { startGceServer, type GceInstance } from "./gce-server.js";

const server = await startGceServer({ latencyMs: Number(process.argv[2] ?? 20) });
for (const instance of JSON.parse(process.argv[3] ?? "[]") as GceInstance[]) server.addInstance(instance);
process.stdout.write(`${JSON.stringify({ endpoint: server.endpoint, project: server.project })}\n`);
process.once("SIGTERM", () => void server.stop().then(() => process.exit(0)));
