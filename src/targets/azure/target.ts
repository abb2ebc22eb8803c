/**
 * `--target azure`: pod routes in Azure route tables (user-defined routes), one `shared` table per
 * `--route-table` of `--resource-group`, each holding every node's routes as `nextHopType:
 * VirtualAppliance` to the node's private IP, and IP forwarding on each node's network interface (without
 * it Azure drops the packets a NIC receives for another address: the pods').
 *
 * Every change of a table is ONE `PUT` of the whole table with `If-Match` on the ETag it was read with:
 * the changes of a run land together or not at all, whatever their number, where per-route calls meet
 * `RetryableErrorDueToAnotherOperation` (kubernetes #88151) and take a long-running operation each. A
 * 412 (someone else wrote the table since the read) is never a success (cloud-provider-azure #11003):
 * the table is read again, the changes re-planned against it (their routes kept, a change that no longer
 * fits refused), and written again; only an operation that ended `Succeeded` reports the changes done.
 *
 * Azure routes carry no tags, so ownership is inferred, as on AWS: a route is podroutes' only when its
 * destination lies inside the cluster CIDR AND its next hop is a cluster node (an inventory node's
 * address, or a NIC of a VM tagged `k8s-azure-cluster-name=<cluster>`), or an address no network interface of the subscription holds any more (what a deleted
 * node's VM leaves, listed as unhealthy). Everything else — another cluster's routes, a firewall's
 * default route, the VirtualNetworkGateway routes — is never touched, and on one of our destinations is a
 * conflict for the planner to report. Route names follow cloud-provider-azure's (`NODE____10200100`,
 * its dual-stack form, unique per route), and a route keeps its name when replaced, so a table the cloud
 * controller manager wrote goes on as it is.
 */
import { createHash } from "node:crypto";
import pLimit from "p-limit";
import { cidrContains, clusterRanges, parseCidr, sortByCidr, type Cidr, type Inventory, type Route } from "../../model.js";
import { armErrorCode, armErrorText, armStatus, parseResourceId, type ArmApi, type ArmNic, type ArmRoute, type ArmRouteTable } from "./arm.js";
import {
  TargetError,
  type ActionResult,
  type Change,
  type ChangeResult,
  type Check,
  type ExtraAction,
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

/** Azure's routes-per-table limit. */
export const AZURE_ROUTE_LIMIT = 400;
/** The share of the route limit past which `plan` warns that a table is filling up. */
const LIMIT_WARNING_SHARE = 0.8;
/** Writes of one table after a 412 (each a fresh read and plan) before giving up. */
const MAX_PRECONDITION_RETRIES = 5;
/** Writes of one table refused as busy (another operation on it), after the SDK's own retries. */
const MAX_BUSY_RETRIES = 6;
/** Azure's route name: 1-80 word characters, `.`, `-`, `_`; starts with a word character, ends with one or `_`. */
const ROUTE_NAME = /^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,78}[a-zA-Z0-9_])?$/;
const MAX_NAME = 80;
/** cloud-provider-azure's separator between node name and CIDR (consts.RouteNameSeparator). */
export const ROUTE_NAME_SEPARATOR = "____";

export interface AzureTargetSettings {
  cluster: string;
  clusterCIDR: string;
  resourceGroup: string;
  routeTables: string[];
  routeLimit: number;
  /** NIC updates (IP forwarding) in flight at once (--max-in-flight); the SDK waits out ARM's 429s. */
  maxInFlight: number;
  /** Pause before re-trying a write refused as busy (tests: short). */
  busyBackoffMs?: number;
}

/**
 * cloud-provider-azure's route name for a node's pod CIDR (mapNodeNameToRouteName, dual-stack form):
 * `NODE____CIDR` with `:`, `.` and `/` stripped from the CIDR. A name past Azure's 80 characters keeps
 * its CIDR part and a hash of the node name.
 */
export function azureRouteName(node: string, destination: string): string {
  const cidr = destination.replace(/[:./]/g, "");
  const name = `${node}${ROUTE_NAME_SEPARATOR}${cidr}`;
  if (name.length <= MAX_NAME && ROUTE_NAME.test(name)) return name;
  const hash = createHash("sha256").update(node).digest("hex").slice(0, 8);
  const room = MAX_NAME - ROUTE_NAME_SEPARATOR.length - cidr.length - hash.length - 1;
  const head = node.replace(/[^a-zA-Z0-9_.-]/g, "-").replace(/^[^a-zA-Z0-9]+/, "").slice(0, Math.max(0, room));
  return `${head ? `${head}-` : "n"}${hash}${ROUTE_NAME_SEPARATOR}${cidr}`;
}

