/**
 * `--target openstack`: pod routes as extra routes of one Neutron router (`--router NAME|ID`), one
 * `shared` table holding every node's routes, each `{destination: POD_CIDR, nexthop: NODE_IP}`, the
 * node's IP on one of the router's subnets (Neutron refuses a nexthop elsewhere).
 *
 * Extra routes carry no tags, so ownership is inferred as on AWS: a route is podroutes' only when its
 * destination lies inside the cluster CIDR AND its nexthop is a cluster node (an inventory node's IP, or
 * the port of a server carrying the metadata key `kubernetes.io/cluster/<cluster>`), or its nexthop is
 * held by no port any more (a deleted node's route, which blackholes the range). Every other route is
 * never touched; on one of our destinations it is a conflict for the planner. Two clusters on one
 * router have their own cluster CIDRs, so neither touches the other's routes.
 *
 * Writes: with the `extraroute-atomic` extension, one `add_extraroutes` call for every route to add
 * and one `remove_extraroutes` for every route to remove (a replace adds its new route first, so the
 * range is never unrouted, unless the router's route quota has no room for both at once). Without it,
 * the whole list in one `PUT /routers/{id}`, guarded against lost updates: computed from the list as
 * read, written with `If-Match: revision_number=N` (the `revision-if-match` extension), re-read and
 * recomputed on a 412, and checked in the answer: every route another writer holds is still there.
 *
 * Port security: Neutron drops packets from a port whose source address is not the port's own, so
 * each node's port must list its pod CIDR in `allowed_address_pairs`. That is an extra action of the
 * review; podroutes only ever adds pairs (never removes or changes one, its own included), each write
 * of a port guarded by its revision so that a pair someone adds meanwhile is kept.
 */
import { AdaptiveConcurrency } from "../each-change.js";
import { cidrContains, clusterRanges, parseCidr, sortByCidr, type Cidr, type Inventory } from "../../model.js";
import { isRevisionConflict, openstackErrorText, type AddressPair, type ExtraRoute, type OpenStackApi, type Port, type Router } from "./client.js";
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

/** Neutron's default `max_routes`. */
export const DEFAULT_ROUTE_LIMIT = 30;
/** The share of the route limit past which `plan` warns that the router is filling up. */
const LIMIT_WARNING_SHARE = 0.8;
/** Whole-list writes tried again after a 412 before giving up (each with a fresh read). */
const REVISION_ATTEMPTS = 5;

export interface OpenStackTargetSettings {
  cluster: string;
  clusterCIDR: string;
  /** `--router`: a name or an id. */
  router: string;
  /** Routes the router may hold in all (Neutron's max_routes). */
  routeLimit: number;
  /** Never use the atomic calls even when listed (`--whole-list`), for routers behind an old Neutron's policy. */
  wholeList?: boolean;
  /** Ceiling of the port writes in flight at once; the limit adapts below it. */
  maxInFlight: number;
  /** Where that limit starts (default: the slow start's INITIAL_IN_FLIGHT). */
  initialInFlight?: number;
}

export function clusterMetadataKey(cluster: string): string {
  return `kubernetes.io/cluster/${cluster}`;
}

/** The routers' networks as one run found them: every port on them by fixed IP. */
export class PortIndex {
  readonly byIp = new Map<string, Port>();
  constructor(
    readonly routerPorts: Port[],
    ports: Port[],
  ) {
    for (const port of ports) for (const fixed of port.fixedIps) if (!this.byIp.has(fixed.ipAddress)) this.byIp.set(fixed.ipAddress, port);
  }
  get networkIds(): Set<string> {
    return new Set(this.routerPorts.map((p) => p.networkId));
  }
}

