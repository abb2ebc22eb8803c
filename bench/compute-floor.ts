/**
 * The floor under bench/controller.ts's join, run as its own process as the controller is: the same
 * 1,000 route inserts through podroutes' Compute client alone (no Kubernetes, no controller), as many in
 * flight as the controller's default ceiling, against the same GCE test server. What the join costs
 * beyond this is the controller's; what this costs beyond the bound is the client's and the test
 * server's per-call work on this machine.
 *
 * `node compute-floor.js ENDPOINT PROJECT TOKEN_FILE NETWORK COUNT IN_FLIGHT` prints `{"ms": N, "calls": N,
 * "httpRequests": N}` (calls counts each call inside a batch request; httpRequests the requests they took).
 */
import { performance } from "node:perf_hooks";
import pLimit from "p-limit";
import { createCompute } from "../src/targets/gcp/compute.js";

const [endpoint, project, accessTokenFile, network, count, inFlight] = process.argv.slice(2);
const compute = await createCompute({ project: project!, endpoint: endpoint!, accessTokenFile: accessTokenFile! });
const limit = pLimit(Number(inFlight));
const start = performance.now();
await Promise.all(
  Array.from({ length: Number(count) }, (_, i) =>
    limit(() => compute.insertRoute({ name: `floor-route-${i}`, network: compute.networkUrl(network!), destRange: `10.${200 + (i >> 8)}.${i & 255}.0/24`, nextHopIp: "10.240.0.20", priority: 1000 })),
  ),
);
console.log(JSON.stringify({ ms: performance.now() - start, calls: compute.calls.requests, httpRequests: compute.calls.httpRequests }));
