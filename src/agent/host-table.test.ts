/**
 * The agent's cheap paths on a real kernel table, in a throwaway namespace: the per-change write (only
 * the destinations given, read again under the lock; a foreign route is a conflict, never overwritten;
 * the namespace's lock is taken) and the resync's compare (holdsExactly).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { needsRoot } from "../../testkit/root.js";
import { flatNamespace } from "../../testkit/netns.js";
import type { Route } from "../model.js";
import { run } from "../process.js";
import { lockLocal, removeLockFiles } from "../targets/linux/runner.js";
import { ExpectedRoutes, HostTable, holdsExactly } from "./host-table.js";
import { IpReader } from "./ip-reader.js";

const NS = `prhosttable${process.pid % 100000}`;
const table = { id: "node-0", scope: "host" as const, node: "node-0" };
const route = (destination: string, nextHop: string, node: string): Route => ({ name: destination, destination, nextHop, node, family: 4 });
const context = { cluster: "kubernetes", nodeOfNextHop: () => "?" };

async function ipIn(netns: string, args: string[]): Promise<string> {
  const result = await run("ip", ["-n", netns, ...args]);
  if (result.code !== 0) throw new Error(`ip ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}
const ip = (...args: string[]) => ipIn(NS, args);

/** A flat namespace made before the tests of the describe block this is called in and removed after them (even when they fail). */
function ownNamespace(netns: string): void {
  before(async () => {
    await flatNamespace(netns, "10.240.0.1/16");
  });
  after(async () => {
    await removeLockFiles(netns);
    await run("ip", ["netns", "del", netns]);
  });
}
/** Main-table routes with a gateway: `DEST via GW proto P`. */
async function routes(): Promise<string[]> {
  const list = JSON.parse(await ip("-N", "-json", "route", "show", "table", "main")) as { dst: string; gateway?: string; protocol?: string }[];
  return list.filter((r) => r.gateway).map((r) => `${r.dst} via ${r.gateway} proto ${r.protocol ?? "boot"}`).sort();
}

describe("holdsExactly (the resync's compare)", () => {
  const expected = new Map([["10.200.1.0/24", "10.240.0.3"], ["10.200.2.0/24", "10.240.0.4"]]);
  const owned = (dst: string, gateway: string, extra = {}) => ({ dst, gateway, protocol: "150", ...extra });
  it("is true only when the owned routes are exactly the expected ones, where podroutes writes them", () => {
    const both = [owned("10.200.1.0/24", "10.240.0.3", { nhid: 7 }), owned("10.200.2.0/24", "10.240.0.4"), { dst: "10.240.0.0/16", dev: "eth0", protocol: "2", scope: "253" }];
    assert.equal(holdsExactly(both, expected, 150), true);
    assert.equal(holdsExactly(both.slice(1), expected, 150), false, "one missing");
    assert.equal(holdsExactly([...both, owned("10.200.9.0/24", "10.240.0.9")], expected, 150), false, "one owned too many");
    assert.equal(holdsExactly([owned("10.200.1.0/24", "10.240.0.5"), both[1]!], expected, 150), false, "another next hop");
    assert.equal(holdsExactly([...both, { dst: "10.200.2.0/24", gateway: "10.240.0.9", protocol: "4", metric: 10 }], expected, 150), false, "a foreign route on an expected destination");
    assert.equal(holdsExactly([...both, { dst: "10.200.2.0/24", gateway: "10.240.0.9", protocol: "4", table: "100" }], expected, 150), true, "a foreign route in another table is none of podroutes' business");
    assert.equal(holdsExactly([owned("10.200.1.0/24", "10.240.0.3", { table: "100" }), both[1]!], expected, 150), false, "an owned route in another table");
    assert.equal(holdsExactly([owned("10.200.1.0/24", "10.240.0.3", { metric: 20 }), both[1]!], expected, 150), false, "at another metric");
    assert.equal(holdsExactly([owned("10.200.1.0/24", "10.240.0.3", { type: "6" }), both[1]!], expected, 150), false, "a blackhole");
  });
});

describe("ExpectedRoutes", () => {
  it("gets a revision no other map has had on every change, and only on a change", () => {
    const one = new ExpectedRoutes();
    const other = new ExpectedRoutes();
    const seen = new Set([one.revision, other.revision]);
    assert.equal(seen.size, 2);
    const step = (change: () => unknown) => {
      change();
      assert.ok(!seen.has(one.revision), "a new revision");
      seen.add(one.revision);
    };
    step(() => one.set("10.200.1.0/24", "10.240.0.3"));
    step(() => one.set("10.200.1.0/24", "10.240.0.4"));
    step(() => one.delete("10.200.1.0/24"));
    step(() => one.clear());
    const before = one.revision;
    one.get("10.200.1.0/24");
    one.has("10.200.1.0/24");
    assert.equal(one.revision, before, "reads change nothing");
  });
});