/** Whether a port's pairs already let `cidr` through: a pair equal to or containing it, or no port security at all. */
export function pairCovers(port: Port, cidr: string): boolean {
  if (!port.portSecurity) return true;
  const wanted = parseCidr(cidr);
  if (!wanted.ok) return false;
  return port.allowedAddressPairs.some((pair) => {
    if (pair.mac_address && pair.mac_address !== port.macAddress) return false;
    const text = pair.ip_address.includes("/") ? pair.ip_address : `${pair.ip_address}/${pair.ip_address.includes(":") ? 128 : 32}`;
    const parsed = parseCidr(text);
    return parsed.ok && cidrContains(parsed.cidr, wanted.cidr);
  });
}

/** The pairs a port holds with `add` appended, those already covered left out (pure). */
export function pairsWith(port: Port, add: string[]): AddressPair[] {
  const out = [...port.allowedAddressPairs];
  for (const cidr of add) {
    if (pairCovers({ ...port, allowedAddressPairs: out }, cidr)) continue;
    out.push({ ip_address: cidr, mac_address: port.macAddress });
  }
  return out;
}

const sameRoute = (a: ExtraRoute, b: ExtraRoute) => a.destination === b.destination && a.nexthop === b.nexthop;

/** What a set of changes asks of a router as it is now (pure): the routes to add and remove, and the changes that need neither. */
export interface Edit {
  add: ExtraRoute[];
  remove: ExtraRoute[];
  /** Changes already met by the router (done by an earlier, interrupted run, or by someone else). */
  done: Change[];
  /** Changes not written, and why. */
  failed: { change: Change; error: string }[];
  /** The changes the add and remove carry out. */
  written: Change[];
}

/** Canonical form of a route as the router holds it (Neutron stores canonical CIDRs). */
function canonical(route: ExtraRoute): ExtraRoute {
  const parsed = parseCidr(route.destination);
  return { destination: parsed.ok ? parsed.cidr.text : route.destination, nexthop: route.nexthop };
}

/**
 * The edit that carries out `changes` on a router holding `routes` (pure): each change checked against
 * the routes as they are, as planned against a read that may be older.
 */
export function editFor(routes: ExtraRoute[], changes: Change[]): Edit {
  const held = routes.map(canonical);
  const edit: Edit = { add: [], remove: [], done: [], failed: [], written: [] };
  const has = (route: ExtraRoute) => held.some((r) => sameRoute(r, route));
  const others = (destination: string, except: string[]) => held.filter((r) => r.destination === destination && !except.includes(r.nexthop));
  for (const change of changes) {
    if (change.action === "delete") {
      const route = { destination: change.current.destination, nexthop: change.current.nextHop ?? String(change.current.details?.nexthop ?? "") };
      if (!has(route)) edit.done.push(change);
      else {
        edit.remove.push(route);
        edit.written.push(change);
      }
      continue;
    }
    const wanted = { destination: change.route.destination, nexthop: change.route.nextHop };
    if (change.action === "create") {
      const foreign = others(wanted.destination, [wanted.nexthop]);
      if (foreign.length) {
        edit.failed.push({ change, error: `a route to ${wanted.destination} via ${foreign.map((r) => r.nexthop).join(", ")} appeared since the plan; re-run plan` });
      } else if (has(wanted)) edit.done.push(change);
      else {
        edit.add.push(wanted);
        edit.written.push(change);
      }
      continue;
    }
    const old = { destination: change.current.destination, nexthop: change.current.nextHop ?? String(change.current.details?.nexthop ?? "") };
    const foreign = others(wanted.destination, [wanted.nexthop, old.nexthop]);
    if (foreign.length) {
      edit.failed.push({ change, error: `a route to ${wanted.destination} via ${foreign.map((r) => r.nexthop).join(", ")} appeared since the plan; re-run plan` });
      continue;
    }
    if (!has(old) && !has(wanted)) {
      edit.failed.push({ change, error: `the route to ${old.destination} via ${old.nexthop} disappeared since the plan; re-run plan (it will create it)` });
      continue;
    }
    if (!has(wanted)) edit.add.push(wanted);
    if (has(old)) edit.remove.push(old);
    if (has(wanted) && !has(old)) edit.done.push(change);
    else edit.written.push(change);
  }
  return edit;
}

