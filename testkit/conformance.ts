/**
 * The one behaviour every target must show, run against each of them (hono's runTest pattern): converge
 * from empty, do nothing the second time, replace a changed next hop, remove a departed node's routes,
 * report and keep a foreign route on our destination, and remove only its own routes on delete.
 * A target plugs in with a harness: how to get a fresh target, and how to plant a foreign route.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { apply, converge, observe, plan } from "../src/apply/engine.js";
import type { Inventory } from "../src/model.js";
import type { Target } from "../src/targets/target.js";
import { validateInventory, type RawNode } from "../src/inventory.js";

export interface ConformanceFixture {
  target: Target;
  /** The seeds' three nodes as this target needs them (addresses that exist in its world). */
  inventory: Inventory;
  /** Places a route podroutes does not own in a table (a hand-made route, another tool's). */
  addForeignRoute(tableId: string, destination: string, nextHop: string): Promise<void>;
  /** Whether a route (any owner) with this destination is in the table, read independently of the target. */
  hasRoute?(tableId: string, destination: string): Promise<boolean>;
  /** A next hop that is valid for this target but belongs to no node of the inventory yet. */
  spareNextHop: string;
  teardown(): Promise<void>;
}

export interface ConformanceHarness {
  name: string;
  setup(): Promise<ConformanceFixture>;
  /** node:test options for the whole suite: `{ skip: reason }` where it cannot run here. */
  options?: { skip?: string | boolean; timeout?: number };
}

/** A copy of the inventory with changes, validated again as a source would be. */
export function editInventory(inventory: Inventory, edit: (nodes: RawNode[]) => RawNode[]): Inventory {
  const nodes = edit(inventory.nodes.map((n) => ({ ...n, internalIPs: [...n.internalIPs], podCIDRs: [...n.podCIDRs] })));
  return validateInventory({ ...inventory, nodes }, {});
}

const options = { parallel: 4 };

/** What one table holds now, as the target reads it for `list`. */
export async function readTable(target: Target, inventory: Inventory, tableId: string) {
  const table = (await observe(target, inventory, options)).find((observed) => observed.table.id === tableId);
  assert.ok(table && table.error === undefined, `table ${tableId} reads: ${table?.error}`);
  return table.routes;
}

/** A foreign route on the third node's pod CIDR, in a table that should route it to that node. */
async function foreignRouteOnAVictim({ target, inventory, addForeignRoute, spareNextHop }: ConformanceFixture) {
  const victim = inventory.nodes[2]!;
  const table = (await target.begin(inventory).tables()).find((t) => t.node !== victim.name)!;
  await addForeignRoute(table.id, victim.podCIDRs[0]!, spareNextHop);
  return { table, victim };
}

