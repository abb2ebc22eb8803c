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
import { desiredRoutes, diffTable, hasChanges, recheck, summarize, type Conflict, type DiffOptions, type Plan, type TableDiff } from "../plan/plan.js";
import type { ActionResult, CallOptions, Change, Check, ChangeResult, ObservedRoute, OpenTable, Progress, Review, TableRef, Target, TargetRun, WriteContext } from "../targets/target.js";

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
  /**
   * The run to plan in, when the caller writes the plan moments later in the same run (`converge`, the
   * controller): a target without locks may then write from the plan's read. Default: a run of its own.
   */
  run?: TargetRun;
}

/** The target's own checks beyond the routes (packets, canIpForward, blackholes), in a run of their own. */
export async function verifyTarget(target: Target, inventory: Inventory, context: { progress: Progress }): Promise<Check[]> {
  const run = target.begin(inventory);
  return run.verify ? run.verify(context) : [];
}

/** Reads every table for a look (no lock): `list`, and the first half of `plan`. */
export async function observe(target: Target, inventory: Inventory, options: PlanOptions): Promise<ObservedTable[]> {
  return (await readTables(target.begin(inventory), inventory, target, options)).map(({ table, routes, error }) => ({ table, routes, ...(error !== undefined ? { error } : {}) }));
}

interface ReadTable extends ObservedTable {
  diff: TableDiff;
  review: Review;
}

/** Opens each table without a lock, diffs it and has the target review the diff, then lets it go. */
async function readTables(run: TargetRun, inventory: Inventory, target: Target, options: PlanOptions): Promise<ReadTable[]> {
  const tables = await run.tables(callOptions(options));
  const limit = pLimit(Math.max(1, options.parallel));
  let done = 0;
  return Promise.all(
    tables.map((table) =>
      limit(async (): Promise<ReadTable> => {
        let opened: OpenTable;
        try {
          options.signal?.throwIfAborted();
          opened = await run.open(table, { ...callOptions(options), write: false });
        } catch (error) {
          const why = messageOf(error);
          return { table, routes: [], error: why, diff: unreadable(table, why), review: noReview() };
        } finally {
          options.progress?.({ table: table.id, done: ++done, total: tables.length, message: "read" });
        }
        try {
          const diff = diffOf(target, inventory, table, opened.routes, options.deleteAll === true);
          const review = (await opened.review?.(diff)) ?? noReview();
          return { table, routes: opened.routes, diff: withActions(diff, review), review };
        } finally {
          await opened.release();
        }
      }),
    ),
  );
}

/** Reads the target and plans. Tables that could not be read carry `error` and no changes. */
export async function plan(target: Target, inventory: Inventory, options: PlanOptions): Promise<Plan> {
  const read = await readTables(options.run ?? target.begin(inventory), inventory, target, options);
  return planOf(inventory, target, read);
}

function planOf(inventory: Inventory, target: Target, passes: { diff: TableDiff; review?: Review }[]): Plan {
  const review = noReview();
  for (const pass of passes) {
    for (const warning of pass.review?.warnings ?? []) if (!review.warnings.includes(warning)) review.warnings.push(warning);
    review.refusals.push(...(pass.review?.refusals ?? []));
    if (pass.review?.refused?.length) review.refused = [...(review.refused ?? []), ...pass.review.refused];
    review.actions.push(...(pass.diff.actions ?? []));
  }
  const tables = passes.map((pass) => pass.diff);
  return { cluster: inventory.cluster, target: target.name, tables, summary: summarize(tables), review };
}

/** What the planner and the recheck judge ownership and sameness by: the inventory's cluster CIDR, the target's sameRoute. */
function diffOptions(target: Target, inventory: Inventory): DiffOptions {
  return { clusterCIDR: inventory.clusterCIDR, sameRoute: target.sameRoute?.bind(target) };
}