/** The routes once an edit is made (pure): the router's order kept, new routes last. */
export function routesAfter(routes: ExtraRoute[], edit: Pick<Edit, "add" | "remove">): ExtraRoute[] {
  const kept = routes.map(canonical).filter((r) => !edit.remove.some((x) => sameRoute(x, r)));
  return [...kept, ...edit.add.filter((a) => !kept.some((r) => sameRoute(r, a)))];
}

/** The creates past the route limit, once the deletes are made (pure): the first fill the room, in the plan's order. */
export function createsPastLimit(table: string, held: number, changes: Change[], limit: number): RefusedChange[] {
  let room = limit - (held - changes.filter((c) => c.action === "delete").length);
  const refused: RefusedChange[] = [];
  for (const change of changes) {
    if (change.action !== "create") continue;
    if (room > 0) {
      room--;
      continue;
    }
    refused.push({ table, change, limit: "route-limit", message: `router ${table} is at its route limit of ${limit} routes (Neutron's max_routes, --route-limit): no room for ${change.route.destination}` });
  }
  return refused;
}

/** The routes a router holds once `changes` are made. */
function heldAfter(held: number, changes: Change[]): number {
  return held + changes.filter((c) => c.action === "create").length - changes.filter((c) => c.action === "delete").length;
}

interface RunState {
  inventory: Inventory;
  router?: Router;
  index?: Promise<PortIndex>;
  /** Server id → metadata, read once a run when a route's nexthop needs it. */
  servers?: Promise<Map<string, Record<string, string>>>;
  claimedPairs: Set<string>;
}

export class OpenStackTarget implements Target {
  readonly name = "openstack";
  readonly locksTables = false;
  private readonly ranges: Cidr[];
  private extensionsRead?: Promise<Set<string>>;
  /** Paces the port writes (one per node port; the routes take one or two calls in all). */
  readonly concurrency: AdaptiveConcurrency;

  constructor(
    private readonly api: OpenStackApi,
    private readonly settings: OpenStackTargetSettings,
  ) {
    this.ranges = clusterRanges(settings.clusterCIDR);
    this.concurrency = new AdaptiveConcurrency(settings.maxInFlight, settings.initialInFlight);
    api.onThrottle(() => this.concurrency.throttled());
  }

  private fail(message: string, error?: unknown, table?: string): TargetError {
    return new TargetError(this.name, error === undefined ? message : `${message}: ${openstackErrorText(error)}`, { cause: error, ...(table ? { table } : {}) });
  }

  private extensions(): Promise<Set<string>> {
    this.extensionsRead ??= this.api.extensions().catch((error: unknown) => {
      this.extensionsRead = undefined;
      throw this.fail("cannot list Neutron's extensions", error);
    });
    return this.extensionsRead;
  }

  /** Whether writes use add/remove_extraroutes. */
  async atomic(): Promise<boolean> {
    return !this.settings.wholeList && (await this.extensions()).has("extraroute-atomic");
  }

  private async findRouter(): Promise<Router> {
    let router: Router | undefined;
    try {
      router = await this.api.findRouter(this.settings.router);
    } catch (error) {
      if (error instanceof TargetError) throw error;
      throw this.fail(`cannot read router ${this.settings.router}`, error);
    }
    if (!router) throw this.fail(`no router ${JSON.stringify(this.settings.router)} (--router takes a router's name or id, as \`openstack router list\` shows them)`);
    return router;
  }

  private async readRouter(id: string): Promise<Router> {
    try {
      return await this.api.getRouter(id);
    } catch (error) {
      throw this.fail("cannot read the router", error, id);
    }
  }

