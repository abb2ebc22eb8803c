/**
 * What each node's condition says after a reconcile, table-style: routed only when every pod CIDR has its
 * route in every table that should hold it; otherwise the reasons, by kind (API error, route limit,
 * quota, foreign route, malformed Node). And how refusals are taken out of a plan before apply.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ApplyReport } from "../apply/engine.js";
import { validateInventory } from "../inventory.js";
import { diffTable, summarize, type Plan, type TableDiff } from "../plan/plan.js";
import { desiredRoutes } from "../plan/plan.js";
import type { ChangeResult, ObservedRoute, RefusedChange, TableRef } from "../targets/target.js";
import { conditionFor, routeStates } from "./conditions.js";
import { refusedChanges, withoutRefused } from "./reconciler.js";

const inventory = validateInventory({
  source: "test",
  clusterCIDR: "10.200.0.0/16",
  nodes: [
    ...[0, 1, 2].map((i) => ({ name: `worker-${i}`, internalIPs: [`10.240.0.2${i}`], podCIDRs: [`10.200.${i}.0/24`] })),
    { name: "no-pods", internalIPs: ["10.240.0.30"], podCIDRs: [] },
  ],
});
const vpc: TableRef = { id: "vpc", scope: "shared" };
const ours = (destination: string, nextHop: string): ObservedRoute => ({ destination, nextHop, owned: true, name: destination });

function planOf(tables: TableDiff[]): Plan {
  return { cluster: "kubernetes", target: "test", tables, summary: summarize(tables), review: { warnings: [], refusals: [], actions: [] } };
}

function reportOf(tables: { table: TableRef; results: ChangeResult[]; error?: string }[]): ApplyReport {
  return { tables, actions: [], counts: { created: 0, replaced: 0, deleted: 0, failed: 0, failedTables: 0, conflicts: 0 }, ok: false };
}

describe("routeStates: a node is routed only when its routes are in every table", () => {
  it("unchanged and written routes: every node with pods is routed; a node without pods gets no condition", () => {
    const diff = diffTable(vpc, desiredRoutes(inventory, vpc), [ours("10.200.0.0/24", "10.240.0.20")]);
    const results = diff.changes.map((change): ChangeResult => ({ change, ok: true }));
    const states = routeStates(planOf([diff]), reportOf([{ table: vpc, results }]), [], inventory, new Map());
    assert.deepEqual([...states.entries()], [["worker-0", []], ["worker-1", []], ["worker-2", []]]);
    assert.deepEqual(conditionFor([]), { status: "False", reason: "RouteCreated", message: "podroutes controller: routes to this node's pod CIDRs exist in every table" });
  });

  it("each kind of problem names itself: a failed write, a refusal, a foreign route; other nodes stay routed", () => {
    const foreign: ObservedRoute = { destination: "10.200.2.0/24", nextHop: "10.240.0.99", nextHopLabel: "10.240.0.99", owned: false, name: "hand-made" };
    const diff = diffTable(vpc, desiredRoutes(inventory, vpc), [foreign]);
    const create = (destination: string) => diff.changes.find((c) => c.action === "create" && c.route.destination === destination)!;
    const refused: RefusedChange[] = [{ table: "vpc", change: create("10.200.1.0/24"), limit: "quota", message: "no room for 10.200.1.0/24" }];
    const results: ChangeResult[] = [{ change: create("10.200.0.0/24"), ok: false, error: "Backend Error (503 backendError)" }];
    const states = routeStates(planOf([diff]), reportOf([{ table: vpc, results }]), refused, inventory, new Map());
    assert.deepEqual(states.get("worker-0"), [{ kind: "api-error", message: "vpc: create 10.200.0.0/24 via 10.240.0.20 failed: Backend Error (503 backendError)" }]);
    assert.deepEqual(states.get("worker-1"), [{ kind: "quota", message: "no room for 10.200.1.0/24" }]);
    assert.deepEqual(states.get("worker-2"), [{ kind: "foreign-route", message: "a route podroutes does not own holds 10.200.2.0/24 in vpc (via 10.240.0.99, hand-made); it is never overwritten" }]);
    assert.deepEqual(conditionFor(states.get("worker-2")!), { status: "True", reason: "NoRouteCreated", message: `podroutes controller: ${states.get("worker-2")![0]!.message}` });
  });

  it("a table that could not be read says nothing of the nodes it should route (their routes may be there); a table whose write failed leaves them unrouted", () => {
    const tables = ["worker-0", "worker-1", "worker-2"].map((node): TableRef => ({ id: node, scope: "host", node }));
    const diffs = tables.map((table) => diffTable(table, desiredRoutes(inventory, table), []));
    diffs[1] = { ...diffs[1]!, changes: [], error: "ssh: unreachable: worker-1" };
    const report = reportOf([
      { table: tables[0]!, results: diffs[0]!.changes.map((change) => ({ change, ok: true })) },
      { table: tables[2]!, results: [], error: "ip -batch failed" },
    ]);
    const states = routeStates(planOf(diffs), report, [], inventory, new Map());
    assert.deepEqual([...states.keys()], ["worker-1"], "worker-0's and worker-2's routes on worker-1 are unknown: their conditions are left alone");
    assert.deepEqual(states.get("worker-1")!.map((p) => p.message), ["worker-2: create 10.200.1.0/24 via 10.240.0.21 failed: ip -batch failed"], "worker-1's own unreadable table is not about its routes");
  });

  it("a malformed Node is unrouted with its problems", () => {
    const states = routeStates(planOf([]), undefined, [], inventory, new Map([["worker-9", [{ node: "worker-9", message: "pod CIDR 10.200.1.0/24 overlaps worker-1's" }]]]));
    assert.deepEqual(states.get("worker-9"), [{ kind: "invalid-node", message: "the Node object cannot be routed: node worker-9: pod CIDR 10.200.1.0/24 overlaps worker-1's" }]);
  });
});

describe("refusals", () => {
  const diff = diffTable(vpc, desiredRoutes(inventory, vpc), []);
  const planned = planOf([diff]);

  it("itemised refusals come out of the plan; the same change objects stay, so results map back", () => {
    const refused: RefusedChange[] = [{ table: "vpc", change: diff.changes[2]!, limit: "route-limit", message: "full" }];
    const trimmed = withoutRefused({ ...planned, review: { ...planned.review, refusals: ["full"], refused } }, refused);
    assert.deepEqual(trimmed.tables[0]!.changes, diff.changes.slice(0, 2));
    assert.equal(trimmed.tables[0]!.changes[0], diff.changes[0]);
    assert.equal(withoutRefused(planned, []), planned);
  });

  it("a refusal a target did not itemise refuses every change", () => {
    const all = refusedChanges({ ...planned, review: { ...planned.review, refusals: ["over some limit"] } });
    assert.deepEqual(all.map((r) => [r.change, r.message]), diff.changes.map((change) => [change, "over some limit"]));
    assert.deepEqual(refusedChanges(planned), []);
  });
});
