/**
 * Linux host routes: podroutes' full apply and no-op apply of 1,000 and 5,000 routes (each to its own
 * next hop, as in a cluster of that many nodes) against (a) the seeds' way, one `ip route add` process
 * per route, and (b) one `ip -batch` of `route replace` for everything, what a replace-everything resync
 * costs. Runs in a throwaway network namespace; prints medians of several runs and the ratios.
 */
import { performance } from "node:perf_hooks";
import { apply, plan } from "../src/apply/engine.js";
import { validateInventory } from "../src/inventory.js";
import type { Inventory } from "../src/model.js";
import { HostRoutesTarget } from "../src/targets/linux/host-routes.js";
import { localRunner, run } from "../src/targets/linux/runner.js";
import { watchKernelWrites } from "../testkit/kernel-writes.js";
import { flatNamespace } from "../testkit/flat-namespace.js";

const NS = `prbench${process.pid}`;
const SELF = "10.240.0.1";

function gateway(i: number): string {
  const n = i + 2;
  return `10.240.${n >> 8}.${n & 255}`;
}
function destination(i: number): string {
  return `10.${100 + (i >> 8)}.${i & 255}.0/24`;
}

async function must(args: string[], stdin?: string): Promise<string> {
  const result = await run("ip", args, stdin);
  if (result.code !== 0) throw new Error(`ip ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

/** A fresh namespace with one link holding every next hop on-link. */
async function freshNamespace(): Promise<void> {
  await flatNamespace(NS, `${SELF}/16`);
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

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function routeCount(): Promise<number> {
  return JSON.parse(await must(["-n", NS, "-json", "route", "show", "table", "main"])).length - 1;
}

async function seedWay(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await must(["-n", NS, "route", "add", destination(i), "via", gateway(i)]);
}

async function replaceAll(count: number): Promise<void> {
  const script = Array.from({ length: count }, (_, i) => `route replace ${destination(i)} via ${gateway(i)}\n`).join("");
  await must(["-n", NS, "-batch", "-"], script);
}

export async function run_(sizes = [1000, 5000], repeats = 3): Promise<void> {
  try {
    for (const count of sizes) {
      const nodes = inventory(count);
      const seed: number[] = [];
      const batch: number[] = [];
      const full: number[] = [];
      const noop: number[] = [];
      let writes = -1;
      for (let r = 0; r < repeats; r++) {
        await freshNamespace();
        if (r === 0 || count <= 1000) seed.push(await time(() => seedWay(count)));
        await freshNamespace();
        batch.push(await time(() => replaceAll(count)));
        await freshNamespace();
        const t = target();
        full.push(
          await time(async () => {
            const report = await apply(t, await plan(t, nodes, { parallel: 1 }), nodes, { parallel: 1 });
            if (!report.ok) throw new Error(JSON.stringify(report.counts));
          }),
        );
        if ((await routeCount()) !== count) throw new Error(`expected ${count} routes after apply, found ${await routeCount()}`);
        noop.push(await time(async () => apply(t, await plan(t, nodes, { parallel: 1 }), nodes, { parallel: 1 })));
        if (r === 0) writes = (await watchKernelWrites([NS], async () => apply(t, await plan(t, nodes, { parallel: 1 }), nodes, { parallel: 1 }))).writes.length;
      }
      const [a, b, f, n] = [median(seed), median(batch), median(full), median(noop)];
      console.log(`${count} routes (median of ${repeats}; seeds' way: ${seed.length} run${seed.length === 1 ? "" : "s"})`);
      console.log(`  (a) seeds' way, one 'ip route add' process per route: ${a.toFixed(0)} ms`);
      console.log(`  (b) one 'ip -batch' of 'route replace' for all:        ${b.toFixed(1)} ms`);
      console.log(`  podroutes full apply (read, plan, one batch):         ${f.toFixed(1)} ms  → (a)/podroutes = ${(a / f).toFixed(0)}×, (b)/podroutes = ${(b / f).toFixed(2)}×  [targets at 5,000: ≥50×, ≥1×]`);
      console.log(`  podroutes no-op apply (read, plan, nothing written):  ${n.toFixed(1)} ms  → kernel writes seen by 'ip monitor': ${writes}  [target: 0]`);
    }
  } finally {
    await run("ip", ["netns", "del", NS]);
  }
}

export { run_ as run };
