import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { apply, plan } from "../apply/engine.js";
import { validateInventory } from "../inventory.js";
import type { Inventory } from "../model.js";
import { MemoryTarget } from "../targets/memory/memory.js";
import type { ObservedRoute, TableRef } from "../targets/target.js";
import { desiredRoutes, diffTable, recheck } from "./plan.js";
import { renderPlan } from "./render.js";

const seed = validateInventory({
  source: "seed",
  clusterCIDR: "10.200.0.0/16",
  nodes: [0, 1, 2].map((i) => ({ name: `worker-${i}`, internalIPs: [`10.240.0.2${i}`], podCIDRs: [`10.200.${i}.0/24`] })),
});
const host = (node: string): TableRef => ({ id: node, scope: "host", node });
const shared: TableRef = { id: "vpc", scope: "shared" };
const owned = (destination: string, nextHop: string): ObservedRoute => ({ destination, nextHop, owned: true });
const foreign = (destination: string, nextHop: string): ObservedRoute => ({ destination, nextHop, owned: false });

describe("desiredRoutes", () => {
  it("gives a shared table every node's route, named as in the seed", () => {
    assert.deepEqual(
      desiredRoutes(seed, shared).map((r) => [r.name, r.destination, r.nextHop]),
      [
        ["kubernetes-route-10-200-0-0-24", "10.200.0.0/24", "10.240.0.20"],
        ["kubernetes-route-10-200-1-0-24", "10.200.1.0/24", "10.240.0.21"],
        ["kubernetes-route-10-200-2-0-24", "10.200.2.0/24", "10.240.0.22"],
      ],
    );
  });
  it("gives a host table the routes of every OTHER node", () => {
    assert.deepEqual(desiredRoutes(seed, host("worker-1")).map((r) => r.node), ["worker-0", "worker-2"]);
  });
  it("routes each family of a dual-stack node to its own internal IP", () => {
    const dual = validateInventory({
      source: "x",
      nodes: [{ name: "a", internalIPs: ["10.240.0.20", "fd00::20"], podCIDRs: ["fd00:10:200::/64", "10.200.0.0/24"] }],
    });
    assert.deepEqual(desiredRoutes(dual, shared).map((r) => [r.destination, r.nextHop, r.family]), [
      ["10.200.0.0/24", "10.240.0.20", 4],
      ["fd00:10:200::/64", "fd00::20", 6],
    ]);
  });
});

describe("desiredRoutes: made once per inventory", () => {
  const inventory = () =>
    validateInventory({ source: "x", nodes: [0, 1, 2].map((i) => ({ name: `w${i}`, internalIPs: [`10.240.0.2${i}`], podCIDRs: [`10.200.${i}.0/24`] })) });
  const destinations = (inv: Inventory, table: TableRef) => desiredRoutes(inv, table).map((r) => `${r.node} ${r.destination} ${r.nextHop}`);

  it("shares frozen routes between tables, so no table's plan can change another's", () => {
    const inv = inventory();
    const [a, b] = [desiredRoutes(inv, host("w0")), desiredRoutes(inv, host("w2"))];
    assert.equal(a.find((r) => r.node === "w1"), b.find((r) => r.node === "w1"));
    assert.ok(a.every((route) => Object.isFrozen(route)));
  });

  it("makes them again when a node, its lists or the node list were replaced since", () => {
    const inv = inventory();
    assert.deepEqual(destinations(inv, shared), ["w0 10.200.0.0/24 10.240.0.20", "w1 10.200.1.0/24 10.240.0.21", "w2 10.200.2.0/24 10.240.0.22"]);
    inv.nodes[1] = { ...inv.nodes[1]!, podCIDRs: ["10.200.9.0/24"] };
    assert.deepEqual(destinations(inv, shared), ["w0 10.200.0.0/24 10.240.0.20", "w2 10.200.2.0/24 10.240.0.22", "w1 10.200.9.0/24 10.240.0.21"]);
    inv.nodes[0]!.internalIPs = ["10.240.0.30"];
    assert.deepEqual(destinations(inv, host("w2")), ["w0 10.200.0.0/24 10.240.0.30", "w1 10.200.9.0/24 10.240.0.21"]);
    inv.nodes.push({ name: "w3", internalIPs: ["10.240.0.23"], podCIDRs: ["10.200.3.0/24"] });
    assert.deepEqual(destinations(inv, host("w0")), ["w2 10.200.2.0/24 10.240.0.22", "w3 10.200.3.0/24 10.240.0.23", "w1 10.200.9.0/24 10.240.0.21"]);
    inv.nodes = inv.nodes.slice(1);
    assert.deepEqual(destinations(inv, shared).map((d) => d.split(" ")[0]), ["w2", "w3", "w1"]);
  });
});

