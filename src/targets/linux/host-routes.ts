/**
 * The target for Linux hosts' own routing tables, whatever the transport: one table per node, read
 * with one `ip` batch and written with one `ip` batch. Ownership is the route protocol number: only
 * routes carrying it are replaced or deleted, and `ip route del proto N ...` refuses any other.
 *
 * Writes happen under the table's lock (runner.ts), which the engine takes before it reads the table
 * again and checks the plan still holds; the batch is built from that same read. Residual race, which
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
import type { Inventory } from "../../model.js";
import { changeDestination, desiredRoutes, type Plan } from "../../plan/plan.js";
import type { Change, ChangeResult, ExtraAction, ObservedRoute, Review, TableRef, Target, WriteContext } from "../target.js";
import { TargetError } from "../target.js";
import {
  batchFailures,
  batchResults,
  buildWriteBatch,
  connectedNetworks,
  holdsOwned,
  observedRoutes,
  parseHostState,
  READ_ARGS,
  READ_BATCH,
  refusalOf,
  resultsFromState,
  sameHostRoute,
  unusedNexthops,
  type HostState,
  type WriteBatch,
} from "./iproute.js";
import type { IpResult, IpRunner, LockedHost } from "./runner.js";

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
  verify?: Target["verify"];
}

/** The review action that removes podroutes' nexthop objects nothing uses. */
export const UNUSED_NEXTHOPS_ACTION = "unused-nexthops";

/** A table while this run holds its lock: the host, and its state as read under the lock (undefined once written). */
interface Held {
  host: LockedHost;
  state: HostState | undefined;
  where: string;
}

export class HostRoutesTarget implements Target {
  readonly name: string;
  private readonly runners = new Map<string, Promise<IpRunner>>();
  private readonly held = new Map<string, Held>();
  /** Each table's state as last read for a plan, for review. */
  private readonly planned = new Map<string, HostState>();

  constructor(private readonly options: HostRoutesOptions) {
    this.name = options.name;
  }

