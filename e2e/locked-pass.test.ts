/**
 * A run nobody reviews (`apply --yes`, the agent, the controller) takes each table's lock first, reads the
 * table once under it, plans from that read and writes (the engine's `converge`). Tried on a node (a
 * namespace whose eth0 is 10.240.0.20/16): the CLI reads the table exactly once, counted at the `ip`
 * processes it starts; and a foreign writer that ignores the lock, racing between that read and the
 * write, never has its route overwritten. Needs root; every namespace is removed in `finally`.
 */
import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { converge } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import { run } from "../src/process.js";
import { localRunner, type IpRunner } from "../src/targets/linux/runner.js";
import { runCli } from "../testkit/cli.js";
import { selfTarget } from "../testkit/host-target.js";
import { holdLock, withNodeNamespace, type NodeNamespace } from "../testkit/netns.js";
import { needsRoot } from "../testkit/root.js";

const gate = needsRoot();
const withNode = (body: (ns: NodeNamespace) => Promise<void>) => withNodeNamespace("prlock", "10.240.0.20/16", body);

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "podroutes-locked-pass-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** 200 nodes around this host (10.240.0.20): pod CIDRs 10.200.N.0/24 via 10.240.1.N. */
function nodesText(count: number): string {
  const others = Array.from({ length: count }, (_, i) => `10.240.${1 + (i >> 8)}.${i & 255} 10.${200 + (i >> 8)}.${i & 255}.0/24 n${i}`);
  return ["10.240.0.20 10.199.0.0/24 self", ...others].join("\n") + "\n";
}

/**
 * A directory to put first on PATH whose `ip` records every call (its arguments and what it got on
 * stdin, each line prefixed) in `log`, then runs the real `ip` with the same input.
 */
async function recordingIp(log: string): Promise<string> {
  const real = (await run("sh", ["-c", "command -v ip"])).stdout.trim();
  const bin = join(dir, "bin");
  await run("mkdir", ["-p", bin]);
  const script = `#!/bin/sh
input=$(mktemp)
cat > "$input"
{ echo "ip $*"; sed 's/^/  stdin: /' "$input"; } >> ${log}
"${real}" "$@" < "$input"
rc=$?
rm -f "$input"
exit $rc
`;
  await writeFile(join(bin, "ip"), script);
  await chmod(join(bin, "ip"), 0o755);
  return bin;
}

