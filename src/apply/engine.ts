/**
 * Runs the pipeline against a target: read every table (concurrently, bounded), plan, and apply a
 * plan table by table (`plan`, then `apply`: a plan someone approves), or lock, read, plan and write
 * each table in one pass (`converge`: nobody looks first). Every change gets a result; a table that
 * cannot be reached fails alone and the others go on, so a re-run finishes the job. Nothing here
 * prints: progress goes to a callback.
 */
import pLimit from "p-limit";
import { kindOf, type ErrorKind } from "../errors.js";
import type { Inventory } from "../model.js";
import { desiredRoutes, diffTable, hasChanges, recheck, summarize, type Conflict, type Plan, type TableDiff } from "../plan/plan.js";
import type { ActionResult, Change, ChangeResult, LockedTable, ObservedRoute, Progress, Review, TableRef, Target, WriteContext } from "../targets/target.js";

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
  /** Cancels the reads not done yet; running ones are ended. */
  signal?: AbortSignal;
}

export async function observe(target: Target, inventory: Inventory, options: PlanOptions): Promise<ObservedTable[]> {
  const tables = await target.tables(inventory);
  const limit = pLimit(Math.max(1, options.parallel));
  let done = 0;
  return Promise.all(
    tables.map((table) =>
      limit(async (): Promise<ObservedTable> => {
        try {
          options.signal?.throwIfAborted();
          return { table, routes: await target.read(table, inventory, options.signal ? { signal: options.signal } : {}) };
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
  actions: ActionResult[];
  counts: { created: number; replaced: number; deleted: number; failed: number; failedTables: number; conflicts: number };
  /** Every change and action that was attempted succeeded (conflicts are counted apart: they were never attempted). */
  ok: boolean;
}

/**
 * One table's write, as the plan approved it. Where the target can lock a table, the lock is held
 * from a fresh read of the table (taken with the lock) to the end of the write, and only what the plan
 * still says is written (`recheck`): concurrent runs serialize and never leave a mix of two plans.
 */
async function writeTable(target: Target, diff: TableDiff, inventory: Inventory, context: WriteContext): Promise<TableOutcome> {
  if (!target.lockTable) {
    try {
      return { table: diff.table, results: completeResults(diff.changes, await target.write(diff.table, diff.changes, context)) };
    } catch (error) {
      return { table: diff.table, results: [], error: messageOf(error), changedNothing: false };
    }
  }
  let locked: LockedTable;
  try {
    locked = await target.lockTable(diff.table, inventory, context);
  } catch (error) {
    return { table: diff.table, results: [], error: messageOf(error), errorKind: kindOf(error), changedNothing: true };
  }
  try {
    const checked = recheck(diff, locked.routes, { clusterCIDR: inventory.clusterCIDR, sameRoute: target.sameRoute?.bind(target) });
    for (const result of checked.results) context.onResult?.(result);
    const conflicts = checked.conflicts.length ? { conflicts: checked.conflicts } : {};
    try {
      const written = checked.write.length ? (await locked.write(checked.write, [], context)).results : [];
      return { table: diff.table, results: completeResults(diff.changes, [...checked.results, ...written]), ...conflicts };
    } catch (error) {
      return { table: diff.table, results: checked.results, error: messageOf(error), errorKind: kindOf(error), changedNothing: false, ...conflicts };
    }
  } finally {
    await locked.release();
  }
}

export interface ApplyOptions {
  parallel: number;
  progress?: Progress;
  onResult?: (result: ChangeResult) => void;
  /** Cancels what is not done yet: no further table is locked or written, running commands are ended. */
  signal?: AbortSignal;
}

function writeContext(inventory: Inventory, options: ApplyOptions): WriteContext {
  return {
    progress: options.progress ?? (() => {}),
    inventory,
    ...(options.onResult ? { onResult: options.onResult } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  };
}

/**
 * Writes a plan someone approved (it was shown before it is written): its extra actions first, then
 * each table under its lock, re-checked against a read taken with the lock (see writeTable).
 */
export async function apply(target: Target, planned: Plan, inventory: Inventory, options: ApplyOptions): Promise<ApplyReport> {
  const context = writeContext(inventory, options);
  const actions =
    planned.review.actions.length && target.runActions ? await target.runActions(planned.review.actions, context) : [];

  const limit = pLimit(Math.max(1, options.parallel));
  const outcomes = await Promise.all(
    planned.tables.map((diff) =>
      limit(async (): Promise<TableOutcome> => {
        if (diff.error !== undefined) return { table: diff.table, results: [], error: diff.error, changedNothing: true };
        if (diff.changes.length === 0) return { table: diff.table, results: [] };
        // Cancelled: no further table is locked or written; those done keep their results.
        if (options.signal?.aborted) return { table: diff.table, results: [], error: messageOf(options.signal.reason), changedNothing: true };
        return writeTable(target, diff, inventory, context);
      }),
    ),
  );
  return reportOf(planned, outcomes, actions);
}

/** A plan and, where anything was attempted, what became of it. */
export interface Converged {
  plan: Plan;
  /** Undefined when nothing was attempted: no changes, or a review refused the plan (`plan.review.refusals`). */
  report?: ApplyReport;
}

/**
 * Plans and writes in one pass, for a run nobody looks at before it writes (`apply --yes`, the agent,
 * the controller). Where the target locks tables, each table is locked first, read once under the lock,
 * planned from that read, written and released: no read before the lock and no recheck, since nothing
 * that respects the lock can change the table between that read and the write. Tables are locked one
 * at a time per worker (`parallel`), never held while waiting for another, so two runs cannot deadlock.
 * Targets without locks (cloud APIs) are planned in full, reviewed (a refusal stops everything before
 * any write), shown to `onPlanned`, then written, as `plan` and `apply` do.
 */
export async function converge(
  target: Target,
  inventory: Inventory,
  options: PlanOptions & ApplyOptions & { onPlanned?: (planned: Plan) => void },
): Promise<Converged> {
  if (!target.lockTable) {
    const planned = await plan(target, inventory, options);
    if (planned.review.refusals.length || !hasChanges(planned)) return { plan: planned };
    options.onPlanned?.(planned);
    return { plan: planned, report: await apply(target, planned, inventory, options) };
  }
  const lockTable = target.lockTable.bind(target);
  const context = writeContext(inventory, options);
  const diffOptions = { clusterCIDR: inventory.clusterCIDR, sameRoute: target.sameRoute?.bind(target) };
  const tables = await target.tables(inventory);
  const limit = pLimit(Math.max(1, options.parallel));
  let done = 0;
  const passes = await Promise.all(
    tables.map((table) =>
      limit(async (): Promise<{ diff: TableDiff; review?: Review; outcome: TableOutcome; actions: ActionResult[] }> => {
        const failed = (error: unknown, changedNothing: boolean, diff?: TableDiff) => {
          const why = messageOf(error);
          return { diff: diff ?? { table, changes: [], unchanged: [], conflicts: [], error: why }, outcome: { table, results: [], error: why, errorKind: kindOf(error), changedNothing }, actions: [] };
        };
        let locked: LockedTable;
        try {
          options.signal?.throwIfAborted();
          const locking = lockTable(table, inventory, options.signal ? { signal: options.signal } : {});
          // What the table should hold is worked out while its lock is taken and it is read.
          desiredRoutes(inventory, table);
          locked = await locking;
        } catch (error) {
          return failed(error, true);
        } finally {
          options.progress?.({ table: table.id, done: ++done, total: tables.length, message: "read" });
        }
        try {
          const desired = options.deleteAll ? [] : desiredRoutes(inventory, table);
          const diff = diffTable(table, desired, locked.routes, diffOptions);
          const review = (await locked.review?.(diff, inventory)) ?? { warnings: [], refusals: [], actions: [] };
          if (review.refusals.length || (diff.changes.length === 0 && review.actions.length === 0)) return { diff, review, outcome: { table, results: [] }, actions: [] };
          try {
            const written = await locked.write(diff.changes, review.actions, context);
            return { diff, review, outcome: { table, results: completeResults(diff.changes, written.results) }, actions: written.actions };
          } catch (error) {
            return { ...failed(error, false, diff), review };
          }
        } finally {
          await locked.release();
        }
      }),
    ),
  );
  const review: Review = { warnings: [], refusals: [], actions: [] };
  for (const pass of passes) {
    for (const warning of pass.review?.warnings ?? []) if (!review.warnings.includes(warning)) review.warnings.push(warning);
    review.refusals.push(...(pass.review?.refusals ?? []));
    review.actions.push(...(pass.review?.actions ?? []));
  }
  const tableDiffs = passes.map((pass) => pass.diff);
  const planned: Plan = { cluster: inventory.cluster, target: target.name, tables: tableDiffs, summary: summarize(tableDiffs), review };
  const attempted = passes.some((pass) => pass.outcome.error !== undefined || pass.outcome.results.length || pass.actions.length);
  return { plan: planned, ...(attempted ? { report: reportOf(planned, passes.map((pass) => pass.outcome), passes.flatMap((pass) => pass.actions)) } : {}) };
}

/** Counts what became of a plan's changes and actions. */
function reportOf(planned: Plan, outcomes: TableOutcome[], actions: ActionResult[]): ApplyReport {
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
