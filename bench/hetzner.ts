/**
 * A Hetzner Cloud network against the API test server, its route actions taking the API's real latency
 * (about 1 to 3 s each, drawn uniformly): podroutes' apply of BENCH_ROUTES nodes' routes (default 100, the
 * network's limit) as a command (`--nodes hetzner` included) versus the way a person pastes it, a loop of
 * `hcloud network add-route`, one process and one action wait at a time, with hcloud's default 500 ms
 * poll interval on both sides. Whole-process time and API calls (the polls of the actions included).
 *
 * The network runs one action at a time, so neither side can beat the serial bound: the sum of the
 * actions' own durations, as the server timed them. The figure that matters is how close each comes to
 * it (the goal for podroutes: within 1.2x) and how many calls each spends (fewer than the loop).
 * BENCH_ACTION_MS=LOW-HIGH (default 1000-3000) sets the latency and BENCH_POLL_MS (default 500) both
 * sides' poll interval: `BENCH_ROUTES=10 BENCH_ACTION_MS=200-200` checks that it works. A run scaled down
 * in time (`BENCH_ACTION_MS=100-300 BENCH_POLL_MS=50`) shows podroutes against its serial bound, not
 * against the loop: hcloud's wait per action stayed about 0.5 s at `--poll-interval 50ms` (measured), so
 * the loop does not scale down with it.
 */
import { performance } from "node:perf_hooks";
import { podCidrLabelValue } from "../src/sources/hetzner.js";
import { runCli } from "../testkit/cli.js";
import { hcloud } from "../testkit/hcloud.js";
import { startHetznerServer, type HetznerServerApi } from "../testkit/hetzner-server.js";

const ROUTES = Number(process.env.BENCH_ROUTES ?? 100);
const [LOW_MS, HIGH_MS] = (process.env.BENCH_ACTION_MS ?? "1000-3000").split("-").map(Number) as [number, number];
/** Both sides' poll interval (hcloud's --poll-interval, podroutes' own): 500 ms, hcloud's default. */
const POLL_MS = Number(process.env.BENCH_POLL_MS ?? 500);
const CLUSTER_CIDR = "10.244.0.0/16";

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/** The time the network was busy with actions that arrived after `from` (the serial bound of those writes). */
function busyMs(server: HetznerServerApi, fromId: number): number {
  let total = 0;
  for (const action of server.actions.values()) {
    if (action.id < fromId || !action.finished) continue;
    total += Date.parse(action.finished) - Date.parse(action.started);
  }
  return total;
}

/** The next action id the server will hand out: actions from here on belong to the side measured next. */
function nextActionId(server: HetznerServerApi): number {
  return Math.max(0, ...server.actions.keys()) + 1;
}

export async function run(): Promise<void> {
  if (!(ROUTES >= 1 && ROUTES <= 100) || !(LOW_MS >= 0 && HIGH_MS >= LOW_MS)) throw new Error("bench hetzner: BENCH_ROUTES 1..100, BENCH_ACTION_MS LOW-HIGH");
  // One draw of the actions' durations, replayed for each side: both meet the same API, the same serial bound.
  const delays = Array.from({ length: ROUTES }, () => LOW_MS + Math.random() * (HIGH_MS - LOW_MS));
  let drawn = 0;
  const server = await startHetznerServer({ actionDelayMs: () => delays[drawn++ % ROUTES]! });
  const cli = hcloud(server, { pollInterval: `${POLL_MS}ms` });
  try {
    const network = server.addNetwork({ name: "k8s", ipRange: "10.0.0.0/16", subnets: ["10.0.0.0/24"] });
    const nodes = Array.from({ length: ROUTES }, (_, i) => ({ name: `node-${i}`, ip: `10.0.0.${10 + i}`, podCIDR: `10.244.${i}.0/24` }));
    for (const node of nodes) {
      server.addServer({ name: node.name, labels: { "podroutes.io/cluster": "kubernetes", "podroutes.io/pod-cidr": podCidrLabelValue(node.podCIDR) }, privateNet: [{ network: network.id, ip: node.ip }] });
    }

    // The way a person pastes it: one hcloud process per route, each waiting on its action.
    drawn = 0;
    let calls = server.requests.length;
    let firstAction = nextActionId(server);
    let start = performance.now();
    for (const node of nodes) {
      const added = await cli.run(["network", "add-route", "k8s", "--destination", node.podCIDR, "--gateway", node.ip]);
      if (added.code !== 0) throw new Error(`bench hetzner: hcloud network add-route failed: ${added.stderr}`);
    }
    const loop = { ms: performance.now() - start, calls: server.requests.length - calls, bound: busyMs(server, firstAction) };
    if (network.routes.length !== ROUTES) throw new Error(`bench hetzner: the hcloud loop left ${network.routes.length} routes`);

    network.routes.length = 0;
    drawn = 0;
    calls = server.requests.length;
    firstAction = nextActionId(server);
    start = performance.now();
    const applied = await runCli(["apply", "--yes", "--target", "hetzner", "--network", "k8s", "--cluster-cidr", CLUSTER_CIDR, "--poll-interval", `${POLL_MS}ms`], {
      env: { HCLOUD_TOKEN: server.token, HCLOUD_ENDPOINT: server.endpoint },
    });
    const podroutes = { ms: performance.now() - start, calls: server.requests.length - calls, bound: busyMs(server, firstAction) };
    if (applied.code !== 0 || network.routes.length !== ROUTES) throw new Error(`bench hetzner: podroutes apply failed (${network.routes.length} routes): ${applied.stderr}`);

    const calledBy = (side: typeof loop) => `${side.calls} API calls (${(side.calls / ROUTES).toFixed(1)} a route)`;
    console.log(`${ROUTES} routes into one Hetzner network (API test server on 127.0.0.1, actions ${LOW_MS}-${HIGH_MS} ms, one at a time per network, ${POLL_MS} ms polls):`);
    console.log(`  hcloud network add-route loop (${ROUTES} processes): ${seconds(loop.ms)}, ${(loop.ms / loop.bound).toFixed(2)}x its serial bound of ${seconds(loop.bound)}, ${calledBy(loop)}`);
    console.log(`  podroutes apply (--nodes hetzner), one process:   ${seconds(podroutes.ms)}, ${(podroutes.ms / podroutes.bound).toFixed(2)}x its serial bound of ${seconds(podroutes.bound)}, ${calledBy(podroutes)}`);
    console.log(`  ratio: podroutes ${(loop.ms / podroutes.ms).toFixed(2)}x faster than the loop, ${(loop.calls / podroutes.calls).toFixed(2)}x fewer calls`);
  } finally {
    cli.dispose();
    await server.stop();
  }
}
