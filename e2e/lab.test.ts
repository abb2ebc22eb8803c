/**
 * The foundation end to end, as a user runs it: the podroutes command against the local lab's real
 * kernel tables, real CNI pods and real packets. Needs root (runs in CI); every lab it builds is torn
 * down in `after`, even when a test fails.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { validateInventory } from "../src/inventory.js";
import { existingNamespaces, labDown, labInventory, labNamespaces, labUp, type LabState } from "../src/lab/lab.js";
import { run } from "../src/process.js";
import { labTarget } from "../src/targets/lab/factory.js";
import { jsonOf, runCli } from "../testkit/cli.js";
import { runConformance } from "../testkit/conformance.js";
import { watchKernelWrites } from "../testkit/kernel-writes.js";
import { needsRoot } from "../testkit/root.js";

const gate = needsRoot();
const LAB = `e2e${process.pid % 100000}`;
const lab = ["--nodes", "lab", "--target", "lab", "--lab", LAB];

async function ipJson(netns: string, args: string[]): Promise<any[]> {
  const result = await run("ip", ["-n", netns, "-N", "-json", ...args]);
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout || "[]");
}

/** Routes of a worker as `dst via gateway proto`, sorted: what a person reading `ip route` sees. */
async function routesOf(netns: string): Promise<string[]> {
  return (await ipJson(netns, ["route", "show", "table", "main"]))
    .map((r) => `${r.dst} ${r.gateway ? `via ${r.gateway}` : `dev ${r.dev}`} proto ${r.protocol ?? "3"}`)
    .sort();
}

