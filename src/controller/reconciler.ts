/**
 * One reconcile of the leader: every table of the target against the Node store, through the same
 * engine as `podroutes apply` (read each table once, plan, write the diff with the target's own code:
 * make-before-break on GCP, ReplaceRoute on AWS, one batch per host over SSH). A burst of Node events is
 * one reconcile (the loop coalesces them), so the network is read once per batch, never once per event.
 *
 * What a controller adds around the engine:
 * - it never plans before a complete list of Nodes (an API error must not read as "no nodes");
 * - malformed Nodes are quarantined and every good one is served;
 * - changes past a route limit or quota are left out and reported, the rest is written;
 * - each node's NetworkUnavailable condition is patched when its status or reason differ, and problems
 *   become aggregated Events on the Node;
 * - when leadership ends mid-way (the signal aborts), nothing more is written, the target's calls are
 *   cancelled, and nothing is reported: what was done is seen by the next leader's first read.
 */
import { performance } from "node:perf_hooks";
import pLimit from "p-limit";
import { apply, messageOf, plan, type ApplyReport } from "../apply/engine.js";
import { kindOf } from "../errors.js";
import type { KubeClient } from "../kube/client.js";
import { EventRecorder } from "../kube/events.js";
import { inventoryFromNodes, type KubeNode, type NodeInventory } from "../kube/nodes.js";
import type { Logger } from "../observe/log.js";
import { formatProblem } from "../inventory.js";
import type { Plan } from "../plan/plan.js";
import type { ChangeResult, RefusedChange, Target } from "../targets/target.js";
import { networkConditionPatch } from "../agent/node-status.js";
import { conditionFor, EVENT_REASON, routeStates, type RouteProblem } from "./conditions.js";
import { countError } from "../observe/metrics.js";
import type { ControllerMetrics } from "./metrics.js";

/** Condition patches and Event writes in flight at once: enough for thousands of Nodes in seconds. */
const STATUS_WRITES_IN_FLIGHT = 32;

export interface NodeStore {
  synced(): boolean;
  /** The Nodes, keyed by name. */
  nodes(): ReadonlyMap<string, KubeNode>;
  /** Changes whenever a Node changed in a way routing reads: the inventory is mapped again only then. */
  version(): number;
}

export interface ReconcilerOptions {
  target: Target;
  store: NodeStore;
  client: KubeClient;
  events: EventRecorder;
  cluster: string;
  clusterCIDR?: string;
  /** Tables worked on at once (hosts over SSH). */
  parallel: number;
  /** Aborts when leadership ends: no write starts afterwards. */
  signal: AbortSignal;
  metrics: ControllerMetrics;
  log: Logger;
}

export interface ReconcileOutcome {
  /** Every change written and every table read: nothing to retry (refusals and conflicts wait for a change). */
  converged: boolean;
  /** Node → its problems after this reconcile (empty: routed everywhere). */
  states: Map<string, RouteProblem[]>;
  counts: ApplyReport["counts"] | undefined;
}

export class RouteReconciler {
  /** Whether a reconcile has completed once (the leader's readiness). */
  reconciled = false;
  private mapped: NodeInventory | undefined;
  private mappedAt = -1;
  /** Node → resourceVersion and status/reason written, until the watch brings the patched Node back. */
  private readonly patched = new Map<string, { version: string | undefined; key: string }>();

  constructor(private readonly options: ReconcilerOptions) {}

  async reconcile(reasons: string[]): Promise<ReconcileOutcome> {
    const { metrics, log, signal, target, store } = this.options;
    const started = performance.now();
    if (!store.synced()) throw new Error("no complete list of Nodes yet: nothing is planned");
    const mapped = this.inventory();
    const inventory = mapped.inventory;
    metrics.nodes.set(store.nodes().size);
    metrics.quarantined.set(mapped.quarantined.size);

    // Planned and written in one run: a target without locks writes from the plan's read, taken moments before.
    const run = target.begin(inventory);
    const planned = await plan(target, inventory, { parallel: this.options.parallel, run });
    signal.throwIfAborted();
    const refused = refusedChanges(planned);
    const trimmed = withoutRefused(planned, refused);
    const hasWork = trimmed.tables.some((t) => t.changes.length) || trimmed.review.actions.length > 0;
    const writes = new StatusWrites();
    const early = hasWork ? this.earlyConditions(planned, refused, mapped, writes) : undefined;
    const report = hasWork ? await apply(target, trimmed, inventory, { parallel: this.options.parallel, run, ...(early ? { onResult: early } : {}) }) : undefined;
    signal.throwIfAborted();

    const states = routeStates(planned, report, refused, inventory, mapped.quarantined);
    this.observe(planned, report, refused);
    const reported = await this.report(states, writes);
    const unreadable = planned.tables.filter((t) => t.error !== undefined);
    // A condition or Event that could not be written is tried again too: nothing else may come to retrigger it.
    const converged = unreadable.length === 0 && (report?.ok ?? true) && reported;
    this.reconciled = true;
    const unavailable = [...states.values()].filter((p) => p.length).length;
    metrics.unavailable.set(unavailable);
    metrics.syncs.inc({ result: !converged ? "failed" : report && report.counts.created + report.counts.replaced + report.counts.deleted > 0 ? "changed" : "unchanged" });
    metrics.syncDuration.observe((performance.now() - started) / 1000);
    const fields = {
      ...(report ? report.counts : { created: 0, replaced: 0, deleted: 0, failed: 0, failedTables: 0, conflicts: 0 }),
      refused: refused.length,
      conflicts: report?.counts.conflicts ?? planned.summary.conflicts,
      unchanged: planned.summary.unchanged,
      unreadableTables: unreadable.map((t) => `${t.table.id}: ${t.error}`),
      nodesUnavailable: unavailable,
      quarantined: mapped.quarantined.size,
      ms: Math.round(performance.now() - started),
      reasons: reasons.slice(0, 5),
      ...(reasons.length > 5 ? { moreReasons: reasons.length - 5 } : {}),
    };
    if (!converged) log.warn("reconciled with failures; trying again", fields);
    else if (report) log.info("reconciled", fields);
    else log.debug("reconciled: nothing to change", fields);
    return { converged, states, counts: report?.counts };
  }

