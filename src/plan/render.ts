/**
 * Plans and apply reports as people read them (terraform's symbols and footer) and as programs read them
 * (a versioned JSON document). Pure: values in, text or plain objects out.
 */
import type { ApplyReport } from "../apply/engine.js";
import type { Change, ObservedRoute } from "../targets/target.js";
import type { Plan, TableDiff } from "./plan.js";
import { hasChanges, unattributedRoutes } from "./plan.js";

/** Bumped when the JSON shape changes incompatibly. */
export const FORMAT_VERSION = "1.0";

const SYMBOL = { create: "+", replace: "-/+", delete: "-" } as const;

function via(route: ObservedRoute): string {
  return route.nextHopLabel ?? route.nextHop ?? "?";
}

export function describeChange(change: Change): string {
  switch (change.action) {
    case "create":
      return `${change.route.destination} via ${change.route.nextHop} (${change.route.node})`;
    case "replace":
      return `${change.route.destination} via ${change.route.nextHop} (${change.route.node}), was via ${via(change.current)}${change.current.healthy === false ? " (broken)" : ""}`;
    case "delete":
      return `${change.current.destination} via ${via(change.current)}`;
  }
}

function tableTitle(table: TableDiff): string {
  return table.table.scope === "host" ? `${table.table.id} (routes on node ${table.table.node})` : table.table.id;
}

/** Human plan, terraform style. */
export function renderPlan(plan: Plan, options: { deleting?: boolean } = {}): string {
  const lines: string[] = [];
  const changed = plan.tables.filter((t) => t.changes.length || t.conflicts.length || t.unattributed?.length || t.error !== undefined);
  for (const action of plan.review.actions) lines.push(`  ~ ${action.table}: ${action.description}`);
  for (const table of changed) {
    lines.push(`  ${tableTitle(table)}`);
    if (table.error !== undefined) lines.push(`    ✗ cannot read: ${table.error}`);
    for (const change of table.changes) lines.push(`    ${SYMBOL[change.action].padStart(3)} ${describeChange(change)}`);
    for (const conflict of table.conflicts) {
      lines.push(
        `      ! ${conflict.route.destination}: a route podroutes does not own is there (via ${via(conflict.existing)}${conflict.existing.protocol ? `, proto ${conflict.existing.protocol}` : ""}${conflict.existing.name ? `, ${conflict.existing.name}` : ""}); left alone, ${conflict.route.node}'s route is not written`,
      );
    }
    for (const route of table.unattributed ?? []) lines.push(`      ? ${route.destination} via ${via(route)}: left alone: ${route.unattributed}`);
  }
  const out: string[] = [];
  const s = plan.summary;
  if (lines.length) {
    out.push(`podroutes will ${options.deleting ? "remove these routes" : "make these changes"} on target ${plan.target} (cluster ${plan.cluster}):`, "");
    for (const line of lines) out.push(line);
    out.push("");
  }
  for (const warning of plan.review.warnings) out.push(`Warning: ${warning}`);
  for (const refusal of plan.review.refusals) out.push(`Refused: ${refusal}`);
  const unreadable = plan.tables.filter((t) => t.error !== undefined).length;
  if (unreadable && unreadable === plan.tables.length) {
    out.push(`Nothing could be planned: ${unreadable === 1 ? "the table" : `none of the ${unreadable} tables`} could be read.`);
  } else if (!hasChanges(plan) && options.deleting) {
    out.push(`No changes: no route that podroutes owns was found${unreadable ? ` in the ${plan.tables.length - unreadable} tables that could be read` : ""}.`);
  } else if (!hasChanges(plan)) {
    out.push(`No changes. ${s.unchanged} route${s.unchanged === 1 ? "" : "s"} already match the inventory${unreadable ? ` in the ${plan.tables.length - unreadable} tables that could be read` : ""}.`);
  } else {
    out.push(
      `Plan: ${s.create} to add, ${s.replace} to replace, ${s.delete} to destroy${plan.review.actions.length ? `, ${plan.review.actions.length} other actions` : ""}. ${s.unchanged} unchanged.`,
    );
  }
  const unknown = unattributedRoutes(plan).length;
  if (unknown) out.push(`${unknown} route${unknown === 1 ? "" : "s"} in the cluster CIDR may be the cluster's but cannot be attributed to it (see "?" above)${options.deleting ? ": not removed" : ""}.`);
  if (s.conflicts) out.push(`${s.conflicts} conflict${s.conflicts === 1 ? "" : "s"}: routes podroutes does not own sit on its destinations (see "!" above).`);
  if (unreadable && unreadable < plan.tables.length) out.push(`${unreadable} table${unreadable === 1 ? "" : "s"} could not be read: nothing is planned for ${unreadable === 1 ? "it" : "them"}.`);
  return out.join("\n");
}

