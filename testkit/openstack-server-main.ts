/**
 * The OpenStack test server as its own process, for tests and benchmarks that run it beside a real CLI:
 * `node openstack-server-main.js [SEED.json]` prints `{"authUrl","env"}` (the OS_* variables of its
 * password credential) on one line once it listens on 127.0.0.1, and stops on SIGTERM. SEED.json
 * (optional) holds the server's options and `{"networks": [{name, cidr}], "routers": [{name, networks:
 * [NAME], routes?}], "servers": [{name, network: NAME, ip, metadata?}]}`, naming networks by name.
 */
import { readFileSync } from "node:fs";
import { startOpenStackServer, type ExtraRoute, type OpenStackServerOptions, type OsSubnet } from "./openstack-server.js";

interface Seed extends OpenStackServerOptions {
  networks?: { name: string; cidr: string }[];
  routers?: { name: string; networks: string[]; routes?: ExtraRoute[] }[];
  servers?: { name: string; network: string; ip: string; metadata?: Record<string, string> }[];
}

const seed: Seed = process.argv[2] ? (JSON.parse(readFileSync(process.argv[2], "utf8")) as Seed) : {};
const server = await startOpenStackServer(seed);
const subnets = new Map<string, OsSubnet>((seed.networks ?? []).map((n) => [n.name, server.addNetwork(n).subnet]));
const subnetOf = (name: string, who: string): OsSubnet => {
  const subnet = subnets.get(name);
  if (!subnet) throw new Error(`${process.argv[2]}: ${who} names network ${name}, which the seed does not define`);
  return subnet;
};
for (const r of seed.routers ?? []) server.addRouter({ name: r.name, subnets: r.networks.map((n) => subnetOf(n, `router ${r.name}`)), ...(r.routes ? { routes: r.routes } : {}) });
for (const s of seed.servers ?? []) server.addServer({ name: s.name, subnet: subnetOf(s.network, `server ${s.name}`), ip: s.ip, ...(s.metadata ? { metadata: s.metadata } : {}) });
process.stdout.write(`${JSON.stringify({ authUrl: server.authUrl, env: server.env() })}\n`);
process.once("SIGTERM", () => void server.stop().then(() => process.exit(0)));