/** The canonical destination of an ARM route, or undefined when it is no CIDR (a service tag). */
function destinationOf(route: ArmRoute): Cidr | undefined {
  if (!route.addressPrefix) return undefined;
  const parsed = parseCidr(route.addressPrefix);
  return parsed.ok ? parsed.cidr : undefined;
}

/** What ownership is judged from: the cluster ranges, the inventory's addresses, and the subscription's NIC addresses. */
export interface OwnershipContext {
  ranges: Cidr[];
  nodeAddresses: Set<string>;
  /** Every private IP a NIC of the subscription holds; undefined when unknown (then no route counts as dangling). */
  nicAddresses?: Set<string>;
  /** The private IPs of the NICs of VMs tagged as the cluster's (`k8s-azure-cluster-name=<cluster>`). */
  clusterAddresses?: Set<string>;
}

/** One ARM route as podroutes sees it, and whether it is inside the cluster CIDR. */
export function observeRoute(route: ArmRoute, context: OwnershipContext): { observed: ObservedRoute; inCluster: boolean } | undefined {
  const destination = destinationOf(route);
  if (!destination) return undefined;
  const inCluster = context.ranges.some((range) => cidrContains(range, destination));
  const appliance = route.nextHopType === "VirtualAppliance" && !!route.nextHopIpAddress;
  const hop = appliance ? canonical(route.nextHopIpAddress!) : undefined;
  const clusterNode = hop !== undefined && (context.nodeAddresses.has(hop) || context.clusterAddresses?.has(hop) === true);
  // A next hop no NIC holds: the node's VM is gone and the route carries nothing (an AWS blackhole).
  const dangling = hop !== undefined && !clusterNode && context.nicAddresses !== undefined && !context.nicAddresses.has(hop);
  const owned = inCluster && (clusterNode || dangling);
  return {
    inCluster,
    observed: {
      destination: destination.text,
      ...(hop && !dangling ? { nextHop: hop } : {}),
      nextHopLabel: hop ?? route.nextHopType ?? "",
      owned,
      ...(route.name ? { name: route.name } : {}),
      ...(dangling ? { healthy: false } : {}),
      details: {
        nextHopType: route.nextHopType ?? "",
        ...(route.nextHopIpAddress ? { nextHopIpAddress: route.nextHopIpAddress } : {}),
        provisioningState: route.provisioningState ?? "",
        ...(dangling ? { reason: `no network interface of the subscription holds ${hop}` } : {}),
      },
    },
  };
}

function canonical(address: string): string {
  const parsed = parseCidr(address.includes(":") ? `${address}/128` : `${address}/32`);
  return parsed.ok ? parsed.cidr.text.replace(/\/\d+$/, "") : address;
}

/** What became of one change when a table's whole route set was planned: written with the table, or why not. */
export interface PlannedChange {
  change: Change;
  /** Set: the change is not in the PUT (the table no longer fits it); the reason. */
  error?: string;
  /** The table already is as the change wants (an earlier, interrupted run): done without writing. */
  alreadyDone?: boolean;
}

/**
 * The whole-table PUT planner (pure): the table's routes once `changes` are made to `current`, each
 * change checked against `current` as it is now (read after the plan, or again after a 412), and every
 * route the changes do not name kept exactly as it is. A create whose destination someone took, a
 * replace or delete whose route now points elsewhere, is left out with its reason; the others go in.
 */
