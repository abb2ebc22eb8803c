/**
 * The contract every target implements: a place where routes live (a Linux host's kernel table, a GCP
 * network, an AWS route table). A target reads what a table holds, says which routes are podroutes',
 * and writes a table's changes; planning, ordering, concurrency and reporting live outside it.
 * Targets know nothing of the CLI or of each other.
 */
import { PodroutesError, type ErrorKind } from "../errors.js";
import type { Inventory, Route } from "../model.js";

/** One table podroutes plans for. */
export interface TableRef {
  /** Stable id within the target: a node name, `rtb-…`, a network name. */
  id: string;
  /**
   * `host`: the table lives on node `node`, which reaches its own pods directly, so it gets the
   * routes of every OTHER node. `shared`: a VPC-level table that gets every node's routes.
   */
  scope: "host" | "shared";
  /** For host tables: the node the table lives on. */
  node?: string;
}

/** A route as a target found it. */
export interface ObservedRoute {
  /** Canonical CIDR text (`model.parseCidr(...).cidr.text`). */
  destination: string;
  /**
   * The IP the route sends to, translated back to the node's internal IP where the target uses
   * another handle (an ENI, an instance); undefined for routes with no IP next hop (blackhole, gateway).
   */
  nextHop?: string;
  /** How the target shows the next hop (`10.240.0.21`, `eni-0abc`, `default-internet-gateway`). */
  nextHopLabel?: string;
  /** True only when the route carries podroutes' mark (protocol number, description marker, ...). */
  owned: boolean;
  /** The target's name or id for the route, when it has one (GCP route name). */
  name?: string;
  /** Linux: device and protocol; shown by `list`. */
  device?: string;
  protocol?: string;
  /** False when the target reports the route as broken (AWS blackhole); treated as needing a replace. */
  healthy?: boolean;
  /**
   * Set on a foreign route that may be the cluster's, though nothing here says so: inside the cluster CIDR
   * through a next hop no node list names and no tag marks (AWS without --nodes). Why, and how to
   * attribute it; `delete` leaves it and says so, `list` shows it.
   */
  unattributed?: string;
  /** Target-specific fields, printed by `list -o json`. */
  details?: Record<string, unknown>;
}

export type Change =
  | { action: "create"; route: Route }
  | { action: "replace"; route: Route; current: ObservedRoute }
  | { action: "delete"; current: ObservedRoute };

/** What became of one change. `error` is the target's own words (an `ip` error line, an API message). */
export interface ChangeResult {
  change: Change;
  ok: boolean;
  error?: string;
  /** Not written because a route podroutes does not own took the destination after the plan. */
  conflict?: boolean;
  /**
   * Not written, nothing tried: this host cannot hold the route as long as the Node and the host's
   * networks stay as they are (a next hop on no network it is on, a pod CIDR over one of its networks).
   * The route's own problem, not a failure of the host: the agent leaves it out and reports it.
   */
  refused?: boolean;
}

/** Progress of a long write, shown on a TTY; targets call it as changes finish. */
export type Progress = (event: { table: string; done: number; total: number; message?: string }) => void;

/** What every call to a target may carry: a long-running caller cancels what it no longer needs. */
export interface CallOptions {
  /** Aborts the call: a process it started is ended, a connection's command is dropped, a lock wait gives up. */
  signal?: AbortSignal;
}

export interface WriteContext extends CallOptions {
  progress: Progress;
  /**
   * Told of each change's result as soon as it is known, before the whole write returns (targets that
   * write change by change call it; the others need not): a controller sets a node's condition as soon
   * as its routes are in, while the rest of a large write goes on.
   */
  onResult?: (result: ChangeResult) => void;
}

/**
 * A target-specific step the plan shows and apply carries out before the route changes: turning off
 * an instance's source/destination check, installing a persistence unit.
 */
export interface ExtraAction {
  table: string;
  id: string;
  description: string;
}

/** What became of one extra action. */
export interface ActionResult {
  action: ExtraAction;
  ok: boolean;
  error?: string;
}

/** A change that would pass a limit: which limit, and the operator's words for it. */
export interface RefusedChange {
  table: string;
  change: Change;
  limit: "route-limit" | "quota";
  message: string;
}

/** What a target adds to a plan: warnings it shows, reasons apply must refuse, extra actions. */
export interface Review {
  warnings: string[];
  /** Non-empty: `apply` refuses before any call (a quota or route limit would be exceeded). */
  refusals: string[];
  /**
   * The changes behind the refusals, one by one: those past the limit, when the others fit. `apply`
   * refuses the whole plan; a long-running controller writes what fits and reports these.
   */
  refused?: RefusedChange[];
  actions: ExtraAction[];
}

/** One finding of `verify`. */
export interface Check {
  table?: string;
  ok: boolean;
  /** `warning` findings are printed but do not fail verify. */
  severity?: "error" | "warning";
  message: string;
}

/** Someone else's route on a destination podroutes wants. */
export interface Conflict {
  route: Route;
  existing: ObservedRoute;
}

