/**
 * The Hetzner Cloud test server as its own process, for tests that run it inside a network namespace or
 * beside a real CLI: `node hetzner-server-main.js [SEED.json]` prints `{"endpoint","token"}` on one line
 * once it listens on 127.0.0.1, and stops on SIGTERM. SEED.json (optional) holds
 * `{"actionDelayMs"?, "busyError"?, "routeLimit"?, "networks": [{name, ipRange, subnets?, labels?, routes?}],
 * "servers": [{name, labels?, privateNet: [{network: NAME, ip}]}]}`, the servers naming their networks.
 */
import { readFileSync } from "node:fs";
import { startHetznerServer, type HetznerRoute, type HetznerServerOptions } from "./hetzner-server.js";

interface Seed extends HetznerServerOptions {
  networks?: { name: string; ipRange: string; subnets?: string[]; labels?: Record<string, string>; routes?: HetznerRoute[] }[];
  servers?: { name: string; labels?: Record<string, string>; privateNet?: { network: string; ip: string }[] }[];
}

const seed: Seed = process.argv[2] ? (JSON.parse(readFileSync(process.argv[2], "utf8")) as Seed) : {};
const server = await startHetznerServer(seed);
const ids = new Map((seed.networks ?? []).map((n) => [n.name, server.addNetwork(n).id]));
for (const s of seed.servers ?? []) {
  server.addServer({
    ...s,
    privateNet: (s.privateNet ?? []).map((p) => {
      const network = ids.get(p.network);
      if (network === undefined) throw new Error(`${process.argv[2]}: server ${s.name} names network ${p.network}, which the seed does not define`);
      return { network, ip: p.ip };
    }),
  });
}
process.stdout.write(`${JSON.stringify({ endpoint: server.endpoint, token: server.token })}\n`);
process.once("SIGTERM", () => void server.stop().then(() => process.exit(0)));
