/**
 * `--target aws` and `--nodes aws` end to end against moto's EC2 (one server for this file, reset
 * before each test), cross-checked with the real aws CLI: what podroutes wrote is what
 * `aws ec2 describe-route-tables` sees, and what the CLI added outside podroutes' remit survives.
 * Dummy credentials, instance metadata off, 127.0.0.1 only.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import {
  AttachNetworkInterfaceCommand,
  CreateNetworkInterfaceCommand,
  CreateRouteCommand,
  CreateRouteTableCommand,
  DescribeNetworkInterfacesCommand,
  DescribeRouteTablesCommand,
  ModifyNetworkInterfaceAttributeCommand,
  TerminateInstancesCommand,
  type EC2Client,
} from "@aws-sdk/client-ec2";
import { apply, plan, verifyTarget } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import type { Inventory } from "../src/model.js";
import type { ResolvedOptions } from "../src/options.js";
import { awsTarget } from "../src/targets/aws/factory.js";
import { createEc2, type Ec2Api } from "../src/targets/aws/ec2.js";
import { AwsTarget, type AwsTargetSettings } from "../src/targets/aws/target.js";
import { TargetError } from "../src/targets/target.js";
import { runCli, jsonOf } from "../testkit/cli.js";
import { editInventory, readTable, runConformance } from "../testkit/conformance.js";
import {
  awsCli,
  buildCluster,
  launchInstance,
  offlineAwsEnv,
  REGION,
  SEED_CLUSTER_CIDR,
  SEED_NODES,
  startMoto,
  startEc2Proxy,
  type CloudFixture,
  type Moto,
} from "../testkit/moto.js";

let moto: Moto | undefined;
/** One moto for the whole file, started on first use and stopped by PID at the end. */
async function server(): Promise<Moto> {
  moto ??= await startMoto();
  return moto;
}
after(async () => {
  await moto?.stop();
});

const options = { parallel: 4 };

function seedInventory(nodes = SEED_NODES): Inventory {
  return validateInventory(
    { source: "seed", nodes: nodes.map((n) => ({ name: n.name, internalIPs: [n.ip], podCIDRs: [n.podCIDR] })) },
    { clusterCIDR: SEED_CLUSTER_CIDR },
  );
}

function resolved(endpoint: string, extra: Record<string, unknown> = {}): ResolvedOptions {
  return {
    cluster: "kubernetes",
    clusterCIDR: SEED_CLUSTER_CIDR,
    parallel: 4,
    env: offlineAwsEnv(endpoint),
    warn: () => {},
    interactive: false,
    endpoint,
    region: REGION,
    nextHop: "eni",
    routeLimit: "50",
    ...extra,
  };
}

/** Wraps the EC2 helpers, recording every call by name, to show what was (not) called. */
function recording(ec2: Ec2Api): { ec2: Ec2Api; calls: string[] } {
  const calls: string[] = [];
  const proxy = new Proxy(ec2, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.push(String(key));
        return value.apply(target, args);
      };
    },
  });
  return { ec2: proxy, calls };
}

async function recordedTarget(endpoint: string, settings: Partial<AwsTargetSettings> = {}) {
  const { ec2, calls } = recording(await createEc2({ region: REGION, endpoint, credentials: { accessKeyId: "test", secretAccessKey: "test" } }));
  const target = new AwsTarget(ec2, { cluster: "kubernetes", clusterCIDR: SEED_CLUSTER_CIDR, routeTables: [], nextHop: "eni", routeLimit: 50, parallel: 4, ...settings });
  return { target, calls };
}

/** destination → what the route points at, read with the SDK directly (not through the target). */
async function routesOf(client: EC2Client, tableId: string): Promise<Map<string, string>> {
  const out = await client.send(new DescribeRouteTablesCommand({ RouteTableIds: [tableId] }));
  return new Map(
    (out.RouteTables?.[0]?.Routes ?? []).map((r) => [r.DestinationCidrBlock ?? r.DestinationIpv6CidrBlock ?? "", r.NetworkInterfaceId ?? r.InstanceId ?? r.GatewayId ?? "?"]),
  );
}

function actionsOf(planned: Awaited<ReturnType<typeof plan>>): string[] {
  return planned.tables.flatMap((t) => t.changes.map((c) => `${t.table.id} ${c.action} ${c.action === "delete" ? c.current.destination : c.route.destination}`)).sort();
}

runConformance({
  name: "aws (moto)",
  async setup() {
    const m = await server();
    await m.reset();
    const client = m.client();
    const fixture = await buildCluster(client, { tables: 2 });
    // A spare instance that is no cluster node (no cluster tag, not in the inventory).
    const spare = await launchInstance(client, fixture.subnetId, { name: "spare", ip: "10.240.0.99" });
    const target = await awsTarget.create(resolved(m.endpoint));
    return {
      target,
      inventory: seedInventory(),
      spareNextHop: spare.ip,
      addForeignRoute: async (tableId, destination) => {
        await client.send(new CreateRouteCommand({ RouteTableId: tableId, DestinationCidrBlock: destination, NetworkInterfaceId: spare.eniId }));
      },
      hasRoute: async (tableId, destination) => (await routesOf(client, tableId)).has(destination),
      teardown: async () => client.destroy(),
    };
  },
});