  /** The inventory of the good Nodes, mapped again only when the store changed in a way routing reads. */
  private inventory(): NodeInventory {
    const version = this.options.store.version();
    if (!this.mapped || version !== this.mappedAt) {
      const previous = this.mapped?.quarantined;
      this.mapped = inventoryFromNodes([...this.options.store.nodes().values()], {
        source: "kubernetes",
        cluster: this.options.cluster,
        ...(this.options.clusterCIDR ? { clusterCIDR: this.options.clusterCIDR } : {}),
      });
      this.mappedAt = version;
      for (const [name, problems] of this.mapped.quarantined) {
        if (previous?.has(name)) continue;
        countError(this.options.metrics, "input");
        this.options.log.warn("node quarantined: left out of routing until its Node object is fixed; every other node is served", { node: name, problems: problems.map(formatProblem) });
      }
      for (const problem of this.mapped.general) this.options.log.warn("Nodes: a problem of no one node", { problem: formatProblem(problem) });
    }
    return this.mapped;
  }

  private observe(planned: Plan, report: ApplyReport | undefined, refused: RefusedChange[]): void {
    const { metrics } = this.options;
    for (const diff of planned.tables) {
      if (diff.error !== undefined) continue;
      const desired = diff.unchanged.length + diff.conflicts.length + diff.changes.filter((c) => c.action !== "delete").length;
      metrics.desiredRoutes.set(desired, { table: diff.table.id });
      let owned = diff.unchanged.length + diff.changes.filter((c) => c.action !== "create").length;
      const outcome = report?.tables.find((t) => t.table.id === diff.table.id);
      for (const result of outcome?.results ?? []) {
        if (result.ok && result.change.action === "create") owned++;
        if (result.ok && result.change.action === "delete") owned--;
      }
      metrics.ownedRoutes.set(owned, { table: diff.table.id });
    }
    metrics.conflicts.set(planned.summary.conflicts);
    for (const outcome of report?.tables ?? []) {
      for (const result of outcome.results) metrics.routeChanges.inc({ action: result.change.action, result: result.ok ? "ok" : "failed" });
    }
    for (const refusal of refused) metrics.routeChanges.inc({ action: refusal.change.action, result: "refused" });
  }

  /**
   * Sets a node's condition to False as soon as the last of its planned route writes succeeded, while the
   * rest of a large write goes on (pods on that node need not wait for a thousand others). Only for nodes
   * nothing else holds back in this plan (a foreign route, a refusal, an unreadable table, a failed
   * write): those wait for the full report. Returns the write observer for apply.
   */
  private earlyConditions(planned: Plan, refused: RefusedChange[], mapped: NodeInventory, writes: StatusWrites): ((result: ChangeResult) => void) | undefined {
    if (planned.tables.some((t) => t.error !== undefined)) return undefined;
    const pending = new Map<string, number>();
    const held = new Set<string>(mapped.quarantined.keys());
    const refusedSet = new Set(refused.map((r) => r.change));
    for (const diff of planned.tables) {
      for (const conflict of diff.conflicts) held.add(conflict.route.node);
      for (const change of diff.changes) {
        if (change.action === "delete") continue;
        if (refusedSet.has(change)) held.add(change.route.node);
        else pending.set(change.route.node, (pending.get(change.route.node) ?? 0) + 1);
      }
    }
    return (result) => {
      if (result.change.action === "delete") return;
      const node = result.change.route.node;
      if (!result.ok) held.add(node);
      const left = (pending.get(node) ?? 0) - (result.ok ? 1 : 0);
      pending.set(node, left);
      // After the writes this result let start (the route writes come first; the patch fills their wait).
      // Once the report began it covers the node itself.
      if (left === 0 && !held.has(node)) setImmediate(() => writes.closed || this.writeCondition(node, [], writes));
    };
  }

