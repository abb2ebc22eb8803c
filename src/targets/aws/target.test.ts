/**
 * The AWS target's decisions without EC2: which routes are podroutes' (table-style, one row per kind
 * of route a VPC table holds), how next hops translate back to node IPs, the route limit, the
 * source/dest check actions, and flag checking. A fake Ec2Api stands in for the SDK.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Filter, Instance, NetworkInterface, Route as Ec2Route, RouteTable } from "@aws-sdk/client-ec2";
import { UsageError } from "../../errors.js";
import { validateInventory } from "../../inventory.js";
import { clusterRanges, type Inventory } from "../../model.js";
import { plan } from "../../apply/engine.js";
import type { Ec2Api, NextHopRef } from "./ec2.js";
import { awsTarget } from "./factory.js";
import { AwsTarget, createsPastLimit, HopIndex, observeRoute } from "./target.js";
import type { Change, ExtraAction, TableRef } from "../target.js";

const VPC = "vpc-1";
const CLUSTER_CIDR = "10.200.0.0/16,fd00:10:200::/56";

function eni(id: string, ip: string, instanceId?: string, extra: Partial<NetworkInterface> = {}): NetworkInterface {
  return {
    NetworkInterfaceId: id,
    PrivateIpAddress: ip,
    PrivateIpAddresses: [{ PrivateIpAddress: ip, Primary: true }],
    VpcId: VPC,
    Status: "in-use",
    SourceDestCheck: true,
    ...(instanceId ? { Attachment: { InstanceId: instanceId } } : {}),
    ...extra,
  };
}

function instance(id: string, ip: string, state: string, tags: Record<string, string> = {}): Instance {
  return {
    InstanceId: id,
    PrivateIpAddress: ip,
    State: { Name: state as never },
    SourceDestCheck: true,
    Tags: Object.entries(tags).map(([Key, Value]) => ({ Key, Value })),
  };
}

/** An in-memory EC2 with just what the target asks for; writes are recorded, not applied. */
class FakeEc2 implements Ec2Api {
  calls: string[] = [];
  constructor(
    readonly enis: NetworkInterface[],
    readonly instanceList: Instance[],
    readonly tables: RouteTable[] = [],
  ) {}
  async routeTables(selector: { ids: string[] } | { tagKey: string }): Promise<RouteTable[]> {
    return "ids" in selector ? this.tables.filter((t) => selector.ids.includes(t.RouteTableId!)) : this.tables;
  }
  async networkInterfacesByAddress(addresses: string[], vpcId: string) {
    const holds = (e: NetworkInterface) => e.PrivateIpAddresses!.some((p) => addresses.includes(p.PrivateIpAddress!)) || e.Ipv6Addresses?.some((p) => addresses.includes(p.Ipv6Address!));
    return this.enis.filter((e) => e.VpcId === vpcId && holds(e));
  }
  async networkInterfacesById(ids: string[]) {
    return this.enis.filter((e) => ids.includes(e.NetworkInterfaceId!));
  }
  async instances(filters: Filter[]) {
    const ids = filters.find((f) => f.Name === "instance-id")?.Values ?? [];
    return this.instanceList.filter((i) => ids.includes(i.InstanceId!));
  }
  async createRoute(table: string, destination: string, hop: NextHopRef) {
    this.calls.push(`create ${table} ${destination} ${hop.id}`);
  }
  async replaceRoute(table: string, destination: string, hop: NextHopRef) {
    this.calls.push(`replace ${table} ${destination} ${hop.id}`);
  }
  async deleteRoute(table: string, destination: string) {
    this.calls.push(`delete ${table} ${destination}`);
  }
  async disableSourceDestCheck(hop: NextHopRef) {
    this.calls.push(`disable ${hop.id}`);
  }
  close() {}
}

