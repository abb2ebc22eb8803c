/**
 * The Azure Resource Manager test server as its own process, for tests that run it beside a real CLI or
 * inside a network namespace: `node azure-server-main.js [SEED.json]` prints
 * `{"endpoint","caFile","subscriptionId","tenantId","clientId","clientSecret","token"}` on one line once it
 * listens on 127.0.0.1, and stops on SIGTERM. SEED.json (optional) holds the server's options and
 * `{"routeTables": [{resourceGroup, name, routes?, tags?}], "virtualMachines": [{resourceGroup, name, addresses, tags?}]}`.
 */
import { readFileSync } from "node:fs";
import { startAzureServer, type AzureServerOptions, type NextHopType } from "./azure-server.js";

interface Seed extends AzureServerOptions {
  routeTables?: { resourceGroup: string; name: string; tags?: Record<string, string>; routes?: { name: string; addressPrefix: string; nextHopType?: NextHopType; nextHopIpAddress?: string }[] }[];
  virtualMachines?: { resourceGroup: string; name: string; addresses: string[]; tags?: Record<string, string>; enableIPForwarding?: boolean }[];
}

const seed: Seed = process.argv[2] ? (JSON.parse(readFileSync(process.argv[2], "utf8")) as Seed) : {};
const server = await startAzureServer(seed);
for (const t of seed.routeTables ?? []) server.addRouteTable(t.resourceGroup, t.name, t);
for (const vm of seed.virtualMachines ?? []) server.addVirtualMachine(vm.resourceGroup, vm.name, vm);
const { endpoint, caFile, subscriptionId, tenantId, clientId, clientSecret, token } = server;
process.stdout.write(`${JSON.stringify({ endpoint, caFile, subscriptionId, tenantId, clientId, clientSecret, token })}\n`);
process.once("SIGTERM", () => void server.stop().then(() => process.exit(0)));