  /** The router's interfaces and every port on their networks, once a run. */
  private indexFor(run: RunState, routerId: string): Promise<PortIndex> {
    if (!run.index) {
      const ready = (async () => {
        const routerPorts = (await this.api.listPorts({ device_id: routerId })).filter((p) => p.deviceOwner.startsWith("network:router_interface") || p.deviceOwner === "network:ha_router_replicated_interface");
        const networks = [...new Set(routerPorts.map((p) => p.networkId))];
        const ports = networks.length ? await this.api.listPorts({ network_id: networks }) : [];
        return new PortIndex(routerPorts, ports);
      })().catch((error: unknown) => {
        if (run.index === ready) run.index = undefined;
        throw this.fail("cannot list the ports on the router's networks", error, routerId);
      });
      run.index = ready;
    }
    return run.index;
  }

  private serverMetadata(run: RunState): Promise<Map<string, Record<string, string>>> {
    run.servers ??= this.api.listServers().then(
      (servers) => new Map(servers.map((s) => [s.id, s.metadata])),
      (error: unknown) => {
        run.servers = undefined;
        throw this.fail("cannot list the servers (Nova) to tell the cluster's nodes", error);
      },
    );
    return run.servers;
  }

  begin(inventory: Inventory): TargetRun {
    const run: RunState = { inventory, claimedPairs: new Set() };
    return {
      tables: async () => {
        // Read while the router and its ports are: the write needs it.
        this.extensions().catch(() => {});
        run.router = await this.findRouter();
        return [{ id: run.router.id, scope: "shared" as const }];
      },
      open: (table) => this.open(table, run),
      verify: (context) => this.verify(run, context),
    };
  }

  /** Every owned route of the router and every foreign one inside the cluster CIDR. */
  private async observe(router: Router, run: RunState, index: PortIndex): Promise<ObservedRoute[]> {
    const nodeAddresses = new Set(run.inventory.nodes.flatMap((n) => n.internalIPs));
    const candidates = router.routes.flatMap((route) => {
      const parsed = parseCidr(route.destination);
      return parsed.ok && this.ranges.some((range) => cidrContains(range, parsed.cidr)) ? [{ route, destination: parsed.cidr }] : [];
    });
    // Only a nexthop no inventory names needs the servers' metadata to tell whether it is a cluster node.
    const needServers = candidates.some(({ route }) => !nodeAddresses.has(route.nexthop) && index.byIp.get(route.nexthop)?.deviceOwner.startsWith("compute:"));
    const metadata = needServers ? await this.serverMetadata(run) : new Map<string, Record<string, string>>();
    const key = clusterMetadataKey(this.settings.cluster);
    const out: ObservedRoute[] = [];
    for (const { route, destination } of candidates) {
      const port = index.byIp.get(route.nexthop);
      const tagged = port ? Object.hasOwn(metadata.get(port.deviceId) ?? {}, key) : false;
      const owned = nodeAddresses.has(route.nexthop) || tagged || !port;
      out.push({
        destination: destination.text,
        nextHop: route.nexthop,
        nextHopLabel: route.nexthop,
        owned,
        ...(port ? {} : { healthy: false }),
        ...(!owned && nodeAddresses.size === 0
          ? { unattributed: `its nexthop ${route.nexthop} is no server with metadata ${key}, and no --nodes names the cluster's nodes: name them with --nodes, or set the metadata, to have podroutes manage it` }
          : {}),
        details: { router: router.id, nexthop: route.nexthop, ...(port ? { port: port.id, device: port.deviceId } : { reason: "no port holds the nexthop" }) },
      });
    }
    return sortByCidr(out, (r) => r.destination);
  }

  private async open(table: TableRef, run: RunState): Promise<OpenTable> {
    const router = run.router?.id === table.id ? run.router : await this.readRouter(table.id);
    run.router = undefined; // used once: a write's open reads the router afresh
    const index = await this.indexFor(run, router.id);
    const routes = await this.observe(router, run, index);
    return {
      routes,
      review: (diff) => this.review(diff, router, index, run),
      write: async (changes, actions, context) => {
        const done = actions.length ? await this.addPairs(actions, index, context) : [];
        return { results: changes.length ? await this.write(router, changes, index, context) : [], actions: done };
      },
      release: async () => {},
    };
  }