describe("local lab end to end", { ...gate, timeout: 180_000 }, () => {
  let state: LabState;
  let dir: string;
  const ns = (worker: number) => state.workers[worker]!.netns;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-e2e-"));
    const up = await runCli(["lab", "up", "--lab", LAB, "-o", "json"]);
    assert.equal(up.code, 0, up.stderr);
    state = jsonOf(up);
  });

  after(async () => {
    await labDown(LAB);
    await rm(dir, { recursive: true, force: true });
  });

  it("`lab up` twice is harmless", async () => {
    const again = await runCli(["lab", "up", "--lab", LAB]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /already up/);
    const status = jsonOf(await runCli(["lab", "status", "--lab", LAB, "-o", "json"]));
    assert.equal(status.up, true);
    assert.deepEqual(status.workers.map((w: any) => w.podIP), state.workers.map((w) => w.podIP));
  });

  it("`lab exec` runs a command on a node: its namespace, its hostname", async () => {
    const result = await runCli(["lab", "exec", "--lab", LAB, "worker-2", "--", "sh", "-c", "hostname; ip -4 -o addr show eth0"]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^worker-2\n.*inet 10\.240\.0\.22\/24/);
  });

  it("before apply, a pod cannot reach a pod on another worker", async () => {
    const result = await runCli(["verify", ...lab, "-o", "json"]);
    assert.equal(result.code, 1);
    const packetChecks = jsonOf(result).checks.filter((c: any) => /→ pod/.test(c.message));
    assert.equal(packetChecks.length, 6);
    for (const check of packetChecks) assert.match(check.message, /unreachable/);
  });

  it("plan shows the seed's routes; apply writes them; every pod reaches every other over the right next hop", async () => {
    const planned = await runCli(["plan", ...lab, "--detailed-exitcode"]);
    assert.equal(planned.code, 2, planned.stderr);
    assert.match(planned.stdout, /\+ 10\.200\.1\.0\/24 via 10\.240\.0\.21 \(worker-1\)/);
    assert.match(planned.stdout, /Plan: 6 to add, 0 to replace, 0 to destroy/);
    const applied = await runCli(["apply", "--yes", ...lab]);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    assert.deepEqual(await routesOf(ns(0)), [
      "10.200.0.0/24 dev cni0 proto 2",
      "10.200.1.0/24 via 10.240.0.21 proto 150",
      "10.200.2.0/24 via 10.240.0.22 proto 150",
      "10.240.0.0/24 dev eth0 proto 2",
    ]);
    const verified = await runCli(["verify", ...lab, "-o", "json"]);
    assert.equal(verified.code, 0, verified.stdout);
    const checks = jsonOf(verified).checks;
    assert.equal(checks.filter((c: any) => c.ok && /ok via 10\.240\.0\.2\d/.test(c.message)).length, 6);
  });

  it("a second apply changes nothing: no kernel write at all", async () => {
    // `ip monitor` in every worker sees any route or nexthop change the apply would make.
    const { result, writes } = await watchKernelWrites(
      state.workers.map((w) => w.netns),
      () => runCli(["apply", "--yes", ...lab]),
    );
    assert.equal(result.code, 0);
    assert.match(result.stdout, /No changes\. 6 routes already match/);
    assert.deepEqual(writes, [], "the kernel saw a write");
  });

  it("a wrong next hop still delivers packets, but verify catches it and apply replaces it", async () => {
    // Owned route (our proto) pointing at the wrong worker: worker-2 forwards it on to worker-1.
    await run("ip", ["-n", ns(0), "route", "replace", "10.200.1.0/24", "via", "10.240.0.22", "proto", "150"]);
    const verified = await runCli(["verify", ...lab]);
    assert.equal(verified.code, 1);
    assert.match(verified.stdout, /10\.200\.1\.0\/24 goes via 10\.240\.0\.22, should be 10\.240\.0\.21/);
    assert.match(verified.stdout, /pod worker-0 .* reached, but over 10\.200\.0\.1 → 10\.240\.0\.22 → 10\.240\.0\.21 → 10\.200\.1\.2/);
    const applied = await runCli(["apply", "--yes", ...lab]);
    assert.match(applied.stdout, /-\/\+ 10\.200\.1\.0\/24 via 10\.240\.0\.21 \(worker-1\), was via 10\.240\.0\.22/);
    assert.match(applied.stdout, /1 replaced/);
    assert.equal((await runCli(["verify", ...lab])).code, 0);
  });

  it("a foreign route on our destination survives apply and delete, and is reported", async () => {
    const file = join(dir, "two-nodes.txt");
    // A third node's range that only this inventory knows; someone routed it by hand on worker-0.
    await writeFile(file, "10.240.0.20 10.200.0.0/24 worker-0\n10.240.0.21 10.200.1.0/24 worker-1\n10.240.0.22 10.200.7.0/24 worker-2\n");
    await run("ip", ["-n", ns(0), "route", "add", "10.200.7.0/24", "via", "10.240.0.21"]);
    // The lab's cluster by name: the hosts' protocol-150 routes are recorded as that cluster's.
    const args = ["--nodes", file, "--cluster", state.cluster, "--target", "lab", "--lab", LAB];
    const planned = await runCli(["plan", ...args]);
    assert.match(planned.stdout, /! 10\.200\.7\.0\/24: a route podroutes does not own is there \(via 10\.240\.0\.21, proto boot\)/);
    assert.match(planned.stdout, /1 conflict/);
    // The target does not end as planned: exit 1, unless the user accepts the conflict (issue 8 item 11).
    const applied = await runCli(["apply", "--yes", ...args]);
    assert.equal(applied.code, 1, applied.stdout);
    assert.match(applied.stdout, /Apply INCOMPLETE: .*1 destination held by routes podroutes does not own \(left alone\)/);
    assert.match(applied.stdout, /--allow-conflicts/);
    const accepted = await runCli(["apply", "--yes", "--allow-conflicts", ...args]);
    assert.equal(accepted.code, 0, accepted.stdout);
    assert.match(accepted.stdout, /No changes\./);
    assert.ok((await routesOf(ns(0))).includes("10.200.7.0/24 via 10.240.0.21 proto 3"));
    const deleted = await runCli(["delete", "--yes", ...args]);
    assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
    assert.deepEqual(await routesOf(ns(0)), ["10.200.0.0/24 dev cni0 proto 2", "10.200.7.0/24 via 10.240.0.21 proto 3", "10.240.0.0/24 dev eth0 proto 2"]);
    assert.deepEqual(await ipJson(ns(1), ["nexthop", "show"]), [], "delete also removed podroutes' nexthop objects");
    await run("ip", ["-n", ns(0), "route", "del", "10.200.7.0/24"]);
  });

  it("a changed pod CIDR is replaced, and a removed node's routes disappear from the others", async () => {
    assert.equal((await runCli(["apply", "--yes", ...lab])).code, 0);
    const file = join(dir, "changed.yaml");
    await writeFile(file, "nodes:\n  - {name: worker-0, internalIP: 10.240.0.20, podCIDRs: [10.200.0.0/24]}\n  - {name: worker-1, internalIP: 10.240.0.21, podCIDRs: [10.200.11.0/24]}\n");
    // The lab's cluster by name: the hosts' protocol-150 routes are recorded as that cluster's.
    const args = ["--nodes", file, "--cluster", state.cluster, "--target", "lab", "--lab", LAB];
    const result = await runCli(["apply", "--yes", ...args, "-o", "json"]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await routesOf(ns(0)), ["10.200.0.0/24 dev cni0 proto 2", "10.200.11.0/24 via 10.240.0.21 proto 150", "10.240.0.0/24 dev eth0 proto 2"]);
    // worker-2 is not in the inventory: its table is not written (and a warning says so)
    assert.deepEqual(await routesOf(ns(2)), ["10.200.0.0/24 via 10.240.0.20 proto 150", "10.200.1.0/24 via 10.240.0.21 proto 150", "10.200.2.0/24 dev cni0 proto 2", "10.240.0.0/24 dev eth0 proto 2"]);
    assert.equal((await runCli(["apply", "--yes", ...lab])).code, 0);
  });

  it("a bad inventory changes nothing and names file:line, node and value", async () => {
    const beforeRoutes = await Promise.all(state.workers.map((w) => routesOf(w.netns)));
    const file = join(dir, "bad.txt");
    await writeFile(file, "10.240.0.20 10.200.0.0/24 worker-0\n10.240.0.21 10.200.1.1/24 worker-1\n10.240.0.21 10.200.2.0/24 worker-2\n");
    const result = await runCli(["apply", "--yes", "--nodes", file, "--target", "lab", "--lab", LAB]);
    assert.equal(result.code, 3);
    assert.match(result.stderr, new RegExp(`${file.replace(/[.]/g, "\\.")}:2: node worker-1: "10\\.200\\.1\\.1/24": pod CIDR: host bits set`));
    assert.match(result.stderr, /:3: node worker-2: "10\.240\.0\.21": duplicate internal IP/);
    assert.match(result.stderr, /Nothing was changed/);
    assert.deepEqual(await Promise.all(state.workers.map((w) => routesOf(w.netns))), beforeRoutes);
  });

  it("`--target local` inside a worker finds which node it is from its addresses", async () => {
    const result = await runCli(["plan", "--nodes", "lab", "--lab", LAB, "--target", "local", "-o", "json"], { netns: ns(1) });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(jsonOf(result).tables.map((t: any) => t.table.node), ["worker-1"]);
  });
});