export function planTableRoutes(current: ArmRoute[], changes: Change[]): { routes: ArmRoute[]; planned: PlannedChange[]; writes: number } {
  const routes = current.map((route) => ({ ...route }));
  const byDestination = new Map<string, number>();
  routes.forEach((route, i) => {
    const destination = destinationOf(route);
    if (destination) byDestination.set(destination.text, i);
  });
  const names = new Set(routes.map((r) => (r.name ?? "").toLowerCase()));
  const removed = new Set<number>();
  const planned: PlannedChange[] = [];
  let writes = 0;
  const hopOf = (route: ArmRoute) => (route.nextHopType === "VirtualAppliance" && route.nextHopIpAddress ? canonical(route.nextHopIpAddress) : (route.nextHopType ?? "?"));
  for (const change of changes) {
    const destination = change.action === "delete" ? change.current.destination : change.route.destination;
    const index = byDestination.get(destination);
    const present = index === undefined || removed.has(index) ? undefined : routes[index]!;
    if (change.action === "create") {
      if (present) {
        if (hopOf(present) === change.route.nextHop) planned.push({ change, alreadyDone: true });
        else planned.push({ change, error: `a route to ${destination} via ${hopOf(present)} (${present.name}) appeared since the plan; re-run plan` });
        continue;
      }
      let name = azureRouteName(change.route.node, destination);
      for (let n = 2; names.has(name.toLowerCase()); n++) name = `${azureRouteName(change.route.node, destination).slice(0, MAX_NAME - 4)}_${n}`;
      names.add(name.toLowerCase());
      byDestination.set(destination, routes.length);
      routes.push({ name, addressPrefix: destination, nextHopType: "VirtualAppliance", nextHopIpAddress: change.route.nextHop });
      planned.push({ change });
      writes++;
      continue;
    }
    const expected = change.current.nextHopLabel;
    if (!present) {
      if (change.action === "delete") planned.push({ change, alreadyDone: true });
      else planned.push({ change, error: `the route to ${destination} disappeared since the plan; re-run plan (it will create it)` });
      continue;
    }
    if (hopOf(present) !== expected) {
      if (change.action === "replace" && hopOf(present) === change.route.nextHop) planned.push({ change, alreadyDone: true });
      else planned.push({ change, error: `the route to ${destination} now points at ${hopOf(present)}, not ${expected}, since the plan; re-run plan` });
      continue;
    }
    if (change.action === "delete") removed.add(index!);
    // A replace keeps the route's name (the cloud controller manager's, if it wrote it): only the hop moves.
    else routes[index!] = { name: present.name, addressPrefix: present.addressPrefix, nextHopType: "VirtualAppliance", nextHopIpAddress: change.route.nextHop };
    planned.push({ change });
    writes++;
  }
  return { routes: routes.filter((_, i) => !removed.has(i)), planned, writes };
}

/** The creates past the route limit once the deletes are made, in the plan's order. */
export function createsPastLimit(table: string, used: number, changes: Change[], limit: number): RefusedChange[] {
  let room = limit - used + changes.filter((c) => c.action === "delete").length;
  const refused: RefusedChange[] = [];
  for (const change of changes) {
    if (change.action !== "create") continue;
    if (room > 0) {
      room--;
      continue;
    }
    refused.push({ table, change, limit: "route-limit", message: `route table ${table} is at its route limit of ${limit} routes (--route-limit; Azure allows ${AZURE_ROUTE_LIMIT}): no room for ${change.route.destination}` });
  }
  return refused;
}

/** What one run of the Azure target looked up. */
interface AzureRunState {
  inventory: Inventory;
  /** The subscription's NICs, listed once a run. */
  nics?: Promise<NicIndex>;
  /** NICs whose IP forwarding action a table of this run already carries. */
  claimedNics: Set<string>;
}

/** The subscription's NICs by private IP, and the addresses of the cluster's tagged VMs. */
export class NicIndex {
  readonly byAddress = new Map<string, ArmNic>();
  readonly addresses = new Set<string>();
  readonly clusterAddresses = new Set<string>();
  constructor(
    readonly nics: ArmNic[],
    /** Ids (lowercased) of the VMs tagged as the cluster's. */
    clusterVms: Set<string> = new Set(),
  ) {
    for (const nic of nics) {
      const tagged = nic.virtualMachine !== undefined && clusterVms.has(nic.virtualMachine.toLowerCase());
      for (const address of nic.addresses) {
        const text = canonical(address);
        this.addresses.add(text);
        if (tagged) this.clusterAddresses.add(text);
        if (!this.byAddress.has(text)) this.byAddress.set(text, nic);
      }
    }
  }
}

/** cloud-provider-azure's tag of a cluster's resources, which `--nodes azure` selects VMs by too. */
export const CLUSTER_TAG = "k8s-azure-cluster-name";

/** Whether a VM carries `k8s-azure-cluster-name=<cluster>` (tag names compare case-insensitively, as Azure's do). */
export function clusterTagged(tags: Record<string, string>, cluster: string): boolean {
  return Object.entries(tags).some(([key, value]) => key.toLowerCase() === CLUSTER_TAG && value === cluster);
}