  private async review(diff: TableDiff, router: Router, index: PortIndex, run: RunState): Promise<Review> {
    const review: Review = { warnings: [], refusals: [], actions: [] };
    const { routeLimit } = this.settings;
    const held = router.routes.length;
    const after = heldAfter(held, diff.changes);
    if (after > routeLimit && after > held) {
      review.refusals.push(
        `openstack ${router.name || router.id}: would hold ${after} routes (it holds ${held}), over the route limit of ${routeLimit}. ` +
          `Neutron allows max_routes (${DEFAULT_ROUTE_LIMIT} by default) per router: raise max_routes in neutron.conf and pass --route-limit, ` +
          `or route pods with host routes on the nodes (--target ssh) for a cluster this large`,
      );
      review.refused = createsPastLimit(diff.table.id, held, diff.changes, routeLimit);
    } else if (after > held && after > routeLimit * LIMIT_WARNING_SHARE) {
      review.warnings.push(`openstack ${router.name || router.id}: will hold ${after} of at most ${routeLimit} routes (--route-limit)`);
    }
    // Each node's port must let its pods' addresses out, or port security drops their packets.
    const wanted = [...diff.unchanged, ...diff.changes.flatMap((c) => (c.action === "delete" ? [] : [c.route]))];
    for (const route of sortByCidr(wanted, (r) => r.destination)) {
      const port = index.byIp.get(route.nextHop);
      if (!port) {
        review.warnings.push(`openstack: node ${route.node}: no port on the router's networks holds ${route.nextHop}; Neutron will refuse its routes`);
        continue;
      }
      const id = `${port.id} ${route.destination}`;
      if (run.claimedPairs.has(id) || pairCovers(port, route.destination)) continue;
      run.claimedPairs.add(id);
      review.actions.push({ table: route.node, id, description: `allow ${route.destination} on port ${port.id} (${route.nextHop}): add it to the port's allowed_address_pairs` });
    }
    return review;
  }

  /** Adds the pairs the review asked for, port by port: read, add what is missing, write under the port's revision. */
  private async addPairs(actions: ExtraAction[], index: PortIndex, context: WriteContext): Promise<ActionResult[]> {
    const byPort = new Map<string, ExtraAction[]>();
    for (const action of actions) {
      const [portId] = action.id.split(" ");
      byPort.set(portId!, [...(byPort.get(portId!) ?? []), action]);
    }
    let done = 0;
    const results = await Promise.all(
      [...byPort].map(([portId, mine]) =>
        this.concurrency.run(async (): Promise<ActionResult[]> => {
          const cidrs = mine.map((a) => a.id.split(" ")[1]!);
          const error = await this.addPairsToPort(portId, cidrs, index).catch((e: unknown) => openstackErrorText(e));
          if (error === undefined) this.concurrency.succeeded();
          for (const action of mine) context.progress({ table: action.table, done: ++done, total: actions.length, message: action.description });
          return mine.map((action) => (error === undefined ? { action, ok: true } : { action, ok: false, error }));
        }),
      ),
    );
    return results.flat();
  }

  /**
   * Why the pairs were not added, or undefined once the port holds them. The first write is made from the
   * run's read of the port; the revision guard refuses it if the port changed since, and then the port is
   * read again, so a pair someone added meanwhile is kept.
   */
  private async addPairsToPort(portId: string, cidrs: string[], index: PortIndex): Promise<string | undefined> {
    let port = [...index.byIp.values()].find((p) => p.id === portId);
    for (let attempt = 1; ; attempt++) {
      if (!port) return `port ${portId} no longer exists`;
      // Never change a port off the router's networks, whatever the plan says.
      if (!index.networkIds.has(port.networkId)) return `port ${portId} is not on a network of the router: not changed`;
      const pairs = pairsWith(port, cidrs);
      if (pairs.length === port.allowedAddressPairs.length) return undefined;
      try {
        await this.api.setAllowedAddressPairs(portId, pairs, port.revision);
        return undefined;
      } catch (error) {
        if (!isRevisionConflict(error) || attempt >= REVISION_ATTEMPTS) throw error;
      }
      [port] = await this.api.listPorts({ id: portId });
    }
  }

