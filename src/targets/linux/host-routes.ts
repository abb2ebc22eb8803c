/**
 * The target for Linux hosts' own routing tables, whatever the transport: one table per node, read
 * with one `ip` batch and written with one `ip` batch. Ownership is the route protocol number: only
 * routes carrying it are replaced or deleted, and `ip route del proto N ...` refuses any other.
 *
 * Writes happen under the table's lock (runner.ts), taken with one read of the table under it
 * (`open` for a write); the batch is built from that same read. A run nobody reviews plans from that read; an
 * approved plan is checked against it first (the engine's recheck). Residual race, which
 * no lock can close: a writer that ignores the lock (`ip route replace DST via X proto static` by hand)
 * between that read and the batch. `route add` then fails rather than overwrite it, but `route replace`
 * matches a route by destination and metric, not by protocol, so a foreign route placed in podroutes'
 * own slot in those milliseconds would be replaced. The window is one read-and-write of one table.
 *
 * Two clusters on one host: the protocol number is per cluster. Each write for an inventory records its
 * cluster as the owner of the protocol in the namespace (next to the lock file); a run for another
 * cluster's inventory is refused while anything carrying that protocol is still there (use another
 * --proto for the second cluster). `list`/`delete` by the mark alone (no nodes) act for whoever owns it.
 */
import type { Inventory, Route } from "../../model.js";
import { changeDestination, desiredRoutes } from "../../plan/plan.js";
import type { ActionResult, CallOptions, Change, ChangeResult, Check, ExtraAction, ObservedRoute, OpenOptions, OpenTable, Progress, Review, TableDiff, TableRef, Target, TargetRun, WriteContext } from "../target.js";
import { TargetError } from "../target.js";
import {
  batchFailures,
  batchResults,
  buildWriteBatch,
  hostNetworks,
  holdsOwned,
  observedRoutes,
  parseHostReads,
  refusalOf,
  resultsFromState,
  sameHostRoute,
  unusedNexthops,
  type HostRead,
  type HostState,
} from "./iproute.js";
import type { IpRunner, LockedHost } from "./runner.js";

export interface HostRoutesOptions {
  /** Target name, prefixing errors. */
  name: string;
  proto: number;
  /** Seconds to wait for another run's lock on a table (--lock-timeout); undefined: no limit. */
  lockTimeout?: number;
  /** Messages for the operator (stderr): waiting for a lock. */
  warn(message: string): void;
  /** The nodes whose tables this target writes. */
  tables(inventory: Inventory, target: HostRoutesTarget): Promise<TableRef[]>;
  /** How to run `ip` on a table's node; called once per table and cached. */
  connect(table: TableRef, inventory: Inventory): Promise<IpRunner>;
  /** Extra checks for `verify` (packets on the lab). */
  verify?(inventory: Inventory, context: { progress: Progress }): Promise<Check[]>;
  /** Told of each table's state as read under its lock (the agent keeps what a per-change write needs of it). */
  lockedRead?(table: TableRef, state: HostState): void;
}

/** The review action that removes podroutes' nexthop objects nothing uses. */
export const UNUSED_NEXTHOPS_ACTION = "unused-nexthops";

export class HostRoutesTarget implements Target {
  readonly name: string;
  readonly locksTables = true;
  /** One `ip` runner per node (a process, an SSH connection), kept for the target's life: runs share it. */
  private readonly runners = new Map<string, Promise<IpRunner>>();

  constructor(private readonly options: HostRoutesOptions) {
    this.name = options.name;
  }

  begin(inventory: Inventory): TargetRun {
    const { verify } = this.options;
    return {
      tables: () => this.options.tables(inventory, this),
      open: (table, options) => this.open(table, inventory, options),
      ...(verify ? { verify: (context: { progress: Progress }) => verify(inventory, context) } : {}),
    };
  }

  runner(table: TableRef, inventory: Inventory): Promise<IpRunner> {
    let runner = this.runners.get(table.id);
    if (!runner) {
      runner = this.options.connect(table, inventory);
      this.runners.set(table.id, runner);
      // A failed connection is not cached: a later call may try again.
      runner.catch(() => this.runners.delete(table.id));
    }
    return runner;
  }