const world = () =>
  new FakeEc2(
    [
      eni("eni-node0", "10.240.0.20", "i-node0", { Ipv6Addresses: [{ Ipv6Address: "fd00::20" }] }),
      eni("eni-departed", "10.240.0.25", "i-departed"),
      eni("eni-foreign", "10.240.0.99", "i-foreign"),
      eni("eni-deadnode", "10.240.0.26", "i-dead"),
    ],
    [
      instance("i-node0", "10.240.0.20", "running", { "kubernetes.io/cluster/kubernetes": "owned" }),
      instance("i-departed", "10.240.0.25", "running", { "kubernetes.io/cluster/kubernetes": "owned" }),
      instance("i-foreign", "10.240.0.99", "running"),
      instance("i-dead", "10.240.0.26", "terminated", { "kubernetes.io/cluster/kubernetes": "owned" }),
    ],
  );

const inventory = validateInventory(
  { source: "test", nodes: [{ name: "worker-0", internalIPs: ["10.240.0.20", "fd00::20"], podCIDRs: ["10.200.0.0/24", "fd00:10:200:1::/64"] }] },
  { clusterCIDR: CLUSTER_CIDR },
);


/** One table's write through the target's contract: opened for a write in a run of its own, written, released. */
async function writeThrough(target: AwsTarget, inventory: Inventory, table: TableRef, changes: Change[], actions: ExtraAction[] = []) {
  const opened = await target.begin(inventory).open(table, { write: true });
  try {
    return await opened.write(changes, actions, { progress: () => {} });
  } finally {
    await opened.release();
  }
}

describe("aws ownership: which routes of a VPC table are podroutes'", () => {
  const rows: { why: string; route: Ec2Route; owned: boolean; nextHop?: string; healthy?: false; listed: boolean }[] = [
    { why: "the VPC's local route", route: { DestinationCidrBlock: "10.240.0.0/16", GatewayId: "local", State: "active" }, owned: false, listed: false },
    { why: "internet gateway", route: { DestinationCidrBlock: "0.0.0.0/0", GatewayId: "igw-1", State: "active" }, owned: false, listed: false },
    { why: "a node's interface, in the cluster CIDR", route: { DestinationCidrBlock: "10.200.0.0/24", NetworkInterfaceId: "eni-node0", State: "active" }, owned: true, nextHop: "10.240.0.20", listed: true },
    { why: "a node's instance, in the cluster CIDR", route: { DestinationCidrBlock: "10.200.3.0/24", InstanceId: "i-node0", State: "active" }, owned: true, nextHop: "10.240.0.20", listed: true },
    { why: "a cluster-tagged instance no longer in the inventory (departed node)", route: { DestinationCidrBlock: "10.200.5.0/24", NetworkInterfaceId: "eni-departed", State: "active" }, owned: true, nextHop: "10.240.0.25", listed: true },
    { why: "someone else's instance in the cluster CIDR", route: { DestinationCidrBlock: "10.200.6.0/24", NetworkInterfaceId: "eni-foreign", State: "active" }, owned: false, nextHop: "10.240.0.99", listed: true },
    { why: "a NAT gateway in the cluster CIDR", route: { DestinationCidrBlock: "10.200.7.0/24", NatGatewayId: "nat-1", State: "active" }, owned: false, listed: true },
    { why: "a blackhole peering route in the cluster CIDR", route: { DestinationCidrBlock: "10.200.8.0/24", VpcPeeringConnectionId: "pcx-1", State: "blackhole" }, owned: false, healthy: false, listed: true },
    { why: "a deleted interface (blackhole) in the cluster CIDR", route: { DestinationCidrBlock: "10.200.9.0/24", NetworkInterfaceId: "eni-gone", State: "blackhole" }, owned: true, healthy: false, listed: true },
    { why: "EC2 says active but the instance is terminated", route: { DestinationCidrBlock: "10.200.10.0/24", NetworkInterfaceId: "eni-deadnode", State: "active" }, owned: true, healthy: false, listed: true },
    { why: "a node's interface outside the cluster CIDR", route: { DestinationCidrBlock: "192.168.0.0/24", NetworkInterfaceId: "eni-node0", State: "active" }, owned: false, nextHop: "10.240.0.20", listed: false },
    { why: "a node's interface on a range that contains the cluster CIDR", route: { DestinationCidrBlock: "10.0.0.0/8", NetworkInterfaceId: "eni-node0", State: "active" }, owned: false, nextHop: "10.240.0.20", listed: false },
    { why: "IPv6: a node's interface, translated to its IPv6 address", route: { DestinationIpv6CidrBlock: "fd00:10:200:1::/64", NetworkInterfaceId: "eni-node0", State: "active" }, owned: true, nextHop: "fd00::20", listed: true },
  ];

  for (const row of rows) {
    it(`${row.owned ? "ours" : "not ours"}: ${row.why}`, async () => {
      const fake = world();
      const index = new HopIndex(fake, "kubernetes", VPC);
      await index.resolve({ addresses: ["10.240.0.20", "fd00::20"], enis: [row.route.NetworkInterfaceId!].filter(Boolean), instances: [row.route.InstanceId!].filter(Boolean) });
      const seen = observeRoute(row.route, "rtb-1", index, { ranges: clusterRanges(CLUSTER_CIDR), nodeAddresses: new Set(["10.240.0.20", "fd00::20"]) })!;
      assert.equal(seen.observed.owned, row.owned);
      assert.equal(seen.observed.nextHop, row.healthy === false ? undefined : row.nextHop);
      assert.equal(seen.observed.healthy, row.healthy);
      assert.equal(seen.observed.owned || seen.inCluster, row.listed, "read returns owned routes and foreign ones inside the cluster CIDR");
    });
  }

  it("a prefix-list destination is never considered", async () => {
    const index = new HopIndex(world(), "kubernetes", VPC);
    assert.equal(observeRoute({ DestinationPrefixListId: "pl-1", GatewayId: "vpce-1" }, "rtb-1", index, { ranges: clusterRanges(CLUSTER_CIDR), nodeAddresses: new Set() }), undefined);
  });
});