  /** The changes in one add and one remove (atomic), or one guarded whole-list PUT; every result from the router's answer. */
  private async write(opened: Router, changes: Change[], index: PortIndex, context: WriteContext): Promise<ChangeResult[]> {
    const results = new Map<Change, ChangeResult>();
    const settle = (result: ChangeResult) => {
      results.set(result.change, result);
      context.onResult?.(result);
      context.progress({ table: opened.id, done: results.size, total: changes.length });
    };
    // Neutron refuses a whole call for one nexthop off the router's subnets: such a route is left out, alone.
    for (const change of changes) {
      if (change.action !== "delete" && !index.byIp.has(change.route.nextHop)) {
        settle({ change, ok: false, error: `no port on the router's networks holds ${change.route.nextHop} (node ${change.route.node}): Neutron would refuse the route; not written` });
      }
    }
    let atomic: boolean;
    try {
      atomic = await this.atomic();
    } catch (error) {
      for (const change of changes) settle({ change, ok: false, error: openstackErrorText(error) });
      return changes.map((c) => results.get(c)!);
    }
    let router = opened;
    for (let attempt = 1; ; attempt++) {
      const edit = editFor(router.routes, changes.filter((c) => !results.has(c)));
      for (const change of edit.done) settle({ change, ok: true });
      for (const { change, error } of edit.failed) settle({ change, ok: false, error });
      if (!edit.written.length) break;
      const after = routesAfter(router.routes, edit).length;
      if (after > this.settings.routeLimit && after > router.routes.length) {
        const error = `refused before any call: the router would hold ${after} routes, over the route limit of ${this.settings.routeLimit} (--route-limit)`;
        for (const change of edit.written) settle({ change, ok: false, error });
        break;
      }
      if (atomic) {
        await this.writeAtomic(router, edit, settle);
        break;
      }
      const outcome = await this.writeWholeList(router, edit, settle);
      if (outcome === "written") break;
      if (attempt >= REVISION_ATTEMPTS) {
        for (const change of edit.written) settle({ change, ok: false, error: `the router changed under every one of ${REVISION_ATTEMPTS} writes (412 on its revision); re-run apply` });
        break;
      }
      try {
        router = await this.api.getRouter(router.id);
      } catch (error) {
        for (const change of edit.written) settle({ change, ok: false, error: `the router changed since it was read (412), and cannot be read again: ${openstackErrorText(error)}` });
        break;
      }
    }
    return changes.map((c) => results.get(c)!);
  }

  /** One add_extraroutes then one remove_extraroutes (the removes first when the quota has no room for both). */
  private async writeAtomic(router: Router, edit: Edit, settle: (result: ChangeResult) => void): Promise<void> {
    const addFirst = router.routes.length + edit.add.length <= this.settings.routeLimit;
    let remove = edit.remove;
    let answer: Router = router;
    const failures: string[] = [];
    for (const kind of addFirst ? (["add", "remove"] as const) : (["remove", "add"] as const)) {
      const routes = kind === "add" ? edit.add : remove;
      if (!routes.length) continue;
      try {
        answer = kind === "add" ? await this.api.addExtraRoutes(router.id, routes) : await this.api.removeExtraRoutes(router.id, routes);
      } catch (error) {
        failures.push(`${kind}_extraroutes: ${openstackErrorText(error)}`);
        // A replace whose new route did not go in keeps its old one: the remove goes on without it.
        if (kind === "add") remove = remove.filter((r) => !edit.written.some((c) => c.action === "replace" && c.current.destination === r.destination && c.current.nextHop === r.nexthop));
      }
    }
    this.settleFrom(answer, edit, settle, failures.join("; "));
  }

