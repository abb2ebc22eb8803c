/**
 * `--target aws`: pod routes in VPC route tables, one `shared` table per route table, each holding every
 * node's routes (one table per availability zone is common). A route points at the network interface
 * that holds the node's internal IP, or at its instance (`--next-hop instance`).
 *
 * AWS routes carry no tags, so ownership is inferred, as narrowly as possible: a route is podroutes'
 * only when its destination lies inside the cluster CIDR AND it points at a cluster node (an interface
 * or instance holding an inventory node's internal IP, or an instance tagged
 * `kubernetes.io/cluster/<cluster>`), or it is a blackhole via an interface/instance inside the cluster
 * CIDR (what a terminated node leaves). Local, gateway, NAT, peering, endpoint and every other route is
 * never touched; a foreign route on one of our destinations is a conflict for the planner to report.
 *
 * EC2 (and moto, its test double, more so) accepts input it should not, so this target checks for
 * itself before each write: the table is read again and each change must still fit what was planned.
 */
import type { Instance, NetworkInterface, Route as Ec2Route, RouteTable } from "@aws-sdk/client-ec2";
import { AdaptiveConcurrency, writeEachChange } from "../each-change.js";
import { cidrContains, clusterRanges, internalIpOf, parseCidr, sortByCidr, type Cidr, type Family, type Inventory, type Route } from "../../model.js";
import { awsErrorCode, awsErrorText, type Ec2Api, type NextHopRef } from "./ec2.js";
import {
  TargetError,
  type Change,
  type ChangeResult,
  type Check,
  type ExtraAction,
  type ActionResult,
  type ObservedRoute,
  type OpenTable,
  type Progress,
  type RefusedChange,
  type Review,
  type TableDiff,
  type TableRef,
  type Target,
  type TargetRun,
  type WriteContext,
} from "../target.js";

export type NextHopKind = "eni" | "instance";

/** AWS's default routes-per-table quota (non-propagated routes, per family). */
export const DEFAULT_ROUTE_LIMIT = 50;
/** The most AWS raises that quota to. */
export const MAX_ROUTE_LIMIT = 1000;

export interface AwsTargetSettings {
  cluster: string;
  /** Validated cluster CIDR text (one range per family, comma-separated). */
  clusterCIDR: string;
  /** `--route-table` ids; empty: every table tagged `kubernetes.io/cluster/<cluster>`. */
  routeTables: string[];
  nextHop: NextHopKind;
  /** Routes of each family a table may hold that count toward AWS's quota (default 50, at most 1,000). */
  routeLimit: number;
  /** Ceiling of the API writes in flight at once, over all tables; the limit adapts below it. */
  parallel: number;
  /** Where that limit starts (default: the slow start's INITIAL_IN_FLIGHT). */
  initialInFlight?: number;
}

/** The share of the route limit past which `plan` warns that a table is filling up. */
const LIMIT_WARNING_SHARE = 0.8;
const GONE_INSTANCE_STATES = new Set(["shutting-down", "terminated"]);

export function clusterTagKey(cluster: string): string {
  return `kubernetes.io/cluster/${cluster}`;
}

/** What an EC2 route points at: `eni-…`, `i-…`, or anything else (`local`, `igw-…`, `nat-…`, `pcx-…`). */
export function routeHandle(route: Ec2Route): { kind: "eni" | "instance" | "other"; id: string } {
  // Real EC2 shows an instance route with both ids; the interface is the precise one.
  if (route.NetworkInterfaceId) return { kind: "eni", id: route.NetworkInterfaceId };
  if (route.InstanceId) return { kind: "instance", id: route.InstanceId };
  const id =
    route.GatewayId ??
    route.NatGatewayId ??
    route.TransitGatewayId ??
    route.VpcPeeringConnectionId ??
    route.EgressOnlyInternetGatewayId ??
    route.CarrierGatewayId ??
    route.LocalGatewayId ??
    route.CoreNetworkArn ??
    "";
  return { kind: "other", id };
}

/** Whether a route carries traffic to exactly this interface or instance (an instance route shows both ids on EC2). */
function carries(route: Ec2Route, hop: NextHopRef): boolean {
  const target = hop.kind === "instance" ? route.InstanceId : route.NetworkInterfaceId;
  return target === hop.id && route.State !== "blackhole";
}

