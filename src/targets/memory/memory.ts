/**
 * An in-memory target: tables of routes in a Map, every call recorded. It is the reference the shared
 * conformance suite and the planner's property tests run against, as the route controller ships a
 * fake provider beside its interface. Not offered on the command line.
 */
import type { Inventory } from "../../model.js";
import { changeDestination } from "../../plan/plan.js";
import type { Change, ChangeResult, LockedTable, ObservedRoute, TableRef, Target, WriteContext } from "../target.js";

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

  /**
   * A lock per table, as a host's flock: holders queue and go one at a time. The table is read under it
   * (`read`) and written under it (`write`), so whatever wraps those sees every read and write.
   */
  async lockTable(table: TableRef, inventory: Inventory): Promise<LockedTable> {
    this.calls.push({ method: "lock", table: table.id });
    const before = this.locks.get(table.id) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    this.locks.set(table.id, before.then(() => mine));
    await before;
    try {
      return {
        routes: await this.read(table, inventory),
        write: async (changes, _actions, context) => ({ results: await this.write(table, changes, context), actions: [] }),
        release: async () => release(),
      };
    } catch (error) {
      release();
      throw error;
    }
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

  async read(table: TableRef, _inventory?: Inventory): Promise<ObservedRoute[]> {
    this.calls.push({ method: "read", table: table.id });
    return [...this.table(table.id).values()].map((route) => ({ ...route }));
  }

  async write(table: TableRef, changes: Change[], _context: WriteContext): Promise<ChangeResult[]> {
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
