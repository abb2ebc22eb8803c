/**
 * `--target azure` and `--nodes azure` end to end against the local ARM test server (TLS with its test
 * CA, client-secret tokens from its AAD endpoint): the shared conformance suite, the CLI as a user runs
 * it, the 412 race (someone else's write between podroutes' read and its PUT), and a readback by the
 * real az CLI: a route podroutes wrote shows in `az network route-table route show` exactly as one az
 * wrote itself. 127.0.0.1 only, explicit test credentials, never a real cloud.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { apply, plan } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import type { Inventory } from "../src/model.js";
import type { ResolvedOptions } from "../src/options.js";
import { readAzureNodes } from "../src/sources/azure.js";
import { createArm } from "../src/targets/azure/arm.js";
import { azureTarget } from "../src/targets/azure/factory.js";
import { AzureTarget } from "../src/targets/azure/target.js";
import { azCli } from "../testkit/az.js";
import { startAzureServer, type AzureServerApi, type AzureServerOptions } from "../testkit/azure-server.js";
import { jsonOf, runCli } from "../testkit/cli.js";
import { runConformance } from "../testkit/conformance.js";

const RG = "k8s";
const TABLE = "pods";
const CLUSTER_CIDR = "10.200.0.0/16";
const NODES = [0, 1, 2].map((i) => ({ name: `worker-${i}`, ip: `10.240.0.2${i}`, podCIDR: `10.200.${i}.0/24` }));
const SPARE_IP = "10.240.0.99";
const options = { parallel: 4 };
const hasAz = spawnSync("az", ["--version"], { stdio: "ignore" }).status === 0;

/** A server with the route table, the three nodes' VMs (tagged as the cluster's, with their pod CIDRs) and a spare VM of no cluster. */
async function cluster(serverOptions: AzureServerOptions = {}): Promise<AzureServerApi> {
  const server = await startAzureServer({ operationDelayMs: 0, retryAfterSeconds: 0, pageSize: 2, ...serverOptions });
  server.addRouteTable(RG, TABLE);
  for (const node of NODES) server.addVirtualMachine(RG, node.name, { addresses: [node.ip], tags: { "k8s-azure-cluster-name": "kubernetes", "pod-cidr": node.podCIDR } });
  server.addVirtualMachine(RG, "spare", { addresses: [SPARE_IP] });
  return server;
}

function credentialsEnv(server: AzureServerApi): NodeJS.ProcessEnv {
  return { AZURE_TENANT_ID: server.tenantId, AZURE_CLIENT_ID: server.clientId, AZURE_CLIENT_SECRET: server.clientSecret, AZURE_AUTHORITY_HOST: server.authorityHost };
}

function resolved(server: AzureServerApi, extra: Record<string, unknown> = {}): ResolvedOptions {
  return {
    cluster: "kubernetes",
    clusterCIDR: CLUSTER_CIDR,
    parallel: 4,
    env: credentialsEnv(server),
    warn: () => {},
    interactive: false,
    subscription: server.subscriptionId,
    resourceGroup: RG,
    routeTable: [TABLE],
    armEndpoint: server.endpoint,
    azureCredential: "client-secret",
    azureCaFile: server.caFile,
    ...extra,
  };
}

function seedInventory(nodes = NODES): Inventory {
  return validateInventory({ source: "seed", nodes: nodes.map((n) => ({ name: n.name, internalIPs: [n.ip], podCIDRs: [n.podCIDR] })) }, { clusterCIDR: CLUSTER_CIDR });
}

/** prefix → next hop of the table as the server holds it. */
function routesOf(server: AzureServerApi): Map<string, string> {
  return new Map(server.routeTable(RG, TABLE)!.properties.routes.map((r) => [r.properties.addressPrefix, r.properties.nextHopIpAddress ?? r.properties.nextHopType]));
}

function tablePuts(server: AzureServerApi) {
  return server.requests.filter((r) => r.method === "PUT" && r.path.endsWith(`/routeTables/${TABLE}`));
}