function diffOf(target: Target, inventory: Inventory, table: TableRef, routes: ObservedRoute[], deleteAll: boolean): TableDiff {
  const desired = deleteAll ? [] : desiredRoutes(inventory, table);
  return diffTable(table, desired, routes, diffOptions(target, inventory));
}

function withActions(diff: TableDiff, review: Review): TableDiff {
  return review.actions.length ? { ...diff, actions: review.actions } : diff;
}

function unreadable(table: TableRef, error: string): TableDiff {
  return { table, changes: [], unchanged: [], conflicts: [], error };
}

function noReview(): Review {
  return { warnings: [], refusals: [], actions: [] };
}

function callOptions(options: { signal?: AbortSignal }): CallOptions {
  return options.signal ? { signal: options.signal } : {};
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

export interface ApplyOptions {
  parallel: number;
  progress?: Progress;
  onResult?: (result: ChangeResult) => void;
  /** Cancels what is not done yet: no further table is locked or written, running commands are ended. */
  signal?: AbortSignal;
  /** The run the plan was made in (see PlanOptions.run); default: a run of its own, which reads every table afresh. */
  run?: TargetRun;
}

function writeContext(options: ApplyOptions): WriteContext {
  return {
    progress: options.progress ?? (() => {}),
    ...(options.onResult ? { onResult: options.onResult } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  };
}

/** What a table's write is to carry out: a plan someone approved, or whatever a fresh read under the lock calls for. */
type WriteIntent = { approved: TableDiff } | { fresh: { deleteAll: boolean } };

interface TablePass {
  diff: TableDiff;
  review?: Review;
  outcome: TableOutcome;
  actions: ActionResult[];
}

/**
 * The one write path, for every target and every run: open the table for a write (under its lock where
 * the target has one), then either recheck an approved diff against that read and write only what it
 * still says, or plan from that read and write it; release. Concurrent runs that respect the lock
 * serialize and never leave a mix of two plans.
 */
async function writeTable(run: TargetRun, target: Target, inventory: Inventory, table: TableRef, intent: WriteIntent, context: WriteContext): Promise<TablePass> {
  const planned = "approved" in intent ? intent.approved : undefined;
  const failed = (error: unknown, changedNothing: boolean, diff?: TableDiff): TablePass => {
    const why = messageOf(error);
    return { diff: diff ?? planned ?? unreadable(table, why), outcome: { table, results: [], error: why, errorKind: kindOf(error), changedNothing }, actions: [] };
  };
  let opened: OpenTable;
  try {
    context.signal?.throwIfAborted();
    const opening = run.open(table, { ...callOptions(context), write: true });
    // What the table should hold is worked out (and cached per inventory) while its lock is taken and it is read.
    if (!planned) desiredRoutes(inventory, table);
    opened = await opening;
  } catch (error) {
    return failed(error, true);
  }
  try {
    if (planned) {
      const checked = recheck(planned, opened.routes, diffOptions(target, inventory));
      for (const result of checked.results) context.onResult?.(result);
      const conflicts = checked.conflicts.length ? { conflicts: checked.conflicts } : {};
      // A stale plan writes nothing to the table, its extra actions included.
      const approvedActions = planned.actions ?? [];
      const actions = checked.stale ? [] : approvedActions;
      const skipped = checked.stale ? approvedActions.map((action): ActionResult => ({ action, ok: false, error: "not carried out: the table changed since the plan" })) : [];
      if (!checked.write.length && !actions.length) return { diff: planned, outcome: { table, results: completeResults(planned.changes, checked.results), ...conflicts }, actions: skipped };
      try {
        const written = await opened.write(checked.write, actions, context);
        return { diff: planned, outcome: { table, results: completeResults(planned.changes, [...checked.results, ...written.results]), ...conflicts }, actions: [...written.actions, ...skipped] };
      } catch (error) {
        const pass = failed(error, false);
        return { ...pass, outcome: { ...pass.outcome, results: checked.results, ...conflicts } };
      }
    }
    const diff = diffOf(target, inventory, table, opened.routes, "fresh" in intent && intent.fresh.deleteAll);
    const review = (await opened.review?.(diff)) ?? noReview();
    const reviewed = withActions(diff, review);
    if (review.refusals.length || (diff.changes.length === 0 && review.actions.length === 0)) return { diff: reviewed, review, outcome: { table, results: [] }, actions: [] };
    try {
      const written = await opened.write(diff.changes, review.actions, context);
      return { diff: reviewed, review, outcome: { table, results: completeResults(diff.changes, written.results) }, actions: written.actions };
    } catch (error) {
      return { ...failed(error, false, reviewed), review };
    }
  } finally {
    await opened.release();
  }
}

/**
 * Writes a plan someone approved (it was shown before it is written): each table with something to do,
 * opened for a write and rechecked against that read (writeTable), its extra actions with it.
 */
export async function apply(target: Target, planned: Plan, inventory: Inventory, options: ApplyOptions): Promise<ApplyReport> {
  const run = options.run ?? target.begin(inventory);
  const context = writeContext(options);
  const limit = pLimit(Math.max(1, options.parallel));
  const passes = await Promise.all(
    planned.tables.map((diff) =>
      limit(async (): Promise<{ outcome: TableOutcome; actions: ActionResult[] }> => {
        if (diff.error !== undefined) return { outcome: { table: diff.table, results: [], error: diff.error, changedNothing: true }, actions: [] };
        if (diff.changes.length === 0 && !diff.actions?.length) return { outcome: { table: diff.table, results: [] }, actions: [] };
        // Cancelled: no further table is locked or written; those done keep their results.
        if (options.signal?.aborted) return { outcome: { table: diff.table, results: [], error: messageOf(options.signal.reason), changedNothing: true }, actions: [] };
        return writeTable(run, target, inventory, diff.table, { approved: diff }, context);
      }),
    ),
  );
  return reportOf(planned, passes.map((pass) => pass.outcome), passes.flatMap((pass) => pass.actions));
}

/** A plan and, where anything was attempted, what became of it. */
export interface Converged {
  plan: Plan;
  /** Undefined when nothing was attempted: no changes, or a review refused the plan (`plan.review.refusals`). */
  report?: ApplyReport;
}

/**
 * Plans and writes in one pass, for a run nobody looks at before it writes (`apply --yes`, the agent,
 * the controller). Where the target locks tables, each table is opened for a write (locked, read once
 * under the lock), planned from that read, written and released: no read before the lock and no
 * recheck, since nothing that respects the lock can change the table between that read and the write.
 * Tables are locked one at a time per worker (`parallel`), never held while waiting for another, so two
 * runs cannot deadlock. Targets without locks (cloud APIs) are planned in full, reviewed (a refusal
 * stops everything before any write), shown to `onPlanned`, then written through the same path as an
 * approved plan, rechecked against a fresh read.
 */
export async function converge(
  target: Target,
  inventory: Inventory,
  options: PlanOptions & ApplyOptions & { onPlanned?: (planned: Plan) => void },
): Promise<Converged> {
  const run = options.run ?? target.begin(inventory);
  if (!target.locksTables) {
    const planned = await plan(target, inventory, { ...options, run });
    if (planned.review.refusals.length || !hasChanges(planned)) return { plan: planned };
    options.onPlanned?.(planned);
    return { plan: planned, report: await apply(target, planned, inventory, { ...options, run }) };
  }
  const context = writeContext(options);
  const tables = await run.tables(callOptions(options));
  const limit = pLimit(Math.max(1, options.parallel));
  let done = 0;
  const intent: WriteIntent = { fresh: { deleteAll: options.deleteAll === true } };
  const passes = await Promise.all(
    tables.map((table) =>
      limit(async () => {
        try {
          return await writeTable(run, target, inventory, table, intent, context);
        } finally {
          options.progress?.({ table: table.id, done: ++done, total: tables.length, message: "read" });
        }
      }),
    ),
  );
  const planned = planOf(inventory, target, passes);
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