function destinationOf(route: Ec2Route): Cidr | undefined {
  const text = route.DestinationCidrBlock ?? route.DestinationIpv6CidrBlock;
  if (text === undefined) return undefined; // a prefix-list destination: never ours
  const parsed = parseCidr(text);
  return parsed.ok ? parsed.cidr : undefined;
}

function familyOfText(address: string): Family {
  return address.includes(":") ? 6 : 4;
}

/** Routes of each family that count toward a table's quota. */
export type QuotaUse = Record<Family, number>;

/**
 * The routes of a table that AWS counts against its routes-per-table quota, per family (the quota is
 * enforced separately for IPv4 and IPv6): every non-propagated route except the table's own local
 * routes. Propagated routes (`EnableVgwRoutePropagation`) have a quota of their own. A prefix-list
 * route counts as its list's maximum entries on AWS; podroutes does not read the list, so it counts
 * one in each family.
 */
export function quotaUse(routes: Ec2Route[]): QuotaUse {
  const use: QuotaUse = { 4: 0, 6: 0 };
  for (const route of routes) {
    if (route.Origin === "EnableVgwRoutePropagation" || route.Origin === "CreateRouteTable" || route.GatewayId === "local") continue;
    if (route.DestinationCidrBlock !== undefined) use[4]++;
    else if (route.DestinationIpv6CidrBlock !== undefined) use[6]++;
    else {
      use[4]++;
      use[6]++;
    }
  }
  return use;
}

/** A table's quota use once `changes` are made: creates add a route of their family, deletes remove one. */
export function quotaUseAfter(use: QuotaUse, changes: Change[]): QuotaUse {
  const after: QuotaUse = { ...use };
  for (const change of changes) {
    if (change.action === "create") after[change.route.family]++;
    else if (change.action === "delete") after[familyOfText(change.current.destination)]--;
  }
  return after;
}

/**
 * The creates that do not fit in a table, per family, once its deletes are made: the first ones (in the
 * plan's destination order) fill the room left under the limit, the rest are refused.
 */
export function createsPastLimit(table: string, use: QuotaUse, changes: Change[], limit: number): RefusedChange[] {
  const room = quotaUseAfter(use, changes.filter((change) => change.action === "delete"));
  const refused: RefusedChange[] = [];
  for (const change of changes) {
    if (change.action !== "create") continue;
    const family = change.route.family;
    if (room[family] < limit) {
      room[family]++;
      continue;
    }
    refused.push({
      table,
      change,
      limit: "route-limit",
      message: `route table ${table} is at its route limit of ${limit} IPv${family} routes (AWS's routes-per-table quota, --route-limit): no room for ${change.route.destination}`,
    });
  }
  return refused;
}

/** Why a table would pass the route limit, per family, or nothing when it stays within it. */
function overLimit(use: QuotaUse, after: QuotaUse, limit: number): string[] {
  return ([4, 6] as const)
    .filter((family) => after[family] > limit)
    .map((family) => `${after[family]} IPv${family} routes (it holds ${use[family]}) that count toward the routes-per-table quota, over the route limit of ${limit}`);
}

/**
 * The interfaces and instances routes point at, looked up once per plan and shared by every table:
 * which inventory address each interface holds, which instance it is attached to, whether either is
 * gone, and their source/destination checks. Addresses are looked up in the route tables' VPC only:
 * another VPC of the account may use the same range, and its interfaces are never podroutes' to touch.
 */
export class HopIndex {
  readonly enis = new Map<string, NetworkInterface>();
  readonly instances = new Map<string, Instance>();
  readonly missing = new Set<string>();
  /** Inventory address → interface id. */
  readonly byAddress = new Map<string, string>();
  private readonly askedAddresses = new Set<string>();

  constructor(
    private readonly ec2: Ec2Api,
    private readonly cluster: string,
    /** The route tables' VPC. */
    readonly vpcId: string,
  ) {}