describe("HostTable.holds: the resync's read and compare, on a real table", needsRoot(), () => {
  const HOLDS_NS = `prholds${process.pid % 100000}`;
  const hip = (...args: string[]) => ipIn(HOLDS_NS, args);
  ownNamespace(HOLDS_NS);
  /** A HostTable on the namespace, closed after the test, and the two routes every test here expects. */
  const setUp = (t: { after(fn: () => Promise<void>): void }) => {
    const host = new HostTable({ proto: 150, netns: HOLDS_NS, warn: () => {} });
    t.after(() => host.close());
    const expected = new ExpectedRoutes();
    expected.set("10.200.1.0/24", "10.240.0.3");
    expected.set("10.200.2.0/24", "10.240.0.4");
    return { host, expected };
  };

  it("reads every difference from a table it found right before (the text's digest is no shortcut past one)", async (t) => {
    const { host, expected } = setUp(t);
    await hip("route", "add", "10.200.1.0/24", "via", "10.240.0.3", "proto", "150");
    await hip("route", "add", "10.200.2.0/24", "via", "10.240.0.4", "proto", "150");
    assert.equal(await host.holds(expected), true);
    assert.equal(await host.holds(expected), true, "the same text again");
    // Each change is made, read as a difference, undone, and the table reads right again.
    const differences: [string, string[], string[]][] = [
      ["a foreign route on an expected destination", ["route", "add", "10.200.2.0/24", "via", "10.240.0.9", "proto", "static", "metric", "10"], ["route", "del", "10.200.2.0/24", "proto", "static", "metric", "10"]],
      ["an owned route in another table", ["route", "add", "10.200.1.0/24", "via", "10.240.0.3", "proto", "150", "table", "100"], ["route", "del", "10.200.1.0/24", "table", "100"]],
      ["an owned route at another metric", ["route", "add", "10.200.1.0/24", "via", "10.240.0.3", "proto", "150", "metric", "20"], ["route", "del", "10.200.1.0/24", "proto", "150", "metric", "20"]],
      ["an owned blackhole", ["route", "add", "blackhole", "10.200.3.0/24", "proto", "150"], ["route", "del", "blackhole", "10.200.3.0/24"]],
      ["an owned route missing", ["route", "del", "10.200.2.0/24", "proto", "150"], ["route", "add", "10.200.2.0/24", "via", "10.240.0.4", "proto", "150"]],
      ["an owned route too many", ["route", "add", "10.200.9.0/24", "via", "10.240.0.9", "proto", "150"], ["route", "del", "10.200.9.0/24", "proto", "150"]],
      ["an owned route through another gateway", ["route", "replace", "10.200.2.0/24", "via", "10.240.0.5", "proto", "150"], ["route", "replace", "10.200.2.0/24", "via", "10.240.0.4", "proto", "150"]],
    ];
    for (const [what, change, undo] of differences) {
      await hip(...change);
      assert.equal(await host.holds(expected), false, what);
      await hip(...undo);
      assert.equal(await host.holds(expected), true, `${what}, undone`);
    }
  });

  it("compares again when what is expected changed, though the table did not", async (t) => {
    const { host, expected } = setUp(t);
    assert.equal(await host.holds(expected), true);
    expected.set("10.200.2.0/24", "10.240.0.5");
    assert.equal(await host.holds(expected), false, "another next hop expected");
    expected.set("10.200.2.0/24", "10.240.0.4");
    assert.equal(await host.holds(expected), true);
    expected.set("10.200.4.0/24", "10.240.0.6");
    assert.equal(await host.holds(expected), false, "a route more expected");
    expected.delete("10.200.4.0/24");
    expected.delete("10.200.2.0/24");
    assert.equal(await host.holds(expected), false, "a route fewer expected: the table has one owned too many");
    const again = new ExpectedRoutes();
    again.set("10.200.1.0/24", "10.240.0.3");
    again.set("10.200.2.0/24", "10.240.0.4");
    assert.equal(await host.holds(again), true, "another map, compared afresh");
  });
});

