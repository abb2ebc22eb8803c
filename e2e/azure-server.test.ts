/**
 * The Azure Resource Manager test server checked by the real Azure CLI (Debian's azure-cli 2.45, with the
 * shim testkit/az.ts explains): `az login --service-principal` against the server's token endpoint (a
 * wrong secret is az's AADSTS error), `az network route-table route create/list/show/delete` wait on the
 * long-running operation and see the server's state, a busy table's RetryableErrorDueToAnotherOperation
 * is retried by az until the other operation ends, the server's error bodies come out as az's
 * `(Code) message`, lists page by nextLink, `az network nic update --ip-forwarding` turns forwarding on,
 * `az vm list` reads the VMs. Everything on 127.0.0.1 with test credentials, never a real cloud.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { request } from "node:https";
import { after, before, describe, it } from "node:test";
import { eventually } from "../testkit/controller.js";
import { azCli, type Az } from "../testkit/az.js";
import { startAzureServer, type AzureServerApi, type AzureServerOptions } from "../testkit/azure-server.js";

const hasAz = spawnSync("az", ["--version"], { stdio: "ignore" }).status === 0;
const RG = "k8s";

interface AzRoute {
  name: string;
  addressPrefix: string;
  nextHopType: string;
  nextHopIpAddress?: string;
  provisioningState: string;
  etag: string;
  id: string;
  resourceGroup: string;
  type: string;
}

/** One server and one logged-in az per describe: az's start-up (about a second a command) is the cost. */
function withAz(options: AzureServerOptions, body: (get: () => { server: AzureServerApi; az: Az }) => void): void {
  let server: AzureServerApi;
  let az: Az;
  before(async () => {
    // az waits 30 s between polls when an answer has no Retry-After: the server says 1 s.
    server = await startAzureServer({ retryAfterSeconds: 1, ...options });
    server.addRouteTable(RG, "pods");
    server.addVirtualMachine(RG, "worker-0", { addresses: ["10.240.0.20"], tags: { "pod-cidr": "10.200.0.0/24" } });
    az = await azCli(server);
  });
  after(async () => {
    az?.dispose();
    await server?.stop();
  });
  body(() => ({ server, az }));
}

