/**
 * Linux host routes: podroutes' full apply and no-op apply of 1,000 and 5,000 routes (each to its own
 * next hop, as in a cluster of that many nodes) against (a) the seeds' way, one `ip route add` process
 * per route, timed in full (its cost grows faster than linearly, so a sample would flatter it), and
 * (b) one `ip -batch` of `route replace` for everything, what a replace-everything resync costs.
 *
 * Timed twice: in process (warm, the engine's `converge`, as `apply --yes` runs it) and as a user pays it, a whole cold process
 * (`ip netns exec NS podroutes apply --yes --nodes FILE --target local`, a new `node` each run), the
 * latter beside a bare Node process that only reads the table (`ip -N -json route show` + JSON.parse)
 * and one `ip -batch` process. Runs in a throwaway network namespace; prints medians and the ratios
 * against issue 11's goals. PODROUTES_BENCH_BIN times another built CLI (another checkout's
 * bin/podroutes.js), to compare before and after a change.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { open } from "node:fs/promises";
import { loadavg } from "node:os";
import { converge } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import type { Inventory } from "../src/model.js";
import { HostRoutesTarget } from "../src/targets/linux/host-routes.js";
import { READ_ARGS, READ_BATCH, READ_PARTS, ROUTES_BATCH } from "../src/targets/linux/iproute.js";
import { localRunner } from "../src/targets/linux/runner.js";
import { run } from "../src/process.js";
import { BIN } from "../testkit/cli.js";
import { watchKernelWrites } from "../testkit/kernel-writes.js";
import { flatNamespace, removeFlatNamespace } from "../testkit/netns.js";
import { median } from "./stats.js";

const NS = `prbench${process.pid}`;
const SELF = "10.240.0.1";
const CLI = process.env.PODROUTES_BENCH_BIN ?? BIN;

/** What a bare Node process pays to read the table: the floor for a no-op apply as a whole process. */
const READ_ONLY_SCRIPT = `import { execFileSync } from "node:child_process";
JSON.parse(execFileSync("ip", ["-N", "-json", "route", "show"], { encoding: "utf8", maxBuffer: 1 << 30 }));`;

function gateway(i: number): string {
  const n = i + 2;
  return `10.240.${n >> 8}.${n & 255}`;
}
function destination(i: number): string {
  return `10.${100 + (i >> 8)}.${i & 255}.0/24`;
}

async function must(command: string, args: string[], stdin?: string): Promise<string> {
  const result = await run(command, args, stdin);
  if (result.code !== 0) throw new Error(`${command} ${args.join(" ")}: exit ${result.code}: ${result.stderr}`);
  return result.stdout;
}

/** A fresh namespace with one link holding every next hop on-link. */
async function freshNamespace(): Promise<void> {
  await flatNamespace(NS, `${SELF}/16`);
}

/** The nodes: this host (`self`, whose table is written) and `count` others, in the seeds' table format. */
function nodesText(count: number): string {
  return [`${SELF} 10.99.0.0/24 self`, ...Array.from({ length: count }, (_, i) => `${gateway(i)} ${destination(i)} node-${i}`)].join("\n") + "\n";
}

function inventory(count: number): Inventory {
  return validateInventory({
    source: "bench",
    nodes: [
      { name: "self", internalIPs: [SELF], podCIDRs: ["10.99.0.0/24"] },
      ...Array.from({ length: count }, (_, i) => ({ name: `node-${i}`, internalIPs: [gateway(i)], podCIDRs: [destination(i)] })),
    ],
  });
}

function target(): HostRoutesTarget {
  const runner = localRunner(NS);
  return new HostRoutesTarget({
    name: "bench",
    proto: 150,
    warn: (message) => process.stderr.write(`${message}\n`),
    tables: async () => [{ id: "self", scope: "host", node: "self" }],
    connect: async () => runner,
  });
}

async function time(body: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await body();
  return performance.now() - start;
}

async function routeCount(): Promise<number> {
  return JSON.parse(await must("ip", ["-n", NS, "-json", "route", "show", "table", "main"])).length - 1;
}