describe("HostTable.write: one Node's destinations under the lock", needsRoot(), () => {
  ownNamespace(NS);

  it("writes only the destinations given, replaces a moved route, never overwrites a foreign one", async (t) => {
    const host = new HostTable({ proto: 150, netns: NS, warn: () => {} });
    t.after(() => host.close());
    // A stale owned route elsewhere: not among the destinations, so left for the full path.
    await ip("route", "add", "10.200.7.0/24", "via", "10.240.0.7", "proto", "150");
    // A foreign route on a destination the change wants.
    await ip("route", "add", "10.200.3.0/24", "via", "10.240.0.99", "proto", "static");
    const first = await host.write(table, [route("10.200.1.0/24", "10.240.0.3", "node-1"), route("10.200.3.0/24", "10.240.0.5", "node-3")], new Set(["10.200.1.0/24", "10.200.3.0/24"]), context);
    assert.ok(first);
    assert.deepEqual(first.results.map((r) => [r.change.action, r.ok]), [["create", true]]);
    assert.deepEqual(first.diff.conflicts.map((c) => c.route.destination), ["10.200.3.0/24"]);
    assert.deepEqual(await routes(), ["10.200.1.0/24 via 10.240.0.3 proto 150", "10.200.3.0/24 via 10.240.0.99 proto 4", "10.200.7.0/24 via 10.240.0.7 proto 150"]);

    // node-1's pod CIDR moves: the old destination and the new one are given; one add, one delete.
    const moved = await host.write(table, [route("10.200.11.0/24", "10.240.0.3", "node-1")], new Set(["10.200.1.0/24", "10.200.11.0/24"]), context);
    assert.deepEqual(moved?.results.map((r) => [r.change.action, r.ok]).sort(), [["create", true], ["delete", true]]);
    assert.deepEqual(await routes(), ["10.200.11.0/24 via 10.240.0.3 proto 150", "10.200.3.0/24 via 10.240.0.99 proto 4", "10.200.7.0/24 via 10.240.0.7 proto 150"]);

    // Written as wanted already: nothing to do.
    const again = await host.write(table, [route("10.200.11.0/24", "10.240.0.3", "node-1")], new Set(["10.200.11.0/24"]), context);
    assert.deepEqual(again?.diff.changes, []);
  });

  it("waits for the namespace's lock (the one the CLI and SSH runs take) before it reads and writes", async (t) => {
    const host = new HostTable({ proto: 150, netns: NS, warn: () => {} });
    t.after(() => host.close());
    const held = await lockLocal(NS, { proto: 150, waiting: () => {} });
    let done = false;
    const writing = host.write(table, [route("10.200.12.0/24", "10.240.0.12", "node-12")], new Set(["10.200.12.0/24"]), context).then((r) => ((done = true), r));
    // While another run holds the lock, and changes the table meanwhile, nothing is written.
    await ip("route", "add", "10.200.12.0/24", "via", "10.240.0.98", "proto", "static");
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(done, false, "no write while another run holds the lock");
    await held.release();
    const result = await writing;
    // It read under the lock, after the other run's change: a conflict, not an overwrite.
    assert.deepEqual(result?.diff.conflicts.map((c) => c.route.destination), ["10.200.12.0/24"]);
    assert.ok((await routes()).includes("10.200.12.0/24 via 10.240.0.98 proto 4"));
  });

  it("refuses (nothing written) where another cluster owns the protocol number", async (t) => {
    const host = new HostTable({ proto: 150, netns: NS, warn: () => {} });
    t.after(() => host.close());
    const other = await lockLocal(NS, { proto: 150, cluster: "other", waiting: () => {} });
    await other.write("# podroutes: end of batch\n");
    await other.release();
    const before = await routes();
    assert.equal(await host.write(table, [route("10.200.13.0/24", "10.240.0.13", "node-13")], new Set(["10.200.13.0/24"]), context), undefined);
    assert.deepEqual(await routes(), before);
  });

  it("the long-lived ip reader answers each command with its line, and a reader that died is started again", async (t) => {
    const reader = new IpReader(NS);
    t.after(() => reader.close());
    await ip("route", "replace", "10.200.20.0/24", "via", "10.240.0.20", "proto", "150");
    const [one, none] = await reader.read(["route show table all exact 10.200.20.0/24", "route show table all exact 10.200.21.0/24"]);
    assert.deepEqual(JSON.parse(one!.toString()).map((r: { gateway: string }) => r.gateway), ["10.240.0.20"]);
    assert.deepEqual(JSON.parse(none!.toString()), []);
    const first = reader.pid!;
    process.kill(first, "SIGKILL");
    while (reader.pid === first) await new Promise((resolve) => setTimeout(resolve, 5));
    const [again] = await reader.read(["route show table all exact 10.200.20.0/24"]);
    assert.equal(JSON.parse(again!.toString()).length, 1);
    assert.notEqual(reader.pid, first);
    assert.equal(reader.starts, 2);
    await assert.rejects(reader.read(["nexthop flush"]), /route show/);
  });

  it("the reader's output comes through a pipe, and a line of thousands of routes (many chunks) comes whole", async (t) => {
    const reader = new IpReader(NS);
    t.after(() => reader.close());
    // A table of its own, so the other tests' reads of the main table do not see them.
    let batch = "";
    for (let i = 0; i < 3000; i++) batch += `route add 10.${150 + (i >> 8)}.${i & 255}.0/24 via 10.240.0.${2 + (i % 200)} proto 150 table 77\n`;
    const added = await run("ip", ["-n", NS, "-batch", "-"], batch);
    assert.equal(added.code, 0, added.stderr);
    const [big, small] = await reader.read(["route show table 77", "route show table all exact 10.150.0.0/24"]);
    assert.equal(reader.throughPipe, true, "a FIFO, not the socket pair");
    assert.deepEqual(JSON.parse(big!.toString()), JSON.parse(await ip("-N", "-json", "route", "show", "table", "77")));
    assert.equal(JSON.parse(big!.toString()).length, 3000);
    assert.deepEqual(JSON.parse(small!.toString()).map((r: { gateway: string }) => r.gateway), ["10.240.0.2"]);
    await ip("route", "flush", "table", "77");
  });
});
