/**
 * `npm run bench -- peers [--json FILE]` (issue 21 item 2, begun): podroutes beside the real flannel,
 * kube-router and Kubernetes' route controller (testkit/peers), each system in turn on a fresh lab with
 * the real control plane and the same Nodes; one table at the end, a row per figure, a column per
 * system, with ratios against podroutes. A cell a system cannot have says why instead of a number.
 * Rows so far: cold start to every route in place, 3 workers (kernel routes on the workers, for the
 * agents), and 3 Nodes (Compute routes, for the controllers, 50 ms per operation).
 */
import { writeFile } from "node:fs/promises";
import { within } from "../testkit/agent-lab.js";
import { peerBinaries } from "../testkit/peers/binaries.js";
import { PeerLab, SYSTEMS, gceRoutes, startFlannel, startGce, startKubeRouter, startPodroutesAgents, startPodroutesController, startRouteController, type System } from "../testkit/peers/lab.js";

type Cell = number | string;
interface Row {
  figure: string;
  unit: string;
  values: Record<System, Cell>;
}

const WORKERS = 3;
const log = (line: string) => process.stderr.write(`  ${line}\n`);

/** Seconds from `start()` to `done()`, on a fresh lab that is removed afterwards; a string when it failed. */
async function coldStart(name: string, prepare: (lab: PeerLab) => Promise<{ launch: () => Promise<void>; done: () => Promise<boolean> }>): Promise<Cell> {
  const lab = new PeerLab(`kb${name}${process.pid % 1000}`, WORKERS, () => {});
  try {
    await lab.up();
    const { launch, done } = await prepare(lab);
    const started = performance.now();
    await launch();
    const took = await within(300_000, done, 20);
    if (took === undefined) return `not every route within 300 s (${lab.logs(3).replace(/\n/g, " | ").slice(0, 300)})`;
    return Number(((performance.now() - started) / 1000).toFixed(2));
  } finally {
    await lab.down();
  }
}

export function table(rows: Row[]): string {
  const header = ["figure", ...SYSTEMS];
  const cells = rows.map((row) => [
    `${row.figure} (${row.unit})`,
    ...SYSTEMS.map((s) => {
      const value = row.values[s];
      const base = row.values.podroutes;
      if (typeof value !== "number") return value;
      return s === "podroutes" || typeof base !== "number" || base === 0 ? String(value) : `${value} (${(value / base).toFixed(1)}×)`;
    }),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  return [header, ...cells].map((line) => line.map((c, i) => c.padEnd(widths[i]!)).join("  ")).join("\n");
}

export async function run(argv = process.argv): Promise<void> {
  const jsonAt = argv.indexOf("--json");
  const jsonFile = jsonAt >= 0 ? argv[jsonAt + 1] : undefined;
  const built = performance.now();
  const binaries = await peerBinaries(log);
  log(`peers ${JSON.stringify(binaries.version)} ready in ${((performance.now() - built) / 1000).toFixed(1)} s`);
  const noCloud = "writes no cloud routes (routes the kernel on each node)";
  const noKernel = "writes cloud routes, no kernel routes (see the controller row)";
  const kernel: Row = { figure: `cold start to every kernel route, ${WORKERS} workers`, unit: "s", values: { podroutes: "", flannel: "", "kube-router": "", "route-controller": noKernel } };
  kernel.values.podroutes = await coldStart("pr", async (lab) => ({ launch: await startPodroutesAgents(lab), done: () => lab.kernelRoutesInPlace() }));
  kernel.values.flannel = await coldStart("fl", async (lab) => ({ launch: await startFlannel(lab, binaries), done: () => lab.kernelRoutesInPlace() }));
  kernel.values["kube-router"] = await coldStart("kr", async (lab) => ({ launch: await startKubeRouter(lab, binaries), done: () => lab.kernelRoutesInPlace() }));
  const cloud: Row = { figure: `cold start to every Compute route, ${WORKERS} Nodes, 50 ms per operation`, unit: "s", values: { podroutes: "", flannel: noCloud, "kube-router": noCloud, "route-controller": "" } };
  // The GCE test server starts, and each system's RBAC and tokens are made, before the clock: only its own start is timed.
  const compute = (prepareController: (lab: PeerLab, gce: Awaited<ReturnType<typeof startGce>>) => Promise<() => Promise<void>>) => async (lab: PeerLab) => {
    const gce = await startGce(lab);
    return { launch: await prepareController(lab, gce), done: async () => (await gceRoutes(lab, gce)).length === WORKERS };
  };
  cloud.values.podroutes = await coldStart("pc", compute((lab, gce) => startPodroutesController(lab, gce)));
  cloud.values["route-controller"] = await coldStart("rc", compute((lab, gce) => startRouteController(lab, binaries, gce)));
  const rows = [kernel, cloud];
  console.log(table(rows));
  console.log(`versions: ${JSON.stringify(binaries.version)}; ratios are the system's figure over podroutes'`);
  if (jsonFile) await writeFile(jsonFile, `${JSON.stringify({ systems: SYSTEMS, rows }, null, 2)}\n`);
}