describe("aws target against moto", () => {
  let m: Moto;
  let client: EC2Client;
  let cloud: CloudFixture;

  before(async () => {
    m = await server();
  });
  beforeEach(async () => {
    await m.reset();
    client?.destroy();
    client = m.client();
    cloud = await buildCluster(client, { tables: 2 });
  });
  after(() => client?.destroy());

  it("fresh apply routes every pod CIDR to its node's interface in every table, turns the source/dest check off, and a second apply changes nothing", async () => {
    const inventory = seedInventory();
    const { target, calls } = await recordedTarget(m.endpoint);
    try {
      const first = await plan(target, inventory, options);
      assert.deepEqual(first.summary, { create: 6, replace: 0, delete: 0, unchanged: 0, conflicts: 0 });
      assert.deepEqual(first.review.actions.map((a) => a.id).sort(), cloud.instances.map((i) => i.eniId).sort());
      const report = await apply(target, first, inventory, options);
      assert.ok(report.ok, JSON.stringify(report));
      assert.equal(report.counts.created, 6);
      for (const tableId of cloud.tableIds) {
        const routes = await routesOf(client, tableId);
        for (const node of cloud.instances) assert.equal(routes.get(node.podCIDR!), node.eniId, `${tableId} ${node.podCIDR}`);
        assert.equal(routes.get("0.0.0.0/0"), cloud.igwId, "the gateway route is untouched");
      }
      assert.deepEqual((await verifyTarget(target, inventory, { progress: () => {} })).filter((c) => !c.ok), []);

      calls.length = 0;
      const second = await plan(target, inventory, options);
      assert.deepEqual(second.summary, { create: 0, replace: 0, delete: 0, unchanged: 6, conflicts: 0 });
      assert.deepEqual(second.review.actions, [], "the source/dest checks are already off");
      const again = await apply(target, second, inventory, options);
      assert.ok(again.ok);
      assert.deepEqual(
        calls.filter((c) => /^(create|replace|delete)Route$|disableSourceDestCheck/.test(c)),
        [],
        "a second apply makes no write call",
      );
    } finally {
      await target.close();
    }
  });

  it("looks nodes up in the route tables' VPC only: the stranger at worker-0's IP in an overlapping VPC is never touched", async () => {
    // The fixture's second VPC uses 10.240.0.0/16 too and holds an unrelated instance at 10.240.0.20,
    // listed before worker-0 by an unscoped lookup (EC2 and moto alike answer every VPC of the region).
    const inventory = seedInventory();
    const { target } = await recordedTarget(m.endpoint);
    try {
      const planned = await plan(target, inventory, options);
      assert.deepEqual(planned.review.warnings, []);
      assert.ok(!planned.review.actions.some((a) => a.id === cloud.stranger.eniId), JSON.stringify(planned.review.actions));
      const report = await apply(target, planned, inventory, options);
      assert.ok(report.ok, JSON.stringify(report));
      const worker0 = cloud.instances[0]!;
      for (const tableId of cloud.tableIds) assert.equal((await routesOf(client, tableId)).get(worker0.podCIDR!), worker0.eniId);
      const stranger = await client.send(new DescribeNetworkInterfacesCommand({ NetworkInterfaceIds: [cloud.stranger.eniId] }));
      assert.equal(stranger.NetworkInterfaces?.[0]?.SourceDestCheck, true, "the stranger's source/dest check is left on");
      assert.equal((await plan(target, inventory, options)).summary.unchanged, 6, "a re-run has nothing to do");
    } finally {
      await target.close();
    }
  });

  it("refuses route tables of two VPCs, naming both, before any lookup of nodes", async () => {
    const strangerTable = (await client.send(new CreateRouteTableCommand({ VpcId: cloud.stranger.vpcId }))).RouteTable!.RouteTableId!;
    const { target, calls } = await recordedTarget(m.endpoint, { routeTables: [cloud.tableIds[0]!, strangerTable] });
    try {
      await assert.rejects(plan(target, seedInventory(), options), (error: unknown) => {
        assert.ok(error instanceof TargetError);
        assert.match(error.message, new RegExp(`2 VPCs.*${cloud.vpcId}: ${cloud.tableIds[0]}.*${cloud.stranger.vpcId}: ${strangerTable}.*--route-table`));
        return true;
      });
      assert.deepEqual(calls.filter((c) => /^(networkInterfaces|instances)/.test(c)), [], "no interface or instance was looked up");
    } finally {
      await target.close();
    }
  });

  it("a changed next hop is one ReplaceRoute per table, never a delete and create", async () => {
    const inventory = seedInventory();
    const { target, calls } = await recordedTarget(m.endpoint);
    try {
      await apply(target, await plan(target, inventory, options), inventory, options);
      const moved = await launchInstance(client, cloud.subnetId, { name: "worker-1b", ip: "10.240.0.31" }, { "kubernetes.io/cluster/kubernetes": "owned" });
      const next = editInventory(inventory, (nodes) => nodes.map((n) => (n.name === "worker-1" ? { ...n, internalIPs: [moved.ip] } : n)));
      calls.length = 0;
      const planned = await plan(target, next, options);
      assert.deepEqual(actionsOf(planned), cloud.tableIds.map((t) => `${t} replace 10.200.1.0/24`).sort());
      assert.deepEqual(planned.review.actions.map((a) => a.id), [moved.eniId]);
      const report = await apply(target, planned, next, options);
      assert.ok(report.ok, JSON.stringify(report));
      assert.deepEqual(calls.filter((c) => /Route$/.test(c)), ["replaceRoute", "replaceRoute"]);
      for (const tableId of cloud.tableIds) assert.equal((await routesOf(client, tableId)).get("10.200.1.0/24"), moved.eniId);
    } finally {
      await target.close();
    }
  });

  it("--next-hop instance routes to the instances", async () => {
    const inventory = seedInventory();
    const { target } = await recordedTarget(m.endpoint, { nextHop: "instance" });
    try {
      const planned = await plan(target, inventory, options);
      assert.deepEqual(planned.review.actions.map((a) => a.id).sort(), cloud.instances.map((i) => i.instanceId).sort());
      assert.ok((await apply(target, planned, inventory, options)).ok);
      const routes = await routesOf(client, cloud.tableIds[0]!);
      for (const node of cloud.instances) assert.equal(routes.get(node.podCIDR!), node.instanceId);
      const again = await plan(target, inventory, options);
      assert.equal(again.summary.unchanged, 6, "instance routes are translated back to the nodes' IPs");
      assert.deepEqual(again.review.actions, []);
    } finally {
      await target.close();
    }
  });

  it("--next-hop instance on an instance with two network interfaces: the plan says to use --next-hop eni and no call is made for it", async () => {
    // moto routes to any instance; EC2 refuses an instance without exactly one interface
    // (InvalidInstanceID): the proxy in front of moto enforces that rule.
    const proxy = await startEc2Proxy(m.endpoint, { routeRules: { routeLimit: 50 } });
    const worker1 = cloud.instances[1]!;
    const second = (await client.send(new CreateNetworkInterfaceCommand({ SubnetId: cloud.subnetId, PrivateIpAddress: "10.240.0.121" }))).NetworkInterface!.NetworkInterfaceId!;
    await client.send(new AttachNetworkInterfaceCommand({ NetworkInterfaceId: second, InstanceId: worker1.instanceId, DeviceIndex: 1 }));
    const inventory = seedInventory();
    const byInstance = await recordedTarget(proxy.endpoint, { nextHop: "instance" });
    const byEni = await recordedTarget(proxy.endpoint, { nextHop: "eni" });
    try {
      const planned = await plan(byInstance.target, inventory, options);
      assert.deepEqual(planned.review.warnings.map((w) => w.replace(/i-\w+|eni-\w+/g, "ID")), [
        "aws: node worker-1: instance ID (10.240.0.21) has 2 network interfaces and EC2 routes to an instance only with exactly one: use --next-hop eni (routes to ID, which holds 10.240.0.21); its routes will fail",
      ]);
      const report = await apply(byInstance.target, planned, inventory, options);
      const failed = report.tables.flatMap((t) => t.results.filter((r) => !r.ok));
      assert.deepEqual(failed.map((r) => (r.change.action === "create" ? r.change.route.node : "")), ["worker-1", "worker-1"]);
      assert.match(failed[0]!.error!, /use --next-hop eni/);
      assert.equal(proxy.refused.get("InvalidInstanceID"), undefined, "podroutes never asked EC2 for what it refuses");
      assert.deepEqual(proxy.calls("CreateRoute").map((p) => p.get("InstanceId")).sort(), [cloud.instances[0]!.instanceId, cloud.instances[0]!.instanceId, cloud.instances[2]!.instanceId, cloud.instances[2]!.instanceId].sort());

      const report2 = await apply(byEni.target, await plan(byEni.target, inventory, options), inventory, options);
      assert.ok(report2.ok, JSON.stringify(report2));
      for (const tableId of cloud.tableIds) assert.equal((await routesOf(client, tableId)).get(worker1.podCIDR!), worker1.eniId);

      // What EC2 (the proxy) answers the call podroutes did not make.
      const proxied = m.client(proxy.endpoint);
      await assert.rejects(
        proxied.send(new CreateRouteCommand({ RouteTableId: cloud.tableIds[0]!, DestinationCidrBlock: "10.200.9.0/24", InstanceId: worker1.instanceId })),
        (error: Error) => error.name === "InvalidInstanceID" && /multiple interfaces/.test(error.message),
      );
      proxied.destroy();
    } finally {
      await byInstance.target.close();
      await byEni.target.close();
      await proxy.close();
    }
  });

  it("a terminated node leaves a blackhole: verify fails, apply removes it, verify passes", async () => {
    const inventory = seedInventory();
    const { target } = await recordedTarget(m.endpoint);
    try {
      await apply(target, await plan(target, inventory, options), inventory, options);
      const gone = cloud.instances.find((i) => i.name === "worker-2")!;
      await client.send(new TerminateInstancesCommand({ InstanceIds: [gone.instanceId] }));
      const remaining = editInventory(inventory, (nodes) => nodes.filter((n) => n.name !== "worker-2"));

      const observed = await readTable(target, remaining, cloud.tableIds[0]!);
      const hole = observed.find((r) => r.destination === gone.podCIDR)!;
      assert.equal(hole.owned, true, "a blackhole inside the cluster CIDR is podroutes' to clean up");
      assert.equal(hole.healthy, false);
      assert.equal(hole.details?.state, "blackhole");
      const failed = (await verifyTarget(target, remaining, { progress: () => {} })).filter((c) => !c.ok);
      assert.deepEqual(failed.map((c) => c.table).sort(), [...cloud.tableIds].sort());
      assert.match(failed[0]!.message, /10\.200\.2\.0\/24 via eni-/);

      const planned = await plan(target, remaining, options);
      assert.deepEqual(actionsOf(planned), cloud.tableIds.map((t) => `${t} delete 10.200.2.0/24`).sort());
      assert.ok((await apply(target, planned, remaining, options)).ok);
      for (const tableId of cloud.tableIds) assert.ok(!(await routesOf(client, tableId)).has("10.200.2.0/24"));
      assert.deepEqual((await verifyTarget(target, remaining, { progress: () => {} })).filter((c) => !c.ok), []);

      // A stale inventory that still lists the terminated node must not route to its dead interface.
      const stale = await plan(target, inventory, options);
      assert.ok(stale.review.warnings.some((w) => w.includes("worker-2") && w.includes("terminated")), stale.review.warnings.join("\n"));
      const report = await apply(target, stale, inventory, options);
      assert.ok(!report.ok);
      for (const tableId of cloud.tableIds) assert.ok(!(await routesOf(client, tableId)).has("10.200.2.0/24"));
    } finally {
      await target.close();
    }
  });

  it("a blackhole on a wanted destination is replaced by a route to the node's new interface", async () => {
    const inventory = seedInventory();
    const { target } = await recordedTarget(m.endpoint);
    try {
      await apply(target, await plan(target, inventory, options), inventory, options);
      const old = cloud.instances.find((i) => i.name === "worker-0")!;
      await client.send(new TerminateInstancesCommand({ InstanceIds: [old.instanceId] }));
      const reborn = await launchInstance(client, cloud.subnetId, { name: "worker-0", ip: "10.240.0.40" }, { "kubernetes.io/cluster/kubernetes": "owned" });
      const next = editInventory(inventory, (nodes) => nodes.map((n) => (n.name === "worker-0" ? { ...n, internalIPs: [reborn.ip] } : n)));
      const planned = await plan(target, next, options);
      assert.deepEqual(actionsOf(planned), cloud.tableIds.map((t) => `${t} replace 10.200.0.0/24`).sort());
      assert.ok((await apply(target, planned, next, options)).ok);
      for (const tableId of cloud.tableIds) assert.equal((await routesOf(client, tableId)).get("10.200.0.0/24"), reborn.eniId);
    } finally {
      await target.close();
    }
  });

  it("refuses before any call when a table would exceed the route limit", async () => {
    const inventory = seedInventory();
    // Each table holds its local route (not counted) and the internet gateway's (counted): 1 + 3 creates = 4 > 3.
    const { target, calls } = await recordedTarget(m.endpoint, { routeLimit: 3 });
    try {
      const planned = await plan(target, inventory, options);
      assert.equal(planned.review.refusals.length, 2, planned.review.refusals.join("\n"));
      assert.match(planned.review.refusals[0]!, /4 IPv4 routes.*over the route limit of 3.*--route-limit.*host routes/);
      // Even an engine that ignored the refusal makes no route call: write checks the limit itself.
      calls.length = 0;
      const report = await apply(target, { ...planned, tables: planned.tables.map(({ actions: _actions, ...diff }) => diff), review: { ...planned.review, actions: [] } }, inventory, options);
      assert.ok(!report.ok);
      assert.deepEqual(calls.filter((c) => /Route$/.test(c)), []);
      for (const tableId of cloud.tableIds) assert.equal((await routesOf(client, tableId)).size, 2);
    } finally {
      await target.close();
    }
    const near = await recordedTarget(m.endpoint, { routeLimit: 4 });
    try {
      const planned = await plan(near.target, inventory, options);
      assert.deepEqual(planned.review.refusals, []);
      assert.equal(planned.review.warnings.filter((w) => /4 of at most 4 IPv4 routes/.test(w)).length, 2);
    } finally {
      await near.target.close();
    }
  });

  it("counts the route quota as EC2 does (per family, local routes aside): fills a table exactly to the limit that EC2 enforces", async () => {
    // moto enforces no routes-per-table quota; the proxy does, as EC2 does (see startEc2Proxy): per
    // family, over non-propagated routes other than the local ones, answering RouteLimitExceeded.
    const limit = 4;
    const proxy = await startEc2Proxy(m.endpoint, { routeRules: { routeLimit: limit } });
    const tableId = cloud.tableIds[0]!;
    // IPv6 routes someone else made: they count toward the IPv6 quota only.
    for (const i of [1, 2, 3]) await client.send(new CreateRouteCommand({ RouteTableId: tableId, DestinationIpv6CidrBlock: `2001:db8:${i}::/48`, GatewayId: cloud.igwId }));
    const inventory = seedInventory();
    const { target, calls } = await recordedTarget(proxy.endpoint, { routeTables: [tableId], routeLimit: limit });
    try {
      // IPv4: the gateway's route + 3 pod routes = 4; the local route and the IPv6 routes do not count.
      const planned = await plan(target, inventory, options);
      assert.deepEqual(planned.review.refusals, []);
      const report = await apply(target, planned, inventory, options);
      assert.ok(report.ok, JSON.stringify(report));
      assert.equal(proxy.forwarded.get("CreateRoute"), 3);
      assert.deepEqual([...proxy.refused], []);

      // A fourth node would pass EC2's limit: podroutes refuses it in the plan and before any call.
      const more = seedInventory([...SEED_NODES, { name: "worker-3", ip: "10.240.0.23", podCIDR: "10.200.3.0/24" }]);
      await launchInstance(client, cloud.subnetId, { name: "worker-3", ip: "10.240.0.23" });
      const over = await plan(target, more, options);
      assert.equal(over.review.refusals.length, 1);
      assert.match(over.review.refusals[0]!, /would hold 5 IPv4 routes \(it holds 4\).*over the route limit of 4/);
      calls.length = 0;
      assert.ok(!(await apply(target, { ...over, review: { ...over.review, refusals: [] } }, more, options)).ok);
      assert.deepEqual(calls.filter((c) => /Route$/.test(c)), []);
      // ... and EC2 (the proxy) would have refused it too: the two count alike.
      const proxied = m.client(proxy.endpoint);
      await assert.rejects(
        proxied.send(new CreateRouteCommand({ RouteTableId: tableId, DestinationCidrBlock: "10.200.3.0/24", GatewayId: cloud.igwId })),
        (error: Error) => error.name === "RouteLimitExceeded",
      );
      proxied.destroy();
    } finally {
      await target.close();
      await proxy.close();
    }
  });

  it("more than 10 calls in flight on one abort signal (a controller term's): no MaxListenersExceededWarning on stderr", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.name);
    process.on("warning", onWarning);
    const ec2 = await createEc2({ region: REGION, endpoint: m.endpoint, credentials: { accessKeyId: "test", secretAccessKey: "test" }, signal: new AbortController().signal });
    try {
      const tables = await Promise.all(Array.from({ length: 20 }, () => ec2.routeTables({ ids: [cloud.tableIds[0]!] })));
      assert.equal(tables.length, 20);
      await new Promise((resolve) => setImmediate(resolve)); // process warnings are emitted on the next tick
    } finally {
      ec2.close();
      process.off("warning", onWarning);
    }
    assert.deepEqual(warnings.filter((name) => name === "MaxListenersExceededWarning"), []);
  });

  it("retries throttled calls (RequestLimitExceeded) with the SDK's backoff and completes", async () => {
    const proxy = await startEc2Proxy(m.endpoint, { throttle: { actions: ["CreateRoute", "DescribeNetworkInterfaces", "ModifyNetworkInterfaceAttribute"], times: 2 } });
    const inventory = seedInventory();
    const target = await awsTarget.create(resolved(proxy.endpoint));
    try {
      const planned = await plan(target, inventory, options);
      const report = await apply(target, planned, inventory, options);
      assert.ok(report.ok, JSON.stringify(report));
      assert.equal(proxy.throttled.get("CreateRoute"), 6 * 2, "every create was throttled twice, then went through");
      assert.ok((proxy.throttled.get("DescribeNetworkInterfaces") ?? 0) >= 2);
      assert.equal(proxy.throttled.get("ModifyNetworkInterfaceAttribute"), 3 * 2);
      // Every throttled attempt reached the write loop's limit, which came down for it.
      const { stats } = (target as AwsTarget).concurrency;
      assert.equal(stats.throttles, [...proxy.throttled.values()].reduce((a, b) => a + b, 0));
      assert.ok(stats.cuts >= 1);
      for (const tableId of cloud.tableIds) {
        const routes = await routesOf(client, tableId);
        for (const node of cloud.instances) assert.equal(routes.get(node.podCIDR!), node.eniId);
      }
    } finally {
      await target.close?.();
      await proxy.close();
    }
  });

  it("a create or delete whose answer was lost counts as done once the table is read back: the SDK's retry meets RouteAlreadyExists / InvalidRoute.NotFound", async () => {
    // The proxy lets moto carry out the first attempt of each CreateRoute (answer lost as an HTTP 500)
    // and of each DeleteRoute (connection dropped); the SDK retries. moto silently overwrites a
    // duplicate route to an interface where EC2 answers RouteAlreadyExists: the proxy's route rules do.
    const creating = await startEc2Proxy(m.endpoint, { loseAnswers: { actions: ["CreateRoute"], as: "500" }, routeRules: { routeLimit: 50 } });
    const deleting = await startEc2Proxy(m.endpoint, { loseAnswers: { actions: ["DeleteRoute"], as: "drop" } });
    const inventory = seedInventory();
    const create = await recordedTarget(creating.endpoint);
    const remove = await recordedTarget(deleting.endpoint);
    try {
      const report = await apply(create.target, await plan(create.target, inventory, options), inventory, options);
      assert.ok(report.ok, JSON.stringify(report.tables.flatMap((t) => t.results.filter((r) => !r.ok))));
      assert.equal(report.counts.created, 6);
      assert.equal(creating.lost.get("CreateRoute"), 6, "every create landed and lost its answer");
      assert.equal(creating.refused.get("RouteAlreadyExists"), 6, "every retry met the route its first attempt made");
      for (const tableId of cloud.tableIds) {
        const routes = await routesOf(client, tableId);
        for (const node of cloud.instances) assert.equal(routes.get(node.podCIDR!), node.eniId);
      }

      const removal = await plan(remove.target, inventory, { ...options, deleteAll: true });
      assert.equal(removal.summary.delete, 6);
      const removed = await apply(remove.target, removal, inventory, options);
      assert.ok(removed.ok, JSON.stringify(removed.tables.flatMap((t) => t.results.filter((r) => !r.ok))));
      assert.equal(deleting.lost.get("DeleteRoute"), 6);
      for (const tableId of cloud.tableIds) assert.deepEqual([...(await routesOf(client, tableId)).keys()].sort(), ["0.0.0.0/0", "10.240.0.0/16"]);
    } finally {
      await create.target.close();
      await remove.target.close();
      await creating.close();
      await deleting.close();
    }
  });

  it("a write whose table changed since the plan is refused for that route, not forced", async () => {
    const inventory = seedInventory();
    const { target } = await recordedTarget(m.endpoint);
    try {
      const planned = await plan(target, inventory, options);
      // Someone adds a route to one of our destinations between plan and apply (moto would silently overwrite it).
      await client.send(new CreateRouteCommand({ RouteTableId: cloud.tableIds[0]!, DestinationCidrBlock: "10.200.1.0/24", GatewayId: cloud.igwId }));
      const report = await apply(target, planned, inventory, options);
      const failed = report.tables.flatMap((t) => t.results.filter((r) => !r.ok));
      assert.equal(failed.length, 1);
      // The one write path rechecks the approved plan against the table read for the write: a conflict, never written.
      assert.equal(failed[0]!.conflict, true);
      assert.match(failed[0]!.error!, /a route podroutes does not own took 10\.200\.1\.0\/24 after the plan .*not written/);
      assert.equal((await routesOf(client, cloud.tableIds[0]!)).get("10.200.1.0/24"), cloud.igwId);
      const next = await plan(target, inventory, options);
      assert.equal(next.summary.conflicts, 1);
    } finally {
      await target.close();
    }
  });

  it("a source/dest check turned back on is planned as an action again and verify flags it", async () => {
    const inventory = seedInventory();
    const { target } = await recordedTarget(m.endpoint);
    try {
      await apply(target, await plan(target, inventory, options), inventory, options);
      const node = cloud.instances[1]!;
      await client.send(new ModifyNetworkInterfaceAttributeCommand({ NetworkInterfaceId: node.eniId, SourceDestCheck: { Value: true } }));
      const failed = (await verifyTarget(target, inventory, { progress: () => {} })).filter((c) => !c.ok);
      assert.deepEqual(failed.map((c) => c.table), [node.name]);
      const planned = await plan(target, inventory, options);
      assert.deepEqual(planned.review.actions.map((a) => a.id), [node.eniId]);
      assert.equal(planned.summary.unchanged, 6);
    } finally {
      await target.close();
    }
  });
});