/** One raw HTTPS call to the server, trusting its CA: status, headers, parsed body. */
function call(server: AzureServerApi, method: string, path: string, options: { body?: unknown; headers?: Record<string, string>; token?: string } = {}) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: any }>((resolve, reject) => {
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    const req = request(
      `${server.endpoint}${path}`,
      { method, ca: server.caPem, headers: { Authorization: `Bearer ${options.token ?? server.token}`, ...(payload ? { "Content-Type": "application/json" } : {}), ...options.headers } },
      (res) => {
        let text = "";
        res.on("data", (chunk: Buffer) => (text += chunk.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text ? JSON.parse(text) : undefined }));
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

describe("the ARM test server's rules, over raw HTTPS (what the SDK and az rely on)", () => {
  let server: AzureServerApi;
  before(async () => {
    server = await startAzureServer({ operationDelayMs: "manual", retryAfterSeconds: 7 });
    server.addRouteTable(RG, "pods");
  });
  after(() => server.stop());
  const tablePath = () => `/subscriptions/${server.subscriptionId}/resourceGroups/${RG}/providers/Microsoft.Network/routeTables/pods`;

  it("api-version is required, a token too; errors are {error:{code,message}}", async () => {
    const bare = await call(server, "GET", tablePath());
    assert.equal(bare.status, 400);
    assert.deepEqual(Object.keys(bare.body.error).sort(), ["code", "message"]);
    assert.equal(bare.body.error.code, "MissingApiVersionParameter");
    const noToken = await call(server, "GET", `${tablePath()}?api-version=2023-09-01`, { token: "forged" });
    assert.equal(noToken.status, 401);
    assert.equal(noToken.body.error.code, "InvalidAuthenticationToken");
    assert.match(String(noToken.headers["www-authenticate"]), /^Bearer authorization_uri=/);
  });

  it("a PUT answers Updating with Azure-AsyncOperation and Retry-After; the operation reads InProgress until it ends, then Succeeded; a second write meanwhile is RetryableErrorDueToAnotherOperation; a stale If-Match is 412", async () => {
    const read = await call(server, "GET", `${tablePath()}?api-version=2023-09-01`);
    assert.equal(read.headers.etag, read.body.etag);
    const routes = [{ name: "a", properties: { addressPrefix: "10.200.0.0/24", nextHopType: "VirtualAppliance", nextHopIpAddress: "10.240.0.20" } }];
    const put = await call(server, "PUT", `${tablePath()}?api-version=2023-09-01`, { body: { location: "westeurope", properties: { routes } }, headers: { "If-Match": read.body.etag } });
    assert.equal(put.status, 200);
    assert.equal(put.body.properties.provisioningState, "Updating");
    assert.equal(put.headers["retry-after"], "7");
    const operation = new URL(String(put.headers["azure-asyncoperation"]));
    assert.equal((await call(server, "GET", operation.pathname + operation.search)).body.status, "InProgress");
    const second = await call(server, "PUT", `${tablePath()}?api-version=2023-09-01`, { body: { location: "westeurope", properties: { routes: [] } } });
    assert.equal(second.status, 429);
    assert.equal(second.body.error.code, "RetryableErrorDueToAnotherOperation");
    assert.equal(second.headers["retry-after"], "7");
    server.finishOperations();
    assert.equal((await call(server, "GET", operation.pathname + operation.search)).body.status, "Succeeded");
    const after = await call(server, "GET", `${tablePath()}?api-version=2023-09-01`);
    assert.equal(after.body.properties.provisioningState, "Succeeded");
    assert.notEqual(after.body.etag, read.body.etag, "a new ETag for the changed table");
    assert.equal(after.body.properties.routes[0].etag, after.body.etag, "its routes carry the table's ETag");
    const stale = await call(server, "PUT", `${tablePath()}?api-version=2023-09-01`, { body: { location: "westeurope", properties: { routes: [] } }, headers: { "If-Match": read.body.etag } });
    assert.equal(stale.status, 412);
    assert.equal(stale.body.error.code, "PreconditionFailed");
    assert.equal(server.routeTable(RG, "pods")!.properties.routes.length, 1, "nothing written by the refused PUTs");
  });

  it("a table's whole route set is validated: the route limit, one route per prefix", async () => {
    const small = await startAzureServer({ routeLimit: 2 });
    try {
      small.addRouteTable(RG, "pods");
      const path = `/subscriptions/${small.subscriptionId}/resourceGroups/${RG}/providers/Microsoft.Network/routeTables/pods?api-version=2023-09-01`;
      const route = (name: string, prefix: string) => ({ name, properties: { addressPrefix: prefix, nextHopType: "VirtualAppliance", nextHopIpAddress: "10.240.0.20" } });
      const over = await call(small, "PUT", path, { body: { location: "westeurope", properties: { routes: [route("a", "10.1.0.0/24"), route("b", "10.2.0.0/24"), route("c", "10.3.0.0/24")] } } });
      assert.equal(over.status, 400);
      assert.equal(over.body.error.code, "RouteTableRoutesLimitReached");
      const twice = await call(small, "PUT", path, { body: { location: "westeurope", properties: { routes: [route("a", "10.1.0.0/24"), route("b", "10.1.0.0/24")] } } });
      assert.equal(twice.body.error.code, "RouteConflict");
    } finally {
      await small.stop();
    }
  });
});

describe("azure-server-main (the server as its own process)", () => {
  it("prints its endpoint and credentials once it listens, serves the seed, and stops on SIGTERM", async () => {
    const dir = mkdtempSync(join(tmpdir(), "podroutes-azure-main-"));
    const seed = join(dir, "seed.json");
    writeFileSync(seed, JSON.stringify({ routeTables: [{ resourceGroup: RG, name: "pods", routes: [{ name: "r", addressPrefix: "10.200.0.0/24", nextHopIpAddress: "10.240.0.20" }] }], virtualMachines: [{ resourceGroup: RG, name: "worker-0", addresses: ["10.240.0.20"] }] }));
    const child = spawn(process.execPath, [fileURLToPath(new URL("../testkit/azure-server-main.js", import.meta.url)), seed], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = "";
        child.stdout!.on("data", (chunk: Buffer) => {
          out += chunk.toString();
          if (out.includes("\n")) resolve(out.split("\n")[0]!);
        });
        child.on("exit", (code) => reject(new Error(`exited ${code} before listening`)));
      });
      const info = JSON.parse(line) as { endpoint: string; caFile: string; subscriptionId: string; token: string };
      const fake = { endpoint: info.endpoint, token: info.token, caPem: readFileSync(info.caFile, "utf8") } as AzureServerApi;
      const table = await call(fake, "GET", `/subscriptions/${info.subscriptionId}/resourceGroups/${RG}/providers/Microsoft.Network/routeTables/pods?api-version=2023-09-01`);
      assert.equal(table.status, 200);
      assert.deepEqual(table.body.properties.routes.map((r: { name: string }) => r.name), ["r"]);
      const vms = await call(fake, "GET", `/subscriptions/${info.subscriptionId}/resourceGroups/${RG}/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01`);
      assert.deepEqual(vms.body.value.map((vm: { name: string }) => vm.name), ["worker-0"]);
      const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      assert.equal(await exited, 0);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("az against the Azure test server", { skip: hasAz ? false : "az (azure-cli) is not installed" }, () => {
  describe("login", () => {
    it("a wrong client secret is refused by the token endpoint, as az reports it", async () => {
      const server = await startAzureServer();
      try {
        await assert.rejects(azCli({ ...server, caFile: server.caFile, endpoint: server.endpoint, tenantId: server.tenantId, clientId: server.clientId, clientSecret: "wrong" }), /AADSTS7000215: Invalid client secret provided/);
        assert.ok(server.requests.some((r) => r.path === "/adfs/.well-known/openid-configuration"), "az found the token endpoint through the authority's metadata");
        assert.ok(server.requests.some((r) => r.method === "POST" && r.path === "/adfs/oauth2/token" && r.status === 401));
      } finally {
        await server.stop();
      }
    });
  });

  describe("routes, with long-running operations", () => {
    withAz({ operationDelayMs: "manual", pageSize: 2 }, (get) => {
      it("route create waits on the operation, and sees Succeeded only once it ended", async () => {
        const { server, az } = get();
        const from = server.requests.length;
        const creating = az.json<AzRoute>(["network", "route-table", "route", "create", "-g", RG, "--route-table-name", "pods", "-n", "worker-0", "--address-prefix", "10.200.0.0/24", "--next-hop-type", "VirtualAppliance", "--next-hop-ip-address", "10.240.0.20"]);
        await eventually("az polls the operation", () => server.requests.slice(from).some((r) => r.method === "GET" && r.path.includes("/operations/")));
        const route = server.routeTable(RG, "pods")!.properties.routes[0]!;
        assert.equal(route.properties.provisioningState, "Updating", "the route is there, its operation still in progress");
        const put = server.requests.find((r) => r.method === "PUT")!;
        assert.match(put.path, /\/routeTables\/pods\/routes\/worker-0$/);
        assert.deepEqual(put.body, { name: "worker-0", properties: { addressPrefix: "10.200.0.0/24", nextHopIpAddress: "10.240.0.20", nextHopType: "VirtualAppliance" } });
        server.finishOperations();
        const created = await creating;
        assert.equal(created.provisioningState, "Succeeded");
        assert.equal(created.nextHopIpAddress, "10.240.0.20");
        assert.equal(created.etag, server.routeTable(RG, "pods")!.etag, "a route carries its table's ETag");
      });

      it("route show and list read the server's state; list follows nextLink over pages of two", async () => {
        const { server, az } = get();
        for (let i = 1; i <= 4; i++) server.setRoute(RG, "pods", { name: `r${i}`, addressPrefix: `10.200.${i}.0/24`, nextHopIpAddress: `10.240.0.2${i}` });
        const shown = await az.json<AzRoute>(["network", "route-table", "route", "show", "-g", RG, "--route-table-name", "pods", "-n", "r2"]);
        const stored = server.routeTable(RG, "pods")!.properties.routes.find((r) => r.name === "r2")!;
        assert.deepEqual(shown, { ...stored.properties, name: stored.name, id: stored.id, etag: stored.etag, type: stored.type, resourceGroup: RG });
        const listed = await az.json<AzRoute[]>(["network", "route-table", "route", "list", "-g", RG, "--route-table-name", "pods"]);
        assert.deepEqual(listed.map((r) => r.name), ["worker-0", "r1", "r2", "r3", "r4"]);
        assert.ok(server.requests.some((r) => r.path.endsWith("/routes") && r.query.get("$skiptoken") === "4"), "the third page was asked for by nextLink");
      });

      it("route delete waits on the operation; the route is gone", async () => {
        const { server, az } = get();
        const from = server.requests.length;
        const deleting = az.run(["network", "route-table", "route", "delete", "-g", RG, "--route-table-name", "pods", "-n", "r4"]);
        await eventually("the delete's operation is polled", () => server.requests.slice(from).some((r) => r.method === "GET" && r.path.includes("/operations/")));
        assert.ok(server.routeTable(RG, "pods")!.properties.routes.every((r) => r.name !== "r4"), "the route is gone at once, as on Azure; its operation still runs");
        server.finishOperations();
        const deleted = await deleting;
        assert.equal(deleted.code, 0, deleted.stderr);
        assert.ok(!server.routeTable(RG, "pods")!.properties.routes.some((r) => r.name === "r4"));
        assert.equal(server.requests.find((r) => r.method === "DELETE")!.status, 202);
      });
    });
  });

  describe("errors and a busy table", () => {
    withAz({ operationDelayMs: 0 }, (get) => {
      it("the server's error bodies are az's (Code) message; a missing route is az's not-found exit 3", async () => {
        const { az } = get();
        const missing = await az.run(["network", "route-table", "route", "show", "-g", RG, "--route-table-name", "pods", "-n", "nope"]);
        assert.equal(missing.code, 3);
        assert.match(missing.stderr, /\(ResourceNotFound\) The Resource 'Microsoft.Network\/routeTables\/routes\/pods\/nope' under resource group 'k8s' was not found/);
        await az.json(["network", "route-table", "route", "create", "-g", RG, "--route-table-name", "pods", "-n", "a", "--address-prefix", "10.200.5.0/24", "--next-hop-type", "VirtualAppliance", "--next-hop-ip-address", "10.240.0.20"]);
        const twice = await az.run(["network", "route-table", "route", "create", "-g", RG, "--route-table-name", "pods", "-n", "b", "--address-prefix", "10.200.5.0/24", "--next-hop-type", "VirtualAppliance", "--next-hop-ip-address", "10.240.0.21"]);
        assert.equal(twice.code, 1);
        assert.match(twice.stderr, /\(RouteConflict\) Routes a and b of route table pods have the same address prefix 10\.200\.5\.0\/24/);
        const noHop = await az.run(["network", "route-table", "route", "create", "-g", RG, "--route-table-name", "pods", "-n", "c", "--address-prefix", "10.200.6.0/24", "--next-hop-type", "VirtualAppliance"]);
        assert.match(noHop.stderr, /\(InvalidNextHopIpAddress\)/);
      });

      it("a write to a table busy with another operation meets RetryableErrorDueToAnotherOperation (429), which az retries until that operation ended", async () => {
        const { server, az } = get();
        const release = server.holdTable(RG, "pods");
        const creating = az.run(["network", "route-table", "route", "create", "-g", RG, "--route-table-name", "pods", "-n", "busy", "--address-prefix", "10.200.7.0/24", "--next-hop-type", "VirtualAppliance", "--next-hop-ip-address", "10.240.0.20"]);
        await eventually("az meets the busy table", () => server.requests.some((r) => r.error === "RetryableErrorDueToAnotherOperation" && r.status === 429));
        assert.ok(!server.routeTable(RG, "pods")!.properties.routes.some((r) => r.name === "busy"));
        release();
        const created = await creating;
        assert.equal(created.code, 0, created.stderr);
        assert.ok(server.routeTable(RG, "pods")!.properties.routes.some((r) => r.name === "busy"));
      });

      it("nic update --ip-forwarding turns forwarding on with a PUT of the whole NIC; vm list and nic list read the server's VMs and NICs", async () => {
        const { server, az } = get();
        const before = server.networkInterface(RG, "worker-0-nic0")!.etag;
        const updated = await az.json<{ enableIpForwarding: boolean; ipConfigurations: { privateIpAddress: string }[] }>(["network", "nic", "update", "-g", RG, "-n", "worker-0-nic0", "--ip-forwarding", "true"]);
        assert.equal(updated.enableIpForwarding, true);
        assert.equal(updated.ipConfigurations[0]!.privateIpAddress, "10.240.0.20");
        const nic = server.networkInterface(RG, "worker-0-nic0")!;
        assert.equal(nic.properties.enableIPForwarding, true);
        assert.notEqual(nic.etag, before, "a new ETag for the changed NIC");
        const put = server.requests.find((r) => r.method === "PUT" && r.path.endsWith("/networkInterfaces/worker-0-nic0"))!;
        assert.equal((put.body as { properties: { ipConfigurations: unknown[] } }).properties.ipConfigurations.length, 1, "az sent the whole NIC back");
        const vms = await az.json<{ name: string; tags: Record<string, string>; networkProfile: { networkInterfaces: { id: string }[] } }[]>(["vm", "list", "-g", RG]);
        assert.deepEqual(vms.map((vm) => [vm.name, vm.tags["pod-cidr"], vm.networkProfile.networkInterfaces[0]!.id]), [["worker-0", "10.200.0.0/24", nic.id]]);
      });

      it("route-table create and show: a new table through its operation, its ETag the server's", async () => {
        const { server, az } = get();
        const created = await az.json<{ provisioningState: string; etag: string; name: string }>(["network", "route-table", "create", "-g", RG, "-n", "more"]);
        assert.equal(created.provisioningState, "Succeeded");
        assert.equal(created.etag, server.routeTable(RG, "more")!.etag);
        assert.equal(server.requests.find((r) => r.method === "PUT" && r.path.endsWith("/routeTables/more"))!.status, 201);
      });
    });
  });
});