describe("one locked pass per table for runs nobody reviews", { ...gate, timeout: 120_000 }, () => {
  it("apply --yes reads the table once (under the lock) and writes it once; a no-op reads it once and writes nothing", async () => {
    const file = join(dir, "nodes.txt");
    await writeFile(file, nodesText(200));
    const log = join(dir, "ip.log");
    const bin = await recordingIp(log);
    await withNode(async (ns) => {
      const env = { PATH: `${bin}:${process.env.PATH}` };
      for (const [round, changes] of [["first", /Apply complete: 200 added/], ["second", /No changes\. 200 routes already match/]] as const) {
        await writeFile(log, "");
        const result = await runCli(["apply", "--yes", "--nodes", file, "--target", "local"], { netns: ns.name, env });
        assert.equal(result.code, 0, result.stdout + result.stderr);
        assert.match(result.stdout, changes);
        const calls = await readFile(log, "utf8");
        const routeReads = calls.split("\n").filter((line) => line === "  stdin: route show table all");
        assert.equal(routeReads.length, 1, `${round} run: the table's routes are read once, not ${routeReads.length} times:\n${calls.split("\n").filter((l) => l.startsWith("ip ")).join("\n")}`);
        const writes = calls.split("\n").filter((line) => line.startsWith("ip ") && !line.includes("-json"));
        assert.equal(writes.length, round === "first" ? 1 : 0, `${round} run writes: ${writes.join("; ")}`);
      }
      assert.equal((await ns.ipJson(["route", "show", "proto", "150"])).length, 200);
    });
  });

  it("a foreign route added between the locked read and the write (a writer that ignores the lock) is never overwritten", async () => {
    await withNode(async (ns) => {
      const inventory = validateInventory({
        source: "race",
        nodes: [
          { name: "self", internalIPs: ["10.240.0.20"], podCIDRs: ["10.199.0.0/24"] },
          { name: "n1", internalIPs: ["10.240.1.1"], podCIDRs: ["10.200.1.0/24"] },
          { name: "n2", internalIPs: ["10.240.1.2"], podCIDRs: ["10.200.2.0/24"] },
          { name: "n3", internalIPs: ["10.240.1.3"], podCIDRs: ["10.200.3.0/24"] },
        ],
      });
      // An owned route to replace (next hop moved), and two to create; the race takes one of the creates.
      await ns.ip(["route", "add", "10.200.1.0/24", "via", "10.240.1.99", "proto", "150"]);
      const local = localRunner(ns.name);
      let raced = false;
      const racing: IpRunner = {
        ...local,
        lock: async (request) => {
          const host = await local.lock(request);
          return {
            ...host,
            state: host.state,
            owner: host.owner,
            write: async (script) => {
              // Someone routes 10.200.2.0/24 by hand after podroutes read the table, before its batch runs.
              if (!raced) await ns.ip(["route", "add", "10.200.2.0/24", "via", "10.240.7.7", "proto", "static"]);
              raced = true;
              return host.write(script);
            },
          };
        },
      };
      const target = selfTarget(racing);
      try {
        const { report } = await converge(target, inventory, { parallel: 1 });
        assert.ok(report);
        const byDestination = new Map(report.tables[0]!.results.map((r) => [r.change.action === "delete" ? r.change.current.destination : r.change.route.destination, r]));
        assert.equal(byDestination.get("10.200.2.0/24")?.ok, false, "the create that met the foreign route failed");
        assert.equal(byDestination.get("10.200.1.0/24")?.ok, true);
        assert.equal(byDestination.get("10.200.3.0/24")?.ok, true);
        assert.equal(report.ok, false, "the run says the table does not end as planned");
        const foreign = await ns.ipJson(["route", "show", "10.200.2.0/24"]);
        assert.deepEqual(foreign.map((r) => `${r.gateway} proto ${r.protocol}`), ["10.240.7.7 proto 4"], "the foreign route is untouched");
        const owned = (await ns.ipJson(["route", "show", "proto", "150"])).map((r) => r.dst).sort();
        assert.deepEqual(owned, ["10.200.1.0/24", "10.200.3.0/24"]);
        // A re-run plans from what is there: the foreign route is a conflict, reported, not written; the
        // nexthop object made for the failed route is removed, as nothing uses it.
        const again = await converge(target, inventory, { parallel: 1 });
        assert.deepEqual(again.plan.tables[0]!.conflicts.map((c) => c.route.destination), ["10.200.2.0/24"]);
        assert.deepEqual(again.plan.tables[0]!.changes, []);
        assert.deepEqual(again.report?.actions.map((a) => [a.action.id, a.ok]), [["unused-nexthops", true]]);
        assert.deepEqual(await ns.ipJson(["route", "show", "10.200.2.0/24"]).then((r) => r.map((x) => x.gateway)), ["10.240.7.7"]);
        const nexthops = (await ns.ipJson(["nexthop", "show"])).map((nh) => nh.gateway).sort();
        assert.deepEqual(nexthops, ["10.240.1.1", "10.240.1.3"]);
      } finally {
        await target.close();
      }
    });
  });

  it("the lock taken ahead of the inventory never delays bad input: another run holds the lock, a bad file still exits 3 at once", async () => {
    const file = join(dir, "bad.txt");
    await writeFile(file, "10.240.0.20 10.199.0.1/24 self\n");
    await withNode(async (ns) => {
      const holder = await holdLock(ns.lockFile, (pid) => `pid ${pid} since the test began\n`);
      try {
        // No --lock-timeout: were the lock awaited before the inventory, this would wait until the holder
        // lets go, which it does only after the assertions.
        const result = await runCli(["apply", "--yes", "--nodes", file, "--target", "local"], { netns: ns.name });
        assert.equal(result.code, 3, result.stdout + result.stderr);
        assert.match(result.stderr, /host bits set/);
        assert.doesNotMatch(result.stderr, /waiting for another podroutes run/);
      } finally {
        holder.release();
      }
    });
  });

  it("an AbortSignal ends a run waiting for the lock: nothing written, the table reported, the lock left to its holder", async () => {
    await withNode(async (ns) => {
      const holder = await holdLock(ns.lockFile, (pid) => `pid ${pid} since the test began\n`);
      const target = selfTarget(localRunner(ns.name));
      const inventory = validateInventory({
        source: "abort",
        nodes: [
          { name: "self", internalIPs: ["10.240.0.20"], podCIDRs: ["10.199.0.0/24"] },
          { name: "n1", internalIPs: ["10.240.1.1"], podCIDRs: ["10.200.1.0/24"] },
        ],
      });
      try {
        const abort = new AbortController();
        let waiting!: () => void;
        const waited = new Promise<void>((resolve) => (waiting = resolve));
        const waitingTarget = selfTarget(localRunner(ns.name), { warn: () => waiting() });
        const running = converge(waitingTarget, inventory, { parallel: 1, signal: abort.signal });
        await waited; // it waits for the holder (no timeout: it would wait as long as it takes)
        abort.abort();
        const { plan: planned, report } = await running;
        assert.match(planned.tables[0]!.error ?? "", /abort/i);
        assert.equal(report?.tables[0]?.changedNothing, true);
        assert.deepEqual(await ns.ipJson(["route", "show", "proto", "150"]), []);
        await waitingTarget.close();
      } finally {
        holder.release();
        await target.close();
      }
      // The lock is free again once its holder let go: a run takes it and writes.
      const after = await converge(target, inventory, { parallel: 1 });
      assert.ok(after.report?.ok, JSON.stringify(after.report));
      await target.close();
    });
  });
});
