/**
 * One reconcile of this host's kernel table against the Node store, with exactly the pipeline of
 * `--target local`: Nodes → inventory (kube/nodes.ts, quarantining malformed Nodes), then the engine's
 * plan (read the table, diff) and apply (write only the diff) through the same HostRoutesTarget. What is
 * added here is what a long-running process needs around it: it refuses to plan before a complete list
 * (an API error must never read as "no nodes"), it keeps serving every good Node while reporting the bad
 * ones, it remembers what it planned (so kernel events can be told from its own writes), and it counts
 * what it did in metrics and logs. A route this host cannot hold (the target refuses it before writing:
 * its next hop is on none of the host's networks, an IPv6 one on an IPv4-only host, its pod CIDR covers
 * one of them) is left out and reported, not a failure: one hostile Node must not keep the sync failing,
 * readiness and NetworkUnavailable=False from following the routes that can be written (issue 25 item 2).
 * Each full reconcile, a resync's included, tries such routes again.
 *
 * Three ways through, cheapest first, each only when it is sure to give what the full one would:
 *   node changes  the Nodes said changed are checked again against an index of the others (NodeIndex),
 *                 and only their destinations are read and written, under the lock (host-table.ts);
 *   resync        one read of the routes compared with what the last reconcile left: nothing mapped,
 *                 nothing planned when nothing differs; but after a node change replaced or removed a
 *                 route, a full one, which removes the nexthop objects the change left unused (the
 *                 per-change write cannot prove nothing else uses them: issue 25 item 3);
 *   full          plan against everything and apply the diff: at start, after a relist, on kernel
 *                 drift, after any failure or conflict, and when a resync found a difference.
 * Without a HostTable (another target, the unit tests) every reconcile is a full one.
 */
import { performance } from "node:perf_hooks";
import { converge, messageOf } from "../apply/engine.js";
import { changeDestination, desiredRoutes } from "../plan/plan.js";
import { BusyError, kindOf } from "../errors.js";
import { formatProblem } from "../inventory.js";
import { NodeIndex, readKubeNode, type KubeNode } from "../kube/nodes.js";
import type { Logger } from "../observe/log.js";
import type { Node, Route } from "../model.js";
import { nodeOfAddresses } from "../targets/linux/host-routes.js";
import type { HostState } from "../targets/linux/iproute.js";
import { TargetError, type ChangeResult, type TableRef, type Target } from "../targets/target.js";
import { ExpectedRoutes, type HostTable } from "./host-table.js";
import { DesiredRoutes } from "./kernel-events.js";
import { MultiMap } from "../multimap.js";
import { countError } from "../observe/metrics.js";
import type { AgentMetrics, SyncResult } from "./metrics.js";

/** Where the reconciler reads Nodes: the reflector's store. */
export interface NodeStore {
  /** True once a complete, successful list has been read; until then nothing is planned. */
  synced(): boolean;
  nodes(): Iterable<unknown>;
  /**
   * The Node of that name, if any. A store that can look Nodes up tells the reconciler which changed
   * (`nodesChanged`, `nodesRelisted`), and only those are checked again; without it, every reconcile
   * compares every Node with the one it indexed last.
   */
  get?(name: string): unknown;
}

export interface ReconcilerOptions {
  /** A host-route target whose one table is `reconciler.table()`. */
  target: Target;
  store: NodeStore;
  proto: number;
  /** `--node` or NODE_NAME; else the node is found from the host's addresses. */
  node?: string;
  hostAddresses(): Promise<string[]>;
  /** This host's table for the cheap paths, and where the full path's read is found; none: every reconcile is full. */
  host?: { table: HostTable; lastState(table: TableRef): HostState | undefined };
  metrics: AgentMetrics;
  log: Logger;
}

export interface QuarantinedNode {
  name: string;
  uid?: string;
  problems: string[];
}

export interface SyncOutcome {
  result: SyncResult;
  /** The node this host is, once known. */
  node?: string;
  /** This host's own Node is in the served inventory (not quarantined, listed). */
  nodeServed: boolean;
  /** Nodes quarantined by this reconcile that were not before (or for other reasons). */
  newlyQuarantined: QuarantinedNode[];
  /** How this reconcile went about it: Nodes' destinations alone, a resync's compare, everything, or nothing to do. */
  path?: "nodes" | "resync" | "full" | "none";
}

