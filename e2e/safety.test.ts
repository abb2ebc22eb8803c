/**
 * Issue 8, "safe under motion", tried as a careful SRE would: podroutes on a node (a namespace whose
 * eth0 is 10.240.0.20/16, `--target local` run inside it) while other podroutes runs, other tools and
 * hand-made routes move the same table. Each test is the reproduction of one item of the issue. Needs
 * root; every namespace is removed in `finally`.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { apply, plan } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import { renderReport } from "../src/plan/render.js";
import { localRunner, type IpRunner } from "../src/targets/linux/runner.js";
import { run } from "../src/process.js";
import { runCli, startCli } from "../testkit/cli.js";
import { selfTarget } from "../testkit/host-target.js";
import { holdLock, withNodeNamespace, type NodeNamespace } from "../testkit/netns.js";
import { needsRoot } from "../testkit/root.js";

const gate = needsRoot();
/** A fresh node namespace for one test, removed whatever happens. */
const withNode = (body: (ns: NodeNamespace) => Promise<void>) => withNodeNamespace("prsafe", "10.240.0.20/16", body);

interface NodeSpec {
  name: string;
  ip: string;
  pods: string[];
}

/** This host as a node, and others around it. */
function yamlOf(nodes: NodeSpec[], extra = ""): string {
  return `${extra}nodes:\n  - {name: self, internalIP: 10.240.0.20, podCIDRs: [10.199.0.0/24]}\n${nodes.map((n) => `  - {name: ${n.name}, internalIP: ${n.ip}, podCIDRs: [${n.pods.join(", ")}]}\n`).join("")}`;
}

/** `count` nodes with pod CIDRs 10.200.0.0/24 upwards; `gatewayBlock` picks their addresses (10.240.BLOCK.x). */
function manyNodes(count: number, gatewayBlock: number): NodeSpec[] {
  return Array.from({ length: count }, (_, i) => ({
    name: `n${i}`,
    ip: `10.240.${gatewayBlock + (i >> 8)}.${i & 255}`,
    pods: [`10.${200 + (i >> 8)}.${i & 255}.0/24`],
  }));
}

/** What the table's owned routes send where: destination → gateway (`blackhole` etc. for others). */
async function ownedRoutes(ns: NodeNamespace, proto = 150): Promise<Map<string, string>> {
  const routes = await ns.ipJson(["route", "show", "table", "all", "proto", String(proto)]);
  const table = new Map<string, string>();
  for (const r of routes) {
    const key = `${r.dst}${r.table && r.table !== "main" ? ` table ${r.table}` : ""}${r.metric ? ` metric ${r.metric}` : ""}`;
    assert.ok(!table.has(key), `two owned routes on ${key}`);
    table.set(key, r.gateway ?? (r.type ? `type ${r.type}` : "direct"));
  }
  return table;
}

function expected(nodes: NodeSpec[]): Map<string, string> {
  return new Map(nodes.flatMap((n) => n.pods.map((pod) => [pod, n.ip] as [string, string])));
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "podroutes-safety-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function nodesFile(name: string, text: string): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, text);
  return file;
}

