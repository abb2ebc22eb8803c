/**
 * One reconcile of this host's kernel table against the Node store, with exactly the pipeline of
 * `--target local`: Nodes → inventory (kube/nodes.ts, quarantining malformed Nodes), then the engine's
 * plan (read the table, diff) and apply (write only the diff) through the same HostRoutesTarget. What is
 * added here is what a long-running process needs around it: it refuses to plan before a complete list
 * (an API error must never read as "no nodes"), it keeps serving every good Node while reporting the bad
 * ones, it remembers what it planned (so kernel events can be told from its own writes), and it counts
 * what it did in metrics and logs.
 */
import { performance } from "node:perf_hooks";
import { apply, messageOf, plan } from "../apply/engine.js";
import { changeDestination } from "../plan/plan.js";
import { BusyError, kindOf } from "../errors.js";
import { formatProblem, type Problem } from "../inventory.js";
import { inventoryFromNodes, readKubeNode, type KubeNode, type NodeInventory } from "../kube/nodes.js";
import type { Logger } from "../observe/log.js";
import type { Route } from "../model.js";
import { nodeOfAddresses } from "../targets/linux/host-routes.js";
import { TargetError, type TableRef, type Target } from "../targets/target.js";
import { desiredView, type DesiredView } from "./kernel-events.js";
import { countError, type AgentMetrics, type SyncResult } from "./metrics.js";

/** Where the reconciler reads Nodes: the reflector's store. */
export interface NodeStore {
  /** True once a complete, successful list has been read; until then nothing is planned. */
  synced(): boolean;
  nodes(): unknown[];
  /**
   * A number that changes whenever a Node may have changed in a way routing reads (added, deleted, its
   * addresses or pod CIDRs, a relist). While it stays the same the last inventory is reused: a resync or
   * a kernel event does not validate thousands of Nodes again. Without it, every reconcile maps them.
   */
  version?(): number;
}

export interface ReconcilerOptions {
  /** A host-route target whose one table is `reconciler.table()`. */
  target: Target;
  store: NodeStore;
  proto: number;
  /** `--node` or NODE_NAME; else the node is found from the host's addresses. */
  node?: string;
  hostAddresses(): Promise<string[]>;
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
}

export class Reconciler {
  /** What the last reconcile planned for this host; kernel events are judged against it. */
  desired: DesiredView;
  /** Whether a reconcile has converged once (readiness). */
  converged = false;
  private quarantined = new Map<string, string>();
  private notes = new Map<string, string>();
  private conflicts = new Set<string>();
  /** The last inventory made from the Nodes, and the store version it was made at. */
  private mapped: NodeInventory | undefined;
  private mappedAt: number | undefined;
  /** The desired routes of the last converged reconcile: changes written against the same are drift repairs. */
  private lastConverged: ReadonlyMap<string, string> | undefined;

  /** The node this host is: `--node`/NODE_NAME, or found from its addresses by the first reconcile. */
  node: string | undefined;

  constructor(private readonly options: ReconcilerOptions) {
    this.node = options.node;
    this.desired = desiredView(options.proto, []);
  }