export class Reconciler {
  /** What this host should hold, route by route, by destination; kernel events are judged against it. */
  readonly desired: DesiredRoutes<Route>;
  /** Whether a reconcile has converged once (readiness). */
  converged = false;
  private quarantined = new Map<string, string>();
  private notes = new Map<string, string>();
  private conflicts = new Set<string>();
  /** Every Node, checked, kept up to date one Node at a time. */
  private readonly index = new NodeIndex({ source: "kubernetes" });
  /** Names of Nodes said changed since the last reconcile; "all": compare every Node. */
  private changed: Set<string> | "all" = "all";
  /** The desired routes by node (by destination: `desired`). */
  private readonly routesOf = new MultiMap<string, Route>();
  /** Bumped whenever the desired routes change; what it was at the last converged reconcile. */
  private desiredVersion = 0;
  private convergedVersion: number | undefined;
  /**
   * What the table holds of podroutes', as far as the agent knows: every desired route, after a
   * reconcile with no failure and no conflict; undefined otherwise (the next reconcile is a full one).
   */
  private expected: ExpectedRoutes | undefined;
  private owned = 0;
  private fullDue = true;
  private checkDue = false;
  /** Routes the target refused as the route's own problem, by destination: left out, reported, tried again by each full reconcile. */
  private unroutable = new Map<string, { node: string; reason: string }>();
  /** A per-change write replaced or deleted a route since the last full reconcile: its nexthop object may be unused now. */
  private nexthopsReleased = false;

  /** The node this host is: `--node`/NODE_NAME, or found from its addresses by the first reconcile. */
  node: string | undefined;

  constructor(private readonly options: ReconcilerOptions) {
    this.node = options.node;
    this.desired = new DesiredRoutes(options.proto);
  }

  /** The one table the agent writes: this host's. */
  table(): TableRef {
    if (this.node === undefined) throw new TargetError("agent", "which node this host is is not known yet");
    return { id: this.node, scope: "host", node: this.node };
  }

  /** These Nodes were added, deleted or changed in a way routing reads. */
  nodesChanged(names: Iterable<string>): void {
    if (this.changed === "all") return;
    for (const name of names) this.changed.add(name);
  }

  /** A complete list replaced the store: every Node is compared, and the next reconcile is a full one. */
  nodesRelisted(): void {
    this.changed = "all";
    this.fullDue = true;
  }

  /** The table may have drifted (a kernel event, the monitor restarted): the next reconcile is a full one. */
  requireFull(): void {
    this.fullDue = true;
  }

  /** The periodic resync: the next reconcile reads the table and compares (a full one if anything differs). */
  requireCheck(): void {
    this.checkDue = true;
  }