  /** Looks up whatever is not known yet: interfaces by address and by id, then their instances. */
  async resolve(wanted: { addresses?: string[]; enis?: string[]; instances?: string[] }): Promise<void> {
    const addresses = (wanted.addresses ?? []).filter((a) => !this.askedAddresses.has(a));
    if (addresses.length) {
      for (const eni of await this.ec2.networkInterfacesByAddress(addresses, this.vpcId)) this.addEni(eni);
      for (const a of addresses) this.askedAddresses.add(a);
    }
    const enis = unique(wanted.enis ?? []).filter((id) => !this.enis.has(id) && !this.missing.has(id));
    if (enis.length) {
      for (const eni of await this.ec2.networkInterfacesById(enis)) this.addEni(eni);
      for (const id of enis) if (!this.enis.has(id)) this.missing.add(id);
    }
    const attached = [...this.enis.values()].map((eni) => eni.Attachment?.InstanceId).filter((id): id is string => !!id);
    const instances = unique([...(wanted.instances ?? []), ...attached]).filter((id) => !this.instances.has(id) && !this.missing.has(id));
    if (instances.length) {
      for (const instance of await this.ec2.instances([{ Name: "instance-id", Values: instances }])) {
        if (instance.InstanceId) this.instances.set(instance.InstanceId, instance);
      }
      for (const id of instances) if (!this.instances.has(id)) this.missing.add(id);
    }
  }

  private addEni(eni: NetworkInterface): void {
    if (!eni.NetworkInterfaceId) return;
    this.enis.set(eni.NetworkInterfaceId, eni);
    if (eni.VpcId !== this.vpcId) return; // known by id (a route points at it), never a node's next hop
    for (const address of eniAddresses(eni)) if (!this.byAddress.has(address)) this.byAddress.set(address, eni.NetworkInterfaceId);
  }

  /** Whether an interface or instance podroutes may act on lies in the route tables' VPC. */
  inVpc(hop: NextHopRef): boolean {
    const vpc = hop.kind === "eni" ? this.enis.get(hop.id)?.VpcId : this.instances.get(hop.id)?.VpcId;
    return vpc === this.vpcId;
  }

  /** The instance an interface is attached to, or the instance itself. */
  instanceOf(handle: { kind: "eni" | "instance"; id: string }): Instance | undefined {
    const id = handle.kind === "instance" ? handle.id : this.enis.get(handle.id)?.Attachment?.InstanceId;
    return id ? this.instances.get(id) : undefined;
  }

  /** Why routes to this handle cannot carry traffic, or undefined when they can. */
  goneReason(handle: { kind: "eni" | "instance"; id: string }): string | undefined {
    if (handle.kind === "eni") {
      const eni = this.enis.get(handle.id);
      if (!eni) return "interface deleted";
      if (eni.Status === "available") return "interface detached";
    } else if (!this.instances.has(handle.id)) return "instance gone";
    const state = this.instanceOf(handle)?.State?.Name;
    return state && GONE_INSTANCE_STATES.has(state) ? `instance ${state}` : undefined;
  }

  /** Every address the handle holds (the interface's, or all of the instance's interfaces'). */
  addressesOf(handle: { kind: "eni" | "instance"; id: string }): string[] {
    if (handle.kind === "eni") {
      const eni = this.enis.get(handle.id);
      return eni ? eniAddresses(eni) : [];
    }
    const instance = this.instances.get(handle.id);
    if (!instance) return [];
    const out = [instance.PrivateIpAddress, instance.Ipv6Address];
    for (const nic of instance.NetworkInterfaces ?? []) {
      out.push(...(nic.PrivateIpAddresses ?? []).map((p) => p.PrivateIpAddress), ...(nic.Ipv6Addresses ?? []).map((p) => p.Ipv6Address));
    }
    return unique(out.filter((a): a is string => !!a));
  }

  clusterTagged(handle: { kind: "eni" | "instance"; id: string }): boolean {
    const key = clusterTagKey(this.cluster);
    return this.instanceOf(handle)?.Tags?.some((tag) => tag.Key === key) ?? false;
  }

