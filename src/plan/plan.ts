/**
 * The planner: which routes each table should hold, and the diff against what it holds. Pure, so the
 * whole decision of what to change is tested without a kernel or a cloud, table-style and by property.
 *
 * One action per destination, as the Kubernetes route controller does: create, replace (ours, next hop
 * changed), delete (ours, no longer wanted), unchanged, or conflict (someone else's route sits on our
 * destination: reported, never overwritten).
 */
import { cidr, compareRanges, internalIpOf, routeName, sortByCidr, type Inventory, type Node, type Route } from "../model.js";
import type { Change, ChangeResult, Conflict, ObservedRoute, Review, TableDiff, TableRef } from "../targets/target.js";
import { isResponsibleForRoute } from "./ownership.js";

export type { Conflict, TableDiff } from "../targets/target.js";

export interface PlanSummary {
  create: number;
  replace: number;
  delete: number;
  unchanged: number;
  conflicts: number;
}

export interface Plan {
  cluster: string;
  target: string;
  tables: TableDiff[];
  summary: PlanSummary;
  review: Review;
}

/** The routes a table should hold: every pod CIDR of every node, except its own node's on a host table. */
export function desiredRoutes(inventory: Inventory, table: TableRef): Route[] {
  const routes = inventoryRoutes(inventory);
  return table.scope === "host" ? routes.filter((route) => route.node !== table.node) : [...routes];
}

/**
 * Every node's routes in address order, made once per inventory and shared (frozen) by every table's
 * plan: a host table's routes are these minus its own node's, so N tables cost no N parses and sorts.
 * Remembered with what they were made from, so that an inventory whose nodes were replaced since (a
 * long-running process may swap a node or its lists) gets its routes made again.
 */
interface InventoryRoutes {
  nodes: Inventory["nodes"];
  /** Per node, what its routes were made from: the node itself, its name, and its two lists. */
  made: [Node, string, string[], string[]][];
  routes: readonly Route[];
}
const routesOfInventory = new WeakMap<Inventory, InventoryRoutes>();

function inventoryRoutes(inventory: Inventory): readonly Route[] {
  const remembered = routesOfInventory.get(inventory);
  if (remembered && madeFromTheseNodes(remembered, inventory.nodes)) return remembered.routes;
  const ranged = [];
  for (const node of inventory.nodes) {
    for (const destination of node.podCIDRs) {
      const range = cidr(destination);
      const nextHop = internalIpOf(node, range.family);
      // Validation guarantees a next hop of the pod CIDR's family; keep the planner total anyway.
      if (!nextHop) continue;
      const route: Route = Object.freeze({ name: routeName(range), destination, nextHop, node: node.name, family: range.family });
      ranged.push({ route, range });
    }
  }
  const routes = ranged.sort((a, b) => compareRanges(a.range, b.range)).map(({ route }) => route);
  const made = inventory.nodes.map((node): InventoryRoutes["made"][number] => [node, node.name, node.internalIPs, node.podCIDRs]);
  routesOfInventory.set(inventory, { nodes: inventory.nodes, made, routes });
  return routes;
}

/** Identity checks only (no text is read), so checking costs far less than making the routes again. */
function madeFromTheseNodes(remembered: InventoryRoutes, nodes: Inventory["nodes"]): boolean {
  return (
    remembered.nodes === nodes &&
    remembered.made.length === nodes.length &&
    remembered.made.every(([node, name, internalIPs, podCIDRs], i) => nodes[i] === node && node.name === name && node.internalIPs === internalIPs && node.podCIDRs === podCIDRs)
  );
}

export function defaultSameRoute(desired: Route, observed: ObservedRoute): boolean {
  return observed.nextHop === desired.nextHop && observed.healthy !== false;
}

export interface DiffOptions {
  clusterCIDR?: string;
  sameRoute?: (desired: Route, observed: ObservedRoute) => boolean;
}

/**
 * The diff of one table. `observed` may hold foreign routes on any destination; only those on a
 * desired destination matter (conflicts). Deletes are limited to owned routes that podroutes is
 * responsible for (inside the cluster CIDR when one is set).
 */
export function diffTable(table: TableRef, desired: Route[], observed: ObservedRoute[], options: DiffOptions = {}): TableDiff {
  const same = options.sameRoute ?? defaultSameRoute;
  const byDestination = new Map<string, ObservedRoute[]>();
  for (const route of observed) {
    const list = byDestination.get(route.destination) ?? [];
    list.push(route);
    byDestination.set(route.destination, list);
  }

  const diff: TableDiff = { table, changes: [], unchanged: [], conflicts: [] };
  const wanted = new Set<string>();
  const none: ObservedRoute[] = [];
  for (const route of desired) {
    wanted.add(route.destination);
    const here = byDestination.get(route.destination) ?? none;
    const foreign = here.find((r) => !r.owned);
    // Most destinations hold one route: no filtered copy for them.
    const ours = here.length === 1 && here[0]!.owned ? here : here.filter((r) => r.owned);
    if (foreign) {
      diff.conflicts.push({ route, existing: foreign });
      continue;
    }
    const keep = ours.find((r) => same(route, r));
    const reused = keep ?? ours[0];
    if (keep) diff.unchanged.push(route);
    else if (reused) diff.changes.push({ action: "replace", route, current: reused });
    else diff.changes.push({ action: "create", route });
    // Further owned copies on the same destination (a half-finished replace) are leftovers.
    for (const extra of ours) if (extra !== reused) diff.changes.push({ action: "delete", current: extra });
  }

  for (const route of observed) {
    if (!route.owned && route.unattributed !== undefined && !wanted.has(route.destination)) (diff.unattributed ??= []).push(route);
    if (!route.owned || wanted.has(route.destination)) continue;
    if (!isResponsibleForRoute(route.destination, options.clusterCIDR)) continue;
    diff.changes.push({ action: "delete", current: route });
  }
  // Changes come in the desired routes' order (address order), deletes after them: sorted only if needed.
  if (!inCidrOrder(diff.changes)) diff.changes = sortByCidr(diff.changes, changeDestination);
  return diff;
}

