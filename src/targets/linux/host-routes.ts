/**
 * The target for Linux hosts' own routing tables, whatever the transport: one table per node, read
 * with one `ip` batch and written with one `ip` batch. Ownership is the route protocol number: only
 * routes carrying it are replaced or deleted, and `ip route del ... proto N` refuses any other.
 */
import type { Inventory } from "../../model.js";
import { desiredRoutes } from "../../plan/plan.js";
import type { Change, ChangeResult, ObservedRoute, TableRef, Target, WriteContext } from "../target.js";
import { TargetError } from "../target.js";
import { batchResults, buildWriteBatch, observedRoutes, parseHostState, READ_ARGS, READ_BATCH, ROUTES_BATCH, type HostState } from "./iproute.js";
import type { IpRunner } from "./runner.js";

export interface HostRoutesOptions {
  /** Target name, prefixing errors. */
  name: string;
  proto: number;
  /** The nodes whose tables this target writes. */
  tables(inventory: Inventory, target: HostRoutesTarget): Promise<TableRef[]>;
  /** How to run `ip` on a table's node; called once per table and cached. */
  connect(table: TableRef, inventory: Inventory): Promise<IpRunner>;
  /** Extra checks for `verify` (packets on the lab). */
  verify?: Target["verify"];
}

export class HostRoutesTarget implements Target {
  readonly name: string;
  private readonly runners = new Map<string, Promise<IpRunner>>();

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

  /** The host's routing state, read in one `ip` process (`batch`: what is read; everything by default). */
  async state(table: TableRef, inventory: Inventory, batch = READ_BATCH): Promise<HostState> {
    const runner = await this.runner(table, inventory);
    const result = await runner.ip(READ_ARGS, batch);
    if (!result.stdout.trim().startsWith("[")) {
      throw new TargetError(this.name, `cannot read routes on ${runner.where}: ${result.stderr.trim() || `ip exited ${result.code}`}`, { table: table.id });
    }
    return parseHostState(result.stdout, result.stderr, batch);
  }

  async read(table: TableRef, inventory: Inventory): Promise<ObservedRoute[]> {
    const state = await this.state(table, inventory, ROUTES_BATCH);
    // Foreign routes matter only on a destination this table should get (a conflict); the node's own
    // pod network, for one, is the CNI bridge's business.
    const wanted = new Set(desiredRoutes(inventory, table).map((route) => route.destination));
    return observedRoutes(state, this.options.proto).filter((route) => route.owned || wanted.has(route.destination));
  }

  async write(table: TableRef, changes: Change[], context: WriteContext): Promise<ChangeResult[]> {
    const runner = await this.runner(table, context.inventory);
    // Read again right before writing: nexthop ids and on-link networks must be current, not as planned.
    const state = await this.state(table, context.inventory);
    const nodeOfNextHop = (ip: string) => context.inventory.nodes.find((n) => n.internalIPs.includes(ip))?.name ?? "?";
    const batch = buildWriteBatch(state, changes, { proto: this.options.proto, nodeOfNextHop });
    let stderr = "";
    if (batch.script) {
      const result = await runner.ip(["-force", "-batch", "-"], batch.script);
      stderr = result.stderr;
      if (result.code !== 0 && !/Command failed -:\d+/.test(stderr)) {
        // `ip` itself failed (not one line of it): we cannot say which lines ran, so none is reported done.
        throw new TargetError(this.name, `ip -batch failed on ${runner.where}: ${stderr.trim() || `exit ${result.code}`}`, { table: table.id });
      }
    }
    const results = batchResults(batch, changes, stderr);
    context.progress({ table: table.id, done: changes.length, total: changes.length });
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