  /** The handle a route to `address` uses under `kind`, or why there is none. */
  hopFor(address: string, kind: NextHopKind): { hop: NextHopRef; vpcId?: string } | { error: string } {
    const eniId = this.byAddress.get(address);
    if (!eniId) return { error: `no network interface in ${this.vpcId} holds ${address} (is the node an EC2 instance in the route tables' VPC?)` };
    const eni = this.enis.get(eniId)!;
    const gone = this.goneReason({ kind: "eni", id: eniId });
    if (gone) return { error: `${eniId} (${address}) cannot carry traffic: ${gone}` };
    if (kind === "eni") return { hop: { kind: "eni", id: eniId }, ...(eni.VpcId ? { vpcId: eni.VpcId } : {}) };
    const instanceId = eni.Attachment?.InstanceId;
    if (!instanceId) return { error: `${eniId} (${address}) is not attached to an instance; use --next-hop eni` };
    // EC2's CreateRoute and ReplaceRoute take an instance only when exactly one interface is attached.
    const attached = this.instances.get(instanceId)?.NetworkInterfaces?.length ?? 1;
    if (attached > 1) {
      return { error: `instance ${instanceId} (${address}) has ${attached} network interfaces and EC2 routes to an instance only with exactly one: use --next-hop eni (routes to ${eniId}, which holds ${address})` };
    }
    return { hop: { kind: "instance", id: instanceId }, ...(eni.VpcId ? { vpcId: eni.VpcId } : {}) };
  }

  /** Whether the source/destination check is on, where `kind` says it lives (moto keeps the two apart). */
  sourceDestCheck(hop: NextHopRef): boolean | undefined {
    return hop.kind === "eni" ? this.enis.get(hop.id)?.SourceDestCheck : this.instances.get(hop.id)?.SourceDestCheck;
  }
}

function eniAddresses(eni: NetworkInterface): string[] {
  const out = [eni.PrivateIpAddress, ...(eni.PrivateIpAddresses ?? []).map((p) => p.PrivateIpAddress), ...(eni.Ipv6Addresses ?? []).map((p) => p.Ipv6Address)];
  return unique(out.filter((a): a is string => !!a));
}

function unique<T>(items: T[]): T[] {
  return [...new Set(items)];
}

function inventoryAddresses(inventory: Inventory): string[] {
  return unique(inventory.nodes.flatMap((node) => node.internalIPs));
}

/**
 * One EC2 route as podroutes sees it: whether it is ours (the ownership guard of this target), its next
 * hop translated back to a node's internal IP, and whether it still carries traffic.
 */
export function observeRoute(
  route: Ec2Route,
  tableId: string,
  index: HopIndex,
  context: { ranges: Cidr[]; nodeAddresses: Set<string>; cluster?: string },
): { observed: ObservedRoute; inCluster: boolean } | undefined {
  const destination = destinationOf(route);
  if (!destination) return undefined;
  const inCluster = context.ranges.some((range) => cidrContains(range, destination));
  const handle = routeHandle(route);
  const pointsAtNode = handle.kind !== "other";
  const gone = pointsAtNode ? index.goneReason(handle as { kind: "eni" | "instance"; id: string }) : undefined;
  const blackhole = route.State === "blackhole" || gone !== undefined;
  let nextHop: string | undefined;
  let clusterNode = false;
  if (pointsAtNode && !gone) {
    const h = handle as { kind: "eni" | "instance"; id: string };
    const addresses = index.addressesOf(h).filter((a) => familyOfText(a) === destination.family);
    nextHop = addresses.find((a) => context.nodeAddresses.has(a)) ?? addresses[0];
    clusterNode = addresses.some((a) => context.nodeAddresses.has(a)) || index.clusterTagged(h);
  }
  const owned = inCluster && pointsAtNode && (blackhole || clusterNode);
  // Without a node list only the tag tells the cluster's instances: a route in the cluster CIDR through
  // an untagged one may be the cluster's all the same (a cluster built by hand). Left alone, and said.
  const unattributed =
    inCluster && pointsAtNode && !owned && context.nodeAddresses.size === 0 && context.cluster !== undefined
      ? `its next hop ${handle.id} is not tagged ${clusterTagKey(context.cluster)}, and no --nodes names the cluster's nodes: name them with --nodes (a file, or aws), or tag their instances, to have podroutes manage it`
      : undefined;
  const state = blackhole ? "blackhole" : (route.State ?? "active");
  return {
    inCluster,
    observed: {
      destination: destination.text,
      ...(nextHop && !blackhole ? { nextHop } : {}),
      nextHopLabel: handle.id,
      owned,
      ...(unattributed ? { unattributed } : {}),
      ...(blackhole ? { healthy: false } : {}),
      details: {
        routeTable: tableId,
        target: handle.id,
        state,
        ...(gone ? { reason: gone } : {}),
        ...(route.Origin ? { origin: route.Origin } : {}),
        ...(route.InstanceId ? { instanceId: route.InstanceId } : {}),
        ...(route.NetworkInterfaceId ? { networkInterfaceId: route.NetworkInterfaceId } : {}),
      },
    },
  };
}