describe("issue 8: safe under motion (Linux host routes, --target local in a node's namespace)", { ...gate, timeout: 300_000 }, () => {
  it("item 1: two applies of two 1,000-node inventories at once end as one plan or the other, never a mix, and the loser says so", async () => {
    const a = manyNodes(1000, 1);
    const b = manyNodes(1000, 10);
    const fileA = await nodesFile("a.yaml", yamlOf(a, "clusterCIDR: 10.192.0.0/10\n"));
    const fileB = await nodesFile("b.yaml", yamlOf(b, "clusterCIDR: 10.192.0.0/10\n"));
    const outcomes: string[] = [];
    await withNode(async (ns) => {
      for (let round = 0; round < 5; round++) {
        await ns.ip(["nexthop", "flush"]); // first: the kernel drops the routes using them (a route flush refuses nhid routes)
        await ns.ip(["route", "flush", "proto", "150"]);
        const [ra, rb] = await Promise.all([fileA, fileB].map((file) => runCli(["apply", "--yes", "--nodes", file, "--target", "local"], { netns: ns.name })));
        const table = await ownedRoutes(ns);
        const winner = [["a", a], ["b", b]].find(([, nodes]) => JSON.stringify([...table].sort()) === JSON.stringify([...expected(nodes as NodeSpec[])].sort()));
        outcomes.push(`round ${round}: a exit ${ra!.code}, b exit ${rb!.code}, table = ${winner ? `plan ${winner[0]}` : "A MIX"}`);
        assert.ok(winner, `${outcomes.join("\n")}\n(${table.size} owned routes)\na: ${ra!.stdout.slice(-600)}\nb: ${rb!.stdout.slice(-600)}`);
        for (const [name, result] of [["a", ra!], ["b", rb!]] as const) {
          if (result.code !== 0) assert.match(result.stdout, /the table changed since the plan/, `${name}: ${result.stdout}${result.stderr}`);
        }
        if (ra!.code === 0 && rb!.code === 0) {
          // Both succeeded only if they ran one after the other (on a loaded machine one process can finish
          // before the other has even read the table): then the winner planned from the loser's routes and
          // replaced every one of them, which its report says.
          const last = winner[0] === "a" ? ra! : rb!;
          assert.match(last.stdout, /0 added, 1000 replaced/, `both exited 0, so ${winner[0]} must have replaced the other's routes:\n${last.stdout.slice(-600)}`);
        } else if (ra!.code === 0 || rb!.code === 0) {
          assert.equal(winner[0], ra!.code === 0 ? "a" : "b", "the run that exited 0 is the one whose plan the table holds");
        }
        // Nexthop objects: every owned one is used by a route (nothing lost, nothing stray).
        const used = new Set((await ns.ipJson(["route", "show", "proto", "150"])).map((r) => r.nhid));
        for (const nh of await ns.ipJson(["nexthop", "show"])) assert.ok(used.has(nh.id), `nexthop ${nh.id} is unused`);
      }
    });
    process.stderr.write(`# item 1 concurrent applies:\n#   ${outcomes.join("\n#   ")}\n`);
  });

  it("item 1: a run waits for the lock with a message naming the holder, and --lock-timeout fails clearly (busy, exit 1)", async () => {
    const file = await nodesFile("small.yaml", yamlOf([{ name: "n1", ip: "10.240.1.1", pods: ["10.200.1.0/24"] }]));
    await withNode(async (ns) => {
      const holder = await holdLock(ns.lockFile, (pid) => `pid ${pid} since the test began\n`);
      try {
        const impatient = await runCli(["apply", "--yes", "--nodes", file, "--target", "local", "--lock-timeout", "0"], { netns: ns.name });
        assert.equal(impatient.code, 1, impatient.stdout + impatient.stderr);
        assert.match(impatient.stdout, new RegExp(`nothing changed: another podroutes run holds the lock .*pid ${holder.pid}`));
        assert.deepEqual([...(await ownedRoutes(ns))], [], "nothing was written");

        const patient = startCli(["apply", "--yes", "--nodes", file, "--target", "local"], { netns: ns.name });
        await patient.stderrMatches(new RegExp(`waiting for another podroutes run to finish with this host \\(lock held by pid ${holder.pid} since the test began: flock -x .* cat\\)`));
        holder.release(); // cat ends, flock ends, the kernel drops the lock
        const done = await patient.result;
        assert.equal(done.code, 0, done.stdout + done.stderr);
        assert.deepEqual([...(await ownedRoutes(ns))], [["10.200.1.0/24", "10.240.1.1"]]);
      } finally {
        holder.release();
      }
    });
  });

  it("item 2: a foreign route that replaced ours after the plan is a reported conflict, never overwritten", async () => {
    await withNode(async (ns) => {
      await ns.ip(["route", "add", "10.200.1.0/24", "via", "10.240.1.99", "proto", "150"]);
      const inventory = validateInventory({
        source: "item2",
        nodes: [
          { name: "self", internalIPs: ["10.240.0.20"], podCIDRs: ["10.199.0.0/24"] },
          { name: "n1", internalIPs: ["10.240.1.1"], podCIDRs: ["10.200.1.0/24"] },
          { name: "n2", internalIPs: ["10.240.1.2"], podCIDRs: ["10.200.2.0/24"] },
        ],
      });
      const target = selfTarget(localRunner(ns.name));
      const planned = await plan(target, inventory, { parallel: 1 });
      assert.deepEqual(planned.tables[0]!.changes.map((c) => c.action), ["replace", "create"]);
      // While the operator reads the plan, someone routes the destination by hand.
      await ns.ip(["route", "replace", "10.200.1.0/24", "via", "10.240.7.7", "proto", "static"]);
      const report = await apply(target, planned, inventory, { parallel: 1 });
      const routes = await ns.ipJson(["route", "show", "10.200.1.0/24"]);
      assert.deepEqual(routes.map((r) => `${r.gateway} ${r.protocol}`), ["10.240.7.7 4"], "the static route survived");
      const results = report.tables[0]!.results;
      assert.deepEqual(results.map((r) => [r.change.action, r.ok, r.conflict ?? false]), [["replace", false, true], ["create", true, false]]);
      assert.equal(report.counts.conflicts, 1);
      assert.match(renderReport(report), /conflict, not written: replace 10\.200\.1\.0\/24 .*took 10\.200\.1\.0\/24 after the plan \(via 10\.240\.7\.7, proto static\)/);
      assert.match(renderReport(report), /Apply INCOMPLETE/);
      await target.close();
    });
  });

  it("item 4: an owned route at another metric converges to exactly one route, and stays there", async () => {
    const file = await nodesFile("one.yaml", yamlOf([{ name: "n1", ip: "10.240.1.1", pods: ["10.200.1.0/24"] }]));
    await withNode(async (ns) => {
      await ns.ip(["route", "add", "10.200.1.0/24", "via", "10.240.1.99", "proto", "150", "metric", "100"]);
      const cli = (args: string[]) => runCli([...args, "--nodes", file, "--target", "local"], { netns: ns.name });
      assert.equal((await cli(["apply", "--yes"])).code, 0);
      assert.deepEqual([...(await ownedRoutes(ns))], [["10.200.1.0/24", "10.240.1.1"]]);
      const again = await cli(["apply", "--yes"]);
      assert.match(again.stdout, /No changes\. 1 route already match/);
      assert.deepEqual([...(await ownedRoutes(ns))], [["10.200.1.0/24", "10.240.1.1"]]);
      // Two owned copies, the right one at another metric: one is kept, the other deleted by its metric.
      await ns.ip(["route", "add", "10.200.1.0/24", "via", "10.240.1.1", "proto", "150", "metric", "50"]);
      await ns.ip(["route", "add", "10.200.1.0/24", "via", "10.240.1.98", "proto", "150", "table", "100"]);
      const plannedOut = await cli(["plan"]);
      assert.match(plannedOut.stdout, /Plan: 0 to add, 0 to replace, 2 to destroy/);
      assert.equal((await cli(["apply", "--yes"])).code, 0);
      assert.deepEqual([...(await ownedRoutes(ns))], [["10.200.1.0/24", "10.240.1.1"]]);
      assert.match((await cli(["apply", "--yes"])).stdout, /No changes/);
    });
  });

  it("item 5: delete keeps a podroutes nexthop that a foreign route (another table) or a foreign group uses", async () => {
    const file = await nodesFile("five.yaml", yamlOf([{ name: "n1", ip: "10.240.1.1", pods: ["10.200.1.0/24"] }, { name: "n2", ip: "10.240.1.2", pods: ["10.200.2.0/24"] }]));
    await withNode(async (ns) => {
      const cli = (args: string[]) => runCli([...args, "--nodes", file, "--target", "local"], { netns: ns.name });
      assert.equal((await cli(["apply", "--yes"])).code, 0);
      const nhid = (dst: string) => ns.ipJson(["route", "show", dst]).then((r) => r[0].nhid as number);
      const [first, second] = [await nhid("10.200.1.0/24"), await nhid("10.200.2.0/24")];
      await ns.ip(["route", "add", "10.9.0.0/24", "nhid", String(first), "table", "100"]);
      await ns.ip(["nexthop", "add", "id", "8", "via", "10.240.1.8", "dev", "eth0"]);
      await ns.ip(["nexthop", "add", "id", "9", "group", `${second}/8`]);
      await ns.ip(["route", "add", "10.8.0.0/24", "nhid", "9"]);
      const deleted = await cli(["delete", "--yes"]);
      assert.equal(deleted.code, 0, deleted.stdout + deleted.stderr);
      assert.deepEqual([...(await ownedRoutes(ns))], []);
      assert.deepEqual((await ns.ipJson(["route", "show", "table", "100"])).map((r) => `${r.dst} ${r.nhid}`), [`10.9.0.0/24 ${first}`]);
      assert.deepEqual((await ns.ipJson(["nexthop", "show", "id", "9"]))[0].group.map((m: { id: number }) => m.id), [second, 8]);
    });
  });

  it("item 7: podroutes' blackholes and unused nexthops are seen, listed, replaced or removed", async () => {
    const file = await nodesFile("seven.yaml", yamlOf([{ name: "n3", ip: "10.240.1.3", pods: ["10.200.3.0/24"] }], "clusterCIDR: 10.192.0.0/10\n"));
    await withNode(async (ns) => {
      const cli = (args: string[]) => runCli([...args, "--nodes", file, "--target", "local"], { netns: ns.name });
      await ns.ip(["route", "add", "blackhole", "10.200.3.0/24", "proto", "150"]);
      await ns.ip(["route", "add", "blackhole", "10.200.77.0/24", "proto", "150"]);
      await ns.ip(["nexthop", "add", "id", "1381105700", "via", "10.240.1.5", "dev", "eth0", "proto", "150"]);
      const listed = await runCli(["list", "--target", "local"], { netns: ns.name });
      assert.match(listed.stdout, /10\.200\.77\.0\/24 +blackhole +150 \(podroutes\)/);
      const verified = await cli(["verify"]);
      assert.match(verified.stdout, /10\.200\.3\.0\/24 goes via blackhole, should be 10\.240\.1\.3/);
      const planned = await cli(["plan"]);
      assert.match(planned.stdout, /~ self: remove 1 podroutes nexthop object nothing uses \(id 1381105700\)/);
      assert.match(planned.stdout, /-\/\+ 10\.200\.3\.0\/24 via 10\.240\.1\.3 \(n3\), was via blackhole/);
      assert.match(planned.stdout, /- 10\.200\.77\.0\/24 via blackhole/);
      const applied = await cli(["apply", "--yes"]);
      assert.equal(applied.code, 0, applied.stdout);
      assert.deepEqual([...(await ownedRoutes(ns))], [["10.200.3.0/24", "10.240.1.3"]]);
      const deleted = await runCli(["delete", "--yes", "--target", "local"], { netns: ns.name });
      assert.equal(deleted.code, 0, deleted.stdout);
      assert.deepEqual([...(await ownedRoutes(ns))], []);
      assert.deepEqual(await ns.ipJson(["nexthop", "show"]), []);
    });
  });

  it("item 3: a pod CIDR overlapping a network this host is connected to is refused, naming both; the rest is written", async () => {
    const file = await nodesFile("three.yaml", yamlOf([{ name: "n1", ip: "10.240.1.1", pods: ["10.200.1.0/24", "10.240.0.128/25"] }, { name: "n2", ip: "10.240.1.2", pods: ["10.240.0.2/32"] }]));
    await withNode(async (ns) => {
      const planned = await runCli(["plan", "--nodes", file, "--target", "local"], { netns: ns.name });
      assert.match(planned.stdout, /Warning: self: 10\.240\.0\.128\/25 will not be written: pod CIDR 10\.240\.0\.128\/25 of node n1 overlaps 10\.240\.0\.0\/16/);
      const applied = await runCli(["apply", "--yes", "--nodes", file, "--target", "local"], { netns: ns.name });
      assert.equal(applied.code, 1);
      assert.match(applied.stdout, /pod CIDR 10\.240\.0\.128\/25 of node n1 overlaps 10\.240\.0\.0\/16, a network this host is connected to on eth0/);
      assert.match(applied.stdout, /pod CIDR 10\.240\.0\.2\/32 of node n2 overlaps 10\.240\.0\.0\/16/);
      assert.deepEqual([...(await ownedRoutes(ns))], [["10.200.1.0/24", "10.240.1.1"]]);
    });
  });

  it("also: a second cluster on the same protocol number is refused until it takes its own --proto", async () => {
    const fileA = await nodesFile("cluster-a.yaml", yamlOf([{ name: "n1", ip: "10.240.1.1", pods: ["10.200.1.0/24"] }], "cluster: alpha\n"));
    const fileB = await nodesFile("cluster-b.yaml", yamlOf([{ name: "n5", ip: "10.240.1.5", pods: ["10.200.5.0/24"] }], "cluster: beta\n"));
    await withNode(async (ns) => {
      const cli = (file: string, args: string[]) => runCli([...args, "--nodes", file, "--target", "local"], { netns: ns.name });
      assert.equal((await cli(fileA, ["apply", "--yes"])).code, 0);
      const refused = await cli(fileB, ["apply", "--yes"]);
      assert.equal(refused.code, 1);
      assert.match(refused.stdout, /routes with protocol 150 on this host belong to cluster alpha, not beta: two clusters on one host need their own --proto/);
      assert.deepEqual([...(await ownedRoutes(ns))], [["10.200.1.0/24", "10.240.1.1"]], "alpha's route survived");
      assert.equal((await cli(fileB, ["apply", "--yes", "--proto", "151"])).code, 0);
      assert.deepEqual([...(await ownedRoutes(ns, 151))], [["10.200.5.0/24", "10.240.1.5"]]);
      assert.equal((await cli(fileA, ["delete", "--yes"])).code, 0);
      assert.deepEqual([...(await ownedRoutes(ns))], []);
      assert.deepEqual([...(await ownedRoutes(ns, 151))], [["10.200.5.0/24", "10.240.1.5"]], "beta's routes are not alpha's to delete");
    });
  });

  it("item 11: a batch ip abandoned partway is reported from the table, never as 'nothing changed'", async () => {
    await withNode(async (ns) => {
      const inventory = validateInventory({
        source: "item11",
        nodes: [
          { name: "self", internalIPs: ["10.240.0.20"], podCIDRs: ["10.199.0.0/24"] },
          ...[1, 2, 3, 4].map((i) => ({ name: `n${i}`, internalIPs: [`10.240.1.${i}`], podCIDRs: [`10.200.${i}.0/24`] })),
        ],
      });
      const target = selfTarget(stopsHalfway(localRunner(ns.name)));
      const report = await apply(target, await plan(target, inventory, { parallel: 1 }), inventory, { parallel: 1 });
      const table = await ownedRoutes(ns);
      assert.equal(table.size, 2, `two of four routes were written: ${[...table]}`);
      const done = report.tables[0]!.results.filter((r) => r.ok).map((r) => r.change.action !== "delete" && r.change.route.destination);
      assert.deepEqual(done.sort(), [...table.keys()].sort(), "exactly the routes in the table are reported done");
      assert.doesNotMatch(renderReport(report), /nothing changed/);
      assert.match(renderReport(report), /not done: ip stopped before the end of the batch/);
      await target.close();
    });
  });

  it("item 12: a YAML alias bomb is bad input: exit 3 naming the file, nothing read", async () => {
    const levels = ["a", "b", "c", "d", "e", "f"];
    const bomb = levels.map((name, i) => `${name}: &${name} [${Array(9).fill(i ? `*${levels[i - 1]}` : '"x"').join(",")}]`).join("\n") + "\nnodes: [*f]\n";
    const file = await nodesFile("bomb.yaml", bomb);
    const result = await runCli(["plan", "--nodes", file, "--target", "ssh", "--ssh-key", file]);
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stderr, /bomb\.yaml:1: .*alias/i);
  });
});

/**
 * A runner whose write batches stop halfway, as when `ip` is killed or meets a line it cannot parse:
 * part of the lines reach the kernel, then `ip` "exits" 255 with an error of its own.
 */
function stopsHalfway(runner: IpRunner): IpRunner {
  // Every nexthop line and the first two route lines run; the rest never does.
  const cut = (script: string) => {
    const lines = script.split("\n").filter(Boolean);
    const third = lines.filter((line) => line.startsWith("route ")).slice(2, 3)[0];
    return `${lines.slice(0, third === undefined ? lines.length : lines.indexOf(third)).join("\n")}\n`;
  };
  const abandoned = async (written: Promise<unknown>) => {
    await written;
    return { code: 255, stdout: "", stderr: 'Error: either "to" is duplicate, or "x" is a garbage.\n' };
  };
  return {
    ...runner,
    // Before issue 8 the batch went through `ip` itself; now through the lock.
    ip: (args, stdin) => (args.includes("-N") || !stdin ? runner.ip(args, stdin) : abandoned(runner.ip(args, cut(stdin)))),
    lock: async (request) => {
      const host = await runner.lock(request);
      return { ...host, state: host.state, owner: host.owner, write: (script: string) => abandoned(host.write(cut(script))) };
    },
  };
}