describe("diffTable: one action per destination", () => {
  const desired = desiredRoutes(seed, host("worker-0"));
  const rows: { name: string; observed: ObservedRoute[]; expect: string[]; conflicts?: string[]; clusterCIDR?: string }[] = [
    { name: "empty table: create all", observed: [], expect: ["create 10.200.1.0/24", "create 10.200.2.0/24"] },
    { name: "in place: nothing", observed: [owned("10.200.1.0/24", "10.240.0.21"), owned("10.200.2.0/24", "10.240.0.22")], expect: [] },
    { name: "next hop changed: replace", observed: [owned("10.200.1.0/24", "10.240.0.99"), owned("10.200.2.0/24", "10.240.0.22")], expect: ["replace 10.200.1.0/24"] },
    { name: "blackhole: replace", observed: [{ ...owned("10.200.1.0/24", "10.240.0.21"), healthy: false }, owned("10.200.2.0/24", "10.240.0.22")], expect: ["replace 10.200.1.0/24"] },
    { name: "ours, no longer wanted: delete", observed: [owned("10.200.1.0/24", "10.240.0.21"), owned("10.200.2.0/24", "10.240.0.22"), owned("10.200.9.0/24", "10.240.0.29")], expect: ["delete 10.200.9.0/24"] },
    { name: "ours but outside the cluster CIDR: left alone", observed: [owned("10.200.1.0/24", "10.240.0.21"), owned("10.200.2.0/24", "10.240.0.22"), owned("192.168.0.0/24", "10.240.0.29")], expect: [], clusterCIDR: "10.200.0.0/16" },
    { name: "foreign on our destination: conflict, never written", observed: [foreign("10.200.1.0/24", "10.240.0.99"), owned("10.200.2.0/24", "10.240.0.22")], expect: [], conflicts: ["10.200.1.0/24"] },
    { name: "foreign elsewhere: ignored", observed: [foreign("0.0.0.0/0", "10.240.0.1"), owned("10.200.1.0/24", "10.240.0.21"), owned("10.200.2.0/24", "10.240.0.22")], expect: [] },
    { name: "two owned copies: keep the right one, delete the other", observed: [owned("10.200.1.0/24", "10.240.0.99"), owned("10.200.1.0/24", "10.240.0.21"), owned("10.200.2.0/24", "10.240.0.22")], expect: ["delete 10.200.1.0/24"] },
  ];
  for (const row of rows) {
    it(row.name, () => {
      const diff = diffTable(host("worker-0"), desired, row.observed, { clusterCIDR: row.clusterCIDR });
      assert.deepEqual(diff.changes.map((c) => `${c.action} ${c.action === "delete" ? c.current.destination : c.route.destination}`), row.expect);
      assert.deepEqual(diff.conflicts.map((c) => c.route.destination), row.conflicts ?? []);
    });
  }
});

/** Random clusters of up to 12 nodes in 10.200.0.0/16, with distinct /24s and IPs. */
const inventories = fc
  .uniqueArray(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 12 })
  .chain((slots) =>
    fc.tuple(fc.constant(slots), fc.shuffledSubarray(Array.from({ length: 200 }, (_, i) => i + 20), { minLength: slots.length, maxLength: slots.length })),
  )
  .map(([slots, hosts]): Inventory =>
    validateInventory({
      source: "generated",
      clusterCIDR: "10.200.0.0/16",
      nodes: slots.map((slot, i) => ({ name: `n${slot}`, internalIPs: [`10.240.0.${hosts[i]}`], podCIDRs: [`10.200.${slot}.0/24`] })),
    }),
  );