/** What one run of the AWS target looked up; it goes with the run. */
interface AwsRunState {
  inventory: Inventory;
  /** The VPC of the route tables, found by `tables` (or the first table opened); every lookup is scoped to it. */
  vpcId?: string;
  /** The nodes' interfaces and instances, looked up once a run, shared by the tables read concurrently. */
  index?: Promise<HopIndex>;
  /** Descriptions fetched by `tables`, used once by the table's first open, so a plan does not describe each table twice. */
  described: Map<string, RouteTable>;
  /** Interfaces and instances whose source/dest check action a table of this run already carries: each is planned once. */
  claimedHops: Set<string>;
}

export class AwsTarget implements Target {
  readonly name = "aws";
  readonly locksTables = false;
  private readonly ranges: Cidr[];

  /** Paces every route write of this target: the API's throttling answers bring it down. */
  readonly concurrency: AdaptiveConcurrency;

  constructor(
    private readonly ec2: Ec2Api,
    private readonly settings: AwsTargetSettings,
  ) {
    this.ranges = clusterRanges(settings.clusterCIDR);
    this.concurrency = new AdaptiveConcurrency(settings.parallel, settings.initialInFlight);
    ec2.onThrottle?.(() => this.concurrency.throttled());
  }

  private fail(message: string, error?: unknown, table?: string): TargetError {
    return new TargetError(this.name, error === undefined ? message : `${message}: ${awsErrorText(error)}`, { cause: error, ...(table ? { table } : {}) });
  }

  private async describe(): Promise<RouteTable[]> {
    const { routeTables, cluster } = this.settings;
    try {
      return await this.ec2.routeTables(routeTables.length ? { ids: routeTables } : { tagKey: clusterTagKey(cluster) });
    } catch (error) {
      throw this.fail(routeTables.length ? `cannot describe route tables ${routeTables.join(", ")}` : "cannot describe route tables", error);
    }
  }

  private async describeOne(tableId: string): Promise<RouteTable> {
    let tables: RouteTable[];
    try {
      tables = await this.ec2.routeTables({ ids: [tableId] });
    } catch (error) {
      throw this.fail("cannot describe the route table", error, tableId);
    }
    const table = tables.find((t) => t.RouteTableId === tableId);
    if (!table) throw this.fail("the route table no longer exists", undefined, tableId);
    return table;
  }

  /**
   * One run: the route tables (tagged or named) and the nodes' interfaces, looked up once. A table is
   * described when opened (once, with `tables`' own description for a plan): a write checks its plan
   * against that description and writes each change from it.
   */
  begin(inventory: Inventory): TargetRun {
    const run: AwsRunState = { inventory, described: new Map(), claimedHops: new Set() };
    return {
      tables: async () => {
        const found = await this.describeTables(run);
        for (const table of found) run.described.set(table.RouteTableId!, table);
        return found.map((table) => ({ id: table.RouteTableId!, scope: "shared" as const }));
      },
      open: (table) => this.open(table, run),
      verify: (context) => this.verify(run, context),
    };
  }

  /** The route tables, all of one VPC (which becomes the scope of every lookup), or a TargetError. */
  private async describeTables(run: AwsRunState): Promise<RouteTable[]> {
    const found = await this.describe();
    if (!found.length) {
      throw this.fail(
        `no route table is tagged ${clusterTagKey(this.settings.cluster)}; tag the cluster's route tables or name them with --route-table rtb-...`,
      );
    }
    const byVpc = new Map<string, string[]>();
    for (const table of found) byVpc.set(table.VpcId ?? "?", [...(byVpc.get(table.VpcId ?? "?") ?? []), table.RouteTableId!]);
    if (byVpc.size > 1) {
      // A route can only point at an interface of its table's VPC, and a cluster's nodes live in one VPC.
      throw this.fail(
        `the route tables belong to ${byVpc.size} VPCs (${[...byVpc].map(([vpc, ids]) => `${vpc}: ${ids.join(", ")}`).join("; ")}); a cluster's nodes live in one VPC: name that VPC's tables with --route-table`,
      );
    }
    run.vpcId = [...byVpc.keys()][0]!;
    return found;
  }

