/**
 * `--target hetzner`: pod routes in a Hetzner Cloud network's route list (`routes` of
 * `GET /networks/{id}`), one `shared` table, the network, holding every node's routes. A route's gateway
 * is the node's private IP on that network; routes are written one action at a time (`add_route`,
 * `delete_route`), since the API runs one action per network and refuses a second while one runs.
 *
 * Hetzner routes carry no tags, so ownership is inferred as on AWS, as narrowly as possible: a route is
 * podroutes' only when its destination lies inside the cluster CIDR AND its gateway is a cluster node
 * (an inventory node's internal IP, or the private IP of a server the cluster's label selector picks),
 * or it is stale: inside the cluster CIDR through an IP no server on the network holds any more (what a
 * deleted node leaves; stale routes filling the 100 a network holds is hcloud-cloud-controller-manager
 * #734). Two clusters on one network have disjoint cluster CIDRs and their own servers, so neither ever
 * touches the other's routes. Every other route is never touched; a foreign route on one of our
 * destinations is a conflict for the planner to report.
 *
 * The API has no replace: a changed gateway is a delete then an add (Hetzner refuses two routes on one
 * destination), and a failed add after the delete says so.
 */
import { AdaptiveConcurrency, writeEachChange } from "../each-change.js";
import { addressInCidr, cidrContains, cidrsOverlap, clusterRanges, parseAddress, parseCidr, sortByCidr, type Cidr, type Inventory } from "../../model.js";
import {
  HetznerActionTimeoutError,
  HetznerApiError,
  HetznerNetworkError,
  isTransient,
  type CloudServer,
  type HetznerApi,
  type Network,
  type NetworkRoute,
} from "./api.js";
import {
  TargetError,
  type Change,
  type ChangeResult,
  type Check,
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

/** Routes a Hetzner Cloud network holds at most (docs.hetzner.com, Cloud > Networks > limits). */
export const ROUTE_LIMIT = 100;
/** The share of the route limit past which `plan` warns that the network is filling up. */
const LIMIT_WARNING_SHARE = 0.8;

export interface HetznerTargetSettings {
  cluster: string;
  /** Validated cluster CIDR text. */
  clusterCIDR: string;
  /** `--network`: a name or an id. */
  network: string;
  /** Label selector of the cluster's servers: their private IPs are cluster nodes without an inventory. */
  selector: string;
}

/** Who holds an IP of the network: the servers attached to it, and which of them the selector picks. */
export interface NetworkHolders {
  /** IP (primary or alias) → the server attached to the network with it. */
  byIp: Map<string, CloudServer>;
  /** Ids of the servers the cluster's label selector picks. */
  clusterServers: Set<number>;
}

/** The holders of a network's IPs, from the servers attached to it and those the selector picks. */
export function holdersOf(networkId: number, attached: CloudServer[], selected: CloudServer[]): NetworkHolders {
  const byIp = new Map<string, CloudServer>();
  for (const server of attached) {
    for (const net of server.privateNet) {
      if (net.network !== networkId) continue;
      for (const ip of [net.ip, ...net.aliasIps]) if (!byIp.has(ip)) byIp.set(ip, server);
    }
  }
  return { byIp, clusterServers: new Set(selected.map((s) => s.id)) };
}

interface ObserveContext {
  ranges: Cidr[];
  /** The inventory's internal IPs. */
  nodeAddresses: Set<string>;
  selector: string;
  network: Network;
  holders: NetworkHolders;
}

/** Whether an IP lies in one of the network's vSwitch subnets (a dedicated server's, which no cloud server holds). */
function inVswitchSubnet(network: Network, ip: string): boolean {
  const address = parseAddress(ip);
  if (!address) return false;
  return network.subnets.some((subnet) => {
    const range = parseCidr(subnet.ipRange);
    return subnet.type === "vswitch" && range.ok && addressInCidr(address, range.cidr);
  });
}

/**
 * One route of the network as podroutes sees it; `inCluster` when its destination lies inside the
 * cluster CIDR (only those, and owned ones, are a table's business). Pure.
 */
export function observeRoute(route: NetworkRoute, context: ObserveContext): { observed: ObservedRoute; inCluster: boolean } | undefined {
  const parsed = parseCidr(route.destination);
  if (!parsed.ok) return undefined;
  const destination = parsed.cidr;
  const inCluster = context.ranges.some((range) => cidrContains(range, destination));
  const holder = context.holders.byIp.get(route.gateway);
  const named = context.nodeAddresses.has(route.gateway);
  const selected = holder !== undefined && context.holders.clusterServers.has(holder.id);
  // A gateway no server holds, outside every vSwitch subnet, carries nothing: its node was deleted.
  const stale = holder === undefined && !inVswitchSubnet(context.network, route.gateway);
  const owned = inCluster && (named || selected || stale);
  const unattributed =
    inCluster && !owned && context.nodeAddresses.size === 0
      ? `its gateway ${route.gateway}${holder ? ` (server ${holder.name})` : ""} is not a server labelled ${context.selector}, and no --nodes names the cluster's nodes: name them with --nodes (a file, kubernetes or hetzner), or label their servers, to have podroutes manage it`
      : undefined;
  const broken = owned && stale && !named;
  return {
    inCluster,
    observed: {
      destination: destination.text,
      nextHop: route.gateway,
      nextHopLabel: route.gateway,
      owned,
      ...(unattributed ? { unattributed } : {}),
      ...(broken ? { healthy: false } : {}),
      details: {
        network: context.network.name,
        gateway: route.gateway,
        ...(holder ? { server: holder.name, serverId: holder.id } : {}),
        ...(broken ? { reason: `no server on network ${context.network.name} holds ${route.gateway}` } : {}),
      },
    },
  };
}

/** The network's route count once `changes` are made: creates add one, deletes remove one, replaces neither. */
export function routeCountAfter(count: number, changes: Change[]): number {
  return changes.reduce((n, change) => n + (change.action === "create" ? 1 : change.action === "delete" ? -1 : 0), count);
}

/**
 * The creates that do not fit in the network once its deletes are made: the first ones (in the plan's
 * destination order) fill the room left under the limit, the rest are refused. Pure.
 */
export function createsPastLimit(network: string, count: number, changes: Change[], limit = ROUTE_LIMIT): RefusedChange[] {
  let held = routeCountAfter(count, changes.filter((change) => change.action === "delete"));
  const refused: RefusedChange[] = [];
  for (const change of changes) {
    if (change.action !== "create") continue;
    if (held < limit) {
      held++;
      continue;
    }
    refused.push({
      table: network,
      change,
      limit: "route-limit",
      message: `network ${network} is at Hetzner's limit of ${limit} routes per network: no room for ${change.route.destination}`,
    });
  }
  return refused;
}

/** What one run of the target looked up; it goes with the run. */
interface HetznerRunState {
  inventory: Inventory;
  /** The network, found by `tables` from its name or id. */
  network?: Promise<Network>;
  /** That lookup's read of the network, taken by the first open for a plan so a plan reads it once. */
  unread?: Network;
  /** The servers on the network (all, and the selector's), looked up once a run. */
  holders?: Promise<NetworkHolders>;
}

export class HetznerTarget implements Target {
  readonly name = "hetzner";
  readonly locksTables = false;
  private readonly ranges: Cidr[];
  /** One action per network at a time: the API refuses a second while one runs, so writes are serial. */
  readonly concurrency = new AdaptiveConcurrency(1, 1);

  constructor(
    private readonly api: HetznerApi,
    private readonly settings: HetznerTargetSettings,
  ) {
    this.ranges = clusterRanges(settings.clusterCIDR);
  }

  private fail(message: string, error?: unknown, table?: string): TargetError {
    return new TargetError(this.name, error === undefined ? message : `${message}: ${errorText(error)}`, { cause: error, ...(table ? { table } : {}) });
  }

  begin(inventory: Inventory): TargetRun {
    const run: HetznerRunState = { inventory };
    return {
      tables: async () => {
        run.unread = await this.networkOf(run);
        return [{ id: run.unread.name, scope: "shared" as const }];
      },
      open: (table, options) => this.open(table, run, options.write),
      verify: (context) => this.verify(run, context),
    };
  }

  /** The network named by --network, looked up once a run. */
  private networkOf(run: HetznerRunState): Promise<Network> {
    if (!run.network) {
      const { network } = this.settings;
      const found = this.api.findNetwork(network).then(
        (found) => {
          if (!found) throw this.fail(`no network ${JSON.stringify(network)} (by ${/^\d+$/.test(network) ? "id" : "name"}); see \`hcloud network list\``);
          return found;
        },
        (error: unknown) => {
          throw this.fail(`cannot look up network ${network}`, error);
        },
      );
      found.catch(() => {
        if (run.network === found) run.network = undefined; // let the next call try again
      });
      run.network = found;
    }
    return run.network;
  }

  private holdersOf(run: HetznerRunState, network: Network): Promise<NetworkHolders> {
    if (!run.holders) {
      const ready = Promise.all([this.api.serversOnNetwork(network.id), this.api.serversOnNetwork(network.id, this.settings.selector)]).then(
        ([attached, selected]) => holdersOf(network.id, attached.map((a) => a.server), selected.map((s) => s.server)),
        (error: unknown) => {
          throw this.fail(`cannot list the servers on network ${network.name}`, error, network.name);
        },
      );
      ready.catch(() => {
        if (run.holders === ready) run.holders = undefined;
      });
      run.holders = ready;
    }
    return run.holders;
  }

  /** Every owned route of the network and every foreign one inside the cluster CIDR. */
  private observe(network: Network, holders: NetworkHolders, inventory: Inventory): ObservedRoute[] {
    const nodeAddresses = new Set(inventory.nodes.flatMap((node) => node.internalIPs));
    const context: ObserveContext = { ranges: this.ranges, nodeAddresses, selector: this.settings.selector, network, holders };
    const out: ObservedRoute[] = [];
    for (const route of network.routes) {
      const seen = observeRoute(route, context);
      if (seen && (seen.observed.owned || seen.inCluster)) out.push(seen.observed);
    }
    return sortByCidr(out, (route) => route.destination);
  }

  /** The network as it is now: a write checks its plan against this read and writes each change from it. */
  private async read(run: HetznerRunState, table: TableRef): Promise<Network> {
    const known = await this.networkOf(run);
    try {
      return await this.api.getNetwork(known.id);
    } catch (error) {
      throw this.fail("cannot read the network", error, table.id);
    }
  }

  /** A write reads the network afresh; a plan may use the read `tables` made. */
  private async open(table: TableRef, run: HetznerRunState, write: boolean): Promise<OpenTable> {
    const unread = run.unread;
    run.unread = undefined;
    const network = unread && !write ? unread : await this.read(run, table);
    const holders = await this.holdersOf(run, network);
    return {
      routes: this.observe(network, holders, run.inventory),
      review: async (diff) => this.review(diff, network, holders),
      write: async (changes, _actions, context) => ({ results: await this.write(network, changes, context), actions: [] }),
      release: async () => {},
    };
  }

  /** The route limit after the diff, and next hops the network cannot route to. */
  private review(diff: TableDiff, network: Network, holders: NetworkHolders): Review {
    const review: Review = { warnings: [], refusals: [], actions: [] };
    const count = network.routes.length;
    const after = routeCountAfter(count, diff.changes);
    if (after > ROUTE_LIMIT && after > count) {
      review.refusals.push(
        `hetzner ${network.name}: would hold ${after} routes (it holds ${count}, every route counts), over Hetzner's limit of ${ROUTE_LIMIT} routes per network, which cannot be raised: ` +
          `delete routes the network no longer needs, or route pods with host routes on the nodes (--target ssh) for a cluster this large`,
      );
      review.refused = createsPastLimit(network.name, count, diff.changes);
    } else if (after > count && after > ROUTE_LIMIT * LIMIT_WARNING_SHARE) {
      review.warnings.push(`hetzner ${network.name}: will hold ${after} of at most ${ROUTE_LIMIT} routes`);
    }
    const subnets = network.subnets.flatMap((subnet) => {
      const range = parseCidr(subnet.ipRange);
      return range.ok ? [{ subnet, range: range.cidr }] : [];
    });
    const existing = network.routes.flatMap((route) => {
      const range = parseCidr(route.destination);
      return range.ok ? [{ route, range: range.cidr }] : [];
    });
    const warned = new Set<string>();
    for (const change of diff.changes) {
      if (change.action === "delete") continue;
      const { route } = change;
      if (route.family === 6) {
        review.warnings.push(`hetzner ${network.name}: node ${route.node}'s pod CIDR ${route.destination} is IPv6: Hetzner Cloud networks route IPv4 only, so it will not be written`);
        continue;
      }
      const destination = parseCidr(route.destination);
      const overlapped = destination.ok ? subnets.find(({ range }) => cidrsOverlap(range, destination.cidr)) : undefined;
      if (overlapped) review.warnings.push(`hetzner ${network.name}: node ${route.node}'s pod CIDR ${route.destination} overlaps the network's subnet ${overlapped.subnet.ipRange}: Hetzner refuses the route`);
      const wider = destination.ok ? existing.find((r) => r.range.text !== destination.cidr.text && cidrsOverlap(r.range, destination.cidr)) : undefined;
      if (wider) review.warnings.push(`hetzner ${network.name}: node ${route.node}'s pod CIDR ${route.destination} overlaps the route to ${wider.route.destination} via ${wider.route.gateway}: Hetzner refuses overlapping routes`);
      if (warned.has(route.nextHop) || holders.byIp.has(route.nextHop) || inVswitchSubnet(network, route.nextHop)) continue;
      warned.add(route.nextHop);
      review.warnings.push(`hetzner: node ${route.node}: no server on network ${network.name} holds ${route.nextHop}; its routes will carry nothing (attach the server to the network at that IP)`);
    }
    return review;
  }

  /** Each change checked against the network as read when it was opened for this write, one action at a time. */
  private async write(network: Network, changes: Change[], context: WriteContext): Promise<ChangeResult[]> {
    const count = network.routes.length;
    const after = routeCountAfter(count, changes);
    if (after > ROUTE_LIMIT && after > count) {
      const error = `refused before any call: the network would hold ${after} routes, over Hetzner's limit of ${ROUTE_LIMIT}`;
      return changes.map((change) => ({ change, ok: false, error }));
    }
    const byDestination = new Map(network.routes.map((route) => [canonicalCidr(route.destination), route]));
    // Deletes first: they make room under the route limit for the creates.
    const ordered = [...changes.filter((c) => c.action === "delete"), ...changes.filter((c) => c.action !== "delete")];
    return writeEachChange(
      ordered,
      { table: network.name, concurrency: this.concurrency, progress: context.progress, errorText, ...(context.onResult ? { onResult: context.onResult } : {}) },
      (change) => this.writeOne(network, change, byDestination),
    );
  }

  /** Carries out one change; returns why it was not attempted, or throws the API's error. */
  private async writeOne(network: Network, change: Change, now: Map<string, NetworkRoute>): Promise<string | undefined> {
    const destination = change.action === "delete" ? change.current.destination : change.route.destination;
    const present = now.get(destination);
    if (change.action !== "delete" && change.route.family === 6) return `Hetzner Cloud networks route IPv4 only: ${destination} not written`;
    if (change.action === "create") {
      if (present) {
        if (present.gateway === change.route.nextHop) return undefined; // done by an earlier, interrupted run
        return `a route to ${destination} via ${present.gateway} appeared since the plan; re-run plan`;
      }
      return this.add(network, { destination, gateway: change.route.nextHop });
    }
    const planned = String(change.current.details?.gateway ?? change.current.nextHop);
    if (!present) {
      if (change.action === "delete") return undefined; // already gone: the goal is met
      return `the route to ${destination} disappeared since the plan; re-run plan (it will create it)`;
    }
    if (present.gateway !== planned) return `the route to ${destination} now goes via ${present.gateway}, not ${planned}, since the plan; re-run plan`;
    const removed = await this.remove(network, present);
    if (removed !== undefined || change.action === "delete") return removed;
    // Replace: the API has no replace and refuses two routes on one destination, so delete, then add.
    try {
      const added = await this.add(network, { destination, gateway: change.route.nextHop });
      if (added === undefined) return undefined;
      return `the route via ${planned} was deleted, but the one via ${change.route.nextHop} was not added: ${added}; re-run apply to create it`;
    } catch (error) {
      return `the route via ${planned} was deleted, but the one via ${change.route.nextHop} was not added: ${errorText(error)}; re-run apply to create it`;
    }
  }

  /**
   * add_route, followed to its end. An answer lost or an action still running at the deadline leaves the
   * outcome unknown: the network is read, and when the route is not there (yet: its action may still be
   * running) the add is sent once more. The API waits that out as a busy network, and refuses a second
   * identical route as overlapping, so a refusal is settled by reading the network again.
   */
  private async add(network: Network, route: NetworkRoute, resent = false): Promise<string | undefined> {
    try {
      await this.api.addRoute(network.id, route);
      return undefined;
    } catch (error) {
      const refused = error instanceof HetznerApiError && error.code === "invalid_input";
      if (!uncertain(error) && !refused) throw error;
      const found = await this.routeNow(network.id, route.destination);
      if (found?.gateway === route.gateway) return undefined;
      if (found) return `${errorText(error)}: the network holds a route to ${route.destination} via ${found.gateway} since the plan; re-run plan`;
      if (refused || resent) throw error;
      return this.add(network, route, true);
    }
  }

  /** delete_route, followed to its end; a lost answer is settled as for add: read, then sent once more (not_found: gone). */
  private async remove(network: Network, route: NetworkRoute, resent = false): Promise<string | undefined> {
    try {
      await this.api.deleteRoute(network.id, route); // false: already gone, the goal is met
      return undefined;
    } catch (error) {
      if (!uncertain(error)) throw error;
      const found = await this.routeNow(network.id, route.destination);
      if (!found) return undefined;
      if (resent || found.gateway !== route.gateway) throw error;
      return this.remove(network, route, true);
    }
  }

  private async routeNow(networkId: number, destination: string): Promise<NetworkRoute | undefined> {
    const network = await this.api.getNetwork(networkId);
    return network.routes.find((route) => canonicalCidr(route.destination) === destination);
  }

  private async verify(run: HetznerRunState, context: { progress: Progress }): Promise<Check[]> {
    const table = { id: (await this.networkOf(run)).name, scope: "shared" as const };
    const network = await this.read(run, table);
    const holders = await this.holdersOf(run, network);
    const observed = this.observe(network, holders, run.inventory);
    const checks: Check[] = [];
    const stale = observed.filter((route) => route.healthy === false);
    checks.push(
      stale.length
        ? { table: network.name, ok: false, message: `stale routes (no server on the network holds their gateway): ${stale.map((r) => `${r.destination} via ${r.nextHop}`).join(", ")}; run apply` }
        : { table: network.name, ok: true, message: "no stale routes in the cluster CIDR" },
    );
    const count = network.routes.length;
    if (count > ROUTE_LIMIT * LIMIT_WARNING_SHARE) {
      checks.push({ table: network.name, ok: true, severity: "warning", message: `the network holds ${count} of at most ${ROUTE_LIMIT} routes` });
    }
    for (const node of run.inventory.nodes) {
      if (!node.podCIDRs.length) continue;
      const ip = node.internalIPs.find((address) => !address.includes(":"));
      if (!ip) {
        checks.push({ table: node.name, ok: false, message: `no IPv4 internal IP: Hetzner networks route IPv4 only` });
        continue;
      }
      const holder = holders.byIp.get(ip);
      checks.push(
        holder
          ? { table: node.name, ok: true, message: `${ip} is server ${holder.name}'s IP on network ${network.name}` }
          : inVswitchSubnet(network, ip)
            ? { table: node.name, ok: true, severity: "warning", message: `${ip} lies in a vSwitch subnet of network ${network.name}: not checked` }
            : { table: node.name, ok: false, message: `no server on network ${network.name} holds ${ip}: its pods' routes carry nothing` },
      );
    }
    context.progress({ table: network.name, done: 1, total: 1, message: "verify" });
    return checks;
  }

  readonly listing = {
    columns: ["NETWORK", "DESTINATION", "GATEWAY", "SERVER"],
    row: (table: TableRef, route: ObservedRoute): string[] => [
      table.id,
      route.destination,
      route.nextHopLabel ?? "",
      String(route.details?.server ?? (route.healthy === false ? "(none: stale)" : "")),
    ],
  };

  async close(): Promise<void> {}
}

/** A destination as the plan spells it (canonical CIDR text), or as the API gave it when it does not parse. */
function canonicalCidr(text: string): string {
  const parsed = parseCidr(text);
  return parsed.ok ? parsed.cidr.text : text;
}

/** The API's own words for an error. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A write whose outcome is unknown: its answer lost, or its action still running at the deadline. */
function uncertain(error: unknown): boolean {
  return error instanceof HetznerNetworkError || error instanceof HetznerActionTimeoutError || isTransient(error);
}