async function seedWay(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await must("ip", ["-n", NS, "route", "add", destination(i), "via", gateway(i)]);
}

function replaceScript(count: number): string {
  return Array.from({ length: count }, (_, i) => `route replace ${destination(i)} via ${gateway(i)}\n`).join("");
}

/** Runs a program inside the namespace, as a user on the node would: `ip netns exec NS ...`. */
function inNamespace(args: string[], stdin?: string): Promise<string> {
  return must("ip", ["netns", "exec", NS, ...args], stdin);
}

/** podroutes as a user runs it: a new `node` process, no flags to node, the built CLI. */
function podroutes(nodesFile: string): Promise<string> {
  return inNamespace([process.execPath, CLI, "apply", "--yes", "--nodes", nodesFile, "--target", "local"]);
}

/** Issue 11's goals are set for this many routes; other sizes print their ratios without a verdict. */
const GOAL_SIZE = 5000;

/** A ratio, and at GOAL_SIZE its goal, marked so a missed goal stands out. */
function goal(count: number, value: number, text: string, met: boolean): string {
  return `${value.toFixed(2)}×${count === GOAL_SIZE ? ` [goal at ${GOAL_SIZE.toLocaleString("en")} routes ${text}: ${met ? "met" : "MISSED"}]` : ""}`;
}

/** The costs behind the lock and the read (issue 11 item 5), in process, medians of 9, on the table as the full apply left it. */
async function measureReads(): Promise<string[]> {
  const median9 = async (body: () => Promise<unknown>) => {
    const times: number[] = [];
    for (let i = 0; i < 9; i++) times.push(await time(body));
    return median(times);
  };
  const ns = ["-n", NS];
  const readJson = async (batch: string) => {
    const out = await must("ip", [...ns, ...READ_ARGS], batch);
    for (const line of out.split("\n")) if (line.startsWith("[")) JSON.parse(line);
  };
  const lockFile = await open(join(tmpdir(), `podroutes-bench-lock-${process.pid}`), "a+");
  try {
    const flock = await median9(() => run("flock", ["-n", "3"], undefined, { fds: [lockFile.fd] }));
    const batch = await median9(() => readJson(READ_BATCH));
    const parts = await median9(() => Promise.all(READ_PARTS.map(readJson)));
    const routes = await median9(() => readJson(ROUTES_BATCH));
    const text = await median9(async () => (await must("ip", [...ns, "-N", "-force", "-batch", "-"], READ_BATCH)).split("\n").map((line) => line.split(" ")));
    const f = (value: number) => `${value.toFixed(1)} ms`;
    return [
      `in process, medians of 9: one flock(1) process ${f(flock)}; reading the table (${GOAL_SIZE.toLocaleString("en")} routes and nexthop objects) with ip -json and JSON.parse:`,
      `    routes, nexthops and addresses in one ip ${f(batch)}, in two ip at once (how podroutes reads) ${f(parts)}, routes alone ${f(routes)}; the same as text, split into words ${f(text)}`,
    ];
  } finally {
    await lockFile.close();
  }
}

