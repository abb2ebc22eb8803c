/**
 * Crash injection (issue 8 item 6): `kill -9` of podroutes while it writes thousands of routes, many
 * times, at random points — half anywhere in the run, half just after the kernel saw its first write
 * (mid-batch) — then a re-run. After every kill: nothing foreign was touched, no route or nexthop
 * without podroutes' mark appeared (a line cut before `proto 150` would make one), and the next run
 * is not locked out. At the end, one run finishes the job. Needs root.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { access, chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { BATCH_END } from "../src/targets/linux/iproute.js";
import { run } from "../src/process.js";
import { runCli, startCli } from "../testkit/cli.js";
import { nodeNamespace, type NodeNamespace } from "../testkit/netns.js";
import { needsRoot } from "../testkit/root.js";

const gate = needsRoot();
const KILLS = 16;
const ROUTES = 5000;

/** An inventory of this host (10.240.0.20) and `count` nodes whose addresses start at 10.240.BLOCK.0. */
function inventory(count: number, block: number): string {
  const nodes = Array.from({ length: count }, (_, i) => `  - {name: n${i}, internalIP: 10.240.${block + (i >> 8)}.${i & 255}, podCIDRs: [10.${200 + (i >> 8)}.${i & 255}.0/24]}\n`);
  return `clusterCIDR: 10.192.0.0/10\nnodes:\n  - {name: self, internalIP: 10.240.0.20, podCIDRs: [10.199.0.0/24]}\n${nodes.join("")}`;
}

/** Everything in the namespace that is not podroutes' and not the kernel's own: it must never change. */
async function foreign(ns: NodeNamespace): Promise<string[]> {
  const routes = (await ns.ipJson(["route", "show", "table", "all"])).filter((r) => r.protocol !== "150" && r.protocol !== "2");
  const nexthops = (await ns.ipJson(["nexthop", "show"])).filter((nh) => nh.protocol !== "150");
  return [...routes.map((r) => `route ${JSON.stringify(r)}`), ...nexthops.map((nh) => `nexthop ${JSON.stringify(nh)}`)].sort();
}

/** Resolves once the kernel reports a route or nexthop change in the namespace. */
function firstKernelWrite(ns: NodeNamespace): { seen: Promise<void>; stop(): void } {
  const monitor = spawn("ip", ["-n", ns.name, "monitor", "route", "nexthop"], { stdio: ["ignore", "pipe", "ignore"] });
  const seen = new Promise<void>((resolve) => monitor.stdout!.once("data", () => resolve()));
  return { seen, stop: () => void (monitor.exitCode === null && monitor.kill()) };
}