export function runConformance(harness: ConformanceHarness): void {
  describe(`target conformance: ${harness.name}`, harness.options ?? {}, () => {
    const withFixture = async (body: (f: ConformanceFixture) => Promise<void>) => {
      const fixture = await harness.setup();
      try {
        await body(fixture);
      } finally {
        await fixture.target.close?.();
        await fixture.teardown();
      }
    };

    it("converges from empty, then plans no change", () =>
      withFixture(async ({ target, inventory }) => {
        const first = await plan(target, inventory, options);
        assert.ok(first.summary.create > 0, "a fresh target needs routes");
        assert.equal(first.summary.delete + first.summary.replace, 0);
        const report = await apply(target, first, inventory, options);
        assert.ok(report.ok, JSON.stringify(report.tables));
        assert.equal(report.counts.created, first.summary.create);
        const second = await plan(target, inventory, options);
        assert.deepEqual(second.summary, { ...second.summary, create: 0, replace: 0, delete: 0, conflicts: 0 });
        assert.equal(second.summary.unchanged, first.summary.create);
      }));

    it("converges in one pass (converge: nobody reviews the plan), keeps a foreign route, then finds nothing to do", () =>
      withFixture(async (fixture) => {
        const { target, inventory } = fixture;
        const { table, victim } = await foreignRouteOnAVictim(fixture);
        const first = await converge(target, inventory, options);
        assert.ok(first.report, "a fresh target is written");
        assert.ok(first.report.ok, JSON.stringify(first.report.tables));
        assert.ok(first.plan.summary.create > 0);
        assert.equal(first.report.counts.created, first.plan.summary.create);
        assert.deepEqual(first.plan.tables.find((t) => t.table.id === table.id)!.conflicts.map((c) => c.route.destination), [victim.podCIDRs[0]]);
        const second = await converge(target, inventory, options);
        assert.equal(second.report, undefined, `nothing to write the second time: ${JSON.stringify(second.report?.tables)}`);
        assert.deepEqual(second.plan.summary, { ...second.plan.summary, create: 0, replace: 0, delete: 0 });
        assert.equal(second.plan.summary.unchanged, first.plan.summary.create);
        const removed = await converge(target, inventory, { ...options, deleteAll: true });
        assert.ok(removed.report?.ok, JSON.stringify(removed.report?.tables));
        assert.equal(removed.report.counts.deleted, first.plan.summary.create);
        const observed = await readTable(target, inventory, table.id);
        assert.deepEqual(observed.filter((r) => r.owned), [], "no owned route is left");
        assert.ok(observed.some((r) => !r.owned && r.destination === victim.podCIDRs[0]), "the foreign route is still there");
      }));

    it("replaces a route whose next hop changed, and removes a departed node's routes", () =>
      withFixture(async (fixture) => {
        const { target, inventory } = fixture;
        await apply(target, await plan(target, inventory, options), inventory, options);
        const [first, second] = inventory.nodes;
        const moved = editInventory(inventory, (nodes) =>
          nodes.filter((n) => n.name !== second!.name).map((n) => (n.name === first!.name ? { ...n, internalIPs: [fixture.spareNextHop] } : n)),
        );
        const changed = await plan(target, moved, options);
        const actions = changed.tables.flatMap((t) => t.changes.map((c) => `${c.action} ${c.action === "delete" ? c.current.destination : c.route.destination}`));
        assert.ok(actions.includes(`replace ${first!.podCIDRs[0]}`), actions.join(", "));
        assert.ok(actions.includes(`delete ${second!.podCIDRs[0]}`), actions.join(", "));
        const report = await apply(target, changed, moved, options);
        assert.ok(report.ok, JSON.stringify(report.tables));
        const after = await plan(target, moved, options);
        assert.equal(after.summary.create + after.summary.replace + after.summary.delete, 0);
        // Nothing of the departed node is left in any table podroutes still plans for.
        for (const table of after.tables) {
          assert.ok(!table.unchanged.some((r) => r.node === second!.name));
        }
      }));

    it("reports a foreign route on its destination as a conflict and never touches it, even on delete", () =>
      withFixture(async (fixture) => {
        const { target, inventory } = fixture;
        const { table, victim } = await foreignRouteOnAVictim(fixture);
        const planned = await plan(target, inventory, options);
        const conflicts = planned.tables.find((t) => t.table.id === table.id)!.conflicts;
        assert.deepEqual(conflicts.map((c) => c.route.destination), [victim.podCIDRs[0]]);
        assert.ok(planned.tables.every((t) => t.changes.every((c) => c.action === "create")), "only creates on a fresh target");
        const report = await apply(target, planned, inventory, options);
        assert.ok(report.ok);
        const removal = await plan(target, inventory, { ...options, deleteAll: true });
        const removed = removal.tables.flatMap((t) => t.changes);
        assert.ok(removed.every((c) => c.action === "delete" && c.current.owned));
        assert.ok(!removed.some((c) => c.action === "delete" && c.current.destination === victim.podCIDRs[0] && c.current.nextHop === fixture.spareNextHop));
        await apply(target, removal, inventory, options);
        const left = await plan(target, inventory, { ...options, deleteAll: true });
        assert.equal(left.summary.delete, 0, "delete removed every owned route");
        if (fixture.hasRoute) assert.ok(await fixture.hasRoute(table.id, victim.podCIDRs[0]!), "the foreign route survived");
        const observed = await readTable(target, inventory, table.id);
        assert.ok(observed.some((r) => !r.owned && r.destination === victim.podCIDRs[0]), "the foreign route is still there");
      }));
  });
}
