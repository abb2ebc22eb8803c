/**
 * Scale (issue 8 item 10): nothing in the path from an inventory to a written batch and a report may be
 * bounded by the call stack. 150,000 routes — a host table of 150,000 other nodes — go through
 * validation, planning, write-time recheck, the Linux batch builder and every rendering, in process.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ApplyReport } from "../apply/engine.js";
import { validateInventory } from "../inventory.js";
import { buildWriteBatch, batchResults, observedRoutes, parseHostState } from "../targets/linux/iproute.js";
import type { TableRef } from "../targets/target.js";
import { desiredRoutes, diffTable, recheck, summarize, type Plan } from "./plan.js";
import { planJson, renderColumns, renderPlan, renderReport, reportJson } from "./render.js";

const ROUTES = 150_000;

describe("150,000 routes through the pure path", () => {
  it("validates, plans, rechecks, builds one batch and renders, without a stack overflow", () => {
    const address = (value: number) => [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join(".");
    const nodes = [{ name: "self", internalIPs: ["10.240.0.20"], podCIDRs: ["10.199.0.0/24"] }];
    for (let i = 0; i < ROUTES; i++) {
      // Next hops from 10.240.0.100 upwards (inside 10.240.0.0/14), pod CIDRs /32s from 100.64.0.0.
      nodes.push({ name: `n${i}`, internalIPs: [address(0x0af00064 + i)], podCIDRs: [`${address(0x64400000 + i)}/32`] });
    }
    const inventory = validateInventory({ source: "scale", nodes });
    const table: TableRef = { id: "self", scope: "host", node: "self" };
    const desired = desiredRoutes(inventory, table);
    assert.equal(desired.length, ROUTES);

    const diff = diffTable(table, desired, []);
    assert.equal(diff.changes.length, ROUTES);
    const plan: Plan = { cluster: "kubernetes", target: "local", tables: [diff], summary: summarize([diff]), review: { warnings: [], refusals: [], actions: [] } };
    assert.match(renderPlan(plan), new RegExp(`Plan: ${ROUTES} to add`));
    assert.equal(planJson(plan).tables[0]!.changes.length, ROUTES);
    assert.equal(recheck(diff, []).write.length, ROUTES);

    // The host is connected to every next hop: 10.240.0.0/14 on eth0.
    const connected = [{ dst: "10.240.0.0/14", dev: "eth0", protocol: "2", scope: "253" }];
    const state = parseHostState(`${JSON.stringify(connected)}\n[]\n[]\n`, "");
    const batch = buildWriteBatch(state, diff.changes, { proto: 150, nodeOfNextHop: () => "?" });
    assert.equal(batch.refused.length, 0, batch.refused[0]?.error);
    const results = batchResults(batch, diff.changes, "");
    const report: ApplyReport = { tables: [{ table, results }], actions: [], counts: { created: ROUTES, replaced: 0, deleted: 0, failed: 0, failedTables: 0, conflicts: 0 }, ok: true };
    assert.match(renderReport(report), new RegExp(`${ROUTES}/${ROUTES} changes done`));
    assert.equal(reportJson(report).tables[0]!.results.length, ROUTES);

    // A table already holding them all: reading it back and listing it.
    const held = diff.changes.map((c) => (c.action === "create" ? { dst: c.route.destination, gateway: c.route.nextHop, dev: "eth0", protocol: "150" } : {}));
    const observed = observedRoutes(parseHostState(`${JSON.stringify([...connected, ...held])}\n[]\n[]\n`, ""), 150);
    assert.equal(diffTable(table, desired, observed, { sameRoute: (d, o) => o.nextHop === d.nextHop }).unchanged.length, ROUTES);
    assert.equal(renderColumns(["DEST", "NEXT_HOP"], observed.map((r) => [r.destination, r.nextHop ?? ""])).split("\n").length, ROUTES + 2);
  });
});