  private parse(reads: HostRead[], where: string, table: TableRef): HostState {
    // Every read batch starts with the routes, which any kernel prints: no array there, no read at all.
    const failed = reads.find((read) => read.batch.startsWith("route ") && !read.stdout.trim().startsWith("["));
    if (failed) throw new TargetError(this.name, `cannot read routes on ${where}: ${failed.stderr.trim() || "ip printed nothing"}`, { table: table.id });
    return parseHostReads(reads);
  }

  /** The host's routing state, read now (`IpRunner.read`), without the lock. */
  async state(table: TableRef, inventory: Inventory, options: CallOptions = {}): Promise<HostState> {
    const runner = await this.runner(table, inventory);
    return this.parse(await runner.read(options), runner.where, table);
  }

  /** What a read returns of a state: owned routes, and foreign ones on destinations this table should get. */
  private observe(state: HostState, table: TableRef, inventory: Inventory): ObservedRoute[] {
    // Foreign routes matter only on a destination this table should get (a conflict); the node's own
    // pod network, for one, is the CNI bridge's business.
    const wanted = new Set(desiredRoutes(inventory, table).map((route) => route.destination));
    return observedRoutes(state, this.options.proto).filter((route) => route.owned || wanted.has(route.destination));
  }

  /**
   * For a write: takes the table's lock and reads the table under it (the runner's one `flock`, then the
   * read), and writes from that read. Refuses (nothing changed) a host whose protocol number another
   * cluster's routes carry. For a look: one read, no lock.
   */
  async open(table: TableRef, inventory: Inventory, options: OpenOptions): Promise<OpenTable> {
    // The review and the write judge the same read: the routes this host refuses are found once.
    const refusals = new Map<Route, string | undefined>();
    if (!options.write) {
      const state = await this.state(table, inventory, options);
      return {
        routes: this.observe(state, table, inventory),
        review: async (diff) => this.reviewTable(diff, state, inventory, refusals),
        write: async () => {
          throw new TargetError(this.name, "a table opened for a read cannot be written", { table: table.id });
        },
        release: async () => {},
      };
    }
    const runner = await this.runner(table, inventory);
    const { proto, lockTimeout } = this.options;
    // A run with an inventory writes for its cluster; `delete` by the mark alone (no nodes) for whoever owns it.
    const cluster = inventory.nodes.length ? inventory.cluster : undefined;
    const host = await runner.lock({
      proto,
      ...(cluster !== undefined ? { cluster } : {}),
      ...(lockTimeout !== undefined ? { timeout: lockTimeout } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      waiting: (holder) =>
        this.options.warn(
          `${this.name} ${table.id}: waiting for another podroutes run to finish with ${runner.where}${holder ? ` (lock held by ${holder})` : ""}${lockTimeout !== undefined ? `; giving up after ${lockTimeout}s (--lock-timeout)` : ""}`,
        ),
    });
    let state: HostState;
    try {
      state = this.parse(host.state, runner.where, table);
      this.options.lockedRead?.(table, state);
      if (cluster !== undefined && host.owner !== undefined && host.owner !== cluster && holdsOwned(state, proto)) {
        throw new TargetError(
          this.name,
          `routes with protocol ${proto} on ${runner.where} belong to cluster ${host.owner}, not ${cluster}: two clusters on one host need their own --proto (or remove ${host.owner}'s routes first with --cluster ${host.owner}); nothing was changed`,
          { table: table.id },
        );
      }
    } catch (error) {
      await host.release();
      throw error;
    }
    const held = { host, where: runner.where };
    return {
      routes: this.observe(state, table, inventory),
      review: async (diff) => this.reviewTable(diff, state, inventory, refusals),
      write: async (changes, actions, context) => this.writeLocked(table, inventory, held, state, changes, actions, context, refusals),
      release: () => host.release(),
    };
  }

  sameRoute(desired: { nextHop: string }, observed: ObservedRoute): boolean {
    return sameHostRoute(desired, observed);
  }

  /**
   * Writes one table's changes, and its actions, as one batch under the lock, built from the state read
   * under it. Results come from `ip`'s line numbers; when `ip` stopped partway (killed, or a line it could
   * not parse), from the table as it is then, so the report never says "nothing changed" about a batch
   * that changed something. The batch removes every podroutes nexthop object nothing uses, so the
   * unused-nexthops action is done by the same batch (and failed if one of those lines failed).
   */
  private async writeLocked(
    table: TableRef,
    inventory: Inventory,
    held: { host: LockedHost; where: string },
    state: HostState,
    changes: Change[],
    actions: ExtraAction[],
    context: WriteContext,
    refusals?: Map<Route, string | undefined>,
  ): Promise<{ results: ChangeResult[]; actions: ActionResult[] }> {
    const nodeOfNextHop = (ip: string) => inventory.nodes.find((n) => n.internalIPs.includes(ip))?.name ?? "?";
    const batch = buildWriteBatch(state, changes, { proto: this.options.proto, nodeOfNextHop, ...(refusals ? { refusals } : {}) });
    let results: ChangeResult[];
    let cleanupError: string | undefined;
    if (!batch.script) results = batchResults(batch, changes, "");
    else {
      const result = await held.host.write(batch.script);
      const failures = batchFailures(result.stderr);
      // `ip -force -batch` exits 1 when lines failed, each named; anything else means it did not finish.
      if (result.code === 0 || (result.code === 1 && failures.size > 0)) {
        results = batchResults(batch, changes, result.stderr);
        cleanupError = batch.lines.flatMap((line, index) => (line.changes.length === 0 && failures.has(index + 1) ? [`${line.text}: ${failures.get(index + 1)}`] : [])).join("; ") || undefined;
      } else {
        const why = `ip stopped before the end of the batch on ${held.where}: ${result.stderr.trim() || `exit ${result.code}`}`;
        const refused = new Set(batch.refused.map((r) => r.change));
        const now = await this.state(table, inventory, context);
        results = [...batch.refused, ...resultsFromState(now, this.options.proto, changes.filter((c) => !refused.has(c)), why)];
        cleanupError = why;
      }
    }
    context.progress({ table: table.id, done: changes.length, total: changes.length });
    const actionResults = actions.map((action): ActionResult => (action.id === UNUSED_NEXTHOPS_ACTION && cleanupError !== undefined ? { action, ok: false, error: cleanupError } : { action, ok: true }));
    return { results, actions: actionResults };
  }

  /** Warnings (routes this host will refuse) and the unused-nexthops action, for one table's diff and state. */
  private reviewTable(diff: TableDiff, state: HostState, inventory: Inventory, refusals?: Map<Route, string | undefined>): Review {
    const actions: ExtraAction[] = [];
    const warnings: string[] = [];
    if (diff.error !== undefined) return { warnings, refusals: [], actions };
    const nodeOfNextHop = (ip: string) => inventory.nodes.find((n) => n.internalIPs.includes(ip))?.name ?? "?";
    const host = hostNetworks(state);
    for (const change of diff.changes) {
      if (change.action === "delete") continue;
      const refusal = refusalOf(change.route, host, nodeOfNextHop);
      refusals?.set(change.route, refusal);
      if (refusal) warnings.push(`${diff.table.id}: ${changeDestination(change)} will not be written: ${refusal}`);
    }
    const unused = unusedNexthops(state, this.options.proto);
    if (unused.length) {
      actions.push({
        table: diff.table.id,
        id: UNUSED_NEXTHOPS_ACTION,
        description: `remove ${unused.length} podroutes nexthop object${unused.length === 1 ? "" : "s"} nothing uses (id ${unused.join(", ")})`,
      });
    }
    return { warnings, refusals: [], actions };
  }

  listing = {
    columns: ["NODE", "DEST_RANGE", "NEXT_HOP", "DEV", "PROTO"],
    row: (table: TableRef, route: ObservedRoute) => [
      table.node ?? table.id,
      route.destination,
      route.nextHopLabel ?? route.nextHop ?? "",
      route.device ?? "",
      route.owned ? `${route.protocol} (podroutes)` : (route.protocol ?? ""),
    ],
  };

  async close(): Promise<void> {
    const runners = await Promise.allSettled(this.runners.values());
    this.runners.clear();
    await Promise.all(runners.map((r) => (r.status === "fulfilled" ? r.value.close?.() : undefined)));
  }
}

/** Finds which node a host is from its own addresses. */
export function nodeOfAddresses(inventory: Inventory, addresses: string[]): string | undefined {
  return inventory.nodes.find((node) => node.internalIPs.some((ip) => addresses.includes(ip)))?.name;
}
