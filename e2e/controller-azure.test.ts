/**
 * `podroutes controller --target azure` in-process against the ARM test server and the Kubernetes API test
 * server with exactly deploy/controller/rbac.yaml's permissions: nodes join and their routes land in one
 * table PUT, conditions set only once it succeeded; a 412 race (someone else's write between the
 * controller's read and its PUT) keeps their route and sets the conditions only after the real write; a
 * deleted node's route goes; a table at its route limit refuses the node past it with a condition naming
 * the limit and an Event, and writes nothing past it. 127.0.0.1 only, test credentials.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { azureTarget } from "../src/targets/azure/factory.js";
import { nodeObject } from "../testkit/agent-lab.js";
import { startAzureServer, type AzureServerApi } from "../testkit/azure-server.js";
import { controllerKubeconfig, eventually, networkCondition, startInProcessController, type InProcessController } from "../testkit/controller.js";
import { startKubeServer, type KubeApiServer } from "../testkit/kube-server.js";

const RG = "k8s";
const TABLE = "pods";
const CLUSTER_CIDR = "10.200.0.0/16";
const NODES = [0, 1, 2].map((i) => ({ name: `worker-${i}`, ip: `10.240.0.2${i}`, podCIDR: `10.200.${i}.0/24` }));

describe("podroutes controller (azure, in-process, ARM test server)", () => {
  let kube: KubeApiServer;
  let dir: string;
  let kubeconfig: string;
  let server: AzureServerApi | undefined;
  let running: InProcessController | undefined;

  before(async () => {
    kube = await startKubeServer({ tokens: {} });
    dir = await mkdtemp(join(tmpdir(), "podroutes-controller-azure-"));
    kubeconfig = await controllerKubeconfig(kube, dir, "controller-azure");
  });
  after(async () => {
    await running?.stop();
    await server?.stop();
    await kube.close();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    await running?.stop();
    running = undefined;
    await server?.stop();
    for (const resource of ["nodes", "events", "leases"] as const) for (const o of kube.objects(resource)) kube.remove(resource, o.metadata.name, o.metadata.namespace);
    server = await startAzureServer({ operationDelayMs: 0, retryAfterSeconds: 0 });
    server.addRouteTable(RG, TABLE, { routes: [{ name: "firewall", addressPrefix: "0.0.0.0/0", nextHopIpAddress: "10.240.0.4" }] });
    for (const node of NODES) server.addVirtualMachine(RG, node.name, { addresses: [node.ip], tags: { "k8s-azure-cluster-name": "kubernetes" } });
    server.addVirtualMachine(RG, "spare", { addresses: ["10.240.0.99"] });
  });

  const start = async (routeLimit = 400) => {
    const s = server!;
    running = await startInProcessController({
      target: azureTarget,
      values: { subscription: s.subscriptionId, resourceGroup: RG, routeTable: [TABLE], armEndpoint: s.endpoint, azureCredential: "client-secret", azureCaFile: s.caFile, routeLimit: String(routeLimit) },
      kubeconfig,
      identity: "controller-azure",
      clusterCIDR: CLUSTER_CIDR,
      env: { AZURE_TENANT_ID: s.tenantId, AZURE_CLIENT_ID: s.clientId, AZURE_CLIENT_SECRET: s.clientSecret, AZURE_AUTHORITY_HOST: s.authorityHost },
    });
    await eventually("it leads and has reconciled", () => running!.controller.term?.reconciler.reconciled === true);
    await running.controller.term!.loop.settled();
    return running;
  };
  const routes = () => server!.routeTable(RG, TABLE)!.properties.routes.map((r) => `${r.properties.addressPrefix} via ${r.properties.nextHopIpAddress}`).sort();
  const expected = (names: string[]) => ["0.0.0.0/0 via 10.240.0.4", ...names.map((n) => NODES.find((s) => s.name === n)!).map((n) => `${n.podCIDR} via ${n.ip}`)].sort();
  const seedNode = (i: number) => nodeObject(NODES[i]!.name, NODES[i]!.ip, NODES[i]!.podCIDR);
  const puts = () => server!.requests.filter((r) => r.method === "PUT" && r.path.endsWith(`/routeTables/${TABLE}`));

  it("nodes join: their routes in one PUT, IP forwarding on, conditions False once it succeeded; a deleted node's route goes", async () => {
    for (const i of [0, 1, 2]) kube.put("nodes", seedNode(i));
    await start();
    assert.deepEqual(routes(), expected(["worker-0", "worker-1", "worker-2"]));
    assert.equal(puts().length, 1);
    for (const i of [0, 1, 2]) assert.equal(networkCondition(kube, `worker-${i}`)?.state, "False/RouteCreated");
    for (const node of NODES) assert.equal(server!.networkInterface(RG, `${node.name}-nic0`)!.properties.enableIPForwarding, true);
    kube.remove("nodes", "worker-2");
    await eventually("worker-2's route deleted", () => !routes().some((r) => r.startsWith("10.200.2.0/24")));
    assert.deepEqual(routes(), expected(["worker-0", "worker-1"]));
    assert.deepEqual(kube.requests.filter((r) => r.code === 403).map((r) => `${r.verb} ${r.resource}`), []);
  });

  it("a 412 race on a node's join keeps the other writer's route, and the condition is set only after the re-planned write landed", async () => {
    for (const i of [0, 1]) kube.put("nodes", seedNode(i));
    await start();
    let raced = false;
    let conditionAtRace: string | undefined;
    server!.beforeNext(
      (call) => call.method === "PUT" && call.path.endsWith(`/routeTables/${TABLE}`),
      () => {
        raced = true;
        conditionAtRace = networkCondition(kube, "worker-2")?.state;
        server!.setRoute(RG, TABLE, { name: "theirs", addressPrefix: "10.50.0.0/24", nextHopIpAddress: "10.240.0.99" });
      },
    );
    kube.put("nodes", seedNode(2));
    await eventually("worker-2's condition", () => networkCondition(kube, "worker-2")?.state === "False/RouteCreated");
    assert.ok(raced);
    assert.equal(conditionAtRace, "True/NoRouteCreated", "the kubelet's own condition, not yet the controller's, while the write is under way");
    assert.deepEqual(puts().slice(-2).map((p) => p.status), [412, 200]);
    assert.deepEqual(routes(), [...expected(["worker-0", "worker-1", "worker-2"]), "10.50.0.0/24 via 10.240.0.99"].sort());
  });

  it("a table at its route limit: the node past it gets condition True naming the limit and a RouteLimitExceeded Event, and nothing past the limit is written", async () => {
    // The firewall's route counts: 1 + 2 node routes fill a limit of 3.
    for (const i of [0, 1]) kube.put("nodes", seedNode(i));
    await start(3);
    assert.deepEqual(routes(), expected(["worker-0", "worker-1"]));
    kube.put("nodes", seedNode(2));
    await eventually("worker-2 refused", () => /route limit/.test(networkCondition(kube, "worker-2")?.message ?? ""));
    await running!.controller.term!.loop.settled();
    assert.equal(networkCondition(kube, "worker-2")?.state, "True/NoRouteCreated");
    assert.match(networkCondition(kube, "worker-2")!.message, /route table pods is at its route limit of 3 routes \(--route-limit; Azure allows 400\): no room for 10\.200\.2\.0\/24/);
    assert.deepEqual(routes(), expected(["worker-0", "worker-1"]));
    const events = kube.objects("events") as unknown as { involvedObject: { name: string }; reason: string; type: string }[];
    assert.deepEqual(events.map((e) => [e.involvedObject.name, e.reason, e.type]), [["worker-2", "RouteLimitExceeded", "Warning"]]);
    assert.equal(networkCondition(kube, "worker-0")?.state, "False/RouteCreated");
  });
});
