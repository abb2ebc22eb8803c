/**
 * GCP benchmark: converge 250 routes against the local Compute Engine server with 200 ms per operation.
 * podroutes with DEFAULT flags (adaptive operations in flight, `--max-in-flight` 200), run as a user runs
 * it (a whole `podroutes apply` process) and in process, against the seed's way: one create and its wait
 * at a time (podroutes' own client in a sequential loop, and real gcloud for a few routes to calibrate
 * what each seed command costs on top). Then the same apply against a server that throttles above 20
 * operations at once: how long, and how many writes were throttled.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { apply, plan } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import { DEFAULT_MAX_IN_FLIGHT } from "../src/targets/each-change.js";
import { createCompute } from "../src/targets/gcp/compute.js";
import { GcpTarget, ownershipMarker } from "../src/targets/gcp/target.js";
import { BIN } from "../testkit/cli.js";
import { startGceServer, type GceServer } from "../testkit/gce-server.js";
import { gcloud } from "../testkit/gcloud.js";

const ROUTES = 250;
const LATENCY_MS = 200;
const THROTTLE_ABOVE = 20;
const GCLOUD_SAMPLE = 3;
const NETWORK = "kubernetes-the-hard-way";
const CLUSTER_CIDR = "10.192.0.0/10";

const execFileAsync = promisify(execFile);

function owned(server: GceServer): number {
  return [...server.routes.values()].filter((r) => r.description?.includes(ownershipMarker("kubernetes"))).length;
}

/** Fresh server state for the next run: no routes, the benchmark's latency, no throttling. */
function reset(server: GceServer, throttleAbove?: number): void {
  server.reset();
  server.latencyMs = LATENCY_MS;
  server.throttleAbove = throttleAbove;
}

export async function run(): Promise<void> {
  process.env.GCE_METADATA_HOST = "127.0.0.1:9";
  const server = await startGceServer({ latencyMs: LATENCY_MS, routesQuota: 10_000 });
  const dir = mkdtempSync(join(tmpdir(), "podroutes-bench-gcp-"));
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, "bench\n");
  const cli = gcloud(server);
  try {
    const nodes = Array.from({ length: ROUTES }, (_, i) => ({ name: `worker-${i}`, internalIPs: [`10.240.${Math.floor(i / 200)}.${20 + (i % 200)}`], podCIDRs: [`10.${200 + Math.floor(i / 256)}.${i % 256}.0/24`] }));
    const inventory = validateInventory({ nodes, source: "bench", cluster: "kubernetes", clusterCIDR: CLUSTER_CIDR });
    const nodesFile = join(dir, "nodes.txt");
    writeFileSync(nodesFile, nodes.map((n) => `${n.internalIPs[0]} ${n.podCIDRs[0]} ${n.name}`).join("\n"));
    const compute = await createCompute({ project: server.project, endpoint: server.endpoint, accessTokenFile: tokenFile });

    // The seed's way: one create and its wait at a time.
    let start = performance.now();
    for (const node of inventory.nodes) {
      await compute.insertRoute({
        name: `seed-${node.name}`,
        network: compute.networkUrl(NETWORK),
        destRange: node.podCIDRs[0]!,
        nextHopIp: node.internalIPs[0]!,
        priority: 1000,
      });
    }
    const seedMs = performance.now() - start;
    reset(server);

    // Real gcloud for a few routes: what one seed command costs besides the operation.
    start = performance.now();
    for (let i = 0; i < GCLOUD_SAMPLE; i++) {
      const r = await cli.run(["compute", "routes", "create", `gcloud-${i}`, "--network", NETWORK, "--next-hop-address", `10.240.0.${20 + i}`, "--destination-range", `10.250.${i}.0/24`]);
      if (r.code !== 0) throw new Error(`gcloud failed: ${r.stderr}`);
    }
    const gcloudPerRoute = (performance.now() - start) / GCLOUD_SAMPLE;

    // podroutes as a user runs it: a whole process, default flags (only the required ones).
    const wholeProcess = async (): Promise<number> => {
      const began = performance.now();
      await execFileAsync(process.execPath, [BIN, "apply", "--yes", "--nodes", nodesFile, "--target", "gcp", "--network", NETWORK, "--cluster-cidr", CLUSTER_CIDR], {
        env: { ...process.env, CLOUDSDK_CORE_PROJECT: server.project, CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: server.endpoint, CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: tokenFile },
      });
      const ms = performance.now() - began;
      if (owned(server) !== ROUTES) throw new Error(`podroutes did not converge: ${owned(server)} routes`);
      return ms;
    };
    reset(server);
    const processMs = await wholeProcess();
    const peak = server.stats.peakRunning;

    // In process, with the target the factory builds from default flags.
    reset(server);
    const target = new GcpTarget(compute, { cluster: "kubernetes", network: NETWORK, nextHop: "ip", priority: 1000, maxInFlight: DEFAULT_MAX_IN_FLIGHT, clusterCIDR: CLUSTER_CIDR });
    start = performance.now();
    const report = await apply(target, await plan(target, inventory, { parallel: 10 }), inventory, { parallel: 10 });
    const inProcessMs = performance.now() - start;
    if (!report.ok || owned(server) !== ROUTES) throw new Error(`podroutes did not converge: ${owned(server)} routes, ${report.counts.failed} failed`);
    start = performance.now();
    const again = await plan(target, inventory, { parallel: 10 });
    const noopMs = performance.now() - start;

    // A server that throttles above 20 operations at once.
    reset(server, THROTTLE_ABOVE);
    const throttledMs = await wholeProcess();
    const writes = server.stats.inserts + server.stats.throttled;
    const throttledShare = server.stats.throttled / writes;

    const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    console.log(`${ROUTES} routes, ${LATENCY_MS} ms per operation, podroutes with default flags (adaptive in flight from 10, --max-in-flight ${DEFAULT_MAX_IN_FLIGHT})`);
    console.log(`seed loop (create + wait, one at a time, podroutes' client): ${seconds(seedMs)}`);
    console.log(`seed loop with real gcloud: ${seconds(gcloudPerRoute)} per route (sampled ${GCLOUD_SAMPLE}) → ~${(gcloudPerRoute * ROUTES / 1000).toFixed(0)} s for ${ROUTES}`);
    console.log(`podroutes apply, whole process: ${seconds(processMs)} (at most ${peak} operations at once)`);
    console.log(`podroutes plan + apply in process: ${seconds(inProcessMs)}; no-op re-plan ${noopMs.toFixed(0)} ms, ${again.summary.unchanged} unchanged`);
    console.log(`podroutes vs seed loop: ${(seedMs / processMs).toFixed(1)}× faster as a whole process, ${(seedMs / inProcessMs).toFixed(1)}× in process (goal ≥ 15×); vs the gcloud loop ~${((gcloudPerRoute * ROUTES) / processMs).toFixed(0)}×`);
    console.log(`bound at 50 in flight: ceil(${ROUTES}/50) × ${LATENCY_MS} ms = ${Math.ceil(ROUTES / 50) * LATENCY_MS} ms; podroutes in process: ${(inProcessMs / (Math.ceil(ROUTES / 50) * LATENCY_MS)).toFixed(2)}× it`);
    console.log(
      `server throttling above ${THROTTLE_ABOVE} at once: ${seconds(throttledMs)} whole process, ${server.stats.throttled} of ${writes} writes throttled (${(throttledShare * 100).toFixed(1)}%, goal ≤ 10%), at most ${server.stats.peakRunning} at once`,
    );
  } finally {
    cli.dispose();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