  /** The one table the agent writes: this host's. */
  table(): TableRef {
    if (this.node === undefined) throw new TargetError("agent", "which node this host is is not known yet");
    return { id: this.node, scope: "host", node: this.node };
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
      const objects = this.options.store.nodes();
      const version = this.options.store.version?.();
      let mapped = this.mapped;
      if (!mapped || version === undefined || version !== this.mappedAt) {
        mapped = inventoryFromNodes(objects, { source: "kubernetes" });
        this.mapped = mapped;
        this.mappedAt = version;
        outcome.newlyQuarantined = this.trackQuarantine(objects, mapped.quarantined, mapped.notes);
      }
      metrics.nodes.set(objects.length);
      const node = await this.whoAmI(mapped.inventory);
      outcome.node = node;
      outcome.nodeServed = mapped.inventory.nodes.some((n) => n.name === node);

      const planned = await plan(this.options.target, mapped.inventory, { parallel: 1 });
      const diff = planned.tables[0];
      if (!diff) throw new TargetError("agent", "the target planned no table for this host");
      if (diff.error !== undefined) throw new TargetError("agent", `cannot read this host's routes: ${diff.error}`);

      const wanted: Route[] = [...diff.unchanged, ...diff.conflicts.map((c) => c.route)];
      for (const change of diff.changes) if (change.action !== "delete") wanted.push(change.route);
      this.desired = desiredView(this.options.proto, wanted);
      metrics.desiredRoutes.set(wanted.length);
      this.reportConflicts(diff.conflicts.map((c) => ({ destination: c.route.destination, node: c.route.node, holder: c.existing.nextHopLabel ?? c.existing.nextHop ?? "?" })));

      let ownedBefore = diff.unchanged.length;
      for (const change of diff.changes) if (change.action !== "create") ownedBefore++;
      let owned = ownedBefore;
      let written = 0;
      let failed = 0;
      if (diff.changes.length) {
        const report = await apply(this.options.target, planned, mapped.inventory, { parallel: 1 });
        const outcomeOfTable = report.tables[0];
        if (outcomeOfTable?.error !== undefined) {
          const message = `writing this host's routes failed: ${outcomeOfTable.error}`;
          // The kind of what failed, not the message, says which: a held lock is busy, not a broken target.
          throw outcomeOfTable.errorKind === "busy" ? new BusyError(message) : new TargetError("agent", message);
        }
        const failures: string[] = [];
        for (const result of outcomeOfTable?.results ?? []) {
          if (!result.ok) {
            failed++;
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
      }
      metrics.ownedRoutes.set(owned);
      if (written && this.lastConverged && sameRoutes(this.lastConverged, this.desired.routes)) metrics.driftRepairs.inc({}, written);
      const counts = countActions(diff.changes);
      if (failed === 0) {
        this.lastConverged = this.desired.routes;
        this.converged = true;
        metrics.lastSuccess.set(Date.now() / 1000);
        metrics.ready.set(1);
        outcome.result = written ? "changed" : "unchanged";
      }
      const fields = { node, ...counts, failed, unchanged: diff.unchanged.length, conflicts: diff.conflicts.length, quarantined: mapped.quarantined.size, ms: Math.round(performance.now() - started), reasons: reasons.slice(0, 5) };
      if (written || failed) log.info(failed ? "reconciled with failures" : "reconciled", fields);
      else log.debug("reconciled: nothing to change", fields);
    } catch (error) {
      countError(metrics, kindOf(error));
      log.error("reconcile failed", { kind: kindOf(error), error: messageOf(error), reasons: reasons.slice(0, 5) });
    }
    metrics.syncs.inc({ result: outcome.result });
    metrics.syncDuration.observe((performance.now() - started) / 1000);
    return outcome;
  }

  /** `--node`/NODE_NAME, else the Node one of this host's addresses belongs to (found once). */
  private async whoAmI(inventory: Parameters<typeof nodeOfAddresses>[0]): Promise<string> {
    if (this.node !== undefined) return this.node;
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
  private trackQuarantine(objects: unknown[], quarantined: Map<string, Problem[]>, notes: Map<string, string[]>): QuarantinedNode[] {
    const { metrics, log } = this.options;
    const fresh: QuarantinedNode[] = [];
    const now = new Map<string, string>();
    for (const [name, problems] of quarantined) {
      const text = problems.map(formatProblem);
      const key = text.join("; ");
      now.set(name, key);
      if (this.quarantined.get(name) === key) continue;
      const object = objects.find((o) => (o as KubeNode)?.metadata?.name === name) as KubeNode | undefined;
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

function sameRoutes(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [destination, nextHop] of a) if (b.get(destination) !== nextHop) return false;
  return true;
}

function countActions(changes: { action: string }[]): { create: number; replace: number; delete: number } {
  const counts = { create: 0, replace: 0, delete: 0 };
  for (const change of changes) counts[change.action as keyof typeof counts]++;
  return counts;
}
