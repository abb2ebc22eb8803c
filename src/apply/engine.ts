/**
 * Runs the pipeline against a target: read every table (concurrently, bounded), plan, and apply a
 * plan table by table. Every change gets a result; a table that cannot be reached fails alone and the
 * others go on, so a re-run finishes the job. Nothing here prints: progress goes to a callback.
 */
import pLimit from "p-limit";
import type { Inventory } from "../model.js";
import { desiredRoutes, diffTable, summarize, type Plan, type TableDiff } from "../plan/plan.js";
import type { Change, ChangeResult, ExtraAction, ObservedRoute, Progress, TableRef, Target } from "../targets/target.js";

export interface ObservedTable {
  table: TableRef;
  routes: ObservedRoute[];
  /** The table could not be read: why. */
  error?: string;
}

export interface PlanOptions {
  parallel: number;
  progress?: Progress;
  /** Plan to remove every owned route instead of converging to the inventory (`delete`). */
  deleteAll?: boolean;
}

export async function observe(target: Target, inventory: Inventory, options: PlanOptions): Promise<ObservedTable[]> {
  const tables = await target.tables(inventory);
  const limit = pLimit(Math.max(1, options.parallel));
  let done = 0;
  return Promise.all(
    tables.map((table) =>
      limit(async (): Promise<ObservedTable> => {
        try {
          return { table, routes: await target.read(table, inventory) };
        } catch (error) {
          return { table, routes: [], error: messageOf(error) };
        } finally {
          options.progress?.({ table: table.id, done: ++done, total: tables.length, message: "read" });
        }
      }),
    ),
  );
}

/** Reads the target and plans. Tables that could not be read carry `error` and no changes. */
export async function plan(target: Target, inventory: Inventory, options: PlanOptions): Promise<Plan> {
  const observed = await observe(target, inventory, options);
  const tables: TableDiff[] = observed.map(({ table, routes, error }) => {
    const desired = options.deleteAll ? [] : desiredRoutes(inventory, table);
    const diff = diffTable(table, desired, routes, {
      clusterCIDR: inventory.clusterCIDR,
      sameRoute: target.sameRoute?.bind(target),
    });
    return error === undefined ? diff : { table, changes: [], unchanged: [], conflicts: [], error };
  });
  const partial: Plan = {
    cluster: inventory.cluster,
    target: target.name,
    tables,
    summary: summarize(tables),
    review: { warnings: [], refusals: [], actions: [] },
  };
  // Delete plans are reviewed too: a target may have more to undo than routes (a persistence unit).
  if (target.review) partial.review = await target.review(partial, inventory);
  return partial;
}

export interface TableOutcome {
  table: TableRef;
  results: ChangeResult[];
  /** Nothing could be attempted on this table: why (unreachable, auth, read failure). */
  error?: string;
}

export interface ApplyReport {
  tables: TableOutcome[];
  actions: { action: ExtraAction; ok: boolean; error?: string }[];
  counts: { created: number; replaced: number; deleted: number; failed: number; failedTables: number };
  ok: boolean;
}

export async function apply(
  target: Target,
  planned: Plan,
  inventory: Inventory,
  options: { parallel: number; progress?: Progress },
): Promise<ApplyReport> {
  const progress: Progress = options.progress ?? (() => {});
  const context = { progress, inventory };
  const actions =
    planned.review.actions.length && target.runActions ? await target.runActions(planned.review.actions, context) : [];

  const limit = pLimit(Math.max(1, options.parallel));
  const outcomes = await Promise.all(
    planned.tables.map((diff) =>
      limit(async (): Promise<TableOutcome> => {
        if (diff.error !== undefined) return { table: diff.table, results: [], error: diff.error };
        if (diff.changes.length === 0) return { table: diff.table, results: [] };
        try {
          const results = await target.write(diff.table, diff.changes, context);
          return { table: diff.table, results: completeResults(diff.changes, results) };
        } catch (error) {
          return { table: diff.table, results: [], error: messageOf(error) };
        }
      }),
    ),
  );

  const counts = { created: 0, replaced: 0, deleted: 0, failed: 0, failedTables: 0 };
  for (const outcome of outcomes) {
    const diff = planned.tables.find((t) => t.table.id === outcome.table.id)!;
    if (outcome.error !== undefined) {
      counts.failedTables++;
      counts.failed += diff.changes.length;
    }
    for (const result of outcome.results) {
      if (!result.ok) counts.failed++;
      else if (result.change.action === "create") counts.created++;
      else if (result.change.action === "replace") counts.replaced++;
      else counts.deleted++;
    }
  }
  const ok = counts.failed === 0 && counts.failedTables === 0 && actions.every((a) => a.ok);
  return { tables: outcomes, actions, counts, ok };
}

/** A target that forgot a change must not make it look done: a missing result is a failure. */
function completeResults(changes: Change[], results: ChangeResult[]): ChangeResult[] {
  const seen = new Set(results.map((r) => r.change));
  const missing = changes
    .filter((change) => !seen.has(change))
    .map((change): ChangeResult => ({ change, ok: false, error: "the target reported no result for this change" }));
  return [...results, ...missing];
}

export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
