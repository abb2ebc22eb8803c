/**
 * `--target gcp`: pod routes as VPC routes of one GCP network, the way seed 000 makes them with
 * `gcloud compute routes create` (name `kubernetes-route-10-200-0-0-24`, destRange, nextHopIp, priority
 * 1000), through the Compute Engine API. The network is one `shared` table holding every node's routes.
 *
 * Ownership: a route is podroutes' only when it is in the network AND its description carries the
 * marker `managed by podroutes; cluster=NAME`. Every other route (gcloud-made, another cluster's) is
 * never replaced or deleted; on one of our destinations it is a conflict for the planner to report.
 *
 * GCP routes are immutable, so a changed next hop (or priority) is a replacement, done make-before-break:
 * the new route is inserted under an alternate name (the seed name, or the seed name with a short
 * suffix when the old route holds it), and the old route is deleted only after the insert's operation
 * is DONE. While both exist GCP spreads traffic over the two (equal priority, ECMP), never over none.
 */
import { AdaptiveConcurrency, writeEachChange } from "../each-change.js";
import { createHash } from "node:crypto";
import { parseCidr, type Inventory, type Route } from "../../model.js";
import { ComputeError, computeErrorText, interfaceOn, type ComputeApi, type ComputeInstance, type ComputeRoute } from "./compute.js";
import { TargetError, type Change, type ChangeResult, type Check, type ObservedRoute, type Progress, type RefusedChange, type Review, type TableDiff, type TableRef, type Target, type TargetRun, type WriteContext } from "../target.js";

export type NextHopKind = "ip" | "instance";

export interface GcpTargetSettings {
  cluster: string;
  network: string;
  nextHop: NextHopKind;
  priority: number;
  /** Ceiling of the operations (insert/delete and their waits) in flight at once; the limit adapts below it. */
  maxInFlight: number;
  /** Where that limit starts (default: the slow start's INITIAL_IN_FLIGHT). */
  initialInFlight?: number;
  clusterCIDR?: string;
}

/** Share of the ROUTES quota past which `plan` warns. */
const QUOTA_WARNING_SHARE = 0.8;

export function ownershipMarker(cluster: string): string {
  return `managed by podroutes; cluster=${cluster}`;
}

/** The cluster named by a route's description marker, if any; the marker must open the description. */
export function markedCluster(description: string | undefined): string | undefined {
  return description?.match(/^managed by podroutes; cluster=([a-z0-9-]+)(?:;|$)/)?.[1];
}

/** The other name a route of this destination takes while a replacement is in flight. */
export function alternateName(name: string, nextHop: string): string {
  const suffix = createHash("sha256").update(nextHop).digest("hex").slice(0, 8);
  return `${name.slice(0, 63 - 9)}-${suffix}`;
}

/** The last path element of a resource URL (`.../networks/N` → `N`). */
function basename(url: string | undefined): string {
  return url ? url.replace(/\/+$/, "").split("/").pop()! : "";
}

