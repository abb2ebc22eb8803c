/**
 * Runs the pipeline against a target: read every table (concurrently, bounded), plan, and apply a
 * plan table by table. Every change gets a result; a table that cannot be reached fails alone and the
 * others go on, so a re-run finishes the job. Nothing here prints: progress goes to a callback.
 */
import pLimit from "p-limit";
import { kindOf, type ErrorKind } from "../errors.js";
import type { Inventory } from "../model.js";
import { desiredRoutes, diffTable, recheck, summarize, type Conflict, type Plan, type TableDiff } from "../plan/plan.js";
import type { Change, ChangeResult, ExtraAction, ObservedRoute, Progress, TableRef, Target, WriteContext } from "../targets/target.js";

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
  /** The table failed as a whole (unreachable, auth, read failure, busy): why. */
  error?: string;
  /** With `error`: true when the failure came before any write, so nothing was changed on the table. */
  changedNothing?: boolean;
  /** With `error`: its kind, when an error raised it (busy: another run held the lock), for metrics. */
  errorKind?: ErrorKind | "unexpected";
  /** Foreign routes that took a destination after the plan, where no change was planned. */
  conflicts?: Conflict[];
}

export interface ApplyReport {
  tables: TableOutcome[];
  actions: { action: ExtraAction; ok: boolean; error?: string }[];
  counts: { created: number; replaced: number; deleted: number; failed: number; failedTables: number; conflicts: number };
  /** Every change and action that was attempted succeeded (conflicts are counted apart: they were never attempted). */
  ok: boolean;
}

/**
 * One table's write, as the plan approved it. Where the target can lock a table, the lock is held
 * from a fresh read of the table to the end of the write, and only what the plan still says is
 * written (`recheck`): concurrent runs serialize and never leave a mix of two plans.
 */
async function writeTable(target: Target, diff: TableDiff, inventory: Inventory, context: WriteContext): Promise<TableOutcome> {
  let lock: { release(): Promise<void> } | undefined;
  try {
    lock = await target.lock?.(diff.table, inventory);
  } catch (error) {
    return { table: diff.table, results: [], error: messageOf(error), errorKind: kindOf(error), changedNothing: true };
  }
  try {
    let write = diff.changes;
    let settled: ChangeResult[] = [];
    let conflicts: Conflict[] = [];
    if (lock) {
      let now: ObservedRoute[];
      try {
        now = await target.read(diff.table, inventory);
      } catch (error) {
        return { table: diff.table, results: [], error: messageOf(error), errorKind: kindOf(error), changedNothing: true };
      }
      const checked = recheck(diff, now, { clusterCIDR: inventory.clusterCIDR, sameRoute: target.sameRoute?.bind(target) });
      write = checked.write;
      settled = checked.results;
      conflicts = checked.conflicts;
      for (const result of settled) context.onResult?.(result);
    }
    try {
      const written = write.length ? await target.write(diff.table, write, context) : [];
      return { table: diff.table, results: completeResults(diff.changes, [...settled, ...written]), ...(conflicts.length ? { conflicts } : {}) };
    } catch (error) {
      return { table: diff.table, results: settled, error: messageOf(error), errorKind: kindOf(error), changedNothing: false, ...(conflicts.length ? { conflicts } : {}) };
    }
  } finally {
    await lock?.release();
  }
}

export async function apply(
  target: Target,
  planned: Plan,
  inventory: Inventory,
  options: { parallel: number; progress?: Progress; onResult?: (result: ChangeResult) => void },
): Promise<ApplyReport> {
  const progress: Progress = options.progress ?? (() => {});
  const context = { progress, inventory, ...(options.onResult ? { onResult: options.onResult } : {}) };
  const actions =
    planned.review.actions.length && target.runActions ? await target.runActions(planned.review.actions, context) : [];

  const limit = pLimit(Math.max(1, options.parallel));
  const outcomes = await Promise.all(
    planned.tables.map((diff) =>
      limit(async (): Promise<TableOutcome> => {
        if (diff.error !== undefined) return { table: diff.table, results: [], error: diff.error, changedNothing: true };
        if (diff.changes.length === 0) return { table: diff.table, results: [] };
        return writeTable(target, diff, inventory, context);
      }),
    ),
  );

  const counts = { created: 0, replaced: 0, deleted: 0, failed: 0, failedTables: 0, conflicts: planned.summary.conflicts };
  for (const outcome of outcomes) {
    const diff = planned.tables.find((t) => t.table.id === outcome.table.id)!;
    counts.conflicts += outcome.conflicts?.length ?? 0;
    if (outcome.error !== undefined) {
      counts.failedTables++;
      counts.failed += diff.changes.length - outcome.results.length;
    }
    for (const result of outcome.results) {
      if (result.conflict) counts.conflicts++;
      else if (!result.ok) counts.failed++;
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