function changeJson(change: Change) {
  if (change.action === "delete") {
    return { action: change.action, destination: change.current.destination, current: change.current };
  }
  return {
    action: change.action,
    destination: change.route.destination,
    name: change.route.name,
    next_hop: change.route.nextHop,
    node: change.route.node,
    ...(change.action === "replace" ? { current: change.current } : {}),
  };
}

export function planJson(plan: Plan) {
  return {
    format_version: FORMAT_VERSION,
    cluster: plan.cluster,
    target: plan.target,
    changes_pending: hasChanges(plan),
    summary: plan.summary,
    warnings: plan.review.warnings,
    refusals: plan.review.refusals,
    actions: plan.review.actions,
    tables: plan.tables.map((t) => ({
      table: t.table,
      ...(t.error !== undefined ? { error: t.error } : {}),
      changes: t.changes.map(changeJson),
      conflicts: t.conflicts.map((c) => ({ destination: c.route.destination, wanted: c.route, existing: c.existing })),
      ...(t.unattributed ? { unattributed: t.unattributed } : {}),
      unchanged: t.unchanged.map((r) => r.destination),
    })),
  };
}

/** A foreign route on a destination podroutes wants, as the report shows it. */
function conflictLine(conflict: { route: { destination: string; node: string }; existing: ObservedRoute }): string {
  return `      ! ${conflict.route.destination}: a route podroutes does not own took it after the plan (via ${via(conflict.existing)}${conflict.existing.protocol ? `, proto ${conflict.existing.protocol}` : ""}); left alone, ${conflict.route.node}'s route is not there`;
}

/**
 * What apply did, per table: done, failed with the target's words, not written because of a conflict,
 * or not attempted and why. The last line says whether the target ends as planned; `allowConflicts`:
 * the user accepts foreign routes on podroutes' destinations (--allow-conflicts).
 */
export function renderReport(report: ApplyReport, options: { allowConflicts?: boolean } = {}): string {
  const lines: string[] = [];
  for (const action of report.actions) {
    lines.push(`  ${action.ok ? "✓" : "✗"} ${action.action.table}: ${action.action.description}${action.error ? `: ${action.error}` : ""}`);
  }
  for (const outcome of report.tables) {
    if (outcome.error !== undefined) {
      lines.push(`  ✗ ${outcome.table.id}: ${outcome.changedNothing ? "nothing changed" : "failed while writing (what it changed is unknown until the table is read again)"}: ${outcome.error}`);
    }
    for (const conflict of outcome.conflicts ?? []) lines.push(conflictLine(conflict));
    if (outcome.results.length === 0) continue;
    const failed = outcome.results.filter((r) => !r.ok);
    if (outcome.error === undefined) lines.push(`  ${failed.length ? "✗" : "✓"} ${outcome.table.id}: ${outcome.results.length - failed.length}/${outcome.results.length} changes done`);
    for (const result of failed) lines.push(`      ${result.conflict ? "conflict, not written:" : "failed"} ${result.change.action} ${describeChange(result.change)}: ${result.error}`);
  }
  const c = report.counts;
  const conflicts = c.conflicts ? `; ${c.conflicts} destination${c.conflicts === 1 ? "" : "s"} held by routes podroutes does not own (left alone)` : "";
  const counts = `${c.created} added, ${c.replaced} replaced, ${c.deleted} destroyed${c.failed ? `, ${c.failed} failed` : ""}${c.failedTables ? ` (${c.failedTables} table${c.failedTables === 1 ? "" : "s"} not reached)` : ""}${conflicts}.`;
  const complete = report.ok && (c.conflicts === 0 || options.allowConflicts === true);
  lines.push("", `Apply ${complete ? "complete" : "INCOMPLETE"}: ${counts}`);
  if (!report.ok) lines.push("Fix the cause and run the same command again: it reads the target again and finishes the job.");
  else if (!complete) lines.push("The target does not end as planned: remove the routes in the way, or pass --allow-conflicts to accept them.");
  return lines.join("\n");
}

export function reportJson(report: ApplyReport) {
  return {
    format_version: FORMAT_VERSION,
    ok: report.ok,
    counts: report.counts,
    actions: report.actions,
    tables: report.tables.map((t) => ({
      table: t.table,
      ...(t.error !== undefined ? { error: t.error, changed_nothing: t.changedNothing === true } : {}),
      results: t.results.map((r) => ({ ...changeJson(r.change), ok: r.ok, ...(r.conflict ? { conflict: true } : {}), ...(r.error ? { error: r.error } : {}) })),
      ...(t.conflicts?.length ? { conflicts: t.conflicts.map((c) => ({ destination: c.route.destination, wanted: c.route, existing: c.existing })) } : {}),
    })),
  };
}

/** A fixed-width table with a header row, like kubectl and gcloud print. */
export function renderColumns(columns: string[], rows: string[][]): string {
  // A loop, not Math.max(...rows): a listing of 150,000 routes must not be bounded by the call stack.
  const widths = columns.map((c) => c.length);
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  const line = (cells: string[]) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]! + 2))).join("").trimEnd();
  return [line(columns), ...rows.map(line)].join("\n");
}