  async reconcile(reasons: string[]): Promise<SyncOutcome> {
    const { metrics, log } = this.options;
    const started = performance.now();
    const outcome: SyncOutcome = { result: "failed", nodeServed: false, newlyQuarantined: [] };
    try {
      if (!this.options.store.synced()) {
        // The loop's gate keeps this from happening; planning now would read as "no nodes" and delete routes.
        throw new TargetError("agent", "no complete list of Nodes yet: nothing is planned");
      }
      const touched = this.indexNodes();
      if (touched.size) outcome.newlyQuarantined = this.trackQuarantine();
      metrics.nodes.set(this.index.size);
      const node = await this.whoAmI();
      outcome.node = node;
      outcome.nodeServed = this.index.node(node) !== undefined;

      const host = this.options.host;
      let done: Written | undefined;
      if (host && !this.fullDue && this.expected) {
        outcome.path = touched.size ? "nodes" : this.checkDue ? "resync" : "none";
        done = touched.size ? await this.writeNodes(host.table, touched) : { written: 0, failed: 0, fields: {} };
        if (done && this.checkDue && done.failed === 0 && this.expected) {
          this.checkDue = false;
          // A difference: the full path finds it and says what it was. Nexthop objects a node change
          // left unused: the full path's read proves what nothing uses, and its write removes them.
          // Routes left out as unroutable are tried again (the host's networks may have changed).
          if (this.nexthopsReleased || this.unroutable.size || !(await host.table.holds(this.expected))) done = undefined;
        }
      }
      if (!done) {
        outcome.path = "full";
        this.checkDue = false;
        done = await this.full();
      }
      metrics.ownedRoutes.set(this.owned);
      if (done.failed === 0) {
        this.converged = true;
        metrics.lastSuccess.set(Date.now() / 1000);
        metrics.ready.set(1);
        outcome.result = done.written ? "changed" : "unchanged";
      } else {
        // A failure may have left anything: the next reconcile plans against everything.
        this.fullDue = true;
        this.expected = undefined;
      }
      const fields = { node, path: outcome.path, ...done.fields, failed: done.failed, quarantined: this.index.quarantined.size, ms: Math.round(performance.now() - started), reasons: reasons.slice(0, 5) };
      if (done.written || done.failed) log.info(done.failed ? "reconciled with failures" : "reconciled", fields);
      else log.debug("reconciled: nothing to change", fields);
    } catch (error) {
      this.fullDue = true;
      countError(metrics, kindOf(error));
      log.error("reconcile failed", { kind: kindOf(error), error: messageOf(error), reasons: reasons.slice(0, 5) });
    }
    metrics.syncs.inc({ result: outcome.result });
    metrics.syncDuration.observe((performance.now() - started) / 1000);
    return outcome;
  }

  /** Brings the index up to date with the store; the names of the Nodes checked again. */
  private indexNodes(): Set<string> {
    const touched = new Set<string>();
    const { store } = this.options;
    const set = (name: string, object: unknown) => {
      // A Node object that is not the one indexed has changed.
      if (this.index.has(name) && this.index.object(name) === object) return;
      for (const key of this.index.set(name, object)) touched.add(key);
    };
    const remove = (name: string) => {
      if (!this.index.has(name)) return;
      touched.add(name);
      for (const key of this.index.delete(name)) touched.add(key);
    };
    if (this.index.size === 0) {
      // The first list: every Node in at once, each checked once.
      const entries = new Map<string, unknown>();
      let position = 0;
      for (const object of store.nodes()) {
        const name = (object as KubeNode)?.metadata?.name;
        const key = typeof name === "string" && name && !entries.has(name) ? name : `items[${position}]`;
        position++;
        entries.set(key, object);
      }
      for (const key of this.index.setMany(entries)) touched.add(key);
    } else if (this.changed === "all" || !store.get) {
      const present = new Set<string>();
      let position = 0;
      for (const object of store.nodes()) {
        const name = (object as KubeNode)?.metadata?.name;
        const key = typeof name === "string" && name ? name : `items[${position}]`;
        position++;
        present.add(key);
        set(key, object);
      }
      for (const name of [...this.index.keys()]) if (!present.has(name)) remove(name);
    } else {
      for (const name of this.changed) {
        const object = store.get(name);
        if (object === undefined) remove(name);
        else set(name, object);
      }
    }
    this.changed = new Set();
    return touched;
  }

