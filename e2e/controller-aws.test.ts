/**
 * `podroutes controller --target aws` in-process against moto's EC2 (behind the proxy that enforces EC2's
 * route rules moto skips, the routes-per-table quota among them) and the Kubernetes API test server with
 * exactly deploy/controller/rbac.yaml's permissions: routes in every cluster-tagged table, an address
 * change as ReplaceRoute, a table at its route limit (the node's condition names the limit, an Event, no
 * write past it), a terminated node's blackhole removed by the first reconcile of a new leader, and a
 * route deleted with the real aws CLI repaired at the next 10-minute resync (a fake clock reaches it)
 * while a Node change is handled at once.
 * Dummy credentials, instance metadata off, 127.0.0.1 only.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { DescribeRouteTablesCommand, TerminateInstancesCommand, type EC2Client } from "@aws-sdk/client-ec2";
import { awsTarget } from "../src/targets/aws/factory.js";
import { nodeObject } from "../testkit/agent-lab.js";
import { controllerKubeconfig, eventually, networkCondition, startInProcessController, type InProcessController } from "../testkit/controller.js";
import { startKubeServer, type KubeApiServer } from "../testkit/kube-server.js";
import { FakeClock } from "../testkit/fake-clock.js";
import { awsCli, buildCluster, launchInstance, offlineAwsEnv, REGION, SEED_CLUSTER_CIDR, SEED_NODES, startEc2Proxy, startMoto, type CloudFixture, type Ec2Proxy, type Moto } from "../testkit/moto.js";

describe("podroutes controller (aws, in-process, moto)", () => {
  let moto: Moto;
  let kube: KubeApiServer;
  let dir: string;
  let kubeconfig: string;
  let client: EC2Client;
  let cloud: CloudFixture;
  let proxy: Ec2Proxy | undefined;
  let running: InProcessController | undefined;

  before(async () => {
    moto = await startMoto();
    kube = await startKubeServer({ tokens: {} });
    dir = await mkdtemp(join(tmpdir(), "podroutes-controller-aws-"));
    kubeconfig = await controllerKubeconfig(kube, dir, "controller-aws");
  });
  after(async () => {
    await running?.stop();
    await proxy?.close();
    client?.destroy();
    await kube.close();
    await moto.stop();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    await running?.stop();
    running = undefined;
    await proxy?.close();
    client?.destroy();
    for (const resource of ["nodes", "events", "leases"] as const) for (const o of kube.objects(resource)) kube.remove(resource, o.metadata.name, o.metadata.namespace);
    await moto.reset();
    client = moto.client();
    cloud = await buildCluster(client, { tables: 2 });
  });

  const start = async (routeLimit = 50, resyncClock?: FakeClock) => {
    proxy = await startEc2Proxy(moto.endpoint, { routeRules: { routeLimit } });
    running = await startInProcessController({
      target: awsTarget,
      values: { region: REGION, endpoint: proxy.endpoint, routeLimit: String(routeLimit) },
      kubeconfig,
      identity: "controller-aws",
      clusterCIDR: SEED_CLUSTER_CIDR,
      env: offlineAwsEnv(proxy.endpoint),
      ...(resyncClock ? { resyncMs: 600_000, resyncClock } : {}),
    });
    await eventually("it leads and has reconciled", () => running!.controller.term?.reconciler.reconciled === true);
    await running.controller.term!.loop.settled();
    return running;
  };
  /** `DEST via ENI` of every route inside the cluster CIDR, per table. */
  const routes = async () => {
    const tables = (await client.send(new DescribeRouteTablesCommand({ RouteTableIds: cloud.tableIds }))).RouteTables ?? [];
    return Object.fromEntries(
      tables.map((t) => [
        t.RouteTableId!,
        (t.Routes ?? [])
          .filter((r) => r.DestinationCidrBlock?.startsWith("10.200."))
          .map((r) => `${r.DestinationCidrBlock} via ${r.NetworkInterfaceId ?? r.InstanceId} ${r.State}`)
          .sort(),
      ]),
    );
  };
  const eniOf = (name: string) => cloud.instances.find((i) => i.name === name)!.eniId;
  const expected = (names: string[]) => Object.fromEntries(cloud.tableIds.map((id) => [id, names.map((n) => `${SEED_NODES.find((s) => s.name === n)?.podCIDR} via ${eniOf(n)} active`).sort()]));
  const seedNode = (i: number) => nodeObject(SEED_NODES[i]!.name, SEED_NODES[i]!.ip, SEED_NODES[i]!.podCIDR);

  it("nodes join: routes in every tagged table, conditions False; an address change is one ReplaceRoute per table; a deleted node's routes go", async () => {
    for (const i of [0, 1, 2]) kube.put("nodes", seedNode(i));
    await start();
    assert.deepEqual(await routes(), expected(["worker-0", "worker-1", "worker-2"]));
    for (const i of [0, 1, 2]) assert.equal(networkCondition(kube, `worker-${i}`)?.state, "False/RouteCreated");

    // worker-1 moves to a new instance at 10.240.0.31: same pod CIDR, a new next hop.
    const moved = await launchInstance(client, cloud.subnetId, { name: "worker-1b", ip: "10.240.0.31" }, { "kubernetes.io/cluster/kubernetes": "owned" });
    const creates = proxy!.calls("CreateRoute").length;
    kube.update("nodes", "worker-1", (node) => {
      (node.status as { addresses: { type: string; address: string }[] }).addresses[0]!.address = "10.240.0.31";
    });
    await eventually("replaced", async () => Object.values(await routes()).every((list) => list.includes(`10.200.1.0/24 via ${moved.eniId} active`)));
    await running!.controller.term!.loop.settled();
    assert.deepEqual(proxy!.calls("ReplaceRoute").map((p) => [p.get("RouteTableId"), p.get("DestinationCidrBlock"), p.get("NetworkInterfaceId")]).sort(), cloud.tableIds.map((id) => [id, "10.200.1.0/24", moved.eniId]).sort());
    assert.equal(proxy!.calls("CreateRoute").length, creates, "no create: a replace");
    assert.equal(proxy!.calls("DeleteRoute").length, 0, "no delete: ReplaceRoute swaps the next hop in place");

    kube.remove("nodes", "worker-2");
    await eventually("worker-2's routes deleted", async () => Object.values(await routes()).every((list) => !list.some((r) => r.startsWith("10.200.2.0/24"))));
    assert.deepEqual(kube.requests.filter((r) => r.code === 403).map((r) => `${r.verb} ${r.resource}`), []);
  });

  it("a table at its route limit: the node past it gets condition True naming the limit and a RouteLimitExceeded Event, and no write past the limit", async () => {
    // The default route to the gateway counts toward the quota: 1 + 2 node routes fill a limit of 3.
    for (const i of [0, 1]) kube.put("nodes", seedNode(i));
    await start(3);
    assert.deepEqual(await routes(), expected(["worker-0", "worker-1"]));
    kube.put("nodes", seedNode(2));
    // The Node joins with the kubelet's own NetworkUnavailable=True/NoRouteCreated: wait for the controller's words.
    await eventually("worker-2 refused", () => /route limit/.test(networkCondition(kube, "worker-2")?.message ?? ""));
    await running!.controller.term!.loop.settled();
    assert.equal(networkCondition(kube, "worker-2")?.state, "True/NoRouteCreated");
    const message = networkCondition(kube, "worker-2")!.message;
    for (const id of cloud.tableIds) assert.match(message, new RegExp(`route table ${id} is at its route limit of 3 IPv4 routes .*--route-limit.*10\\.200\\.2\\.0/24`));
    assert.equal(proxy!.calls("CreateRoute").filter((p) => p.get("DestinationCidrBlock") === "10.200.2.0/24").length, 0, "no CreateRoute attempted past the limit");
    assert.equal(proxy!.refused.get("RouteLimitExceeded") ?? 0, 0, "EC2 never had to refuse one");
    const events = kube.objects("events") as unknown as { involvedObject: { name: string }; reason: string; type: string }[];
    assert.deepEqual(events.map((e) => [e.involvedObject.name, e.reason, e.type]), [["worker-2", "RouteLimitExceeded", "Warning"]]);
    assert.equal(networkCondition(kube, "worker-0")?.state, "False/RouteCreated");
  });

  it("a node terminated and deleted while no controller ran: the new leader's first reconcile removes its blackhole, and only that", async () => {
    for (const i of [0, 1, 2]) kube.put("nodes", seedNode(i));
    await start();
    await running!.stop();
    running = undefined;
    const gone = cloud.instances.find((i) => i.name === "worker-2")!;
    await client.send(new TerminateInstancesCommand({ InstanceIds: [gone.instanceId] }));
    kube.remove("nodes", "worker-2");
    await proxy!.close();
    proxy = undefined;
    await start();
    assert.deepEqual(await routes(), expected(["worker-0", "worker-1"]));
    assert.deepEqual(proxy!.calls("DeleteRoute").map((p) => [p.get("RouteTableId"), p.get("DestinationCidrBlock")]).sort(), cloud.tableIds.map((id) => [id, "10.200.2.0/24"]).sort());
    const tables = (await client.send(new DescribeRouteTablesCommand({ RouteTableIds: cloud.tableIds }))).RouteTables ?? [];
    for (const table of tables) assert.ok(table.Routes?.some((r) => r.DestinationCidrBlock === "0.0.0.0/0"), "the gateway route is not podroutes' and stays");
  });

  it("with a 10-minute resync: a route deleted with the aws CLI is repaired at the next resync, a Node change is handled without waiting for it", async () => {
    const clock = new FakeClock();
    for (const i of [0, 1]) kube.put("nodes", seedNode(i));
    await start(50, clock);
    assert.deepEqual(await routes(), expected(["worker-0", "worker-1"]));
    const [table] = cloud.tableIds;
    // Behind the controller's back: straight to moto, not through the proxy that counts the controller's calls.
    await awsCli(moto.endpoint, ["ec2", "delete-route", "--route-table-id", table!, "--destination-cidr-block", "10.200.0.0/24"]);
    const reads = () => proxy!.calls("DescribeRouteTables").length;
    const readsBefore = reads();
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(reads(), readsBefore, "nothing reads the tables between resyncs while nothing changes");
    assert.ok(!(await routes())[table!]!.some((r) => r.startsWith("10.200.0.0/24")));

    await clock.advance(599_999);
    await running!.controller.term!.loop.settled();
    assert.ok(!(await routes())[table!]!.some((r) => r.startsWith("10.200.0.0/24")), "not before the resync");
    await clock.advance(1);
    await eventually("repaired at the resync", async () => (await routes())[table!]!.includes(`10.200.0.0/24 via ${eniOf("worker-0")} active`));
    await running!.controller.term!.loop.settled();
    assert.deepEqual(await routes(), expected(["worker-0", "worker-1"]));
    assert.deepEqual(proxy!.calls("CreateRoute").slice(-1).map((p) => [p.get("RouteTableId"), p.get("DestinationCidrBlock")]), [[table, "10.200.0.0/24"]], "only the missing route is written");

    kube.put("nodes", seedNode(2));
    await eventually("a new Node's routes without waiting for the next resync", async () => JSON.stringify(await routes()) === JSON.stringify(expected(["worker-0", "worker-1", "worker-2"])));
    await eventually("its condition", () => networkCondition(kube, "worker-2")?.state === "False/RouteCreated");
  });
});