  /** The run's index with the inventory's addresses resolved; tables read concurrently share one lookup. */
  private indexFor(run: AwsRunState): Promise<HopIndex> {
    if (!run.vpcId) throw this.fail("the route tables were not read yet");
    if (!run.index) {
      const index = new HopIndex(this.ec2, this.settings.cluster, run.vpcId);
      const ready = index.resolve({ addresses: inventoryAddresses(run.inventory) }).then(
        () => index,
        (error: unknown) => {
          if (run.index === ready) run.index = undefined; // let the next call try again
          throw this.fail("cannot look up the nodes' network interfaces", error);
        },
      );
      run.index = ready;
    }
    return run.index;
  }

  /** Observes a described table: every owned route plus every foreign route inside the cluster CIDR. */
  private async observeTable(table: RouteTable, inventory: Inventory, index: HopIndex): Promise<ObservedRoute[]> {
    const tableId = table.RouteTableId!;
    const routes = table.Routes ?? [];
    const handles = routes.filter((r) => destinationOf(r)).map(routeHandle);
    try {
      await index.resolve({
        enis: handles.filter((h) => h.kind === "eni").map((h) => h.id),
        instances: handles.filter((h) => h.kind === "instance").map((h) => h.id),
      });
    } catch (error) {
      throw this.fail("cannot look up the interfaces and instances its routes point at", error, tableId);
    }
    const context = { ranges: this.ranges, nodeAddresses: new Set(inventoryAddresses(inventory)), cluster: this.settings.cluster };
    const out: ObservedRoute[] = [];
    for (const route of routes) {
      const seen = observeRoute(route, tableId, index, context);
      if (seen && (seen.observed.owned || seen.inCluster)) out.push(seen.observed);
    }
    return sortByCidr(out, (route) => route.destination);
  }

  private async open(table: TableRef, run: AwsRunState): Promise<OpenTable> {
    const described = run.described.get(table.id) ?? (await this.describeOne(table.id));
    run.described.delete(table.id);
    run.vpcId ??= described.VpcId;
    const index = await this.indexFor(run);
    const routes = await this.observeTable(described, run.inventory, index);
    return {
      routes,
      review: (diff) => this.review(diff, described, index, run),
      write: async (changes, actions, context) => {
        const done = actions.length ? await this.runActions(actions, index, context) : [];
        return { results: await this.write(table, described, changes, index, context), actions: done };
      },
      release: async () => {},
    };
  }

  /** The table's quota after the diff, and the source/destination checks of the next hops it routes to. */
  private async review(diff: TableDiff, described: RouteTable, index: HopIndex, run: AwsRunState): Promise<Review> {
    const review: Review = { warnings: [], refusals: [], actions: [] };
    const { routeLimit, nextHop } = this.settings;
    const used = quotaUse(described.Routes ?? []);
    const after = quotaUseAfter(used, diff.changes);
    const over = overLimit(used, after, routeLimit);
    if (over.length) {
      review.refusals.push(
        `aws ${diff.table.id}: would hold ${over.join("; and ")} (local and propagated routes do not count). ` +
          `AWS allows ${DEFAULT_ROUTE_LIMIT} per family by default, up to ${MAX_ROUTE_LIMIT}: ask AWS for a higher routes-per-table quota and pass --route-limit, ` +
          `or route pods with host routes on the nodes (--target ssh) for a cluster this large`,
      );
      review.refused = createsPastLimit(diff.table.id, used, diff.changes, routeLimit);
    } else {
      for (const family of [4, 6] as const) {
        if (after[family] > used[family] && after[family] > routeLimit * LIMIT_WARNING_SHARE) {
          review.warnings.push(`aws ${diff.table.id}: will hold ${after[family]} of at most ${routeLimit} IPv${family} routes (--route-limit)`);
        }
      }
    }

    // Every next hop the table routes to must have its source/destination check off, or EC2 drops the pods'
    // packets. A hop several tables route to is planned once, with the first table reviewed.
    const wanted = new Map<string, Route>();
    for (const route of [...diff.unchanged, ...diff.changes.flatMap((c) => (c.action === "delete" ? [] : [c.route]))]) wanted.set(route.nextHop, route);
    for (const [address, route] of [...wanted].sort(([a], [b]) => a.localeCompare(b))) {
      const found = index.hopFor(address, nextHop);
      if ("error" in found) {
        review.warnings.push(`aws: node ${route.node}: ${found.error}; its routes will fail`);
        continue;
      }
      if (run.claimedHops.has(found.hop.id)) continue;
      run.claimedHops.add(found.hop.id);
      if (index.sourceDestCheck(found.hop) !== false) {
        review.actions.push({ table: route.node, id: found.hop.id, description: `disable source/dest check on ${found.hop.id} (${address})` });
      }
    }
    return review;
  }