describe("crash injection: kill -9 during writes of 5,000 routes, then re-run", { ...gate, timeout: 600_000 }, () => {
  it(`${KILLS} kills leave no route or nexthop without the mark, touch nothing foreign, and a re-run finishes the job`, async () => {
    const dir = await mkdtemp(join(tmpdir(), "podroutes-crash-"));
    const ns = await nodeNamespace(`prcrash${process.pid % 100000}`, "10.240.0.20/16");
    try {
      const files = [join(dir, "a.yaml"), join(dir, "b.yaml"), join(dir, "c.yaml")];
      await writeFile(files[0]!, inventory(ROUTES, 1));
      await writeFile(files[1]!, inventory(ROUTES, 30)); // every next hop moved: replaces
      await writeFile(files[2]!, inventory(ROUTES / 2, 1)); // half the nodes gone: deletes
      // Foreign things: a route on a pod destination (a conflict), one elsewhere, a nexthop object and its route.
      await ns.ip(["route", "add", "10.200.7.0/24", "via", "10.240.9.9", "proto", "static"]);
      await ns.ip(["route", "add", "10.50.0.0/16", "via", "10.240.9.9"]);
      await ns.ip(["nexthop", "add", "id", "77", "via", "10.240.9.8", "dev", "eth0"]);
      await ns.ip(["route", "add", "10.51.0.0/16", "nhid", "77"]);
      const before = await foreign(ns);
      const apply = (file: string) => ["apply", "--yes", "--allow-conflicts", "--lock-timeout", "2m", "--nodes", file, "--target", "local"];

      let random = 0x5eed;
      const next = () => (random = (random * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
      const started = Date.now();
      const first = await runCli(apply(files[0]!), { netns: ns.name });
      assert.equal(first.code, 0, first.stdout + first.stderr);
      const runMs = Date.now() - started;

      const tally = { killed: 0, midWrite: 0, finishedFirst: 0 };
      for (let kill = 0; kill < KILLS; kill++) {
        const file = files[Math.floor(next() * files.length)]!;
        const watch = firstKernelWrite(ns);
        const running = startCli(apply(file), { netns: ns.name });
        const afterWrite = kill % 2 === 1;
        const delay = afterWrite ? next() * 30 : next() * runMs;
        await Promise.race([(afterWrite ? watch.seen : Promise.resolve()).then(() => new Promise((r) => setTimeout(r, delay))), running.result]);
        watch.stop();
        if (running.child.exitCode === null) {
          process.kill(running.child.pid!, "SIGKILL");
          tally.killed++;
          if (afterWrite) tally.midWrite++;
        } else tally.finishedFirst++;
        await running.result;
        // Wait until whatever podroutes left running (its `ip`, holding the lock) is done.
        const free = await run("flock", ["-x", ns.lockFile, "true"]);
        assert.equal(free.code, 0, free.stderr);
        assert.deepEqual(await foreign(ns), before, `kill ${kill}: something not podroutes' changed (an unowned leftover, or a foreign object touched)`);
      }

      const last = await runCli(apply(files[0]!), { netns: ns.name });
      assert.equal(last.code, 0, last.stdout + last.stderr);
      const again = await runCli(["plan", "--nodes", files[0]!, "--target", "local"], { netns: ns.name });
      assert.match(again.stdout, new RegExp(`No changes\\. ${ROUTES - 1} routes already match`));
      const used = new Set((await ns.ipJson(["route", "show", "proto", "150"])).map((r) => r.nhid));
      assert.ok((await ns.ipJson(["nexthop", "show"])).every((nh) => nh.protocol !== "150" || used.has(nh.id)), "no unused podroutes nexthop left");
      assert.deepEqual(await foreign(ns), before);
      process.stderr.write(`# crash injection: ${tally.killed} kills (${tally.midWrite} right after the first kernel write), ${tally.finishedFirst} runs finished before their kill; 0 unowned leftovers, 0 foreign objects touched; a run takes ~${runMs} ms\n`);
    } finally {
      await ns.remove();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("podroutes killed before ip read its batch: ip still gets the whole batch, never a cut one", async () => {
    const dir = await mkdtemp(join(tmpdir(), "podroutes-crash-"));
    const ns = await nodeNamespace(`prcrashb${process.pid % 100000}`, "10.240.0.20/16");
    try {
      const file = join(dir, "a.yaml");
      await writeFile(file, inventory(ROUTES, 1));
      // An `ip` that, for a write batch, waits for `go` before it reads a byte, keeps what it got, then runs it.
      const realIp = (await run("sh", ["-c", "command -v ip"])).stdout.trim();
      const shim = join(dir, "ip");
      await writeFile(
        shim,
        `#!/bin/sh\ncase " $* " in *" -json "*) exec ${realIp} "$@";; esac\ntouch ${dir}/started\nwhile [ ! -e ${dir}/go ]; do sleep 0.02; done\ncat > ${dir}/received\n${realIp} "$@" < ${dir}/received\ntouch ${dir}/done\n`,
      );
      await chmod(shim, 0o755);
      const running = startCli(["apply", "--yes", "--nodes", file, "--target", "local"], { netns: ns.name, env: { PATH: `${dir}:${process.env.PATH}` } });
      await until(() => access(join(dir, "started")).then(() => true, () => false));
      process.kill(running.child.pid!, "SIGKILL");
      await running.result;
      await writeFile(join(dir, "go"), "");
      await until(() => access(join(dir, "done")).then(() => true, () => false));
      const received = await readFile(join(dir, "received"), "utf8");
      assert.ok(received.endsWith(`${BATCH_END}\n`), `ip got a cut batch (${received.length} bytes, ending ${JSON.stringify(received.slice(-80))})`);
      assert.equal(received.split("\n").filter((line) => line.startsWith("route add")).length, ROUTES);
      assert.equal((await ns.ipJson(["route", "show", "proto", "150"])).length, ROUTES, "the batch ran whole");
    } finally {
      await ns.remove();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/** Waits for a condition of the outside world (a file a child wrote), checking every 20 ms. */
async function until(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}