runConformance({
  name: "azure (ARM test server)",
  async setup() {
    const server = await cluster();
    const target = await azureTarget.create(resolved(server));
    return {
      target,
      inventory: seedInventory(),
      spareNextHop: SPARE_IP,
      addForeignRoute: async (tableId, destination, nextHop) => server.setRoute(RG, tableId, { name: `hand-made-${destination.replace(/[./]/g, "-")}`, addressPrefix: destination, nextHopIpAddress: nextHop }),
      hasRoute: async (tableId, destination) => server.routeTable(RG, tableId)!.properties.routes.some((r) => r.properties.addressPrefix === destination),
      teardown: () => server.stop(),
    };
  },
});

describe("azure target against the ARM test server", () => {
  it("writes every change of a table as ONE PUT of the whole table with If-Match on the ETag it read, and turns IP forwarding on for each node's NIC", async () => {
    const server = await cluster();
    try {
      server.setRoute(RG, TABLE, { name: "firewall", addressPrefix: "0.0.0.0/0", nextHopIpAddress: "10.240.0.4" });
      const etag = server.routeTable(RG, TABLE)!.etag;
      const target = await azureTarget.create(resolved(server));
      const inventory = seedInventory();
      const planned = await plan(target, inventory, options);
      assert.equal(planned.summary.create, 3);
      const actions = planned.tables.flatMap((t) => t.actions ?? []).map((a) => a.description);
      assert.deepEqual(actions, NODES.map((n) => `enable IP forwarding on network interface ${n.name}-nic0 (${n.ip})`));
      const report = await apply(target, planned, inventory, options);
      assert.ok(report.ok, JSON.stringify(report.tables));
      const puts = tablePuts(server);
      assert.equal(puts.length, 1, "one PUT for three routes");
      assert.equal(puts[0]!.headers["if-match"], etag);
      assert.deepEqual(Object.fromEntries(routesOf(server)), { "0.0.0.0/0": "10.240.0.4", "10.200.0.0/24": "10.240.0.20", "10.200.1.0/24": "10.240.0.21", "10.200.2.0/24": "10.240.0.22" });
      assert.deepEqual(server.routeTable(RG, TABLE)!.properties.routes.map((r) => r.name), ["firewall", "worker-0____102000024", "worker-1____102001024", "worker-2____102002024"]);
      for (const node of NODES) assert.equal(server.networkInterface(RG, `${node.name}-nic0`)!.properties.enableIPForwarding, true);
      assert.equal(server.networkInterface(RG, "spare-nic0")!.properties.enableIPForwarding, false, "no NIC but the nodes' is changed");
      assert.ok(server.requests.some((r) => r.path.includes("/operations/")), "the long-running operation is followed");
      await target.close?.();
    } finally {
      await server.stop();
    }
  });

  it("a 412 (someone else wrote the table between podroutes' read and its PUT) is re-read and re-planned, their route kept; success only after the real write", async () => {
    const server = await cluster();
    try {
      const target = await azureTarget.create(resolved(server));
      const inventory = seedInventory();
      const planned = await plan(target, inventory, options);
      // Their write lands just before podroutes' PUT reaches the server: the ETag podroutes holds is stale.
      let raced = false;
      server.beforeNext(
        (call) => call.method === "PUT" && call.path.endsWith(`/routeTables/${TABLE}`),
        () => {
          raced = true;
          server.setRoute(RG, TABLE, { name: "theirs", addressPrefix: "10.200.9.0/24", nextHopIpAddress: SPARE_IP });
        },
      );
      const results: boolean[] = [];
      const report = await apply(target, planned, inventory, { ...options, onResult: (r) => results.push(r.ok) });
      assert.ok(raced);
      assert.ok(report.ok, JSON.stringify(report.tables));
      const puts = tablePuts(server);
      assert.deepEqual(puts.map((p) => p.status), [412, 200], "the stale PUT is refused, the re-planned one written");
      assert.notEqual(puts[0]!.headers["if-match"], puts[1]!.headers["if-match"], "the second PUT carries the ETag of the fresh read");
      const gets = server.requests.filter((r) => r.method === "GET" && r.path.endsWith(`/routeTables/${TABLE}`));
      assert.ok(gets.length >= 2, "the table is read again after the 412");
      assert.equal(routesOf(server).get("10.200.9.0/24"), SPARE_IP, "their route is kept");
      for (const node of NODES) assert.equal(routesOf(server).get(node.podCIDR), node.ip);
      assert.deepEqual(results, [true, true, true], "each change is reported once, as done, after the write that landed");
      await target.close?.();
    } finally {
      await server.stop();
    }
  });

  it("a write that keeps meeting 412s reports failure, never success, and says nothing of it was written", async () => {
    const server = await cluster();
    try {
      const target = await azureTarget.create(resolved(server));
      const inventory = seedInventory();
      const planned = await plan(target, inventory, options);
      for (let i = 0; i < 6; i++) {
        server.beforeNext(
          (call) => call.method === "PUT" && call.path.endsWith(`/routeTables/${TABLE}`),
          () => server.setRoute(RG, TABLE, { name: `churn-${i}`, addressPrefix: `10.50.${i}.0/24`, nextHopIpAddress: SPARE_IP }),
        );
      }
      const report = await apply(target, planned, inventory, options);
      assert.equal(report.ok, false);
      const failures = report.tables.flatMap((t) => t.results.filter((r) => !r.ok).map((r) => r.error ?? ""));
      assert.equal(failures.length, 3);
      assert.match(failures[0]!, /changed between each read and write 6 times \(HTTP 412, If-Match\); nothing of this change was written/);
      assert.ok(!routesOf(server).has("10.200.0.0/24"));
      await target.close?.();
    } finally {
      await server.stop();
    }
  });

  it("a PUT whose operation ends Failed reports every change failed with the operation's error, and a re-run finishes", async () => {
    const server = await cluster();
    try {
      const target = await azureTarget.create(resolved(server));
      const inventory = seedInventory();
      server.failNextOperation("InternalServerError", "An error occurred while provisioning the route table.");
      const report = await apply(target, await plan(target, inventory, options), inventory, options);
      assert.equal(report.ok, false);
      const errors = report.tables.flatMap((t) => t.results.map((r) => `${r.ok} ${r.error ?? ""}`));
      assert.equal(errors.length, 3);
      for (const error of errors) assert.match(error, /^false .*An error occurred while provisioning the route table\..*the route table PUT carrying this change did not succeed/);
      assert.equal(server.routeTable(RG, TABLE)!.properties.provisioningState, "Failed");
      assert.equal(routesOf(server).size, 0, "the failed PUT left the table as it was");
      const again = await apply(target, await plan(target, inventory, options), inventory, options);
      assert.ok(again.ok, JSON.stringify(again.tables));
      assert.equal(routesOf(server).size, 3);
      assert.equal(server.routeTable(RG, TABLE)!.properties.provisioningState, "Succeeded");
      await target.close?.();
    } finally {
      await server.stop();
    }
  });

  it("a table busy with another operation (RetryableErrorDueToAnotherOperation, 409) is written once that operation ended, their change kept", async () => {
    const server = await cluster({ busyStatus: 409 });
    try {
      const arm = await createArm({ subscription: server.subscriptionId, endpoint: server.endpoint, credential: { kind: "token", token: server.token }, caPem: server.caPem, pollIntervalMs: 10 });
      const target = new AzureTarget(arm, { cluster: "kubernetes", clusterCIDR: CLUSTER_CIDR, resourceGroup: RG, routeTables: [TABLE], routeLimit: 400, maxInFlight: 4, busyBackoffMs: 10 });
      const inventory = seedInventory();
      const planned = await plan(target, inventory, options);
      // Someone else's operation starts on the table as podroutes' PUT arrives, and changes it.
      let release: (() => void) | undefined;
      server.beforeNext(
        (call) => call.method === "PUT" && call.path.endsWith(`/routeTables/${TABLE}`),
        () => {
          server.setRoute(RG, TABLE, { name: "theirs", addressPrefix: "10.50.0.0/24", nextHopIpAddress: SPARE_IP });
          release = server.holdTable(RG, TABLE);
        },
      );
      const applying = apply(target, planned, inventory, options);
      while (!server.requests.some((r) => r.error === "RetryableErrorDueToAnotherOperation")) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.ok(!routesOf(server).has("10.200.0.0/24"), "nothing of podroutes' is written while the table is busy");
      release!();
      const report = await applying;
      assert.ok(report.ok, JSON.stringify(report.tables));
      assert.equal(routesOf(server).get("10.50.0.0/24"), SPARE_IP, "their change is kept");
      for (const node of NODES) assert.equal(routesOf(server).get(node.podCIDR), node.ip);
      assert.equal(tablePuts(server).at(-1)!.status, 200);
      await target.close();
    } finally {
      await server.stop();
    }
  });

  it("a deleted node's route (an address no NIC holds any more) is owned, unhealthy, and removed; another cluster's route is never touched", async () => {
    const server = await cluster();
    try {
      server.setRoute(RG, TABLE, { name: "gone", addressPrefix: "10.200.7.0/24", nextHopIpAddress: "10.240.0.27" });
      server.setRoute(RG, TABLE, { name: "other-cluster", addressPrefix: "10.200.8.0/24", nextHopIpAddress: SPARE_IP });
      const target = await azureTarget.create(resolved(server));
      const inventory = seedInventory();
      const planned = await plan(target, inventory, options);
      const changes = planned.tables.flatMap((t) => t.changes.map((c) => `${c.action} ${c.action === "delete" ? c.current.destination : c.route.destination}`));
      assert.deepEqual(changes.sort(), ["create 10.200.0.0/24", "create 10.200.1.0/24", "create 10.200.2.0/24", "delete 10.200.7.0/24"]);
      assert.ok((await apply(target, planned, inventory, options)).ok);
      assert.ok(!routesOf(server).has("10.200.7.0/24"));
      assert.equal(routesOf(server).get("10.200.8.0/24"), SPARE_IP);
      await target.close?.();
    } finally {
      await server.stop();
    }
  });

  it("a table the cloud controller manager wrote (routes named after their nodes) is taken over as it is: nothing to change, a moved node's route keeps its name", async () => {
    const server = await cluster();
    try {
      for (const node of NODES) server.setRoute(RG, TABLE, { name: node.name, addressPrefix: node.podCIDR, nextHopIpAddress: node.ip });
      const target = await azureTarget.create(resolved(server));
      const inventory = seedInventory();
      const planned = await plan(target, inventory, options);
      assert.deepEqual({ create: planned.summary.create, replace: planned.summary.replace, delete: planned.summary.delete, unchanged: planned.summary.unchanged }, { create: 0, replace: 0, delete: 0, unchanged: 3 });
      const moved = seedInventory(NODES.map((n) => (n.name === "worker-1" ? { ...n, ip: SPARE_IP } : n)));
      const report = await apply(target, await plan(target, moved, options), moved, options);
      assert.ok(report.ok, JSON.stringify(report.tables));
      assert.deepEqual(server.routeTable(RG, TABLE)!.properties.routes.map((r) => `${r.name} ${r.properties.addressPrefix} ${r.properties.nextHopIpAddress}`), ["worker-0 10.200.0.0/24 10.240.0.20", `worker-1 10.200.1.0/24 ${SPARE_IP}`, "worker-2 10.200.2.0/24 10.240.0.22"]);
      await target.close?.();
    } finally {
      await server.stop();
    }
  });

  it("--nodes azure reads the tagged VMs, their primary NICs' private IPs and pod-cidr tags, over paged lists", async () => {
    const server = await cluster();
    try {
      const arm = await createArm({ subscription: server.subscriptionId, endpoint: server.endpoint, credential: { kind: "token", token: server.token }, caPem: server.caPem });
      const inventory = await readAzureNodes(arm, RG, [{ key: "k8s-azure-cluster-name", value: "kubernetes" }], "test");
      assert.deepEqual(inventory.nodes.map((n) => [n.name, n.internalIPs, n.podCIDRs]), NODES.map((n) => [n.name, [n.ip], [n.podCIDR]]));
      assert.ok(server.requests.some((r) => r.query.has("$skiptoken")), "the lists were paged");
      arm.close();
    } finally {
      await server.stop();
    }
  });
});