describe("lab down", gate, () => {
  it("removes every namespace the lab made and nothing else", async () => {
    const name = `${LAB}d`;
    const before = await existingNamespaces();
    const { state } = await labUp({ name, workers: 2 });
    const during = await existingNamespaces();
    assert.deepEqual([...during].filter((n) => !before.has(n)).sort(), labNamespaces(state).sort());
    const down = await runCli(["lab", "down", "--lab", name]);
    assert.equal(down.code, 0, down.stderr);
    assert.deepEqual([...(await existingNamespaces())].sort(), [...before].sort());
  });
});

let conformanceCount = 0;
runConformance({
  name: "lab (Linux host routes in network namespaces)",
  options: { ...gate, timeout: 120_000 },
  async setup() {
    const name = `${LAB}c${conformanceCount++}`;
    const { state } = await labUp({ name });
    const nsOf = (table: string) => state.workers.find((w) => w.name === table)!.netns;
    const target = await labTarget.create({ cluster: state.cluster, parallel: 4, env: process.env, warn: () => {}, interactive: false, lab: name, proto: "150" });
    return {
      target,
      inventory: validateInventory(labInventory(state)),
      spareNextHop: "10.240.0.99",
      addForeignRoute: async (table, destination, nextHop) => {
        const result = await run("ip", ["-n", nsOf(table), "route", "add", destination, "via", nextHop]);
        assert.equal(result.code, 0, result.stderr);
      },
      hasRoute: async (table, destination) => (await ipJson(nsOf(table), ["route", "show", destination])).length > 0,
      teardown: async () => void (await labDown(name)),
    };
  },
});
