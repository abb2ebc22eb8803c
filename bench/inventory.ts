/**
 * Large inventories (issue 8 item 10): how long reading and validating a YAML inventory of 5,000,
 * 50,000 and 150,000 nodes takes and how much memory it needs at its peak, each in a fresh process
 * (cold, as `podroutes plan` starts), and the pure path of 150,000 routes (plan, recheck, Linux batch,
 * rendering) in process. The YAML is what a person writes (block style, one mapping per node).
 */
import { fork } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { validateInventory } from "../src/inventory.js";
import { desiredRoutes, diffTable, recheck, summarize } from "../src/plan/plan.js";
import { renderPlan } from "../src/plan/render.js";
import { parseNodesFile } from "../src/sources/file.js";
import { buildWriteBatch, parseHostState } from "../src/targets/linux/iproute.js";

const address = (value: number) => [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join(".");

function yamlInventory(count: number): string {
  const lines = ["cluster: big", "clusterCIDR: 100.64.0.0/10", "nodes:"];
  for (let i = 0; i < count; i++) lines.push(`  - name: node-${i}\n    internalIP: ${address(0x0af00064 + i)}\n    podCIDRs: [${address(0x64400000 + i * 4)}/30]`);
  return `${lines.join("\n")}\n`;
}

/** In a child: read and validate one file, report time and peak memory. */
async function measureFile(file: string): Promise<void> {
  const started = performance.now();
  const raw = parseNodesFile(await readFile(file, "utf8"), file);
  const parsed = performance.now();
  const inventory = validateInventory(raw);
  const validated = performance.now();
  process.send!({ nodes: inventory.nodes.length, parseMs: parsed - started, validateMs: validated - parsed, peakMB: process.resourceUsage().maxRSS / 1024 });
}

function inChild(file: string): Promise<{ nodes: number; parseMs: number; validateMs: number; peakMB: number }> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), ["--measure", file], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    child.once("message", (message) => resolve(message as never));
    child.once("exit", (code) => (code ? reject(new Error(`the measuring process exited ${code}`)) : undefined));
  });
}

function purePath(count: number): Record<string, number> {
  const times: Record<string, number> = {};
  let mark = performance.now();
  const lap = (name: string) => {
    const now = performance.now();
    times[name] = now - mark;
    mark = now;
  };
  const nodes = [{ name: "self", internalIPs: ["10.240.0.20"], podCIDRs: ["10.199.0.0/24"] }];
  for (let i = 0; i < count; i++) nodes.push({ name: `n${i}`, internalIPs: [address(0x0af00064 + i)], podCIDRs: [`${address(0x64400000 + i)}/32`] });
  const inventory = validateInventory({ source: "bench", nodes });
  lap("validate");
  const table = { id: "self", scope: "host" as const, node: "self" };
  const diff = diffTable(table, desiredRoutes(inventory, table), []);
  lap("plan");
  renderPlan({ cluster: "big", target: "local", tables: [diff], summary: summarize([diff]), review: { warnings: [], refusals: [], actions: [] } });
  lap("render");
  recheck(diff, []);
  lap("recheck");
  buildWriteBatch(parseHostState(`${JSON.stringify([{ dst: "10.240.0.0/14", dev: "eth0", protocol: "2", scope: "253" }])}\n[]\n[]\n`, ""), diff.changes, { proto: 150, nodeOfNextHop: () => "?" });
  lap("batch");
  return times;
}

export async function run(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "podroutes-bench-inventory-"));
  try {
    for (const count of [5_000, 50_000, 150_000]) {
      const file = join(dir, `nodes-${count}.yaml`);
      await writeFile(file, yamlInventory(count));
      const size = (await stat(file)).size / 1e6;
      const m = await inChild(file);
      console.log(`YAML of ${count.toLocaleString("en")} nodes (${size.toFixed(1)} MB), cold process: read ${(m.parseMs / 1000).toFixed(1)} s, validate ${(m.validateMs / 1000).toFixed(1)} s, peak memory ${Math.round(m.peakMB)} MB (${Math.round(m.peakMB / size)}x the file)`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const times = purePath(150_000);
  console.log(`150,000 routes in process: ${Object.entries(times).map(([k, v]) => `${k} ${(v / 1000).toFixed(1)} s`).join(", ")}`);
}

if (process.argv[2] === "--measure") await measureFile(process.argv[3]!);