describe("podroutes --target azure as a user runs it", () => {
  const flags = (server: AzureServerApi) => ["--target", "azure", "--subscription", server.subscriptionId, "--resource-group", RG, "--route-table", TABLE, "--arm-endpoint", server.endpoint, "--azure-credential", "client-secret", "--cluster-cidr", CLUSTER_CIDR];
  const envOf = (server: AzureServerApi) => ({ ...credentialsEnv(server), NODE_EXTRA_CA_CERTS: server.caFile });

  it("plan, apply, list, verify, delete with -o json and exit codes, nodes from the VMs (--nodes azure is the default)", async () => {
    const server = await cluster();
    try {
      const env = envOf(server);
      const pending = await runCli(["plan", "--detailed-exitcode", "-o", "json", ...flags(server)], { env });
      assert.equal(pending.code, 2, pending.stdout + pending.stderr);
      const planned = jsonOf<{ tables: { table: { id: string }; changes: { action: string; destination: string; next_hop?: string }[] }[]; actions: { description: string }[] }>(pending);
      assert.deepEqual(planned.tables.flatMap((t) => t.changes.map((c) => `${t.table.id} ${c.action} ${c.destination} ${c.next_hop}`)), NODES.map((n) => `${TABLE} create ${n.podCIDR} ${n.ip}`));
      assert.deepEqual(planned.actions.map((a) => a.description), NODES.map((n) => `enable IP forwarding on network interface ${n.name}-nic0 (${n.ip})`));
      const applied = await runCli(["apply", "--yes", "-o", "json", ...flags(server)], { env });
      assert.equal(applied.code, 0, applied.stdout + applied.stderr);
      const report = jsonOf<{ ok: boolean; counts: Record<string, number> }>(applied);
      assert.equal(report.ok, true);
      assert.equal(report.counts.created, 3, JSON.stringify(report.counts));
      assert.equal(tablePuts(server).length, 1);
      const listed = jsonOf<{ table: string; destination: string; nextHop?: string; owned: boolean; name?: string }[]>(await runCli(["list", "-o", "json", ...flags(server)], { env }));
      assert.deepEqual(listed.map((r) => `${r.table} ${r.name} ${r.destination} ${r.nextHop} ${r.owned}`), NODES.map((n) => `${TABLE} ${n.name}____${n.podCIDR.replace(/[./]/g, "")} ${n.podCIDR} ${n.ip} true`));
      const table = await runCli(["list", ...flags(server)], { env });
      assert.match(table.stdout, /^ROUTE_TABLE\s+NAME\s+ADDRESS_PREFIX\s+NEXT_HOP_TYPE\s+NEXT_HOP_IP\s+STATE/);
      assert.match(table.stdout, /pods\s+worker-0____102000024\s+10\.200\.0\.0\/24\s+VirtualAppliance\s+10\.240\.0\.20\s+Succeeded/);
      const verified = await runCli(["verify", ...flags(server)], { env });
      // The route table is associated with no subnet in the test server: a warning, not a failure.
      assert.equal(verified.code, 0, verified.stdout + verified.stderr);
      const clean = await runCli(["plan", "--detailed-exitcode", ...flags(server)], { env });
      assert.equal(clean.code, 0, clean.stdout + clean.stderr);
      const deleted = await runCli(["delete", "--yes", ...flags(server)], { env });
      assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
      assert.equal(routesOf(server).size, 0);
    } finally {
      await server.stop();
    }
  });

  it("bad flags are usage errors naming the flag (exit 3), before any call", async () => {
    const server = await cluster();
    try {
      const env = envOf(server);
      const noCidr = await runCli(["plan", ...flags(server).slice(0, -2)], { env });
      assert.equal(noCidr.code, 3, noCidr.stderr);
      assert.match(noCidr.stderr, /--cluster-cidr is required by --target azure/);
      const badSub = await runCli(["plan", ...flags(server).map((f) => (f === server.subscriptionId ? "not-a-guid" : f))], { env });
      assert.equal(badSub.code, 3, badSub.stderr);
      assert.match(badSub.stderr, /--subscription "not-a-guid": not a subscription id/);
      const limit = await runCli(["plan", "--route-limit", "401", ...flags(server)], { env });
      assert.equal(limit.code, 3);
      assert.match(limit.stderr, /--route-limit "401": must be a whole number from 1 to 400/);
      assert.equal(server.requests.filter((r) => !r.path.includes("oauth2") && !r.path.includes("openid")).length, 0, "no ARM call was made");
    } finally {
      await server.stop();
    }
  });

  it("apply refuses (exit 1) when the route limit would be passed, and writes nothing", async () => {
    const server = await cluster();
    try {
      const result = await runCli(["apply", "--yes", "--route-limit", "2", ...flags(server)], { env: envOf(server) });
      assert.equal(result.code, 1, result.stdout + result.stderr);
      assert.match(result.stdout + result.stderr, /over the route limit of 2/);
      assert.equal(tablePuts(server).length, 0);
    } finally {
      await server.stop();
    }
  });

  it("a static token (--azure-token-file) is used as it is; a wrong one is ARM's InvalidAuthenticationToken", async () => {
    const server = await cluster();
    const dir = mkdtempSync(join(tmpdir(), "podroutes-azure-token-"));
    try {
      const env = { NODE_EXTRA_CA_CERTS: server.caFile };
      const base = flags(server).filter((f, i, all) => f !== "--azure-credential" && all[i - 1] !== "--azure-credential");
      writeFileSync(join(dir, "token"), `${server.token}\n`);
      const ok = await runCli(["plan", "--azure-token-file", join(dir, "token"), ...base], { env });
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      writeFileSync(join(dir, "bad"), "not-a-token");
      const bad = await runCli(["plan", "--azure-token-file", join(dir, "bad"), ...base], { env });
      assert.notEqual(bad.code, 0);
      assert.match(bad.stdout + bad.stderr, /InvalidAuthenticationToken/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await server.stop();
    }
  });
});

describe("the real az CLI reads what podroutes wrote", { skip: hasAz ? false : "az (azure-cli) is not installed" }, () => {
  it("a route podroutes wrote reads back in `az network route-table route show` exactly as one az created itself", async () => {
    // az waits 30 s between polls without a Retry-After: the server answers 1 s.
    const server = await cluster({ retryAfterSeconds: 1, operationDelayMs: 0 });
    const az = await azCli(server);
    try {
      const target = await azureTarget.create(resolved(server));
      const inventory = seedInventory(NODES.slice(0, 1));
      assert.ok((await apply(target, await plan(target, inventory, options), inventory, options)).ok);
      await target.close?.();
      const ours = await az.json<Record<string, unknown>>(["network", "route-table", "route", "show", "-g", RG, "--route-table-name", TABLE, "-n", "worker-0____102000024"]);
      await az.json(["network", "route-table", "route", "create", "-g", RG, "--route-table-name", TABLE, "-n", "by-az", "--address-prefix", "10.200.1.0/24", "--next-hop-type", "VirtualAppliance", "--next-hop-ip-address", "10.240.0.21"]);
      const theirs = await az.json<Record<string, unknown>>(["network", "route-table", "route", "show", "-g", RG, "--route-table-name", TABLE, "-n", "by-az"]);
      const shape = (r: Record<string, unknown>) => ({ ...r, name: "_", id: String(r.id).replace(/[^/]+$/, "_"), etag: "_", addressPrefix: "_", nextHopIpAddress: "_" });
      assert.deepEqual(shape(ours), shape(theirs), "the same fields, types and values but name, prefix, hop and ETag");
      assert.equal(ours.nextHopType, "VirtualAppliance");
      assert.equal(ours.nextHopIpAddress, "10.240.0.20");
      assert.equal(ours.addressPrefix, "10.200.0.0/24");
      assert.equal(ours.provisioningState, "Succeeded");
      const nic = await az.json<{ enableIpForwarding: boolean }>(["network", "nic", "show", "-g", RG, "-n", "worker-0-nic0"]);
      assert.equal(nic.enableIpForwarding, true, "the IP forwarding podroutes turned on");
      const listed = await az.json<{ name: string }[]>(["network", "route-table", "route", "list", "-g", RG, "--route-table-name", TABLE]);
      assert.deepEqual(listed.map((r) => r.name).sort(), ["by-az", "worker-0____102000024"]);
    } finally {
      az.dispose();
      await server.stop();
    }
  });
});