describe("aws review and write", () => {
  const settings = { cluster: "kubernetes", clusterCIDR: CLUSTER_CIDR, routeTables: [], nextHop: "eni" as const, routeLimit: 50, parallel: 2 };
  const table = (routes: Ec2Route[]): RouteTable => ({ RouteTableId: "rtb-1", VpcId: VPC, Routes: routes });

  it("plans the source/dest check off for each next hop, once, and warns about a node with no interface", async () => {
    const fake = world();
    fake.tables.push(table([{ DestinationCidrBlock: "10.240.0.0/16", GatewayId: "local" }]));
    const two = validateInventory(
      {
        source: "test",
        nodes: [
          { name: "worker-0", internalIPs: ["10.240.0.20", "fd00::20"], podCIDRs: ["10.200.0.0/24", "fd00:10:200:1::/64"] },
          { name: "worker-7", internalIPs: ["10.240.0.77"], podCIDRs: ["10.200.7.0/24"] },
        ],
      },
      { clusterCIDR: CLUSTER_CIDR },
    );
    const target = new AwsTarget(fake, settings);
    const planned = await plan(target, two, { parallel: 2 });
    assert.deepEqual(planned.review.actions.map((a) => `${a.table} ${a.id}`), ["worker-0 eni-node0"]);
    assert.equal(planned.review.warnings.length, 1);
    assert.match(planned.review.warnings[0]!, /worker-7.*no network interface in vpc-1 holds 10\.240\.0\.77/);
    const result = (await writeThrough(target, two, planned.tables[0]!.table, [], planned.review.actions)).actions;
    assert.deepEqual(result.map((r) => r.ok), [true]);
    assert.deepEqual(fake.calls, ["disable eni-node0"]);
  });

  it("never changes an interface outside the route tables' VPC, even when an action names it", async () => {
    const fake = world();
    fake.enis.push(eni("eni-elsewhere", "10.240.0.20", "i-elsewhere", { VpcId: "vpc-2" }));
    fake.tables.push(table([{ DestinationCidrBlock: "10.200.0.0/24", NetworkInterfaceId: "eni-elsewhere", State: "active" }]));
    const target = new AwsTarget(fake, settings);
    const planned = await plan(target, inventory, { parallel: 2 });
    assert.deepEqual(planned.review.actions.map((a) => a.id), ["eni-node0"], "the node's own interface, not the other VPC's at the same IP");
    const results = (await writeThrough(target, inventory, planned.tables[0]!.table, [], [...planned.review.actions, { table: "worker-0", id: "eni-elsewhere", description: "forged" }])).actions;
    assert.deepEqual(results.map((r) => [r.action.id, r.ok]), [["eni-node0", true], ["eni-elsewhere", false]]);
    assert.match(results[1]!.error!, /not in vpc-1/);
    assert.deepEqual(fake.calls, ["disable eni-node0"]);
  });

  it("counts only what AWS's quota counts, per family: a dual-stack table with 25 IPv4 and 25 IPv6 pod routes fits a limit of 50", async () => {
    const fake = world();
    const nodes = Array.from({ length: 25 }, (_, i) => ({ name: `worker-${i}`, internalIPs: [`10.240.1.${i + 1}`, `fd00::1:${i + 1}`], podCIDRs: [`10.200.${i}.0/24`, `fd00:10:200:${i}::/64`] }));
    for (const [i, node] of nodes.entries()) fake.enis.push(eni(`eni-n${i}`, node.internalIPs[0]!, undefined, { Ipv6Addresses: [{ Ipv6Address: node.internalIPs[1]! }] }));
    fake.tables.push(
      table([
        { DestinationCidrBlock: "10.240.0.0/16", GatewayId: "local", Origin: "CreateRouteTable", State: "active" },
        { DestinationIpv6CidrBlock: "fd00::/56", GatewayId: "local", Origin: "CreateRouteTable", State: "active" },
        { DestinationCidrBlock: "0.0.0.0/0", GatewayId: "igw-1", Origin: "CreateRoute", State: "active" },
        { DestinationIpv6CidrBlock: "::/0", EgressOnlyInternetGatewayId: "eigw-1", Origin: "CreateRoute", State: "active" },
        ...Array.from({ length: 30 }, (_, i): Ec2Route => ({ DestinationCidrBlock: `172.16.${i}.0/24`, GatewayId: "vgw-1", Origin: "EnableVgwRoutePropagation", State: "active" })),
      ]),
    );
    const dual = validateInventory({ source: "test", nodes }, { clusterCIDR: CLUSTER_CIDR });
    const target = new AwsTarget(fake, settings);
    const planned = await plan(target, dual, { parallel: 2 });
    assert.equal(planned.summary.create, 50);
    assert.deepEqual(planned.review.refusals, []);
    assert.deepEqual(planned.review.warnings, [], "26 of 50 in each family: far from the limit");
    const results = (await writeThrough(target, dual, planned.tables[0]!.table, planned.tables[0]!.changes)).results;
    assert.ok(results.every((r) => r.ok), JSON.stringify(results.filter((r) => !r.ok)));
    assert.equal(fake.calls.filter((c) => c.startsWith("create")).length, 50);
  });

  it("refuses past the limit in the family that passes it, before any call, and says what AWS allows", async () => {
    const fake = world();
    fake.tables.push(
      table([
        { DestinationCidrBlock: "10.240.0.0/16", GatewayId: "local", Origin: "CreateRouteTable" },
        { DestinationCidrBlock: "0.0.0.0/0", GatewayId: "igw-1", Origin: "CreateRoute" },
      ]),
    );
    const target = new AwsTarget(fake, { ...settings, routeLimit: 1 });
    const planned = await plan(target, inventory, { parallel: 2 });
    assert.equal(planned.summary.create, 2);
    assert.equal(planned.review.refusals.length, 1);
    assert.match(planned.review.refusals[0]!, /rtb-1: would hold 2 IPv4 routes \(it holds 1\) that count toward the routes-per-table quota, over the route limit of 1 \(local and propagated routes do not count\)\. AWS allows 50 per family by default, up to 1000/);
    assert.doesNotMatch(planned.review.refusals[0]!, /IPv6/, "one IPv6 route fits a limit of 1");
    const results = (await writeThrough(target, inventory, planned.tables[0]!.table, planned.tables[0]!.changes)).results;
    assert.ok(results.every((r) => !r.ok && /refused before any call/.test(r.error!)));
    assert.deepEqual(fake.calls, []);
  });

  it("lists the creates past the limit one by one, per family, after the table's deletes: the first ones fit", () => {
    const route = (destination: string) => ({ name: destination, destination, nextHop: destination.includes(":") ? "fd00::20" : "10.240.0.20", node: "n", family: (destination.includes(":") ? 6 : 4) as 4 | 6 });
    const changes: Change[] = [
      { action: "delete", current: { destination: "10.200.9.0/24", owned: true } },
      ...["10.200.1.0/24", "10.200.2.0/24", "10.200.3.0/24", "10.200.4.0/24", "fd00:10:200:1::/64"].map((d): Change => ({ action: "create", route: route(d) })),
    ];
    const refused = createsPastLimit("rtb-1", { 4: 48, 6: 0 }, changes, 50);
    assert.deepEqual(refused.map((r) => [r.limit, r.change.action === "create" && r.change.route.destination]), [["route-limit", "10.200.4.0/24"]], "48 - 1 deleted + 3 created = 50; the fourth IPv4 create and no IPv6 one is past the limit");
    assert.match(refused[0]!.message, /route table rtb-1 is at its route limit of 50 IPv4 routes .*--route-limit.*no room for 10\.200\.4\.0\/24/);
    assert.deepEqual(createsPastLimit("rtb-1", { 4: 10, 6: 0 }, changes, 50), []);
  });

  it("a RouteAlreadyExists or InvalidRoute.NotFound counts as done only when the table read back says so, never blindly", async () => {
    /** EC2 as the retried call finds it: the table holds `before`, the call fails, and a read-back shows `after`. */
    class AfterRetry extends FakeEc2 {
      constructor(
        before: Ec2Route[],
        readonly after: Ec2Route[],
      ) {
        super(world().enis, world().instanceList, [table(before)]);
      }
      override async createRoute(_table: string, destination: string): Promise<void> {
        this.tables[0] = table(this.after);
        throw Object.assign(new Error(`The route identified by ${destination} already exists.`), { name: "RouteAlreadyExists" });
      }
      override async deleteRoute(_table: string, destination: string): Promise<void> {
        this.tables[0] = table(this.after);
        throw Object.assign(new Error(`The route identified by ${destination} does not exist.`), { name: "InvalidRoute.NotFound" });
      }
    }
    /** Plans against `before`, carries out the plan's one change of this kind on an IPv4 destination, returns its result. */
    const outcome = async (before: Ec2Route[], after: Ec2Route[], action: "create" | "delete" = "create") => {
      const fake = new AfterRetry(before, after);
      const target = new AwsTarget(fake, settings);
      const planned = await plan(target, inventory, { parallel: 1 });
      const changes = planned.tables[0]!.changes.filter((c) => c.action === action && (c.action === "delete" ? c.current.destination : c.route.destination).startsWith("10.200."));
      assert.equal(changes.length, 1);
      const [result] = (await writeThrough(target, inventory, planned.tables[0]!.table, changes)).results;
      return result!.ok ? "ok" : result!.error!;
    };
    const hole: Ec2Route = { DestinationCidrBlock: "10.200.9.0/24", NetworkInterfaceId: "eni-gone", State: "blackhole" };

    assert.equal(await outcome([], [{ DestinationCidrBlock: "10.200.0.0/24", NetworkInterfaceId: "eni-node0", State: "active" }]), "ok", "our own first attempt made it");
    assert.match(
      await outcome([], [{ DestinationCidrBlock: "10.200.0.0/24", NetworkInterfaceId: "eni-foreign", State: "active" }]),
      /^RouteAlreadyExists: .* and the table holds a route via eni-foreign \(active\) to it, not one via eni-node0; re-run plan$/,
    );
    assert.match(await outcome([], [{ DestinationCidrBlock: "10.200.0.0/24", NetworkInterfaceId: "eni-node0", State: "blackhole" }]), /via eni-node0 \(blackhole\)/);
    assert.match(await outcome([], []), /and the table holds no route to it/);

    assert.equal(await outcome([hole], [], "delete"), "ok", "our own first delete made it");
    assert.match(await outcome([hole], [hole], "delete"), /^InvalidRoute\.NotFound: .* yet the table still holds a route to 10\.200\.9\.0\/24 via eni-gone; re-run plan$/);
  });

  it("deletes a blackhole podroutes owns even when its interface is gone, with the right destination family", async () => {
    const fake = world();
    fake.tables.push(
      table([
        { DestinationCidrBlock: "10.200.0.0/24", NetworkInterfaceId: "eni-node0", State: "active" },
        { DestinationIpv6CidrBlock: "fd00:10:200:1::/64", NetworkInterfaceId: "eni-node0", State: "active" },
        { DestinationCidrBlock: "10.200.9.0/24", NetworkInterfaceId: "eni-gone", State: "blackhole" },
      ]),
    );
    const target = new AwsTarget(fake, settings);
    const planned = await plan(target, inventory, { parallel: 2 });
    assert.deepEqual(planned.summary, { create: 0, replace: 0, delete: 1, unchanged: 2, conflicts: 0 });
    await writeThrough(target, inventory, planned.tables[0]!.table, planned.tables[0]!.changes);
    assert.deepEqual(fake.calls, ["delete rtb-1 10.200.9.0/24"]);
  });
});

