/**
 * An in-memory target: tables of routes in a Map, every call recorded. It is the reference the shared
 * conformance suite and the planner's property tests run against, as the route controller ships a
 * fake provider beside its interface. Not offered on the command line.
 */
import type { Inventory } from "../../model.js";
import { changeDestination } from "../../plan/plan.js";
import type { Change, ChangeResult, ObservedRoute, OpenOptions, OpenTable, TableRef, Target, TargetRun } from "../target.js";

export interface MemoryCall {
  method: "read" | "write" | "lock";
  table: string;
  changes?: Change[];
}

export class MemoryTarget implements Target {
  readonly name = "memory";
  readonly calls: MemoryCall[] = [];
  /** table id → destination → route */
  readonly routes = new Map<string, Map<string, ObservedRoute>>();
  /** Destinations whose writes fail, to exercise partial failure. */
  readonly failing = new Set<string>();

  /** Each table's lock: the tail of the queue of its holders. */
  private readonly locks = new Map<string, Promise<void>>();

  constructor(private readonly scope: "host" | "shared" = "host") {}

  readonly locksTables = true;

  /** A run: tables per the scope; each table opened under its lock for a write, as a host's flock. */
  begin(inventory: Inventory): TargetRun {
    return {
      tables: () => this.tables(inventory),
      open: (table, options) => this.open(table, options),
    };
  }

  /** Holders of a table's lock queue and go one at a time; the table is read under it and written under it. */
  private async open(table: TableRef, options: OpenOptions): Promise<OpenTable> {
    let release = () => {};
    if (options.write) {
      this.calls.push({ method: "lock", table: table.id });
      const before = this.locks.get(table.id) ?? Promise.resolve();
      const mine = new Promise<void>((resolve) => (release = resolve));
      this.locks.set(table.id, before.then(() => mine));
      await before;
    }
    return {
      routes: await this.read(table),
      write: async (changes) => {
        if (!options.write) throw new Error("memory: a table opened for a read was written");
        return { results: await this.write(table, changes), actions: [] };
      },
      release: async () => release(),
    };
  }

  async tables(inventory: Inventory): Promise<TableRef[]> {
    return this.scope === "shared"
      ? [{ id: "vpc", scope: "shared" }]
      : inventory.nodes.map((node) => ({ id: node.name, scope: "host", node: node.name }));
  }

  table(id: string): Map<string, ObservedRoute> {
    let table = this.routes.get(id);
    if (!table) this.routes.set(id, (table = new Map()));
    return table;
  }

  async read(table: TableRef): Promise<ObservedRoute[]> {
    this.calls.push({ method: "read", table: table.id });
    return [...this.table(table.id).values()].map((route) => ({ ...route }));
  }

  async write(table: TableRef, changes: Change[]): Promise<ChangeResult[]> {
    this.calls.push({ method: "write", table: table.id, changes });
    const routes = this.table(table.id);
    return changes.map((change): ChangeResult => {
      const destination = changeDestination(change);
      if (this.failing.has(destination)) return { change, ok: false, error: `injected failure for ${destination}` };
      const existing = routes.get(destination);
      if (change.action === "delete") {
        if (!existing?.owned) return { change, ok: false, error: "refusing to delete a route podroutes does not own" };
        routes.delete(destination);
      } else {
        if (existing && !existing.owned) return { change, ok: false, error: "refusing to overwrite a route podroutes does not own" };
        routes.set(destination, { destination, nextHop: change.route.nextHop, nextHopLabel: change.route.nextHop, owned: true });
      }
      return { change, ok: true };
    });
  }

  writes(): MemoryCall[] {
    return this.calls.filter((call) => call.method === "write");
  }
}