function inCidrOrder(changes: Change[]): boolean {
  for (let i = 1; i < changes.length; i++) if (compareRanges(cidr(changeDestination(changes[i - 1]!)), cidr(changeDestination(changes[i]!))) > 0) return false;
  return true;
}

/** What a write may still do, once the table has been read again under its lock. */
export interface Recheck {
  /** The approved changes to write now, unaltered. */
  write: Change[];
  /** The approved changes not written, each with why: done meanwhile (ok), a conflict, or a stale plan. */
  results: ChangeResult[];
  /** Destinations that a foreign route took since the plan though no change was planned there. */
  conflicts: Conflict[];
  /** The table changed since the plan in a way the plan did not foresee: nothing may be written. */
  stale: boolean;
}

/** An observed route, exactly: two routes on one destination differ here if they differ anywhere. */
function routeIdentity(route: ObservedRoute): string {
  return JSON.stringify([route.destination, route.owned, route.nextHop ?? null, route.nextHopLabel ?? null, route.name ?? null, route.healthy ?? null, route.details ?? null]);
}

function changeIdentity(change: Change): string {
  return JSON.stringify([change.action, changeDestination(change), change.action === "delete" ? null : change.route.nextHop, change.action === "create" ? null : routeIdentity(change.current)]);
}

/**
 * Write-time ownership: the approved diff of a table checked against the table as it is now (read
 * under the lock), so a write acts only on what is still podroutes' and still as planned. The diff is
 * planned again against what the approved plan wanted; then
 * - an approved change the fresh diff still makes is written as approved;
 * - one whose destination a foreign route took meanwhile is not written: a conflict;
 * - one the fresh diff no longer needs was done meanwhile (another run of the same inventory): ok;
 * - a change the fresh diff needs that was never approved (another podroutes run wrote the table with
 *   another inventory) makes the plan stale: nothing is written, so the table ends as one plan or the
 *   other, never a mix, and a re-run plans from what is there.
 * Pure.
 */
export function recheck(approved: TableDiff, now: ObservedRoute[], options: DiffOptions = {}): Recheck {
  const desired: Route[] = [];
  for (const route of approved.unchanged) desired.push(route);
  for (const change of approved.changes) if (change.action !== "delete") desired.push(change.route);
  for (const conflict of approved.conflicts) desired.push(conflict.route);
  const fresh = diffTable(approved.table, desired, now, options);

  const approvedChanges = new Set(approved.changes.map(changeIdentity));
  const plannedConflicts = new Set(approved.conflicts.map((c) => c.route.destination));
  const stale = fresh.changes.some((change) => !approvedChanges.has(changeIdentity(change)) && !plannedConflicts.has(changeDestination(change)));
  if (stale) {
    const error = "the table changed since the plan (another podroutes run wrote it?); nothing was written to it: run the same command again to plan from what is there";
    return { write: [], results: approved.changes.map((change) => ({ change, ok: false, error })), conflicts: [], stale: true };
  }
  const freshChanges = new Set(fresh.changes.map(changeIdentity));
  const freshConflicts = new Map(fresh.conflicts.map((c) => [c.route.destination, c]));
  const result: Recheck = { write: [], results: [], conflicts: [], stale: false };
  const touched = new Set<string>();
  for (const change of approved.changes) {
    const destination = changeDestination(change);
    touched.add(destination);
    const conflict = freshConflicts.get(destination);
    if (freshChanges.has(changeIdentity(change))) result.write.push(change);
    else if (conflict) {
      result.results.push({
        change,
        ok: false,
        conflict: true,
        error: `a route podroutes does not own took ${destination} after the plan (via ${conflict.existing.nextHopLabel ?? conflict.existing.nextHop ?? "?"}${conflict.existing.protocol ? `, proto ${conflict.existing.protocol}` : ""}): left alone, not written`,
      });
    } else result.results.push({ change, ok: true });
  }
  for (const conflict of fresh.conflicts) {
    if (!touched.has(conflict.route.destination) && !plannedConflicts.has(conflict.route.destination)) result.conflicts.push(conflict);
  }
  return result;
}

export function summarize(tables: TableDiff[]): PlanSummary {
  const summary: PlanSummary = { create: 0, replace: 0, delete: 0, unchanged: 0, conflicts: 0 };
  for (const table of tables) {
    for (const change of table.changes) summary[change.action]++;
    summary.unchanged += table.unchanged.length;
    summary.conflicts += table.conflicts.length;
  }
  return summary;
}

/** Every route of the plan that may be the cluster's though nothing says so, with its table. */
export function unattributedRoutes(plan: Plan): { table: string; route: ObservedRoute }[] {
  return plan.tables.flatMap((t) => (t.unattributed ?? []).map((route) => ({ table: t.table.id, route })));
}

export function hasChanges(plan: Plan): boolean {
  return plan.summary.create + plan.summary.replace + plan.summary.delete + plan.review.actions.length > 0;
}

export function changeDestination(change: Change): string {
  return change.action === "delete" ? change.current.destination : change.route.destination;
}