describe("aws flags", () => {
  const base = { cluster: "kubernetes", parallel: 1, env: { AWS_REGION: "us-east-1" }, warn: () => {}, interactive: false };

  it("requires --cluster-cidr and names the flag, before loading the SDK or calling anything", async () => {
    await assert.rejects(awsTarget.create({ ...base }), (error: unknown) => error instanceof UsageError && error.flag === "--cluster-cidr" && /--cluster-cidr is required/.test(error.message));
  });

  it("reports every bad flag at once", async () => {
    await assert.rejects(
      awsTarget.create({ ...base, clusterCIDR: "10.200.0.0/16", routeTable: ["rtb-12345678", "subnet-1"], nextHop: "gateway", routeLimit: "0" }),
      (error: unknown) => error instanceof UsageError && /--route-table "subnet-1"[^]*--next-hop "gateway"[^]*--route-limit "0"/.test(error.message),
    );
  });

  it("caps --route-limit at 1000, the most AWS raises the routes-per-table quota to", async () => {
    await assert.rejects(awsTarget.create({ ...base, clusterCIDR: "10.200.0.0/16", routeLimit: "1001" }), (error: unknown) => {
      assert.ok(error instanceof UsageError);
      assert.equal(error.flag, "--route-limit");
      assert.match(error.message, /--route-limit "1001": must be a whole number from 1 to 1000/);
      return true;
    });
  });

  it("requires a region", async () => {
    await assert.rejects(awsTarget.create({ ...base, env: {}, clusterCIDR: "10.200.0.0/16" }), /--region is required/);
  });
});