export async function run_(sizes = [1000, 5000], repeats = 3): Promise<void> {
  console.log(`load average at the start: ${loadavg().map((l) => l.toFixed(2)).join(" ")} (2 cores shared; figures are medians, re-run when it is high)`);
  const dir = await mkdtemp(join(tmpdir(), "podroutes-bench-linux-"));
  try {
    for (const count of sizes) {
      const nodes = inventory(count);
      const nodesFile = join(dir, `nodes-${count}.txt`);
      await writeFile(nodesFile, nodesText(count));
      const batchFile = join(dir, `replace-${count}.batch`);
      await writeFile(batchFile, replaceScript(count));
      const t = {
        seed: [] as number[],
        batch: [] as number[],
        full: [] as number[],
        noop: [] as number[],
        batchProcess: [] as number[],
        fullProcess: [] as number[],
        noopProcess: [] as number[],
        readOnlyProcess: [] as number[],
      };
      let writes = -1;
      let readCosts: string[] = [];
      // Each round times every way once, so a machine that gets busier or quieter affects all alike.
      for (let r = 0; r < repeats; r++) {
        await freshNamespace();
        t.seed.push(await time(() => seedWay(count)));
        await freshNamespace();
        t.batch.push(await time(() => must("ip", ["-n", NS, "-batch", "-"], replaceScript(count))));
        await freshNamespace();
        t.batchProcess.push(await time(() => inNamespace(["ip", "-batch", batchFile])));

        await freshNamespace();
        const inProcess = target();
        // As `apply --yes` runs: each table locked, read once under the lock, planned and written (converge).
        t.full.push(
          await time(async () => {
            const { report } = await converge(inProcess, nodes, { parallel: 1 });
            if (!report?.ok) throw new Error(JSON.stringify(report?.counts));
          }),
        );
        if ((await routeCount()) !== count) throw new Error(`expected ${count} routes after apply, found ${await routeCount()}`);
        t.noop.push(await time(async () => converge(inProcess, nodes, { parallel: 1 })));
        if (r === 0) {
          writes = (await watchKernelWrites([NS], async () => converge(inProcess, nodes, { parallel: 1 }))).writes.length;
          if (count === GOAL_SIZE) readCosts = await measureReads();
        }

        await freshNamespace();
        t.fullProcess.push(await time(() => podroutes(nodesFile)));
        if ((await routeCount()) !== count) throw new Error(`expected ${count} routes after the podroutes process, found ${await routeCount()}`);
        t.noopProcess.push(await time(() => podroutes(nodesFile)));
        t.readOnlyProcess.push(await time(() => inNamespace([process.execPath, "--input-type=module", "-e", READ_ONLY_SCRIPT])));
      }
      const m = Object.fromEntries(Object.entries(t).map(([key, values]) => [key, median(values)])) as Record<keyof typeof t, number>;
      const ms = (value: number) => `${value.toFixed(0).padStart(6)} ms`;
      console.log(`${count} routes (median of ${repeats})`);
      console.log(`  (a) seeds' way, one 'ip route add' process per route, in full: ${ms(m.seed)}`);
      console.log(`  (b) one 'ip -batch' of 'route replace' for all, from Node:     ${ms(m.batch)}`);
      console.log(`  in process (warm: the engine called directly)`);
      console.log(`    podroutes full apply (read, plan, one batch):  ${ms(m.full)}  → (a)/podroutes = ${(m.seed / m.full).toFixed(0)}×, (b)/podroutes = ${(m.batch / m.full).toFixed(2)}×`);
      console.log(`    podroutes no-op apply (read, plan, no write):  ${ms(m.noop)}  → kernel writes seen by 'ip monitor': ${writes} [goal: 0]`);
      console.log(`  whole process, cold (ip netns exec NS podroutes apply --yes --nodes FILE --target local), as a user pays it`);
      console.log(`    podroutes full apply:                          ${ms(m.fullProcess)}  → (a)/podroutes = ${goal(count, m.seed / m.fullProcess, "≥ 50×", m.seed / m.fullProcess >= 50)}`);
      console.log(`    one 'ip -batch' replace of all, as a process:  ${ms(m.batchProcess)}  → podroutes/it = ${goal(count, m.fullProcess / m.batchProcess, "≤ 1×", m.fullProcess <= m.batchProcess)}`);
      console.log(`    podroutes no-op apply:                         ${ms(m.noopProcess)}`);
      console.log(`    bare node reading the table (ip -json + JSON.parse): ${ms(m.readOnlyProcess)}  → podroutes no-op/it = ${goal(count, m.noopProcess / m.readOnlyProcess, "≤ 3×", m.noopProcess <= 3 * m.readOnlyProcess)}`);
      for (const line of readCosts) console.log(`  ${line}`);
    }
    console.log(`load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  } finally {
    await removeFlatNamespace(NS);
    await rm(dir, { recursive: true, force: true });
  }
}

export { run_ as run };