  /** Turns off the source/destination checks a table's review asked for, only inside the tables' VPC. */
  private async runActions(actions: ExtraAction[], index: HopIndex, context: WriteContext): Promise<ActionResult[]> {
    let done = 0;
    return Promise.all(
      actions.map((action) =>
        this.concurrency.run(async () => {
          const hop: NextHopRef = action.id.startsWith("i-") ? { kind: "instance", id: action.id } : { kind: "eni", id: action.id };
          // Never change an interface or instance outside the route tables' VPC, whatever the plan says.
          if (!index.inVpc(hop)) return { action, ok: false, error: `${action.id} is not in ${index.vpcId}, the route tables' VPC: not changed` };
          try {
            await this.ec2.disableSourceDestCheck(hop);
            this.concurrency.succeeded();
            return { action, ok: true };
          } catch (error) {
            return { action, ok: false, error: awsErrorText(error) };
          } finally {
            context.progress({ table: action.table, done: ++done, total: actions.length, message: action.description });
          }
        }),
      ),
    );
  }

  /** Each change checked against the table as described when it was opened for this write, and the limit with it. */
  private async write(table: TableRef, fresh: RouteTable, changes: Change[], index: HopIndex, context: WriteContext): Promise<ChangeResult[]> {
    const byDestination = new Map<string, Ec2Route>();
    for (const route of fresh.Routes ?? []) {
      const destination = destinationOf(route);
      if (destination) byDestination.set(destination.text, route);
    }
    const used = quotaUse(fresh.Routes ?? []);
    const over = overLimit(used, quotaUseAfter(used, changes), this.settings.routeLimit);
    if (over.length) {
      const error = `refused before any call: the table would hold ${over.join("; and ")} (--route-limit)`;
      return changes.map((change) => ({ change, ok: false, error }));
    }

    return writeEachChange(
      changes,
      { table: table.id, concurrency: this.concurrency, progress: context.progress, errorText: awsErrorText, ...(context.onResult ? { onResult: context.onResult } : {}) },
      (change) => this.writeOne(table.id, fresh.VpcId, change, byDestination, index),
    );
  }