  /** One whole-list PUT under the revision it was computed from; "conflict" when the router changed meanwhile. */
  private async writeWholeList(router: Router, edit: Edit, settle: (result: ChangeResult) => void): Promise<"written" | "conflict"> {
    const guarded = (await this.extensions()).has("revision-if-match");
    const routes = routesAfter(router.routes, edit);
    let answer: Router;
    try {
      answer = await this.api.setRoutes(router.id, routes, guarded ? router.revision : undefined);
    } catch (error) {
      if (isRevisionConflict(error)) return "conflict";
      for (const change of edit.written) settle({ change, ok: false, error: openstackErrorText(error) });
      return "written";
    }
    if (!guarded) answer = await this.api.getRouter(router.id).catch(() => answer);
    // Verify: nothing another writer held is lost (it cannot be, under the guard; without it, say so).
    const lost = routesAfter(router.routes, { add: [], remove: edit.remove }).filter((r) => !answer.routes.some((a) => sameRoute(canonical(a), r)));
    if (lost.length) {
      // Only possible unguarded (a Neutron without revision-if-match): said on every change, so nobody takes the write for clean.
      const error = `written, but routes another writer held are gone from the router since (no revision-if-match to guard the write): ${lost.map((r) => `${r.destination} via ${r.nexthop}`).join(", ")}`;
      for (const change of edit.written) settle({ change, ok: false, error });
      return "written";
    }
    this.settleFrom(answer, edit, settle, "");
    return "written";
  }

  /** Each written change's result from the routes the router answered with; `error` says why one is not there. */
  private settleFrom(answer: Router, edit: Edit, settle: (result: ChangeResult) => void, error: string): void {
    const now = answer.routes.map(canonical);
    const has = (destination: string, nexthop: string) => now.some((r) => r.destination === destination && r.nexthop === nexthop);
    for (const change of edit.written) {
      let ok: boolean;
      if (change.action === "delete") ok = !has(change.current.destination, change.current.nextHop ?? "");
      else if (change.action === "create") ok = has(change.route.destination, change.route.nextHop);
      else ok = has(change.route.destination, change.route.nextHop) && !has(change.current.destination, change.current.nextHop ?? "");
      settle(ok ? { change, ok: true } : { change, ok: false, error: error || "the router's answer does not hold the change; re-run plan" });
    }
  }

  private async verify(run: RunState, context: { progress: Progress }): Promise<Check[]> {
    const router = await this.findRouter();
    const index = await this.indexFor(run, router.id);
    const observed = await this.observe(router, run, index);
    const checks: Check[] = [];
    const dangling = observed.filter((r) => r.healthy === false);
    checks.push(
      dangling.length
        ? { table: router.id, ok: false, message: `routes through a nexthop no port holds (they drop the range's packets): ${dangling.map((r) => `${r.destination} via ${r.nextHopLabel}`).join(", ")}` }
        : { table: router.id, ok: true, message: "every route in the cluster CIDR goes to a port" },
    );
    for (const node of run.inventory.nodes) {
      for (const cidr of node.podCIDRs) {
        const ip = node.internalIPs.find((a) => a.includes(":") === cidr.includes(":"));
        const port = ip ? index.byIp.get(ip) : undefined;
        if (!port) {
          checks.push({ table: node.name, ok: false, message: `no port on the router's networks holds ${ip ?? "an address of the pod CIDR's family"}` });
          continue;
        }
        checks.push(
          pairCovers(port, cidr)
            ? { table: node.name, ok: true, message: `port ${port.id} lets ${cidr} through` }
            : { table: node.name, ok: false, message: `port ${port.id} (${ip}) has no allowed address pair for ${cidr}: port security drops its pods' packets; run apply` },
        );
      }
    }
    context.progress({ table: router.id, done: 1, total: 1, message: "verify" });
    return checks;
  }

  readonly listing = {
    columns: ["ROUTER", "DESTINATION", "NEXTHOP", "PORT"],
    row: (table: TableRef, route: ObservedRoute): string[] => [table.id, route.destination, route.nextHopLabel ?? "", String(route.details?.port ?? route.details?.reason ?? "")],
  };

  async close(): Promise<void> {}
}

