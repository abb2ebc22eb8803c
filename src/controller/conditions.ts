/**
 * What each node's NetworkUnavailable condition should say after a reconcile, and which Events to emit,
 * decided without I/O from the plan, what apply did, what the target refused and which Nodes are
 * quarantined. A node is routed (`False`/`RouteCreated`) only when every pod CIDR of it has its route in
 * every table that should hold it: unchanged, or written now. Otherwise it is `True`/`NoRouteCreated`
 * with the reasons: a failed write (API error), a route limit or a quota, a route podroutes does not own
 * on the destination, or a malformed Node object. A table that could not be read says nothing either way. Nodes without a pod CIDR get no
 * condition (nothing routes to them yet), as with the route controller.
 */
import type { ApplyReport } from "../apply/engine.js";
import { formatProblem, type Problem } from "../inventory.js";
import type { Inventory } from "../model.js";
import type { Conflict, Plan } from "../plan/plan.js";
import type { Change, ChangeResult, RefusedChange } from "../targets/target.js";
import type { NetworkCondition } from "../agent/node-status.js";

export type RouteProblemKind = "api-error" | "route-limit" | "quota" | "foreign-route" | "invalid-node";

/** The Event reason of each kind of problem, as the route controller names them where it has one. */
export const EVENT_REASON: Record<RouteProblemKind, string> = {
  "api-error": "FailedToCreateRoute",
  "route-limit": "RouteLimitExceeded",
  quota: "QuotaExceeded",
  "foreign-route": "ForeignRouteConflict",
  "invalid-node": "FailedToCreateRoute",
};

export const ROUTE_CREATED = "RouteCreated";
export const NO_ROUTE_CREATED = "NoRouteCreated";

export interface RouteProblem {
  kind: RouteProblemKind;
  message: string;
}

/**
 * Node name → its problems (empty: routed everywhere), for every node with a pod CIDR and every
 * quarantined Node, except nodes a table that could not be read should route to: of those nothing is
 * known. `report` is undefined when nothing was applied (no changes).
 */
export function routeStates(
  planned: Plan,
  report: ApplyReport | undefined,
  refused: RefusedChange[],
  inventory: Inventory,
  quarantined: ReadonlyMap<string, Problem[]>,
): Map<string, RouteProblem[]> {
  const states = new Map<string, RouteProblem[]>();
  for (const node of inventory.nodes) if (node.podCIDRs.length) states.set(node.name, []);
  const unknown = new Set<string>();
  const add = (node: string, problem: RouteProblem) => {
    const list = states.get(node);
    if (list && !list.some((p) => p.kind === problem.kind && p.message === problem.message)) list.push(problem);
  };

  const results = new Map<Change, ChangeResult>();
  const tableErrors = new Map<string, string>();
  const foreign = (table: string, conflict: Conflict) => {
    const holder = conflict.existing.nextHopLabel ?? conflict.existing.nextHop ?? "?";
    add(conflict.route.node, { kind: "foreign-route", message: `a route podroutes does not own holds ${conflict.route.destination} in ${table} (via ${holder}${conflict.existing.name ? `, ${conflict.existing.name}` : ""}); it is never overwritten` });
  };
  for (const outcome of report?.tables ?? []) {
    if (outcome.error !== undefined) tableErrors.set(outcome.table.id, outcome.error);
    for (const result of outcome.results) results.set(result.change, result);
    // Foreign routes that took a destination between the plan and the write (found by the write's recheck).
    for (const conflict of outcome.conflicts ?? []) foreign(outcome.table.id, conflict);
  }
  const refusedBy = new Map(refused.map((r) => [r.change, r]));

  for (const diff of planned.tables) {
    const table = diff.table.id;
    if (diff.error !== undefined) {
      // Nothing is known of this table, so nothing is said of the nodes it should route to: their routes
      // may well be there (a Compute API outage must not taint every node NetworkUnavailable). The
      // reconcile counts as failed and is tried again; their conditions stay as they are meanwhile.
      for (const node of [...states.keys()]) if (!(diff.table.scope === "host" && diff.table.node === node)) unknown.add(node);
      continue;
    }
    for (const conflict of diff.conflicts) foreign(table, conflict);
    for (const change of diff.changes) {
      if (change.action === "delete") continue;
      const node = change.route.node;
      const refusal = refusedBy.get(change);
      if (refusal) {
        add(node, { kind: refusal.limit, message: refusal.message });
        continue;
      }
      const result = results.get(change);
      if (result?.ok) continue;
      if (result?.conflict) {
        add(node, { kind: "foreign-route", message: `${table}: a route podroutes does not own took ${change.route.destination} before it could be written${result.error ? ` (${result.error})` : ""}; it is never overwritten` });
        continue;
      }
      const why = result?.error ?? tableErrors.get(table) ?? "not carried out";
      add(node, { kind: "api-error", message: `${table}: ${change.action} ${change.route.destination} via ${change.route.nextHop} failed: ${why}` });
    }
  }
  for (const name of unknown) states.delete(name);
  for (const [name, problems] of quarantined) {
    states.set(name, [{ kind: "invalid-node", message: `the Node object cannot be routed: ${problems.map(formatProblem).join("; ")}` }]);
  }
  return states;
}

/** The condition a node's problems call for. */
export function conditionFor(problems: RouteProblem[]): NetworkCondition {
  if (!problems.length) return { status: "False", reason: ROUTE_CREATED, message: "podroutes controller: routes to this node's pod CIDRs exist in every table" };
  return { status: "True", reason: NO_ROUTE_CREATED, message: `podroutes controller: ${problems.map((p) => p.message).join("; ")}` };
}