export class AzureTarget implements Target {
  readonly name = "azure";
  readonly locksTables = false;
  private readonly ranges: Cidr[];
  private readonly nicLimit;

  constructor(
    private readonly arm: ArmApi,
    private readonly settings: AzureTargetSettings,
  ) {
    this.ranges = clusterRanges(settings.clusterCIDR);
    this.nicLimit = pLimit(settings.maxInFlight);
  }

  private fail(message: string, error?: unknown, table?: string): TargetError {
    return new TargetError(this.name, error === undefined ? message : `${message}: ${armErrorText(error)}`, { cause: error, ...(table ? { table } : {}) });
  }

  begin(inventory: Inventory): TargetRun {
    const run: AzureRunState = { inventory, claimedNics: new Set() };
    return {
      tables: async () => this.settings.routeTables.map((id) => ({ id, scope: "shared" as const })),
      open: (table) => this.open(table, run),
      verify: (context) => this.verify(run, context),
    };
  }

  private nicIndex(run: AzureRunState): Promise<NicIndex> {
    run.nics ??= Promise.all([this.arm.listNetworkInterfaces(), this.arm.listVirtualMachines()]).then(
      ([nics, vms]) => new NicIndex(nics, new Set(vms.filter((vm) => clusterTagged(vm.tags, this.settings.cluster)).map((vm) => vm.id.toLowerCase()))),
      (error: unknown) => {
        run.nics = undefined;
        throw this.fail("cannot list the subscription's network interfaces and VMs", error);
      },
    );
    return run.nics;
  }

  private async read(tableId: string): Promise<ArmRouteTable> {
    try {
      return await this.arm.getRouteTable(this.settings.resourceGroup, tableId);
    } catch (error) {
      if (armStatus(error) === 404) throw this.fail(`route table ${tableId} not found in resource group ${this.settings.resourceGroup} (create it, and associate it with the nodes' subnet, first)`, undefined, tableId);
      throw this.fail("cannot read the route table", error, tableId);
    }
  }

  private context(run: AzureRunState, index: NicIndex): OwnershipContext {
    const nodeAddresses = new Set(run.inventory.nodes.flatMap((node) => node.internalIPs.map(canonical)));
    return { ranges: this.ranges, nodeAddresses, nicAddresses: index.addresses, clusterAddresses: index.clusterAddresses };
  }

  private observeTable(table: ArmRouteTable, run: AzureRunState, index: NicIndex): ObservedRoute[] {
    const context = this.context(run, index);
    const out: ObservedRoute[] = [];
    for (const route of table.routes ?? []) {
      const seen = observeRoute(route, context);
      if (seen && (seen.observed.owned || seen.inCluster)) out.push(seen.observed);
    }
    return sortByCidr(out, (route) => route.destination);
  }

  private async open(table: TableRef, run: AzureRunState): Promise<OpenTable> {
    const [read, index] = await Promise.all([this.read(table.id), this.nicIndex(run)]);
    return {
      routes: this.observeTable(read, run, index),
      review: async (diff) => this.review(diff, read, index, run),
      write: async (changes, actions, context) => {
        const done = actions.length ? await this.runActions(actions, index, context) : [];
        return { results: await this.write(table.id, read, changes, context), actions: done };
      },
      release: async () => {},
    };
  }

