/**
 * Azure route tables against the ARM test server, each long-running operation taking 5 s (the low end of
 * Azure's 5-30 s for a route or table PUT, which favours the loop): podroutes' apply of N nodes' routes
 * and their NICs' IP forwarding (N = 100; BENCH_AZURE_NODES for a shorter run) versus a person's loop of
 * the az CLI, one `az network route-table route create` and one `az network nic update --ip-forwarding`
 * per node, each waiting for its operation, one process after the other. Each side gets a fresh server
 * with the same table and VMs. Figures: whole-process time, API calls (token requests included), ratio.
 * The loop takes about 2 × (az's start-up + 5 s) a node: BENCH_AZURE_LOOP_NODES=K (3) times it on the
 * first K nodes and scales its figures by N/K, a loop's time and calls being the same for every node.
 */
import { performance } from "node:perf_hooks";
import { azCli } from "../testkit/az.js";
import { runCli } from "../testkit/cli.js";
import { startAzureServer, type AzureServerApi } from "../testkit/azure-server.js";

const NODES = Number(process.env.BENCH_AZURE_NODES ?? 100);
const LOOP_NODES = Math.min(NODES, Number(process.env.BENCH_AZURE_LOOP_NODES ?? 3));
const OPERATION_MS = 5000;
const RG = "k8s";
const TABLE = "pods";

interface Cloud {
  server: AzureServerApi;
  nodes: { name: string; ip: string; podCIDR: string }[];
}

async function cloud(): Promise<Cloud> {
  // Retry-After 1 s: what az and the SDK wait before each poll of an operation.
  const server = await startAzureServer({ operationDelayMs: OPERATION_MS, retryAfterSeconds: 1 });
  server.addRouteTable(RG, TABLE);
  const nodes = Array.from({ length: NODES }, (_, i) => {
    const ip = `10.240.${Math.floor((i + 20) / 250)}.${((i + 20) % 250) + 1}`;
    const podCIDR = `10.200.${i}.0/24`;
    server.addVirtualMachine(RG, `worker-${i}`, { addresses: [ip], tags: { "k8s-azure-cluster-name": "kubernetes", "pod-cidr": podCIDR } });
    return { name: `worker-${i}`, ip, podCIDR };
  });
  return { server, nodes };
}

function check(c: Cloud, who: string, count = NODES): void {
  const routes = new Set(c.server.routeTable(RG, TABLE)!.properties.routes.map((r) => `${r.properties.addressPrefix} ${r.properties.nextHopIpAddress}`));
  for (const node of c.nodes.slice(0, count)) {
    if (!routes.has(`${node.podCIDR} ${node.ip}`)) throw new Error(`bench: ${who} left out the route of ${node.name}`);
    if (!c.server.networkInterface(RG, `${node.name}-nic0`)?.properties.enableIPForwarding) throw new Error(`bench: ${who} left IP forwarding off on ${node.name}`);
  }
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export async function run(): Promise<void> {
  // A person's loop: the CLI, one command and its operation at a time.
  const loopCloud = await cloud();
  const az = await azCli(loopCloud.server);
  const loginCalls = loopCloud.server.requests.length;
  let start = performance.now();
  try {
    for (const node of loopCloud.nodes.slice(0, LOOP_NODES)) {
      for (const args of [
        ["network", "route-table", "route", "create", "-g", RG, "--route-table-name", TABLE, "-n", node.name, "--address-prefix", node.podCIDR, "--next-hop-type", "VirtualAppliance", "--next-hop-ip-address", node.ip],
        ["network", "nic", "update", "-g", RG, "-n", `${node.name}-nic0`, "--ip-forwarding", "true"],
      ]) {
        const result = await az.run(args);
        if (result.code !== 0) throw new Error(`bench: az ${args.join(" ")}: ${result.stderr}`);
      }
    }
  } finally {
    az.dispose();
  }
  const scale = NODES / LOOP_NODES;
  const loop = (performance.now() - start) * scale;
  check(loopCloud, "the CLI loop", LOOP_NODES);
  const loopCalls = Math.round((loopCloud.server.requests.length - loginCalls) * scale) + loginCalls;
  await loopCloud.server.stop();

  // podroutes as a command: nodes from the VMs, the table in one PUT, the NICs' forwarding in parallel.
  const mine = await cloud();
  start = performance.now();
  const applied = await runCli(
    ["apply", "--yes", "--target", "azure", "--subscription", mine.server.subscriptionId, "--resource-group", RG, "--route-table", TABLE, "--arm-endpoint", mine.server.endpoint, "--azure-credential", "client-secret", "--cluster-cidr", "10.200.0.0/16", "-o", "json"],
    { env: { AZURE_TENANT_ID: mine.server.tenantId, AZURE_CLIENT_ID: mine.server.clientId, AZURE_CLIENT_SECRET: mine.server.clientSecret, AZURE_AUTHORITY_HOST: mine.server.authorityHost, NODE_EXTRA_CA_CERTS: mine.server.caFile } },
  );
  const full = performance.now() - start;
  if (applied.code !== 0) throw new Error(`bench: podroutes apply failed: ${applied.stdout}${applied.stderr}`);
  check(mine, "podroutes");
  const calls = mine.server.requests.length;
  await mine.server.stop();

  console.log(`${NODES} routes and ${NODES} NICs' IP forwarding, each ARM operation taking ${OPERATION_MS / 1000} s:`);
  const scaled = LOOP_NODES === NODES ? "" : ` (timed on ${LOOP_NODES} nodes, x${scale.toFixed(1)}; the login once)`;
  console.log(`  az CLI loop (route create + nic update, ${NODES * 2} processes): ${seconds(loop)}, ${loopCalls} API calls${scaled}`);
  console.log(`  podroutes apply --nodes azure (one process):                ${seconds(full)}, ${calls} API calls  (${(loop / full).toFixed(1)}x faster)  [goal >= 20x]`);
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