  /** Plans against every Node and the whole table, and applies the diff: the engine's way, `--target local`'s. */
  private async full(): Promise<Written> {
    const { metrics } = this.options;
    const inventory = this.index.inventory();
    // Exactly the routes the planner will want (its unchanged, conflicting and written ones), known
    // before the write: the kernel's events for the agent's own writes must not read as drift.
    this.want(desiredRoutes(inventory, this.table()));
    // Lock, read once under the lock, plan from that read, write, release: the engine's one pass.
    const { plan: planned, report } = await converge(this.options.target, inventory, { parallel: 1 });
    const diff = planned.tables[0];
    if (!diff) throw new TargetError("agent", "the target planned no table for this host");
    const outcomeOfTable = report?.tables[0];
    const failure = outcomeOfTable?.error ?? diff.error;
    if (failure !== undefined) {
      const message = outcomeOfTable?.changedNothing === false ? `writing this host's routes failed: ${failure}` : `cannot lock or read this host's routes: ${failure}`;
      // The kind of what failed, not the message, says which: a held lock is busy, not a broken target.
      throw outcomeOfTable?.errorKind === "busy" ? new BusyError(message) : new TargetError("agent", message);
    }
    const read = this.options.host?.lastState(diff.table);
    this.reportConflicts(diff.conflicts.map((c) => ({ destination: c.route.destination, node: c.route.node, holder: c.existing.nextHopLabel ?? c.existing.nextHop ?? "?" })));

    // Owned routes as the kernel holds them: the plan's lists leave some out (an owned route on a
    // destination a foreign one also holds, at another metric, is a conflict, not unchanged; issue 25
    // item 6), so the read counts them where there is one, and the writes' results move that count.
    let owned = read ? ownedIn(read, this.options.proto) : diff.unchanged.length;
    if (!read) for (const change of diff.changes) if (change.action !== "create") owned++;
    let written = 0;
    let failed = 0;
    const refused = new Map<string, { node: string; reason: string }>();
    if (diff.changes.length) {
      const counted = this.count(outcomeOfTable?.results ?? []);
      written = counted.written;
      failed = counted.failed;
      owned += counted.owned;
      for (const result of counted.refused) refused.set(changeDestination(result.change), refusalOfResult(result));
    }
    // Every desired route was planned: what was refused now is the whole of what is left out.
    this.reportUnroutable(refused, undefined);
    this.owned = owned;
    // Written while the desired routes stayed those of the last converged reconcile: repairs of drift.
    if (written && this.convergedVersion === this.desiredVersion) metrics.driftRepairs.inc({}, written);
    if (failed === 0) this.convergedVersion = this.desiredVersion;
    // The agent's picture of the table: exact only when everything desired is there as written.
    this.expected = failed === 0 && diff.conflicts.length === 0 ? expectedOf([...this.desired.routes.values()].filter((route) => !this.unroutable.has(route.destination))) : undefined;
    this.fullDue = false;
    // Its review removed every owned nexthop object nothing used (a write of that action alone, when no route changed).
    if (failed === 0) this.nexthopsReleased = false;
    // The read is what the table still holds only when nothing at all was written (no route, no nexthop object).
    if (read && !diff.changes.length && !planned.review.actions.length) this.options.host!.table.remember(read);
    else this.options.host?.table.forget();
    return { written, failed, fields: { ...countActions(diff.changes), unchanged: diff.unchanged.length, conflicts: diff.conflicts.length } };
  }

  /**
   * The Nodes checked again (`touched`) get their routes again, and only their destinations, old and
   * new, are read and written, under the lock. A foreign route on one of them, or a protocol number
   * another cluster owns here, is the full path's to report: undefined, and it runs now. A failed write
   * is retried by the full path.
   */
  private async writeNodes(table: HostTable, touched: Set<string>): Promise<Written | undefined> {
    const here = this.table();
    const destinations = new Set<string>();
    const nodes: Node[] = [];
    for (const name of touched) {
      for (const route of this.routesOf.get(name)) destinations.add(route.destination);
      const node = this.index.node(name);
      if (node) nodes.push(node);
    }
    const routes = desiredRoutes(this.index.inventoryOf(nodes), here);
    for (const route of routes) destinations.add(route.destination);
    // Before writing: the kernel's events for these writes must read as the agent's own, not as drift.
    for (const name of touched) for (const route of [...this.routesOf.get(name)]) this.unwant(route);
    for (const route of routes) this.wantRoute(route);
    this.desiredVersion++;
    this.options.metrics.desiredRoutes.set(this.desired.routes.size);
    if (!destinations.size) return { written: 0, failed: 0, fields: { nodes: touched.size } };
    const inventory = this.index.inventoryOf([]);
    const done = await table.write(here, routes, destinations, {
      cluster: inventory.cluster,
      ...(inventory.clusterCIDR !== undefined ? { clusterCIDR: inventory.clusterCIDR } : {}),
      nodeOfNextHop: (ip) => nodes.find((n) => n.internalIPs.includes(ip))?.name ?? "?",
    });
    if (!done) {
      this.expected = undefined;
      return undefined;
    }
    if (done.diff.changes.some((change) => change.action !== "create")) this.nexthopsReleased = true;
    const counted = this.count(done.results);
    this.owned += counted.owned;
    this.reportUnroutable(new Map(counted.refused.map((result) => [changeDestination(result.change), refusalOfResult(result)])), destinations);
    if (counted.failed === 0 && done.diff.conflicts.length === 0 && this.expected) {
      for (const destination of destinations) this.expected.delete(destination);
      for (const route of routes) if (!this.unroutable.has(route.destination)) this.expected.set(route.destination, route.nextHop);
      this.convergedVersion = this.desiredVersion;
    } else {
      this.expected = undefined;
      this.fullDue = true;
      if (counted.failed === 0) return undefined;
    }
    return { written: counted.written, failed: counted.failed, fields: { nodes: touched.size, ...countActions(done.diff.changes) } };
  }