  /** The route limit after the diff, and IP forwarding on the NICs of the next hops it routes to. */
  private review(diff: TableDiff, read: ArmRouteTable, index: NicIndex, run: AzureRunState): Review {
    const review: Review = { warnings: [], refusals: [], actions: [] };
    const { routeLimit } = this.settings;
    const used = (read.routes ?? []).length;
    const after = used + diff.changes.filter((c) => c.action === "create").length - diff.changes.filter((c) => c.action === "delete").length;
    if (after > routeLimit) {
      review.refusals.push(
        `azure ${diff.table.id}: would hold ${after} routes (it holds ${used}), over the route limit of ${routeLimit} (Azure allows ${AZURE_ROUTE_LIMIT} per route table): ` +
          `split the nodes over several route tables and subnets, or route pods with host routes on the nodes (--target ssh) for a cluster this large`,
      );
      review.refused = createsPastLimit(diff.table.id, used, diff.changes, routeLimit);
    } else if (after > used && after > routeLimit * LIMIT_WARNING_SHARE) {
      review.warnings.push(`azure ${diff.table.id}: will hold ${after} of at most ${routeLimit} routes (--route-limit)`);
    }
    if (read.provisioningState === "Failed") {
      review.warnings.push(`azure ${diff.table.id}: the route table's last operation failed (provisioningState Failed); a PUT of the whole table repairs it`);
    } else if (read.provisioningState && read.provisioningState !== "Succeeded") {
      review.warnings.push(`azure ${diff.table.id}: the route table is ${read.provisioningState} (an operation on it is not finished); the write waits for it`);
    }
    // Every next hop must forward: Azure drops packets a NIC receives for an address not its own unless
    // IP forwarding is on. A NIC several tables route to is planned once, with the first table reviewed.
    const wanted = new Map<string, Route>();
    for (const route of [...diff.unchanged, ...diff.changes.flatMap((c) => (c.action === "delete" ? [] : [c.route]))]) wanted.set(route.nextHop, route);
    for (const [address, route] of [...wanted].sort(([a], [b]) => a.localeCompare(b))) {
      const nic = index.byAddress.get(address);
      if (!nic) {
        review.warnings.push(`azure: node ${route.node}: no network interface of subscription ${this.arm.subscription} holds ${address}; its routes lead nowhere`);
        continue;
      }
      if (run.claimedNics.has(nic.id)) continue;
      run.claimedNics.add(nic.id);
      if (!nic.enableIPForwarding) review.actions.push({ table: route.node, id: nic.id, description: `enable IP forwarding on network interface ${nic.name} (${address})` });
    }
    return review;
  }

  /** Turns IP forwarding on for the NICs the review named, and only for NICs that hold a node's address. */
  private async runActions(actions: ExtraAction[], index: NicIndex, context: WriteContext): Promise<ActionResult[]> {
    const known = new Set(index.nics.map((nic) => nic.id));
    let done = 0;
    return Promise.all(
      actions.map((action) =>
        this.nicLimit(async (): Promise<ActionResult> => {
          try {
            if (!known.has(action.id) || !parseResourceId(action.id)) return { action, ok: false, error: `${action.id} is no network interface of subscription ${this.arm.subscription}: not changed` };
            await this.arm.enableIpForwarding(action.id);
            return { action, ok: true };
          } catch (error) {
            return { action, ok: false, error: armErrorText(error) };
          } finally {
            context.progress({ table: action.table, done: ++done, total: actions.length, message: action.description });
          }
        }),
      ),
    );
  }

  /**
   * One PUT of the whole table, If-Match on the ETag of the read it was planned from. A 412 reads the
   * table again and plans the same changes against it; a busy table (another operation on it) is tried
   * again after a pause. Every change's result is known only once the PUT's operation ended.
   */
  private async write(tableId: string, read: ArmRouteTable, changes: Change[], context: WriteContext): Promise<ChangeResult[]> {
    const results = new Map<Change, ChangeResult>();
    const settle = (result: ChangeResult) => {
      results.set(result.change, result);
      context.onResult?.(result);
    };
    let table = read;
    let preconditionFailures = 0;
    let busy = 0;
    let pending = changes;
    for (;;) {
      const { routes, planned, writes } = planTableRoutes(table.routes ?? [], pending);
      for (const p of planned) {
        if (p.error !== undefined) settle({ change: p.change, ok: false, error: p.error });
        else if (p.alreadyDone) settle({ change: p.change, ok: true });
      }
      const toWrite = planned.filter((p) => p.error === undefined && !p.alreadyDone).map((p) => p.change);
      if (writes === 0) break;
      if (routes.length > this.settings.routeLimit) {
        const error = `refused before any call: the table would hold ${routes.length} routes, over the route limit of ${this.settings.routeLimit} (--route-limit)`;
        for (const change of toWrite) settle({ change, ok: false, error });
        break;
      }
      context.progress({ table: tableId, done: 0, total: changes.length, message: `PUT route table (${routes.length} routes)` });
      try {
        await this.arm.putRouteTable(this.settings.resourceGroup, tableId, putBody(table, routes), table.etag ?? "*");
        for (const change of toWrite) settle({ change, ok: true });
        break;
      } catch (error) {
        const status = armStatus(error);
        const code = armErrorCode(error);
        const retryBusy = code === "RetryableErrorDueToAnotherOperation" || code === "AnotherOperationInProgress";
        if ((status === 412 && ++preconditionFailures <= MAX_PRECONDITION_RETRIES) || (retryBusy && ++busy <= MAX_BUSY_RETRIES)) {
          if (retryBusy) await new Promise((resolve) => setTimeout(resolve, (this.settings.busyBackoffMs ?? 2000) * busy));
          // Someone else wrote the table since our read (412), or it was busy: read it again and plan the
          // changes not settled yet against what it holds now; their routes stay as they are.
          try {
            table = await this.arm.getRouteTable(this.settings.resourceGroup, tableId);
          } catch (readError) {
            const text = `the table changed since it was read (${armErrorText(error)}), and reading it again failed: ${armErrorText(readError)}; nothing was written`;
            for (const change of toWrite) settle({ change, ok: false, error: text });
            break;
          }
          pending = toWrite;
          continue;
        }
        const text =
          status === 412
            ? `the table changed between each read and write ${MAX_PRECONDITION_RETRIES + 1} times (HTTP 412, If-Match); nothing of this change was written; re-run`
            : `${armErrorText(error)}; the route table PUT carrying this change did not succeed`;
        for (const change of toWrite) settle({ change, ok: false, error: text });
        break;
      }
    }
    context.progress({ table: tableId, done: changes.length, total: changes.length });
    return changes.map((change) => results.get(change) ?? { change, ok: false, error: "not written (internal: no result)" });
  }