/** What gcloud shows in NEXT_HOP: the IP, or the instance/gateway/tunnel name. */
export function nextHopLabel(route: ComputeRoute): string {
  if (route.nextHopInstance) return route.nextHopInstance.replace(/^.*\/projects\/[^/]+\//, "");
  if (route.nextHopIp) return route.nextHopIp;
  if (route.nextHopGateway) return basename(route.nextHopGateway);
  return basename(route.nextHopVpnTunnel ?? route.nextHopPeering ?? route.nextHopIlb ?? "");
}

/**
 * Instances by their internal IP on the target network and by self link, looked up once per plan. Only
 * the interface on the target network counts: an instance may have several (nic0 on another network),
 * and another network of the project may reuse the same addresses.
 */
export class InstanceIndex {
  readonly byIp = new Map<string, ComputeInstance>();
  readonly byLink = new Map<string, ComputeInstance>();
  constructor(
    instances: ComputeInstance[],
    readonly network: string,
  ) {
    for (const instance of instances) {
      this.byLink.set(instance.selfLink.replace(/^.*\/projects\//, "projects/"), instance);
      const nic = interfaceOn(instance, network);
      for (const ip of [nic?.networkIP, nic?.ipv6Address]) if (ip) this.byIp.set(ip, instance);
    }
  }
  byUrl(url: string): ComputeInstance | undefined {
    return this.byLink.get(url.replace(/^.*\/projects\//, "projects/"));
  }
  /** The IP a route on the target network reaches the instance at (of the destination's family). */
  addressOf(instance: ComputeInstance, family: 4 | 6): string | undefined {
    const nic = interfaceOn(instance, this.network);
    return family === 6 ? nic?.ipv6Address : nic?.networkIP;
  }
}

/** What one run of the GCP target looked up: the project's instances, listed once when needed. */
interface GcpRunState {
  instances?: Promise<InstanceIndex>;
  /** The routes a plan of this run read, for the write that follows it in the same run (taken once). */
  planned?: ObservedRoute[];
}

export class GcpTarget implements Target {
  readonly name = "gcp";
  readonly locksTables = false;
  /** Paces every write of this target: the API's throttling answers bring it down. */
  readonly concurrency: AdaptiveConcurrency;

  constructor(
    private readonly compute: ComputeApi,
    private readonly settings: GcpTargetSettings,
  ) {
    this.concurrency = new AdaptiveConcurrency(settings.maxInFlight, settings.initialInFlight);
    compute.onThrottle?.(() => this.concurrency.throttled());
  }

  private fail(message: string, error?: unknown): TargetError {
    return new TargetError(this.name, error === undefined ? message : `${message}: ${computeErrorText(error)}`, { cause: error, table: this.settings.network });
  }

  /**
   * One run: the network is the one table, its routes listed when it is opened; the instances at most
   * once a run. A write opened in the run that planned it moments ago (converge, the controller) writes
   * from the plan's list, as one pass; any other write (a plan a person approved) lists afresh and the
   * engine rechecks the plan against that. At 5,000 routes a list is ten pages: one per pass is enough.
   */
  begin(inventory: Inventory): TargetRun {
    const run: GcpRunState = {};
    return {
      tables: async () => [{ id: this.settings.network, scope: "shared" }],
      open: async (table, { write }) => {
        const routes = write && run.planned ? run.planned : await this.read(table, run);
        run.planned = write ? undefined : routes;
        return {
          routes,
          review: (diff) => this.review(diff, run),
          write: async (changes, _actions, context) => ({ results: await this.write(table, changes, context, run), actions: [] }),
          release: async () => {},
        };
      },
      verify: (context) => this.verify(inventory, context, run),
    };
  }

  /** Instances of the project (only needed for `--next-hop instance` and canIpForward checks). */
  private instanceIndex(run: GcpRunState): Promise<InstanceIndex> {
    run.instances ??= this.compute.listInstances().then(
      (list) => new InstanceIndex(list, this.settings.network),
      (error: unknown) => {
        run.instances = undefined;
        throw this.fail("cannot list instances", error);
      },
    );
    return run.instances;
  }

  /** Server-side filter: every route of the network (full-match regex on its URL). */
  private networkFilter(): string {
    return `network eq ".*/global/networks/${this.settings.network}"`;
  }

  /** One API route as podroutes sees it; undefined for routes it never reports (IPv6 oddities aside). */
  observe(route: ComputeRoute, index: InstanceIndex | undefined): ObservedRoute | undefined {
    const parsed = parseCidr(route.destRange);
    if (!parsed.ok) return undefined;
    let nextHop = route.nextHopIp;
    let healthy = true;
    if (route.nextHopInstance) {
      // GCP delivers to the instance's interface on the route's network (the index's network: read filters on it).
      const instance = index?.byUrl(route.nextHopInstance);
      nextHop = instance ? index!.addressOf(instance, parsed.cidr.family) : undefined;
      if (index && !instance) healthy = false; // the instance is gone: the route carries nothing
    }
    return {
      destination: parsed.cidr.text,
      ...(nextHop ? { nextHop } : {}),
      nextHopLabel: nextHopLabel(route),
      owned: markedCluster(route.description) === this.settings.cluster,
      name: route.name,
      ...(healthy ? {} : { healthy: false }),
      details: {
        network: basename(route.network),
        priority: route.priority ?? 1000,
        nextHopKind: route.nextHopInstance ? "instance" : route.nextHopIp ? "ip" : "other",
        ...(route.description ? { description: route.description } : {}),
      },
    };
  }

  private async read(table: TableRef, run: GcpRunState): Promise<ObservedRoute[]> {
    let routes: ComputeRoute[];
    try {
      routes = await this.compute.listRoutes(this.networkFilter());
    } catch (error) {
      throw this.fail("cannot list routes", error);
    }
    const index = routes.some((r) => r.nextHopInstance) || this.settings.nextHop === "instance" ? await this.instanceIndex(run) : undefined;
    // Every route of the network, as `gcloud compute routes list` shows it: the planner acts only on
    // owned ones and reports foreign ones only where they sit on a wanted destination.
    const out: ObservedRoute[] = [];
    for (const route of routes) {
      if (basename(route.network) !== table.id) continue;
      const seen = this.observe(route, index);
      if (seen) out.push(seen);
    }
    // Name order, as the API lists them and gcloud prints them.
    return out.sort((a, b) => (a.name! < b.name! ? -1 : a.name! > b.name! ? 1 : 0));
  }

  sameRoute(desired: Route, observed: ObservedRoute): boolean {
    return (
      observed.healthy !== false &&
      observed.nextHop === desired.nextHop &&
      observed.details?.priority === this.settings.priority &&
      observed.details?.nextHopKind === this.settings.nextHop
    );
  }

  /** The quota this diff needs, and canIpForward on the instances it routes to. */
  private async review(diff: TableDiff, run: GcpRunState): Promise<Review> {
    const review: Review = { warnings: [], refusals: [], actions: [] };
    let creates = 0;
    let replaces = 0;
    let deletes = 0;
    for (const change of diff.changes) {
      if (change.action === "create") creates++;
      else if (change.action === "replace") replaces++;
      else deletes++;
    }
    // GCP drops forwarded packets of instances without canIpForward; it can only be set at creation.
    // Checked for the routes this plan writes (`verify` checks every node): a controller's plan with
    // nothing to write then lists no instances. Read beside the quota: neither waits for the other.
    const hops = new Set(diff.changes.flatMap((c) => (c.action === "delete" ? [] : [c.route])).map((r) => r.nextHop));
    const instances = hops.size ? this.instanceIndex(run).then((index) => ({ index }), (error: unknown) => ({ error })) : undefined;
    if (creates + replaces > 0) {
      let quota: { limit: number; usage: number } | undefined;
      try {
        quota = await this.compute.quota("ROUTES");
      } catch (error) {
        review.warnings.push(`gcp: cannot read the project's ROUTES quota: ${computeErrorText(error)}`);
      }
      if (quota) {
        // Deletes may run after creates; a replace holds two routes for a moment, at most maxInFlight at once.
        const peak = quota.usage + creates + Math.min(replaces, this.settings.maxInFlight);
        const after = quota.usage + creates - deletes;
        if (peak > quota.limit) {
          review.refusals.push(
            `gcp: the project's ROUTES quota is ${quota.limit} and ${quota.usage} are used; this plan needs up to ${peak} (${creates} to add, ${replaces} to replace). ` +
              `Ask for a higher ROUTES quota, or route pods with host routes on the nodes (--target ssh) for a cluster this large`,
          );
          let room = quota.limit - quota.usage - Math.min(replaces, this.settings.maxInFlight);
          review.refused = diff.changes.flatMap((change): RefusedChange[] => {
            if (change.action !== "create" || room-- > 0) return [];
            const message = `the project's ROUTES quota (${quota.limit}, ${quota.usage} used) has no room for ${change.route.destination}: ask for a higher ROUTES quota`;
            return [{ table: diff.table.id, change, limit: "quota", message }];
          });
        } else if (after > quota.limit * QUOTA_WARNING_SHARE) {
          review.warnings.push(`gcp: the project will use ${after} of its ${quota.limit} ROUTES quota`);
        }
      }
    }
    const read = await instances;
    if (read && "error" in read) review.warnings.push(computeErrorText(read.error));
    else if (read) {
      for (const ip of [...hops].sort()) {
        const instance = read.index.byIp.get(ip);
        if (instance && instance.canIpForward !== true) review.warnings.push(`gcp: instance ${instance.name} (${ip}) has canIpForward off: GCP drops its pods' packets; recreate it with --can-ip-forward`);
        else if (!instance && this.settings.nextHop === "instance") review.warnings.push(`gcp: no instance has internal IP ${ip}; its routes will fail`);
      }
    }
    return review;
  }

  private desiredBody(route: Route, name: string, index: InstanceIndex | undefined): ComputeRoute | string {
    const body: ComputeRoute = {
      name,
      network: this.compute.networkUrl(this.settings.network),
      destRange: route.destination,
      priority: this.settings.priority,
      description: `${ownershipMarker(this.settings.cluster)}; node=${route.node}`,
    };
    if (this.settings.nextHop === "ip") body.nextHopIp = route.nextHop;
    else {
      const instance = index?.byIp.get(route.nextHop);
      if (!instance) return `no instance has internal IP ${route.nextHop} (node ${route.node}); use --next-hop ip`;
      body.nextHopInstance = instance.selfLink;
    }
    return body;
  }

  /** Whether an existing route (found after a 409) is the one we meant to insert. */
  private identical(existing: ComputeRoute, body: ComputeRoute): boolean {
    return (
      existing.destRange === body.destRange &&
      basename(existing.network) === this.settings.network &&
      (existing.priority ?? 1000) === body.priority &&
      markedCluster(existing.description) === this.settings.cluster &&
      (existing.nextHopIp ?? "") === (body.nextHopIp ?? "") &&
      basename(existing.nextHopInstance) === basename(body.nextHopInstance)
    );
  }

  /** Inserts; a 409 counts as done only when the route there is identical (a retried insert that had landed). */
  private async insert(body: ComputeRoute): Promise<string | undefined> {
    try {
      await this.compute.insertRoute(body);
      return undefined;
    } catch (error) {
      if (!(error instanceof ComputeError && error.status === 409)) throw error;
      // The name may belong to an insert still RUNNING (ours, retried after a lost answer): look a few times.
      for (let attempt = 0; attempt < 20; attempt++) {
        const existing = await this.compute.getRoute(body.name);
        if (existing) return this.identical(existing, body) ? undefined : `a different route named ${body.name} already exists (${existing.destRange} via ${nextHopLabel(existing)}); re-run plan`;
        await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** Math.min(attempt, 5)));
      }
      return `route ${body.name} is reported to exist but cannot be read`;
    }
  }

  private async write(table: TableRef, changes: Change[], context: WriteContext, run: GcpRunState): Promise<ChangeResult[]> {
    const index = this.settings.nextHop === "instance" ? await this.instanceIndex(run) : undefined;
    return writeEachChange(
      changes,
      { table: table.id, concurrency: this.concurrency, progress: context.progress, errorText: computeErrorText, ...(context.onResult ? { onResult: context.onResult } : {}) },
      (change) => this.writeOne(change, index),
    );
  }

  private async writeOne(change: Change, index: InstanceIndex | undefined): Promise<string | undefined> {
    if (change.action === "delete") {
      await this.compute.deleteRoute(change.current.name!); // 404: already gone, which is the goal
      return undefined;
    }
    const name = change.action === "replace" && change.current.name === change.route.name ? alternateName(change.route.name, change.route.nextHop) : change.route.name;
    const body = this.desiredBody(change.route, name, index);
    if (typeof body === "string") return body;
    const failed = await this.insert(body);
    if (failed !== undefined || change.action === "create") return failed;
    // Make before break: the old route goes only once the new one is DONE.
    await this.compute.deleteRoute(change.current.name!);
    return undefined;
  }

  private async verify(inventory: Inventory, context: { progress: Progress }, run: GcpRunState): Promise<Check[]> {
    const index = await this.instanceIndex(run);
    const checks: Check[] = [];
    let done = 0;
    for (const node of inventory.nodes) {
      const ip = node.internalIPs[0];
      const instance = ip ? index.byIp.get(ip) : undefined;
      if (!instance) checks.push({ table: node.name, ok: false, severity: "warning", message: `no instance of project ${this.compute.project} has internal IP ${ip}` });
      else if (instance.canIpForward === true) checks.push({ table: node.name, ok: true, message: `instance ${instance.name} has canIpForward on` });
      else checks.push({ table: node.name, ok: false, message: `instance ${instance.name} (${ip}) has canIpForward off: GCP drops its pods' packets; recreate it with --can-ip-forward` });
      context.progress({ table: node.name, done: ++done, total: inventory.nodes.length, message: "verify" });
    }
    return checks;
  }

  /** gcloud's `compute routes list` columns. */
  readonly listing = {
    columns: ["NAME", "NETWORK", "DEST_RANGE", "NEXT_HOP", "PRIORITY"],
    row: (table: TableRef, route: ObservedRoute): string[] => [
      route.name ?? "",
      String(route.details?.network ?? table.id),
      route.destination,
      route.nextHopLabel ?? "",
      String(route.details?.priority ?? ""),
    ],
  };
}