/** Foreign routes anywhere, some on pod destinations. */
const foreignRoutes = fc.array(
  fc.record({ slot: fc.integer({ min: 0, max: 255 }), hop: fc.integer({ min: 1, max: 254 }) }).map(({ slot, hop }) => foreign(`10.200.${slot}.0/24`, `10.240.1.${hop}`)),
  { maxLength: 4 },
);

describe("planner properties (fast-check, in-memory target)", () => {
  it("applying a plan, then planning again, gives no changes — from any starting state", async () => {
    await fc.assert(
      fc.asyncProperty(inventories, inventories, foreignRoutes, fc.constantFrom<"host" | "shared">("host", "shared"), async (before, after, planted, scope) => {
        const target = new MemoryTarget(scope);
        await apply(target, await plan(target, before, { parallel: 4 }), before, { parallel: 4 });
        for (const route of planted) for (const t of await target.tables(after)) target.table(t.id).set(route.destination, route);
        const planned = await plan(target, after, { parallel: 4 });
        const report = await apply(target, planned, after, { parallel: 4 });
        assert.ok(report.ok);
        const again = await plan(target, after, { parallel: 4 });
        assert.equal(again.summary.create + again.summary.replace + again.summary.delete, 0);
      }),
      { numRuns: 150 },
    );
  });

  it("a plan never changes or removes a route podroutes does not own", async () => {
    await fc.assert(
      fc.asyncProperty(inventories, inventories, foreignRoutes, async (before, after, planted) => {
        const target = new MemoryTarget("host");
        await apply(target, await plan(target, before, { parallel: 2 }), before, { parallel: 2 });
        for (const route of planted) for (const t of await target.tables(after)) target.table(t.id).set(route.destination, route);
        for (const deleteAll of [false, true]) {
          const planned = await plan(target, after, { parallel: 2, deleteAll });
          for (const table of planned.tables) {
            for (const change of table.changes) {
              if (change.action !== "create") assert.ok(change.current.owned, `${change.action} of a foreign route`);
              else assert.ok(!planted.some((p) => target.table(table.table.id).get(p.destination) === p && p.destination === change.route.destination));
            }
          }
          await apply(target, planned, after, { parallel: 2 });
          for (const route of planted) {
            for (const t of await target.tables(after)) assert.equal(target.table(t.id).get(route.destination)?.owned, false);
          }
        }
      }),
      { numRuns: 150 },
    );
  });
});

describe("engine", () => {
  it("a second apply makes no write at all", async () => {
    const target = new MemoryTarget("host");
    await apply(target, await plan(target, seed, { parallel: 3 }), seed, { parallel: 3 });
    const writes = target.writes().length;
    const report = await apply(target, await plan(target, seed, { parallel: 3 }), seed, { parallel: 3 });
    assert.equal(target.writes().length, writes);
    assert.deepEqual(report.counts, { created: 0, replaced: 0, deleted: 0, failed: 0, failedTables: 0, conflicts: 0 });
  });

  it("a partial failure says what failed, and a re-run finishes the job", async () => {
    const target = new MemoryTarget("host");
    target.failing.add("10.200.2.0/24");
    const first = await apply(target, await plan(target, seed, { parallel: 3 }), seed, { parallel: 3 });
    assert.equal(first.ok, false);
    assert.equal(first.counts.failed, 2);
    assert.equal(first.counts.created, 4);
    target.failing.clear();
    const second = await apply(target, await plan(target, seed, { parallel: 3 }), seed, { parallel: 3 });
    assert.deepEqual([second.ok, second.counts.created], [true, 2]);
  });

  it("a table that cannot be read fails alone", async () => {
    const target = new MemoryTarget("host");
    const read = target.read.bind(target);
    target.read = async (table) => (table.id === "worker-1" ? Promise.reject(new Error("connection refused")) : read(table));
    const planned = await plan(target, seed, { parallel: 3 });
    assert.equal(planned.tables.find((t) => t.table.id === "worker-1")!.error, "connection refused");
    const report = await apply(target, planned, seed, { parallel: 3 });
    assert.equal(report.ok, false);
    assert.equal(report.counts.created, 4);
    assert.equal(report.tables.find((t) => t.table.id === "worker-1")!.error, "connection refused");
  });
});

