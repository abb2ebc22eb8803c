/**
 * OpenStack Neutron against the OpenStack test server answering each call in 0.2 to 1 s (a real
 * Neutron's range under load): podroutes' apply of N nodes' routes and their ports' allowed address pairs
 * (N = 100; BENCH_OPENSTACK_NODES for a shorter run) versus a person's loop of the openstack CLI, one
 * `openstack router add route` and one `openstack port set --allowed-address` per node, one process
 * after the other. Each side gets a fresh server with the same network, router and servers. Figures:
 * whole-process time, API calls (the logins included), ratio. The loop takes about 6 s a node (10 min for
 * 100): BENCH_OPENSTACK_LOOP_NODES=K times it on the first K nodes only and scales its figures by N/K, a
 * loop's time and calls being the same for every node (said in the output).
 */
import { performance } from "node:perf_hooks";
import { runCli } from "../testkit/cli.js";
import { openstackCli } from "../testkit/openstack-cli.js";
import { startOpenStackServer, type OpenStackServerApi, type OsPort, type OsRouter } from "../testkit/openstack-server.js";

const NODES = Number(process.env.BENCH_OPENSTACK_NODES ?? 100);
const LOOP_NODES = Math.min(NODES, Number(process.env.BENCH_OPENSTACK_LOOP_NODES ?? NODES));
const LATENCY = { min: 200, max: 1000 };

interface Cloud {
  server: OpenStackServerApi;
  router: OsRouter;
  nodes: { name: string; ip: string; podCIDR: string; port: OsPort }[];
}

async function cloud(): Promise<Cloud> {
  const server = await startOpenStackServer({ latencyMs: LATENCY, maxRoutes: NODES + 10, maxAllowedAddressPairs: 10 });
  const { subnet } = server.addNetwork({ name: "k8s", cidr: "10.240.0.0/16" });
  const router = server.addRouter({ name: "k8s-router", subnets: [subnet] });
  const nodes = Array.from({ length: NODES }, (_, i) => {
    const ip = `10.240.${Math.floor((i + 20) / 250)}.${((i + 20) % 250) + 1}`;
    const podCIDR = `10.200.${i}.0/24`;
    const { port } = server.addServer({ name: `worker-${i}`, subnet, ip, metadata: { "kubernetes.io/cluster/kubernetes": "owned", "pod-cidr": podCIDR } });
    return { name: `worker-${i}`, ip, podCIDR, port };
  });
  return { server, router, nodes };
}

/** Calls the service answered (discovery documents aside). */
const apiCalls = (server: OpenStackServerApi) => server.requests.filter((r) => r.path !== "" && r.path !== "/" && r.path !== "/v3" && r.path !== "/v2.1").length;

function check(c: Cloud, who: string): void {
  const routes = new Set(c.router.routes.map((r) => `${r.destination} ${r.nexthop}`));
  for (const node of c.nodes) {
    if (!routes.has(`${node.podCIDR} ${node.ip}`)) throw new Error(`bench: ${who} left out the route of ${node.name}`);
    if (!node.port.allowed_address_pairs.some((p) => p.ip_address === node.podCIDR)) throw new Error(`bench: ${who} left out the pair of ${node.name}`);
  }
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export async function run(): Promise<void> {
  // A person's loop: the CLI, one command and its answer at a time.
  const loopCloud = await cloud();
  const cli = openstackCli(loopCloud.server);
  let start = performance.now();
  try {
    for (const node of loopCloud.nodes.slice(0, LOOP_NODES)) {
      for (const args of [
        ["router", "add", "route", "--route", `destination=${node.podCIDR},gateway=${node.ip}`, loopCloud.router.id],
        ["port", "set", "--allowed-address", `ip-address=${node.podCIDR}`, node.port.id],
      ]) {
        const result = await cli.run(args);
        if (result.code !== 0) throw new Error(`bench: openstack ${args.join(" ")}: ${result.stderr}`);
      }
    }
  } finally {
    cli.dispose();
  }
  const scale = NODES / LOOP_NODES;
  const loop = (performance.now() - start) * scale;
  if (LOOP_NODES === NODES) check(loopCloud, "the CLI loop");
  const loopCalls = Math.round(apiCalls(loopCloud.server) * scale);
  await loopCloud.server.stop();

  // podroutes as a command: nodes from Nova, the routes in one atomic call, the pairs paced.
  const mine = await cloud();
  start = performance.now();
  const applied = await runCli(["apply", "--yes", "--target", "openstack", "--router", "k8s-router", "--cluster-cidr", "10.200.0.0/16", "--route-limit", String(NODES + 10), "-o", "json"], {
    env: { ...mine.server.env(), HOME: "/nonexistent" },
  });
  const full = performance.now() - start;
  if (applied.code !== 0) throw new Error(`bench: podroutes apply failed: ${applied.stderr}`);
  check(mine, "podroutes");
  const calls = apiCalls(mine.server);
  await mine.server.stop();

  console.log(`${NODES} routes and ${NODES} ports' allowed address pairs, Neutron answering in ${LATENCY.min / 1000}-${LATENCY.max / 1000} s a call:`);
  const scaled = LOOP_NODES === NODES ? "" : ` (timed on ${LOOP_NODES} nodes, x${scale.toFixed(1)})`;
  console.log(`  openstack CLI loop (router add route + port set, ${NODES * 2} processes): ${seconds(loop)}, ${loopCalls} API calls${scaled}`);
  console.log(`  podroutes apply --nodes openstack (one process):                  ${seconds(full)}, ${calls} API calls  (${(loop / full).toFixed(1)}x faster)`);
}

if (import.meta.url === `file://${process.argv[1]}`) await run();