  /** Carries out one change; returns why it was not attempted, or throws the API's error. */
  private async writeOne(tableId: string, vpcId: string | undefined, change: Change, now: Map<string, Ec2Route>, index: HopIndex): Promise<string | undefined> {
    const destination = change.action === "delete" ? change.current.destination : change.route.destination;
    const present = now.get(destination);
    if (change.action === "delete") {
      if (!present) return undefined; // already gone: the goal is met
      if (routeHandle(present).id !== change.current.details?.target) {
        return `the route to ${destination} now points at ${routeHandle(present).id || "something else"}, not ${String(change.current.details?.target)}, since the plan; re-run plan`;
      }
      try {
        await this.ec2.deleteRoute(tableId, destination);
      } catch (error) {
        if (awsErrorCode(error) !== "InvalidRoute.NotFound") throw error;
        // As for creates: a retried delete whose first attempt landed. Done only if the route is gone.
        const now = await this.routeNow(tableId, destination);
        if (!now) return undefined;
        return `${awsErrorText(error)} yet the table still holds a route to ${destination} via ${routeHandle(now).id || "?"}; re-run plan`;
      }
      return undefined;
    }
    const found = index.hopFor(change.route.nextHop, this.settings.nextHop);
    if ("error" in found) return found.error;
    if (vpcId && found.vpcId && found.vpcId !== vpcId) return `${found.hop.id} is in ${found.vpcId}, the route table in ${vpcId}`;
    if (change.action === "create") {
      if (present) {
        if (carries(present, found.hop)) return undefined; // done by an earlier, interrupted run
        return `a route to ${destination} via ${routeHandle(present).id || "?"} appeared since the plan; re-run plan`;
      }
      try {
        await this.ec2.createRoute(tableId, destination, found.hop);
      } catch (error) {
        if (awsErrorCode(error) !== "RouteAlreadyExists") throw error;
        // The SDK retries a call whose answer was lost; its first attempt may have landed. Done only if
        // the table now holds exactly the wanted route.
        const now = await this.routeNow(tableId, destination);
        if (now && carries(now, found.hop)) return undefined;
        return `${awsErrorText(error)} and the table holds ${now ? `a route via ${routeHandle(now).id || "?"} (${now.State ?? "?"})` : "no route"} to it, not one via ${found.hop.id}; re-run plan`;
      }
      return undefined;
    }
    if (!present) return `the route to ${destination} disappeared since the plan; re-run plan (it will create it)`;
    if (routeHandle(present).id !== change.current.details?.target) {
      return `the route to ${destination} now points at ${routeHandle(present).id || "something else"} since the plan; re-run plan`;
    }
    // ReplaceRoute swaps the next hop in place: no moment without a route, unlike delete + create.
    await this.ec2.replaceRoute(tableId, destination, found.hop);
    return undefined;
  }

  /** The route to `destination` the table holds now (read back from EC2), if any. */
  private async routeNow(tableId: string, destination: string): Promise<Ec2Route | undefined> {
    const table = await this.describeOne(tableId);
    return table.Routes?.find((route) => destinationOf(route)?.text === destination);
  }

  private async verify(run: AwsRunState, context: { progress: Progress }): Promise<Check[]> {
    const { inventory } = run;
    const checks: Check[] = [];
    const tables = await this.describeTables(run);
    const index = await this.indexFor(run);
    let done = 0;
    for (const table of tables) {
      const tableId = table.RouteTableId!;
      const observed = await this.observeTable(table, inventory, index);
      const holes = observed.filter((r) => r.healthy === false);
      checks.push(
        holes.length
          ? { table: tableId, ok: false, message: `blackhole routes: ${holes.map((r) => `${r.destination} via ${r.nextHopLabel} (${String(r.details?.reason ?? "blackhole")})`).join(", ")}` }
          : { table: tableId, ok: true, message: "no blackhole routes in the cluster CIDR" },
      );
      context.progress({ table: tableId, done: ++done, total: tables.length, message: "verify" });
    }
    for (const node of inventory.nodes) {
      const families = unique(node.podCIDRs.map((c) => familyOfText(c.split("/")[0]!)));
      for (const family of families) {
        const address = internalIpOf(node, family);
        if (!address) continue;
        const found = index.hopFor(address, this.settings.nextHop);
        if ("error" in found) {
          checks.push({ table: node.name, ok: false, message: found.error });
          continue;
        }
        const on = index.sourceDestCheck(found.hop);
        checks.push(
          on === false
            ? { table: node.name, ok: true, message: `source/destination check is off on ${found.hop.id}` }
            : { table: node.name, ok: false, message: `source/destination check is on for ${found.hop.id} (${address}): EC2 drops its pods' packets; run apply` },
        );
      }
    }
    return checks;
  }

  readonly listing = {
    columns: ["ROUTE_TABLE", "DEST_CIDR", "NEXT_HOP", "STATE"],
    row: (table: TableRef, route: ObservedRoute): string[] => [
      table.id,
      route.destination,
      route.nextHop ? `${route.nextHopLabel} (${route.nextHop})` : (route.nextHopLabel ?? ""),
      String(route.details?.state ?? ""),
    ],
  };

  async close(): Promise<void> {
    this.ec2.close();
  }
}