  tables(inventory: Inventory): Promise<TableRef[]> {
    return this.options.tables(inventory, this);
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

  private parse(result: IpResult, where: string, table: TableRef): HostState {
    if (!result.stdout.trim().startsWith("[")) {
      throw new TargetError(this.name, `cannot read routes on ${where}: ${result.stderr.trim() || `ip exited ${result.code}`}`, { table: table.id });
    }
    return parseHostState(result.stdout, result.stderr);
  }

  /** The host's routing state: as read under the lock while this run holds it, else read now in one `ip` process. */
  async state(table: TableRef, inventory: Inventory): Promise<HostState> {
    const held = this.held.get(table.id);
    if (held?.state) return held.state;
    const runner = await this.runner(table, inventory);
    const state = this.parse(await runner.ip(READ_ARGS, READ_BATCH), runner.where, table);
    if (held) held.state = state;
    return state;
  }

  /**
   * Takes the table's lock and reads the table under it; until release, `read` and `write` use that
   * read. Refuses (nothing changed) a host whose protocol number another cluster's routes carry.
   */
  async lock(table: TableRef, inventory: Inventory): Promise<{ release(): Promise<void> }> {
    const runner = await this.runner(table, inventory);
    const { proto, lockTimeout } = this.options;
    // A run with an inventory writes for its cluster; `delete` by the mark alone (no nodes) for whoever owns it.
    const cluster = inventory.nodes.length ? inventory.cluster : undefined;
    const host = await runner.lock({
      proto,
      ...(cluster !== undefined ? { cluster } : {}),
      ...(lockTimeout !== undefined ? { timeout: lockTimeout } : {}),
      waiting: (holder) =>
        this.options.warn(
          `${this.name} ${table.id}: waiting for another podroutes run to finish with ${runner.where}${holder ? ` (lock held by ${holder})` : ""}${lockTimeout !== undefined ? `; giving up after ${lockTimeout}s (--lock-timeout)` : ""}`,
        ),
    });
    try {
      const state = this.parse(host.state, runner.where, table);
      if (cluster !== undefined && host.owner !== undefined && host.owner !== cluster && holdsOwned(state, proto)) {
        throw new TargetError(
          this.name,
          `routes with protocol ${proto} on ${runner.where} belong to cluster ${host.owner}, not ${cluster}: two clusters on one host need their own --proto (or remove ${host.owner}'s routes first with --cluster ${host.owner}); nothing was changed`,
          { table: table.id },
        );
      }
      this.held.set(table.id, { host, state, where: runner.where });
    } catch (error) {
      await host.release();
      throw error;
    }
    return {
      release: async () => {
        this.held.delete(table.id);
        await host.release();
      },
    };
  }

  /** The table's state as the last plan read it (the agent keeps what a per-change write needs of it). */
  plannedState(table: TableRef): HostState | undefined {
    return this.planned.get(table.id);
  }

  async read(table: TableRef, inventory: Inventory): Promise<ObservedRoute[]> {
    const state = await this.state(table, inventory);
    if (!this.held.has(table.id)) this.planned.set(table.id, state);
    // Foreign routes matter only on a destination this table should get (a conflict); the node's own
    // pod network, for one, is the CNI bridge's business.
    const wanted = new Set(desiredRoutes(inventory, table).map((route) => route.destination));
    return observedRoutes(state, this.options.proto).filter((route) => route.owned || wanted.has(route.destination));
  }

  sameRoute(desired: { nextHop: string }, observed: ObservedRoute): boolean {
    return sameHostRoute(desired, observed);
  }

  /** Runs `body` with the table locked: by the engine already, or here for the duration. */
  private async locked<T>(table: TableRef, inventory: Inventory, body: (held: Held) => Promise<T>): Promise<T> {
    const held = this.held.get(table.id);
    if (held) return body(held);
    const lock = await this.lock(table, inventory);
    try {
      return await body(this.held.get(table.id)!);
    } finally {
      await lock.release();
    }
  }

  /**
   * Writes one batch under the lock. Results come from `ip`'s line numbers; when `ip` stopped partway
   * (killed, or a line it could not parse), from the table as it is then, so the report never says
   * "nothing changed" about a batch that changed something.
   */
  private async runBatch(table: TableRef, inventory: Inventory, held: Held, batch: WriteBatch, changes: Change[]): Promise<ChangeResult[]> {
    if (!batch.script) return batchResults(batch, changes, "");
    const result = await held.host.write(batch.script);
    held.state = undefined; // written: the next look at the table reads it again
    const failures = batchFailures(result.stderr);
    // `ip -force -batch` exits 1 when lines failed, each named; anything else means it did not finish.
    if (result.code === 0 || (result.code === 1 && failures.size > 0)) return batchResults(batch, changes, result.stderr);
    const why = `ip stopped before the end of the batch on ${held.where}: ${result.stderr.trim() || `exit ${result.code}`}`;
    const refused = new Set(batch.refused.map((r) => r.change));
    return [...batch.refused, ...resultsFromState(await this.state(table, inventory), this.options.proto, changes.filter((c) => !refused.has(c)), why)];
  }

  async write(table: TableRef, changes: Change[], context: WriteContext): Promise<ChangeResult[]> {
    const nodeOfNextHop = (ip: string) => context.inventory.nodes.find((n) => n.internalIPs.includes(ip))?.name ?? "?";
    const results = await this.locked(table, context.inventory, async (held) => {
      const batch = buildWriteBatch(await this.state(table, context.inventory), changes, { proto: this.options.proto, nodeOfNextHop });
      return this.runBatch(table, context.inventory, held, batch, changes);
    });
    context.progress({ table: table.id, done: changes.length, total: changes.length });
    return results;
  }

  /**
   * Podroutes' nexthop objects that nothing uses (left by a crash, or by someone deleting our routes)
   * are removed; routes this host will refuse to write (next hop not on-link, a connected network
   * hijacked) are warned about already in the plan.
   */
  async review(plan: Plan, inventory: Inventory): Promise<Review> {
    const actions: ExtraAction[] = [];
    const warnings: string[] = [];
    const nodeOfNextHop = (ip: string) => inventory.nodes.find((n) => n.internalIPs.includes(ip))?.name ?? "?";
    for (const diff of plan.tables) {
      const state = this.planned.get(diff.table.id);
      if (diff.error !== undefined || !state) continue;
      const host = { connected: connectedNetworks(state), addresses: state.addresses };
      for (const change of diff.changes) {
        const refusal = change.action === "delete" ? undefined : refusalOf(change.route, host, nodeOfNextHop);
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
    }
    return { warnings, refusals: [], actions };
  }

  async runActions(actions: ExtraAction[], context: WriteContext) {
    const results: { action: ExtraAction; ok: boolean; error?: string }[] = [];
    for (const action of actions) {
      const table: TableRef = { id: action.table, scope: "host", node: action.table };
      try {
        // Under the lock, from a fresh read: only what is still unused now is removed.
        const failed = await this.locked(table, context.inventory, async (held) => {
          const batch = buildWriteBatch(await this.state(table, context.inventory), [], { proto: this.options.proto, nodeOfNextHop: () => "?" });
          if (!batch.script) return [];
          const result = await held.host.write(batch.script);
          held.state = undefined;
          return result.code === 0 ? [] : [result.stderr.trim() || `ip exited ${result.code}`];
        });
        results.push(failed.length ? { action, ok: false, error: failed.join("; ") } : { action, ok: true });
      } catch (error) {
        results.push({ action, ok: false, error: (error as Error).message });
      }
    }
    return results;
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

  verify(inventory: Inventory, context: Parameters<NonNullable<Target["verify"]>>[1]) {
    return this.options.verify ? this.options.verify(inventory, context) : Promise.resolve([]);
  }

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