  /** Sets every desired route (and the view kernel events are judged against). */
  private want(routes: Route[]): void {
    const same = routes.length === this.desired.routes.size && routes.every((route) => {
      const earlier = this.desired.routes.get(route.destination);
      return earlier?.nextHop === route.nextHop && earlier.node === route.node;
    });
    if (same) return;
    for (const route of [...this.desired.routes.values()]) this.unwant(route);
    for (const route of routes) this.wantRoute(route);
    this.desiredVersion++;
    this.options.metrics.desiredRoutes.set(routes.length);
  }

  private wantRoute(route: Route): void {
    const earlier = this.desired.routes.get(route.destination);
    if (earlier) this.unwant(earlier);
    this.desired.set(route);
    this.routesOf.add(route.node, route);
  }

  private unwant(route: Route): void {
    if (this.desired.routes.get(route.destination) !== route) return;
    this.desired.delete(route.destination);
    this.routesOf.delete(route.node, route);
  }

  /** Counts a write's results in the metrics: written, failed, refused (not failures), and the change in owned routes. */
  private count(results: ChangeResult[]): { written: number; failed: number; owned: number; refused: ChangeResult[] } {
    const { metrics, log } = this.options;
    let written = 0;
    let owned = 0;
    const failures: string[] = [];
    const refused: ChangeResult[] = [];
    for (const result of results) {
      if (!result.ok && result.refused) {
        refused.push(result);
        continue;
      }
      if (!result.ok) {
        countError(metrics, "target");
        failures.push(`${result.change.action} ${changeDestination(result.change)}: ${result.error}`);
        continue;
      }
      written++;
      metrics.kernelWrites.inc({ action: result.change.action });
      if (result.change.action === "create") owned++;
      if (result.change.action === "delete") owned--;
    }
    // One line however many failed: a link down refuses every route at once.
    if (failures.length) log.warn("route changes failed", { failed: failures.length, first: failures.slice(0, 5) });
    return { written, failed: failures.length, owned, refused };
  }

  /**
   * The routes left out as unroutable: `refused` replaces what was known of `destinations` (all of them
   * when undefined: a full reconcile). Each newly left out is logged once (and counted as an input error:
   * the Node asks for what this host cannot do), each back in once; the gauge holds how many there are.
   */
  private reportUnroutable(refused: Map<string, { node: string; reason: string }>, destinations: ReadonlySet<string> | undefined): void {
    const { metrics, log } = this.options;
    const before = this.unroutable;
    const now = new Map(destinations ? [...before].filter(([destination]) => !destinations.has(destination)) : []);
    for (const [destination, entry] of refused) now.set(destination, entry);
    for (const [destination, entry] of now) {
      if (before.get(destination)?.reason === entry.reason) continue;
      countError(metrics, "input");
      log.warn("route left out: this host cannot hold it; every other route is still served", { node: entry.node, destination, reason: entry.reason });
    }
    for (const [destination, entry] of before) if (!now.has(destination)) log.info("route no longer left out", { node: entry.node, destination });
    this.unroutable = now;
    metrics.unroutable.set(now.size);
  }