describe("two writers (issue 8)", () => {
  it("two applies racing on one table end with one plan or the other, never a mix (fast-check scheduler)", async () => {
    await fc.assert(
      fc.asyncProperty(fc.scheduler(), inventories, inventories, inventories, async (s, start, first, second) => {
        const target = new MemoryTarget("shared");
        await apply(target, await plan(target, start, { parallel: 1 }), start, { parallel: 1 });
        // Every read and write of the target is a task the scheduler releases in a random order (the lock
        // itself is not: a task blocked on it would stall the scheduler).
        target.read = s.scheduleFunction(target.read.bind(target));
        target.write = s.scheduleFunction(target.write.bind(target));
        const writer = async (inventory: Inventory) => apply(target, await plan(target, inventory, { parallel: 1 }), inventory, { parallel: 1 });
        const reports = await s.waitFor(Promise.all([writer(first), writer(second)]));
        const table = [...target.table("vpc").values()].map((r) => `${r.destination} ${r.nextHop}`).sort();
        const plans = [first, second].map((inventory) => desiredRoutes(inventory, { id: "vpc", scope: "shared" }).map((r) => `${r.destination} ${r.nextHop}`).sort());
        assert.ok(plans.some((p) => JSON.stringify(p) === JSON.stringify(table)), `a mix:\n${table.join("\n")}\nplans:\n${plans.map((p) => p.join(" ")).join("\n")}\n${s.report().map((t) => t.label).join(" → ")}`);
        assert.ok(reports.some((report) => report.ok), "one of them succeeded");
      }),
      { numRuns: 200 },
    );
  });

  it("recheck: what the plan still says is written, a foreign take-over is a conflict, a table overtaken is stale", () => {
    const table = host("worker-0");
    const desired = desiredRoutes(seed, table);
    const approved = diffTable(table, desired, [owned("10.200.1.0/24", "10.240.0.99")]);
    assert.deepEqual(approved.changes.map((c) => c.action), ["replace", "create"]);
    const same = recheck(approved, [owned("10.200.1.0/24", "10.240.0.99")]);
    assert.deepEqual([same.write.length, same.results.length, same.stale], [2, 0, false]);
    const taken = recheck(approved, [foreign("10.200.1.0/24", "10.240.7.7")]);
    assert.deepEqual(taken.write.map((c) => c.action), ["create"]);
    assert.deepEqual(taken.results.map((r) => [r.change.action, r.ok, r.conflict]), [["replace", false, true]]);
    const done = recheck(approved, [owned("10.200.1.0/24", "10.240.0.21"), owned("10.200.2.0/24", "10.240.0.22")]);
    assert.deepEqual([done.write.length, done.results.every((r) => r.ok)], [0, true]);
    const overtaken = recheck(approved, [owned("10.200.1.0/24", "10.240.0.99"), owned("10.200.9.0/24", "10.240.0.29")]);
    assert.equal(overtaken.stale, true);
    assert.ok(overtaken.results.every((r) => !r.ok && /changed since the plan/.test(r.error!)));
  });
});

describe("reports that do not mislead (issue 8 item 11)", () => {
  it("a plan whose every table is unreadable says nothing could be planned, not 'No changes'", async () => {
    const target = new MemoryTarget("host");
    target.read = async () => Promise.reject(new Error("permission denied"));
    const text = renderPlan(await plan(target, seed, { parallel: 3 }));
    assert.doesNotMatch(text, /No changes|already match/);
    assert.match(text, /Nothing could be planned: none of the 3 tables could be read/);
  });
});