  private async verify(run: AzureRunState, context: { progress: Progress }): Promise<Check[]> {
    const checks: Check[] = [];
    const index = await this.nicIndex(run);
    let done = 0;
    for (const tableId of this.settings.routeTables) {
      const table = await this.read(tableId);
      const observed = this.observeTable(table, run, index);
      const dangling = observed.filter((r) => r.healthy === false);
      checks.push(
        dangling.length
          ? { table: tableId, ok: false, message: `routes to addresses no network interface holds: ${dangling.map((r) => `${r.destination} via ${r.nextHopLabel}`).join(", ")}` }
          : { table: tableId, ok: true, message: "every route in the cluster CIDR leads to a network interface" },
      );
      if (!(table.subnets ?? []).length) checks.push({ table: tableId, ok: false, severity: "warning", message: `route table ${tableId} is associated with no subnet: its routes apply nowhere` });
      context.progress({ table: tableId, done: ++done, total: this.settings.routeTables.length, message: "verify" });
    }
    for (const node of run.inventory.nodes) {
      for (const address of node.internalIPs.map(canonical)) {
        const nic = index.byAddress.get(address);
        if (!nic) {
          checks.push({ table: node.name, ok: false, message: `no network interface of subscription ${this.arm.subscription} holds ${address}` });
          continue;
        }
        checks.push(
          nic.enableIPForwarding
            ? { table: node.name, ok: true, message: `IP forwarding is on for ${nic.name}` }
            : { table: node.name, ok: false, message: `IP forwarding is off on ${nic.name} (${address}): Azure drops its pods' packets; run apply` },
        );
      }
    }
    return checks;
  }

  /** The columns of `az network route-table route list -o table`, with the table. */
  readonly listing = {
    columns: ["ROUTE_TABLE", "NAME", "ADDRESS_PREFIX", "NEXT_HOP_TYPE", "NEXT_HOP_IP", "STATE"],
    row: (table: TableRef, route: ObservedRoute): string[] => [
      table.id,
      route.name ?? "",
      route.destination,
      String(route.details?.nextHopType ?? ""),
      String(route.details?.nextHopIpAddress ?? ""),
      route.healthy === false ? "dangling" : String(route.details?.provisioningState ?? ""),
    ],
  };

  async close(): Promise<void> {
    this.arm.close();
  }
}

/** The PUT body: the table as read (location, tags, settings), with the planned routes. */
function putBody(table: ArmRouteTable, routes: ArmRoute[]): ArmRouteTable {
  return {
    ...(table.location ? { location: table.location } : {}),
    ...(table.tags ? { tags: table.tags } : {}),
    ...(table.disableBgpRoutePropagation !== undefined ? { disableBgpRoutePropagation: table.disableBgpRoutePropagation } : {}),
    ...(table.disablePeeringRoute !== undefined ? { disablePeeringRoute: table.disablePeeringRoute } : {}),
    routes: routes.map((r) => ({
      name: r.name,
      addressPrefix: r.addressPrefix,
      nextHopType: r.nextHopType,
      ...(r.nextHopIpAddress ? { nextHopIpAddress: r.nextHopIpAddress } : {}),
    })),
  };
}