describe("podroutes CLI with --nodes aws --target aws, cross-checked by the aws CLI", () => {
  let m: Moto;
  let cloud: CloudFixture;
  let client: EC2Client;
  let env: Record<string, string>;

  before(async () => {
    m = await server();
    await m.reset();
    client = m.client();
    cloud = await buildCluster(client, { tables: 1 });
    env = offlineAwsEnv(m.endpoint);
  });
  after(() => client?.destroy());

  const flags = () => ["--nodes", "aws", "--target", "aws", "--endpoint", m.endpoint, "--cluster-cidr", SEED_CLUSTER_CIDR];

  it("--cluster-cidr is required, with an error naming the flag, before any call", async () => {
    const result = await runCli(["plan", "--nodes", "aws", "--target", "aws", "--endpoint", m.endpoint], { env });
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stderr, /--cluster-cidr is required by --target aws/);
  });

  it("routes podroutes creates are what `aws ec2 describe-route-tables` sees; a CLI route outside the cluster CIDR survives apply and delete", async () => {
    const worker0 = cloud.instances[0]!;
    await awsCli(m.endpoint, ["ec2", "create-route", "--route-table-id", cloud.tableIds[0]!, "--destination-cidr-block", "192.168.50.0/24", "--network-interface-id", worker0.eniId]);

    const applied = await runCli(["apply", "--yes", ...flags()], { env });
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);

    const described = await awsCli(m.endpoint, ["ec2", "describe-route-tables", "--route-table-ids", cloud.tableIds[0]!]);
    const routes = described.RouteTables[0].Routes as { DestinationCidrBlock: string; NetworkInterfaceId?: string; GatewayId?: string }[];
    const cidrs = routes.map((r) => r.DestinationCidrBlock).sort();
    assert.deepEqual(cidrs, ["0.0.0.0/0", "10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24", "10.240.0.0/16", "192.168.50.0/24"]);
    for (const node of cloud.instances) assert.equal(routes.find((r) => r.DestinationCidrBlock === node.podCIDR)?.NetworkInterfaceId, node.eniId);
    const enis = await awsCli(m.endpoint, ["ec2", "describe-network-interfaces", "--network-interface-ids", ...cloud.instances.map((i) => i.eniId)]);
    assert.deepEqual(enis.NetworkInterfaces.map((e: { SourceDestCheck: boolean }) => e.SourceDestCheck), [false, false, false]);

    const listed = jsonOf<{ table: string; destination: string; nextHop?: string; owned: boolean }[]>(await runCli(["list", "-o", "json", ...flags()], { env }));
    assert.deepEqual(listed.map((r) => `${r.destination} ${r.nextHop} ${r.owned}`), ["10.200.0.0/24 10.240.0.20 true", "10.200.1.0/24 10.240.0.21 true", "10.200.2.0/24 10.240.0.22 true"]);
    const table = await runCli(["list", ...flags()], { env });
    assert.match(table.stdout, /^ROUTE_TABLE\s+DEST_CIDR\s+NEXT_HOP\s+STATE/);
    assert.match(table.stdout, new RegExp(`${cloud.tableIds[0]}\\s+10\\.200\\.0\\.0/24\\s+${worker0.eniId} \\(10\\.240\\.0\\.20\\)\\s+active`));

    const verified = await runCli(["verify", ...flags()], { env });
    assert.equal(verified.code, 0, verified.stdout + verified.stderr);
    const pending = await runCli(["plan", "--detailed-exitcode", ...flags()], { env });
    assert.equal(pending.code, 0, pending.stdout);

    const deleted = await runCli(["delete", "--yes", ...flags()], { env });
    assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
    const after = await awsCli(m.endpoint, ["ec2", "describe-route-tables", "--route-table-ids", cloud.tableIds[0]!]);
    assert.deepEqual(after.RouteTables[0].Routes.map((r: { DestinationCidrBlock: string }) => r.DestinationCidrBlock).sort(), ["0.0.0.0/0", "10.240.0.0/16", "192.168.50.0/24"]);
  });

  it("--route-limit above AWS's maximum quota (1000) is a usage error naming the flag (exit 3), before any call", async () => {
    const result = await runCli(["plan", "--route-limit", "1001", ...flags()], { env });
    assert.equal(result.code, 3, result.stdout + result.stderr);
    assert.match(result.stderr, /--route-limit "1001": must be a whole number from 1 to 1000/);
  });

  it("apply refuses (exit 1) when the route limit would be exceeded, and changes nothing", async () => {
    const result = await runCli(["apply", "--yes", "--route-limit", "4", ...flags()], { env });
    assert.equal(result.code, 1, result.stdout + result.stderr);
    assert.match(result.stdout + result.stderr, /over the route limit of 4/);
    assert.equal((await routesOf(client, cloud.tableIds[0]!)).size, 3, "local, gateway and the CLI's route only");
  });

  it("--aws-filter selects the nodes; names, IPs and pod CIDRs come from the instances' tags", async () => {
    const extra = await launchInstance(client, cloud.subnetId, { name: "worker-9", ip: "10.240.0.29", podCIDR: "10.200.9.0/24" }, { Role: "gpu" });
    const result = await runCli(["plan", "-o", "json", "--aws-filter", "tag:Role=gpu", ...flags()], { env });
    assert.equal(result.code, 0, result.stderr);
    const planned = jsonOf(result);
    const creates = planned.tables.flatMap((t: { changes: { action: string; destination: string; nextHop?: string; node?: string }[] }) => t.changes);
    assert.deepEqual(
      creates.map((c: { action: string; destination: string }) => `${c.action} ${c.destination}`),
      ["create 10.200.9.0/24"],
      JSON.stringify(creates),
    );
    assert.equal(extra.ip, "10.240.0.29");
  });

  it("list and delete need no --nodes: the instances tagged with the cluster are its nodes, as for --nodes aws", async () => {
    assert.equal((await runCli(["apply", "--yes", ...flags()], { env })).code, 0);
    const alone = ["--target", "aws", "--endpoint", m.endpoint, "--cluster-cidr", SEED_CLUSTER_CIDR];
    const listed = await runCli(["list", "-o", "json", ...alone], { env });
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      jsonOf<{ destination: string; nextHop?: string; owned: boolean }[]>(listed).map((r) => `${r.destination} ${r.nextHop} ${r.owned}`),
      ["10.200.0.0/24 10.240.0.20 true", "10.200.1.0/24 10.240.0.21 true", "10.200.2.0/24 10.240.0.22 true"],
    );
    const deleted = await runCli(["delete", "--yes", ...alone], { env });
    assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
    assert.deepEqual([...(await routesOf(client, cloud.tableIds[0]!)).keys()].sort(), ["0.0.0.0/0", "10.240.0.0/16", "192.168.50.0/24"]);
  });
});