  /** `--node`/NODE_NAME, else the Node one of this host's addresses belongs to (found once). */
  private async whoAmI(): Promise<string> {
    if (this.node !== undefined) return this.node;
    const inventory = this.index.inventory();
    const addresses = await this.options.hostAddresses();
    const found = nodeOfAddresses(inventory, addresses);
    if (!found) {
      throw new TargetError(
        "agent",
        `none of this host's addresses (${addresses.join(", ") || "none"}) is the InternalIP of a served Node (${inventory.nodes.length} listed); say which node this is with --node NAME or NODE_NAME`,
      );
    }
    this.node = found;
    this.options.log.info("this host is a node", { node: found, from: "its addresses" });
    return found;
  }

  /** Logs and counts Nodes entering and leaving quarantine; returns the ones newly quarantined. */
  private trackQuarantine(): QuarantinedNode[] {
    const { metrics, log } = this.options;
    const { quarantined, notes } = this.index;
    const fresh: QuarantinedNode[] = [];
    const now = new Map<string, string>();
    for (const [name, problems] of quarantined) {
      const text = problems.map(formatProblem);
      const key = text.join("; ");
      now.set(name, key);
      if (this.quarantined.get(name) === key) continue;
      const object = this.index.object(name) as KubeNode | undefined;
      fresh.push({ name, ...(object?.metadata.uid ? { uid: object.metadata.uid } : {}), problems: text });
      countError(metrics, "input");
      log.warn("node quarantined: left out of routing until its Node object is fixed; every other node is still served", { node: name, problems: text });
    }
    for (const name of this.quarantined.keys()) if (!now.has(name)) log.info("node no longer quarantined", { node: name });
    this.quarantined = now;
    metrics.quarantined.set(now.size);
    const noted = new Map<string, string>();
    for (const [name, lines] of notes) {
      const key = lines.join("; ");
      noted.set(name, key);
      if (this.notes.get(name) !== key) log.info("node note", { node: name, notes: lines });
    }
    this.notes = noted;
    return fresh;
  }

  /** Foreign routes on pod CIDR destinations: logged once each, counted while they last. */
  private reportConflicts(conflicts: { destination: string; node: string; holder: string }[]): void {
    const now = new Set(conflicts.map((c) => `${c.destination} ${c.holder}`));
    for (const conflict of conflicts) {
      if (this.conflicts.has(`${conflict.destination} ${conflict.holder}`)) continue;
      this.options.log.warn("a route podroutes does not own holds a pod CIDR: reported, never overwritten", conflict);
    }
    this.conflicts = now;
    this.options.metrics.conflicts.set(conflicts.length);
  }
}

/**
 * Whether a Node's update can change routing: the fields the inventory reads (name, InternalIPs, pod
 * CIDRs, labels) or their problems. Most updates are the kubelet's status heartbeats, which cannot; at
 * thousands of Nodes, reconciling on each would be an event flood of its own.
 */
export function routingChanged(previous: unknown, current: unknown): boolean {
  const fields = (object: unknown) => {
    const reading = readKubeNode(object);
    return JSON.stringify([reading.node ?? null, reading.problems, (object as KubeNode)?.metadata?.creationTimestamp ?? null]);
  };
  return fields(previous) !== fields(current);
}

/** The node and the reason of a refused change (only creates and replaces are ever refused). */
function refusalOfResult(result: ChangeResult): { node: string; reason: string } {
  const node = result.change.action === "delete" ? "?" : result.change.route.node;
  return { node, reason: result.error ?? "refused" };
}

/** What a reconcile wrote, for its metrics and its log line. */
interface Written {
  written: number;
  failed: number;
  fields: Record<string, unknown>;
}

/** Destination → next hop of every route: what the table holds after a reconcile that wrote them all. */
function expectedOf(routes: Iterable<Route>): ExpectedRoutes {
  const expected = new ExpectedRoutes();
  for (const route of routes) expected.set(route.destination, route.nextHop);
  return expected;
}

/** The routes of a read that carry podroutes' protocol number, in any table. */
function ownedIn(state: HostState, proto: number): number {
  const mark = String(proto);
  let owned = 0;
  for (const route of state.routes) if (route.protocol === mark) owned++;
  return owned;
}

function countActions(changes: { action: string }[]): { create: number; replace: number; delete: number } {
  const counts = { create: 0, replace: 0, delete: 0 };
  for (const change of changes) counts[change.action as keyof typeof counts]++;
  return counts;
}