/**
 * One table's part of a plan: the value an operator approves and the write path rechecks. Targets get it
 * in `review`; the planner (plan/plan.ts) makes it.
 */
export interface TableDiff {
  table: TableRef;
  changes: Change[];
  unchanged: Route[];
  conflicts: Conflict[];
  /** Foreign routes that may be the cluster's, though nothing says so (ObservedRoute.unattributed); absent when none. */
  unattributed?: ObservedRoute[];
  /** The table's extra actions (its review's), carried out with its changes under the same open table; absent when none. */
  actions?: ExtraAction[];
  /** The table could not be read, so nothing is planned for it: why. */
  error?: string;
}

/** What a table's write did: one result per change and per action. */
export interface TableWrite {
  results: ChangeResult[];
  actions: ActionResult[];
}

/**
 * One table as one run holds it: read once (`routes`), reviewed and written from that same read, released.
 * Opened for a write, it is held under the table's lock where the target has one (a host's flock), so
 * nothing that respects the lock changes the table until `release`. Everything the run learnt of the
 * table lives here and goes with `release`.
 */
export interface OpenTable {
  /** Every route of the table that podroutes owns, and every foreign one on a destination it may want. */
  readonly routes: ObservedRoute[];
  /** Warnings, refusals and extra actions for this table's diff, judged from the same read. */
  review?(diff: TableDiff): Promise<Review>;
  /**
   * Carries out the table's extra actions, then its changes (one batch where the target can). One result
   * per change and per action; a failed change is a result with ok=false. Throws only when nothing could
   * be attempted. Only on a table opened for a write, once.
   */
  write(changes: Change[], actions: ExtraAction[], context: WriteContext): Promise<TableWrite>;
  release(): Promise<void>;
}

export interface OpenOptions extends CallOptions {
  /**
   * True: the run will write the table, so its lock is taken first (where the target has one). False: a
   * read for a plan someone looks at first, or for `list`; no lock, and `write` must not be called.
   */
  write: boolean;
}

/**
 * One run of podroutes against a target for one inventory: a plan, an apply, a pass of the agent or the
 * controller. What the run looks up (instances, interfaces, quotas, a VPC) lives here, not on the target,
 * and goes with the run.
 */
export interface TargetRun {
  /** The tables podroutes plans for. */
  tables(options?: CallOptions): Promise<TableRef[]>;
  /** Reads one table, under its lock when `write` is set. Throws when it cannot be read (a BusyError when the lock stays held). */
  open(table: TableRef, options: OpenOptions): Promise<OpenTable>;
  /** Target-specific checks beyond "the tables match the plan" (packets, canIpForward, blackholes). */
  verify?(context: { progress: Progress }): Promise<Check[]>;
}

/**
 * The contract every target implements. The engine (apply/engine.ts) drives it: begin a run, list the
 * tables, open each (bounded, concurrently), diff, review, write the approved or fresh diff, release.
 */
export interface Target {
  /** Registry name, `local`, `lab`, `ssh`, `gcp`, `aws`: prefixes every error of the target. */
  readonly name: string;
  /**
   * True when a table opened for a write is locked against every other podroutes writer: a run nobody
   * reviews then plans from that one read and writes without a recheck. False (cloud APIs have no lock a
   * run can hold): such a run plans from a read first, and the write rechecks the plan against a fresh one.
   */
  readonly locksTables: boolean;
  /** Begins one run for an inventory. Cheap: nothing is read until the run asks. */
  begin(inventory: Inventory): TargetRun;
  /** Whether an observed owned route already is the desired one; default: same next hop and healthy. */
  sameRoute?(desired: Route, observed: ObservedRoute): boolean;
  /**
   * Columns of `list` for this target, in its users' own conventions (gcloud's NAME NETWORK DEST_RANGE
   * NEXT_HOP PRIORITY for GCP); one row per route a table's read returned.
   */
  listing?: { columns: string[]; row(table: TableRef, route: ObservedRoute): string[] };
  /** Releases connections and clients. */
  close?(): Promise<void>;
}

/**
 * A lock a target took before the run knew its inventory (TargetFactory.lockAhead), with the read of its
 * table under way; the target built with it takes it over, and lets it go on `close`.
 */
export interface TakenAhead {
  /** Settles once the lock is held and the read started, or the lock was found busy (then it is taken as usual). */
  readonly started: Promise<unknown>;
  /** Lets the lock go unless the target took it over. */
  release(): Promise<void>;
}

/** A target failed as a whole (could not read a table, bad options). The message names the target. */
export class TargetError extends PodroutesError {
  readonly kind: ErrorKind = "target";
  constructor(
    readonly target: string,
    message: string,
    options?: { cause?: unknown; table?: string },
  ) {
    super(`${target}${options?.table ? ` ${options.table}` : ""}: ${message}`, options?.cause ? { cause: options.cause } : undefined);
    this.name = "TargetError";
    this.table = options?.table;
  }
  readonly table: string | undefined;
}