describe("delete and list without --nodes, where the instances are not tagged as the cluster's", () => {
  let m: Moto;
  let cloud: CloudFixture;
  let client: EC2Client;
  let env: Record<string, string>;
  let nodesFile: string;

  before(async () => {
    m = await server();
    await m.reset();
    client = m.client();
    // The table is the cluster's by tag; its nodes are not (launched without kubernetes.io/cluster/...).
    cloud = await buildCluster(client, { tables: 1, untaggedNodes: true });
    const dir = mkdtempSync(join(tmpdir(), "podroutes-aws-untagged-"));
    nodesFile = join(dir, "nodes.txt");
    writeFileSync(nodesFile, SEED_NODES.map((n) => `${n.ip} ${n.podCIDR} ${n.name}`).join("\n") + "\n");
    env = offlineAwsEnv(m.endpoint);
  });
  after(() => {
    client?.destroy();
    rmSync(dirname(nodesFile), { recursive: true, force: true });
  });

  const common = () => ["--target", "aws", "--endpoint", m.endpoint, "--route-table", cloud.tableIds[0]!, "--cluster-cidr", SEED_CLUSTER_CIDR];

  it("delete says which routes it cannot attribute and how to act, exits 1, and never speaks of an inventory it does not have; with --nodes it removes them", async () => {
    const applied = await runCli(["apply", "--yes", "--nodes", nodesFile, ...common()], { env });
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    assert.equal([...(await routesOf(client, cloud.tableIds[0]!)).keys()].filter((d) => d.startsWith("10.200.")).length, 3);

    const deleted = await runCli(["delete", "--yes", ...common()], { env });
    const said = deleted.stdout + deleted.stderr;
    assert.equal(deleted.code, 1, said);
    assert.doesNotMatch(said, /inventory/);
    for (const node of cloud.instances) assert.match(said, new RegExp(`10\\.200\\.\\d\\.0/24 via ${node.eniId}`), said);
    assert.match(said, /kubernetes\.io\/cluster\/kubernetes/);
    assert.match(said, /--nodes/);
    assert.equal([...(await routesOf(client, cloud.tableIds[0]!)).keys()].filter((d) => d.startsWith("10.200.")).length, 3, "nothing it cannot attribute was deleted");

    const listed = await runCli(["list", ...common()], { env });
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stderr, /3 routes in the cluster CIDR .*cannot be attributed/);
    const json = jsonOf<{ destination: string; owned: boolean; unattributed?: string }[]>(await runCli(["list", "-o", "json", ...common()], { env }));
    assert.deepEqual(json.map((r) => `${r.destination} ${r.owned} ${r.unattributed !== undefined}`), ["10.200.0.0/24 false true", "10.200.1.0/24 false true", "10.200.2.0/24 false true"]);

    const named = await runCli(["delete", "--yes", "--nodes", nodesFile, ...common()], { env });
    assert.equal(named.code, 0, named.stdout + named.stderr);
    assert.deepEqual([...(await routesOf(client, cloud.tableIds[0]!)).keys()].filter((d) => d.startsWith("10.200.")), []);
    const again = await runCli(["delete", "--yes", ...common()], { env });
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.doesNotMatch(again.stdout, /inventory/);
  });
});
