/**
 * GCP benchmark: converge 250 routes against the local Compute Engine server with 200 ms per operation.
 * podroutes (plan + apply, bounded operations in flight) against the seed's way: one create and its
 * wait at a time (podroutes' own client in a sequential loop, and real gcloud for a few routes to
 * calibrate what each seed command costs on top). Prints the ratio and the bound ceil(250/in-flight) × 200 ms.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { apply, plan } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import { createCompute } from "../src/targets/gcp/compute.js";
import { GcpTarget, ownershipMarker } from "../src/targets/gcp/target.js";
import { startGceServer } from "../testkit/gce-server.js";
import { gcloud } from "../testkit/gcloud.js";

const ROUTES = 250;
const LATENCY_MS = 200;
const IN_FLIGHT = 50;
const GCLOUD_SAMPLE = 3;
const NETWORK = "kubernetes-the-hard-way";

export async function run(): Promise<void> {
  process.env.GCE_METADATA_HOST = "127.0.0.1:9";
  const server = await startGceServer({ latencyMs: LATENCY_MS, routesQuota: 10_000 });
  const dir = mkdtempSync(join(tmpdir(), "podroutes-bench-gcp-"));
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, "bench\n");
  const cli = gcloud(server);
  try {
    const nodes = Array.from({ length: ROUTES }, (_, i) => ({ name: `worker-${i}`, internalIPs: [`10.240.${Math.floor(i / 200)}.${20 + (i % 200)}`], podCIDRs: [`10.${200 + Math.floor(i / 256)}.${i % 256}.0/24`] }));
    const inventory = validateInventory({ nodes, source: "bench", cluster: "kubernetes", clusterCIDR: "10.192.0.0/10" });
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
    server.reset();
    server.latencyMs = LATENCY_MS;

    // Real gcloud for a few routes: what one seed command costs besides the operation.
    start = performance.now();
    for (let i = 0; i < GCLOUD_SAMPLE; i++) {
      const r = await cli.run(["compute", "routes", "create", `gcloud-${i}`, "--network", NETWORK, "--next-hop-address", `10.240.0.${20 + i}`, "--destination-range", `10.250.${i}.0/24`]);
      if (r.code !== 0) throw new Error(`gcloud failed: ${r.stderr}`);
    }
    const gcloudPerRoute = (performance.now() - start) / GCLOUD_SAMPLE;
    server.reset();
    server.latencyMs = LATENCY_MS;

    const target = new GcpTarget(compute, { cluster: "kubernetes", network: NETWORK, nextHop: "ip", priority: 1000, maxInFlight: IN_FLIGHT, clusterCIDR: inventory.clusterCIDR! });
    start = performance.now();
    const planned = await plan(target, inventory, { parallel: IN_FLIGHT });
    const report = await apply(target, planned, inventory, { parallel: IN_FLIGHT });
    const podroutesMs = performance.now() - start;
    const owned = [...server.routes.values()].filter((r) => r.description?.includes(ownershipMarker("kubernetes"))).length;
    if (!report.ok || owned !== ROUTES) throw new Error(`podroutes did not converge: ${owned} routes, ${report.counts.failed} failed`);
    start = performance.now();
    const again = await plan(target, inventory, { parallel: IN_FLIGHT });
    const noopMs = performance.now() - start;

    const bound = Math.ceil(ROUTES / IN_FLIGHT) * LATENCY_MS;
    console.log(`${ROUTES} routes, ${LATENCY_MS} ms per operation, ${IN_FLIGHT} operations in flight`);
    console.log(`seed loop (create + wait, one at a time, podroutes' client): ${(seedMs / 1000).toFixed(2)} s`);
    console.log(`seed loop with real gcloud: ${(gcloudPerRoute / 1000).toFixed(2)} s per route (sampled ${GCLOUD_SAMPLE}) → ~${((gcloudPerRoute * ROUTES) / 1000).toFixed(0)} s for ${ROUTES}`);
    console.log(`podroutes plan + apply: ${(podroutesMs / 1000).toFixed(2)} s (${report.counts.created} created); bound ceil(${ROUTES}/${IN_FLIGHT}) × ${LATENCY_MS} ms = ${bound} ms`);
    console.log(`podroutes vs seed loop: ${(seedMs / podroutesMs).toFixed(1)}× faster (target ≥ 15×); vs gcloud loop: ~${((gcloudPerRoute * ROUTES) / podroutesMs).toFixed(0)}×`);
    console.log(`podroutes vs bound: ${(podroutesMs / bound).toFixed(2)}× (target ≤ 1.5×); no-op re-plan: ${noopMs.toFixed(0)} ms, ${again.summary.unchanged} unchanged`);
  } finally {
    cli.dispose();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