  /**
   * Patches each node's NetworkUnavailable where it differs, and records an Event for each problem. Only
   * while leading; a failed write is logged and counted, and makes the reconcile count as failed so the
   * loop tries again (it compares with the Node as the watch shows it). Returns whether every write went
   * through, the early ones included.
   */
  private async report(states: Map<string, RouteProblem[]>, writes: StatusWrites): Promise<boolean> {
    const { events, signal, metrics, log, store } = this.options;
    const nodes = store.nodes();
    for (const [name, problems] of states) {
      const node = nodes.get(name);
      if (!node) continue;
      this.writeCondition(name, problems, writes);
      for (const kind of new Set(problems.map((p) => p.kind))) {
        const reason = EVENT_REASON[kind];
        const message = problems.filter((p) => p.kind === kind).map((p) => p.message).join("; ");
        writes.add(async () => {
          signal.throwIfAborted();
          try {
            const recorded = await events.record({ name, ...(node.metadata.uid ? { uid: node.metadata.uid } : {}) }, reason, message, { signal });
            metrics.events.inc({ reason, result: recorded });
          } catch (error) {
            if (signal.aborted) throw error;
            writes.failed++;
            countError(metrics, kindOf(error));
            log.warn("could not record the Event; trying again", { node: name, reason, error: messageOf(error) });
          }
        });
      }
    }
    return writes.settle(signal);
  }

  /** Queues the patch of a node's condition when the Node (as last written or watched) shows otherwise. */
  private writeCondition(name: string, problems: RouteProblem[], writes: StatusWrites): void {
    const { client, signal, metrics, log } = this.options;
    const node = this.options.store.nodes().get(name);
    if (!node) return;
    const wanted = conditionFor(problems);
    const key = `${wanted.status}/${wanted.reason}/${wanted.message}`;
    const last = this.patched.get(name);
    if (last && last.version === node.metadata.resourceVersion && last.key === key) return;
    const patch = networkConditionPatch(node, wanted, new Date(), { compareMessage: true });
    if (!patch) return;
    this.patched.set(name, { version: node.metadata.resourceVersion, key });
    writes.add(async () => {
      signal.throwIfAborted();
      try {
        await client.request("PATCH", `/api/v1/nodes/${encodeURIComponent(name)}/status`, { body: patch, contentType: "application/strategic-merge-patch+json", signal });
        metrics.conditionPatches.inc({ status: wanted.status });
        log.info("node condition set", { node: name, condition: `NetworkUnavailable=${wanted.status}`, reason: wanted.reason, ...(problems.length ? { message: wanted.message } : {}) });
      } catch (error) {
        this.patched.delete(name);
        if (signal.aborted) throw error;
        writes.failed++;
        countError(metrics, kindOf(error));
        log.warn("could not set the node condition; trying again", { node: name, error: messageOf(error) });
      }
    });
  }
}

/** The condition patches and Event writes of one reconcile, a bounded number in flight. */
class StatusWrites {
  private readonly limit = pLimit(STATUS_WRITES_IN_FLIGHT);
  private readonly running: Promise<void>[] = [];
  failed = 0;
  /** Set when settle begins: writes added later would not be waited for. */
  closed = false;

  add(write: () => Promise<void>): void {
    this.running.push(this.limit(write));
  }

  /** Waits for every write; true when all went through. Throws when the leadership ended meanwhile. */
  async settle(signal: AbortSignal): Promise<boolean> {
    this.closed = true;
    const settled = await Promise.allSettled(this.running);
    signal.throwIfAborted();
    for (const result of settled) if (result.status === "rejected") throw result.reason;
    return this.failed === 0;
  }
}

/** The changes the target's review refused one by one; a refusal it did not itemise refuses every change. */
export function refusedChanges(planned: Plan): RefusedChange[] {
  const itemised = planned.review.refused ?? [];
  if (itemised.length || !planned.review.refusals.length) return itemised;
  const message = planned.review.refusals.join("; ");
  return planned.tables.flatMap((diff) => diff.changes.map((change): RefusedChange => ({ table: diff.table.id, change, limit: "quota", message })));
}

/** The plan without the refused changes (the same change objects, so results map back to them). */
export function withoutRefused(planned: Plan, refused: RefusedChange[]): Plan {
  if (!refused.length) return planned;
  const out = new Set(refused.map((r) => r.change));
  return { ...planned, tables: planned.tables.map((diff) => ({ ...diff, changes: diff.changes.filter((change) => !out.has(change)) })) };
}
