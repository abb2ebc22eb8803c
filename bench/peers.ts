/**
 * `npm run bench -- peers [--json FILE]` (issue 21 item 2, begun): podroutes beside the real flannel,
 * kube-router and Kubernetes' route controller (testkit/peers), each system in turn on a fresh lab with
 * the real control plane and the same Nodes; one table at the end, a row per figure, a column per
 * system, with ratios against podroutes. A cell a system cannot have says why instead of a number.
 * Each system runs in one lab of 3 workers plus a fourth (the joiner) whose Node joins and leaves; rows:
 * - cold start to every route in place (kernel routes on the 3 workers, for the agents; Compute routes
 *   for 3 Nodes, for the controllers, 50 ms per operation);
 * - a Node joins (registered as its kubelet does; the agent systems' daemon started on it once it has its
 *   pod CIDR, as its DaemonSet pod would be) → its route on every other worker / in the Compute API, and
 *   a Node leaves (deleted, its daemon stopped) → that route gone: p50 and p99 over `--repeat N` (10);
 * - drift: one worker's route to another deleted by hand (`ip route del`) → back, p50 and p99 over 5
 *   (one sample when it took over 30 s: a periodic sync), or how long it stayed missing (up to 330 s);
 *   a link flapped (worker-0's eth0 down and up: the kernel drops every route via it) and a networkd-style
 *   flush (each of worker-0's routes in the cluster CIDR not of proto kernel deleted) → worker-0's routes to the other
 *   workers' pods back, the same way over 3;
 * - worker-0's daemon idle: its own CPU over 60 s scaled to an hour, and its RSS, at the lab's size only;
 * - a restart: the joiner's Node joins, the system stops, the Node is deleted while it is down and (agents)
 *   each worker's route to the next one's pods replaced by someone else's (proto static, via the third
 *   worker); the system starts again: how many of the deleted Node's routes its stop left and how many
 *   were still there 15 s after every other route was back, and how many foreign routes it overwrote.
 * Times are polled (every 20 ms for the kernel, each poll an `ip -json route show` per worker; the
 * Compute API's list from the controller's namespace), so each includes up to one poll's time.
 */
import { writeFile } from "node:fs/promises";
import { run as runProcess } from "../src/process.js";
import { within, type Started } from "../testkit/agent-lab.js";
import type { LabWorker } from "../src/lab/lab.js";
import { peerBinaries } from "../testkit/peers/binaries.js";
import { percentile } from "./stats.js";
import { cpuMs, rssMb } from "./agent.js";
import { PeerLab, SYSTEMS, gceRoutes, startFlannel, startGce, startKubeRouter, startPodroutesAgents, startPodroutesController, startRouteController, type GceEndpoint, type Launch, type System } from "../testkit/peers/lab.js";

type Cell = number | string;
interface Row {
  figure: string;
  unit: string;
  values: Record<System, Cell>;
  /** false for counts: no ratio against podroutes' figure. */
  ratio?: false;
}

const WORKERS = 3;
const EVENT_DEADLINE_MS = 60_000;
const DRIFT_REPEAT = 5;
/** A link flap and a flush break several routes at once: fewer repetitions. */
const BULK_REPEAT = 3;
const DRIFT_WAIT_MS = 330_000;
/** A repair slower than this is a periodic sync's: one sample says it, the rest of the repetitions are skipped. */
const DRIFT_SLOW_MS = 30_000;
const SETTLE_MS = 15_000;
/** The idle window: worker-0's daemon's CPU over it, scaled to an hour. */
const IDLE_MS = 60_000;
const log = (line: string) => process.stderr.write(`  ${line}\n`);
const seconds = (ms: number) => Number((ms / 1000).toFixed(2));

/** What one system measured in its lab; a string where it failed or cannot. */
interface Measured {
  cold: Cell;
  join: Cell[];
  leave: Cell[];
  /** How long each leave's `kubectl delete node --wait=true` itself took: a floor every leave includes. */
  deleting?: Cell[];
  drift?: Cell[];
  /** worker-0's eth0 down and up → its routes to the other workers' pods back. */
  flap?: Cell[];
  /** worker-0's non-kernel routes in the cluster CIDR flushed → back. */
  flush?: Cell[];
  /** worker-0's daemon, idle. */
  idle?: Idle;
  restart?: Restart;
}

interface Idle {
  cpuSecondsPerHour: Cell;
  rssMb: Cell;
  /** How many Nodes the API server held during the window. */
  nodes?: number;
}

/** A restart: the joiner's Node deleted while the system was down, foreign routes placed before it started again. */
interface Restart {
  /** Of the joiner's routes (one per worker, or its Compute route), how many the system's stop left. */
  leftByStop: Cell;
  /** ... and how many were still there SETTLE_MS after every other route was back. */
  leftAfterStart: Cell;
  /** Of the foreign routes (one per worker, proto static, on another worker's pod CIDR), how many the system overwrote. */
  overwritten?: Cell;
}

/** How a system is run in the lab: its starter (per worker for the agents) and how its route for a Node is seen. */
interface Runner {
  /** Prepares the system on `workers` (RBAC, tokens), resolving to what starts its processes; `gce` for the controllers. */
  prepare: (lab: PeerLab, workers: LabWorker[], gce?: GceEndpoint) => Promise<Launch>;
  /** true for the agents (a daemon per node, the joiner's too; routes in the workers' kernels), false for the controllers (Compute routes). */
  perNode: boolean;
}

/** p50 and p99 of `samples`, or the failures' story when any is not a number. */
function spread(samples: Cell[]): [Cell, Cell] {
  const failed = samples.filter((s): s is string => typeof s === "string");
  // A sample that stands alone (drift repaired only by a periodic sync: one sample, not repeated) is no failure.
  if (failed.length === 1 && samples.length === 1 && /^\d/.test(failed[0]!)) return [failed[0]!, "see p50"];
  if (failed.length) return [`${failed.length} of ${samples.length} failed: ${failed[0]}`, "see p50"];
  const values = samples as number[];
  return [seconds(percentile(values, 50)), seconds(percentile(values, 99))];
}

/** Polls until `check`, the time from `since` in ms, or a string after `deadlineMs`. */
async function until(since: number, deadlineMs: number, check: () => Promise<boolean>, what: string): Promise<Cell> {
  const took = await within(deadlineMs, check, 20);
  return took === undefined ? `${what} not within ${deadlineMs / 1000} s` : performance.now() - since;
}

/**
 * Drift on the first of `workers`: `breakIt` (resolving to when the clock starts, or a string when it could
 * not) up to `repeat` times, each timed from then until its routes to `expected`'s pod CIDRs are back (via their internal IPs); one sample when a
 * repair took over DRIFT_SLOW_MS, and how long they stayed missing (put back by hand) when never repaired.
 */
async function repairs(lab: PeerLab, workers: LabWorker[], what: string, breakIt: () => Promise<string | number>, expected: LabWorker[], repeat = DRIFT_REPEAT): Promise<Cell[]> {
  const w0 = workers[0]!;
  const samples: Cell[] = [];
  for (let i = 0; i < repeat; i++) {
    await within(EVENT_DEADLINE_MS, () => lab.kernelRoutesInPlace(workers), 100);
    const since = await breakIt();
    if (typeof since === "string") return [...samples, since];
    const back = async () => { const routes = await lab.kernelRoutes(w0); return Boolean(routes) && expected.every((o) => routes!.get(o.podCIDR) === o.internalIP); };
    const took = (await within(DRIFT_WAIT_MS, back, 20)) === undefined ? undefined : performance.now() - since;
    log(`${what} ${i + 1}/${repeat} ${took === undefined ? "never repaired" : `${seconds(took)} s`}`);
    if (took === undefined) {
      for (const o of expected) await runProcess("ip", ["-n", w0.netns, "route", "replace", o.podCIDR, "via", o.internalIP, "dev", "eth0"]);
      samples.push(`never repaired: still missing after ${DRIFT_WAIT_MS / 1000} s (put back by hand)`);
      break;
    }
    samples.push(took);
    if (took > DRIFT_SLOW_MS) {
      samples[samples.length - 1] = `${seconds(took)} (1 sample: over ${DRIFT_SLOW_MS / 1000} s, a periodic sync's; not repeated)`;
      break;
    }
  }
  return samples;
}

/** The daemon's own CPU (utime + stime) over IDLE_MS with nothing changing, scaled to an hour, and its RSS at the end. */
async function idleCost(lab: PeerLab, daemon: Started, name: string): Promise<Idle> {
  await within(EVENT_DEADLINE_MS, () => lab.kernelRoutesInPlace(lab.state.workers.slice(0, WORKERS)), 100);
  const before = await cpuMs(daemon.pid);
  const since = performance.now();
  await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
  const used = (await cpuMs(daemon.pid)) - before;
  const rss = (await rssMb(daemon.pid)).total;
  const nodes = (await lab.kubectl(["get", "nodes", "-o", "name"])).trim().split("\n").filter(Boolean).length;
  const cpuSecondsPerHour = Number(((used / 1000) * (3_600_000 / (performance.now() - since))).toFixed(2));
  log(`${name}: idle ${daemon.what} (PID ${daemon.pid}), ${nodes} Nodes: ${used} ms CPU in ${IDLE_MS / 1000} s (${cpuSecondsPerHour} s/h), RSS ${rss.toFixed(1)} MB`);
  return { cpuSecondsPerHour, rssMb: Number(rss.toFixed(1)), nodes };
}

/** One system in one lab: cold start, `repeat` joins and leaves of the joiner, and drift when an agent. */
async function measure(name: string, runner: Runner, repeat: number): Promise<Measured> {
  const lab = new PeerLab(`kb${name}${process.pid % 1000}`, WORKERS, () => {});
  const failed = (what: string) => `${what} (${lab.logs(3).replace(/\n/g, " | ").slice(0, 300)})`;
  try {
    await lab.up();
    const workers = lab.state.workers.slice(0, WORKERS);
    const joiner = await lab.addJoiner();
    // The Compute Engine test server starts, and each system's RBAC and tokens are made, before the clock.
    const endpoint = runner.perNode ? undefined : await startGce(lab);
    const computeRoute = async (cidr: string) => (await gceRoutes(lab, endpoint!)).some((r) => r.destRange === cidr);
    // Every other worker's kernel route to `cidr` (present: via the joiner's address; absent: none at all).
    const kernelRoute = async (cidr: string, present: boolean) => {
      for (const w of workers) {
        const routes = await lab.kernelRoutes(w);
        if (!routes || (present ? routes.get(cidr) !== joiner.internalIP : routes.has(cidr))) return false;
      }
      return true;
    };
    const routed = (cidr: string, present: boolean) => (endpoint ? computeRoute(cidr).then((has) => has === present) : kernelRoute(cidr, present));

    const launch = await runner.prepare(lab, workers, endpoint);
    let since = performance.now();
    const first = lab.processes.length;
    await launch();
    const own = lab.processes.slice(first);
    const coldDone = endpoint ? async () => (await gceRoutes(lab, endpoint)).length === WORKERS : () => lab.kernelRoutesInPlace(workers);
    const coldTook = await within(300_000, coldDone, 20);
    if (coldTook === undefined) return { cold: failed("not every route within 300 s"), join: [], leave: [] };
    const cold = seconds(performance.now() - since);
    log(`${name}: cold start ${cold} s`);

    /**
     * The joiner's Node registered as its kubelet does and, for the agents, its daemon started once the Node
     * has its pod CIDR (as its DaemonSet pod would be): the CIDR ("" when none came in time), the processes
     * started, and when the registration began (the clock of a join).
     */
    const registerJoiner = async (): Promise<{ cidr: string; started: Started[]; registeredAt: number }> => {
      const daemon = runner.perNode ? await runner.prepare(lab, [joiner]) : undefined;
      const registeredAt = performance.now();
      await lab.createNode(joiner);
      let cidr = "";
      await within(EVENT_DEADLINE_MS, async () => Boolean((cidr = await lab.podCIDR(joiner.name))), 20);
      const before = lab.processes.length;
      await daemon?.();
      return { cidr, started: lab.processes.slice(before), registeredAt };
    };

    // The restart: the joiner joins; every process of the system stops; the joiner's Node is deleted and
    // (agents) each worker's route to the next one's pods becomes someone else's (proto static, via the
    // third worker); the system starts again on the 3 workers.
    const restart = async (): Promise<Restart> => {
      const { cidr, started } = await registerJoiner();
      own.push(...started);
      if (!cidr || (await within(EVENT_DEADLINE_MS, () => routed(cidr, true), 50)) === undefined) return { leftByStop: "the joiner's route never came", leftAfterStart: "see the stop" };
      const left = async () => (endpoint ? Number(await computeRoute(cidr)) : (await Promise.all(workers.map(async (w) => (await lab.kernelRoutes(w))?.has(cidr)))).filter(Boolean).length);
      for (const p of own.splice(0)) await lab.stop(p);
      const leftByStop = await left();
      await lab.kubectl(["delete", "node", joiner.name, "--wait=true"]);
      const next = (i: number) => workers[(i + 1) % workers.length]!;
      const third = (i: number) => workers[(i + 2) % workers.length]!;
      if (runner.perNode) {
        for (const [i, w] of workers.entries()) {
          const placed = await runProcess("ip", ["-n", w.netns, "route", "replace", next(i).podCIDR, "via", third(i).internalIP, "dev", "eth0", "proto", "static"]);
          if (placed.code !== 0) throw new Error(`placing a foreign route on ${w.name}: ${placed.stderr.trim()}`);
        }
      }
      const again = await runner.prepare(lab, workers, endpoint);
      const restarted = lab.processes.length;
      await again();
      own.push(...lab.processes.slice(restarted));
      // Every route but the foreign ones (and the deleted Node's) back in place, then SETTLE_MS for periodic loops.
      const rest = endpoint
        ? async () => { const routes = await gceRoutes(lab, endpoint); return workers.every((w) => routes.some((r) => r.destRange === w.podCIDR)); }
        : async () => {
            for (const [i, w] of workers.entries()) {
              const routes = await lab.kernelRoutes(w);
              if (!routes || routes.get(third(i).podCIDR) !== third(i).internalIP) return false;
            }
            return true;
          };
      if ((await within(120_000, rest, 50)) === undefined) return { leftByStop, leftAfterStart: failed("the other routes not back within 120 s") };
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      const overwritten = runner.perNode
        ? (await Promise.all(workers.map(async (w, i) => (await lab.kernelRoutes(w))?.get(next(i).podCIDR) === next(i).internalIP))).filter(Boolean).length
        : undefined;
      log(`${name}: restart: the deleted Node's routes left by the stop ${leftByStop}, after the start ${await left()}; foreign routes overwritten ${overwritten ?? "-"}`);
      return { leftByStop, leftAfterStart: await left(), ...(overwritten === undefined ? {} : { overwritten }) };
    };

    const join: Cell[] = [];
    const leave: Cell[] = [];
    const deleting: Cell[] = [];
    for (let i = 0; i < repeat; i++) {
      const { cidr, started, registeredAt } = await registerJoiner();
      since = registeredAt;
      join.push(cidr ? await until(since, EVENT_DEADLINE_MS, () => routed(cidr, true), `route to ${cidr}`) : "no pod CIDR");
      // The removal is watched from the delete on, while kubectl runs and the joiner's daemon stops: a
      // check begun only after those would time them too (a graceful stop of 100 ms and more).
      since = performance.now();
      const removed = cidr ? until(since, EVENT_DEADLINE_MS, () => routed(cidr, false), `removal of ${cidr}`) : Promise.resolve<Cell>("no pod CIDR");
      await lab.kubectl(["delete", "node", joiner.name, "--wait=true"]);
      deleting.push(performance.now() - since);
      for (const p of started) await lab.stop(p);
      leave.push(await removed);
      // Whatever happened, the joiner's Node is gone and its routes too before the next join.
      await within(EVENT_DEADLINE_MS, () => routed(cidr, false), 100);
      log(`${name}: join ${i + 1}/${repeat} ${typeof join[i] === "number" ? `${seconds(join[i] as number)} s` : join[i]}, leave ${typeof leave[i] === "number" ? `${seconds(leave[i] as number)} s` : leave[i]}`);
    }
    // A failed restart is that row's story; what was measured before it stays.
    const restartOrWhy = (): Promise<Restart> => restart().catch((error: Error) => ({ leftByStop: failed(`failed: ${error.message.split("\n")[0]}`), leftAfterStart: "see the stop" }));
    if (endpoint) return { cold, join, leave, deleting, restart: await restartOrWhy() };

    // Drift: worker-0's route to worker-1's pods deleted by hand, in worker-0's namespace.
    const [w0, w1] = [workers[0]!, workers[1]!];
    const others = workers.filter((w) => w !== w0);
    const deleted = await repairs(lab, workers, `${name}: drift`, async () => {
      const del = await runProcess("ip", ["-n", w0.netns, "route", "del", w1.podCIDR]);
      return del.code === 0 ? performance.now() : `ip route del: ${del.stderr.trim()}`;
    }, [w1]);
    // A link flapped: worker-0's eth0 down and up; the kernel drops every route via it (no netlink
    // event for each, in IPv4). Its address's own route comes back with the link; a sample counts
    // only once worker-0 reaches the control plane again (its connected route to the API server); the
    // clock starts at the `up` (while the link is down no route via it can be put back).
    const flapped = await repairs(lab, workers, `${name}: link flap`, async () => {
      let upAt = 0;
      for (const state of ["down", "up"]) {
        const set = await runProcess("ip", ["-n", w0.netns, "link", "set", "eth0", state]);
        if (set.code !== 0) return `ip link set eth0 ${state}: ${set.stderr.trim()}`;
        upAt = performance.now();
      }
      const reaches = async () => {
        const got = await runProcess("ip", ["-n", w0.netns, "route", "get", lab.state.controllerIP]);
        return got.code === 0 && / dev eth0 /.test(got.stdout) && !/via /.test(got.stdout);
      };
      return (await within(10_000, reaches, 20)) === undefined ? `worker-0 has no route to the API server (${lab.state.controllerIP}) 10 s after \`link set eth0 up\`` : upAt;
    }, others, BULK_REPEAT);
    // A networkd-style flush: every route in the cluster CIDR's range that is not the kernel's own (what
    // systemd-networkd does to foreign routes at a restart with ManageForeignRoutes=yes): one delete per
    // route, in one `ip -batch`, as networkd sends one RTM_DELROUTE per route. (`ip route flush root`
    // cannot: it fails with "Failed to send flush request: Invalid argument" on a route with a nexthop
    // object, podroutes' kind.)
    const flushed = await repairs(lab, workers, `${name}: flush`, async () => {
      const shown = await runProcess("ip", ["-n", w0.netns, "-json", "route", "show", "root", lab.state.clusterCIDR]);
      if (shown.code !== 0) return `ip route show root: ${shown.stderr.trim()}`;
      const foreign = (JSON.parse(shown.stdout || "[]") as { dst: string; protocol?: string }[]).filter((r) => r.protocol !== "kernel");
      const batch = foreign.map((r) => `route del ${r.dst} proto ${r.protocol ?? "boot"} table main\n`).join("");
      const flush = await runProcess("ip", ["-n", w0.netns, "-batch", "-"], batch);
      if (flush.code !== 0) return `ip -batch of ${foreign.length} route del: ${flush.stderr.trim()}`;
      return performance.now();
    }, others, BULK_REPEAT);
    const idle = await idleCost(lab, own[0]!, name).catch((error: Error) => ({ cpuSecondsPerHour: `failed: ${error.message}`, rssMb: `failed: ${error.message}` }));
    const drift = { drift: deleted, flap: flapped, flush: flushed, idle };
    return { cold, join, leave, deleting, ...drift, restart: await restartOrWhy() };
  } catch (error) {
    return { cold: failed(`failed: ${(error as Error).message.split("\n")[0]}`), join: [], leave: [] };
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
      return s === "podroutes" || row.ratio === false || typeof base !== "number" || base === 0 ? String(value) : `${value} (${(value / base).toFixed(1)}×)`;
    }),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  return [header, ...cells].map((line) => line.map((c, i) => c.padEnd(widths[i]!)).join("  ")).join("\n");
}

export async function run(argv = process.argv): Promise<void> {
  const option = (flag: string) => (argv.indexOf(flag) >= 0 ? argv[argv.indexOf(flag) + 1] : undefined);
  const jsonFile = option("--json");
  const repeat = Number(option("--repeat") ?? 10);
  const built = performance.now();
  const binaries = await peerBinaries(log);
  log(`peers ${JSON.stringify(binaries.version)} ready in ${((performance.now() - built) / 1000).toFixed(1)} s`);
  const noCloud = "writes no cloud routes (routes the kernel on each node)";
  const noKernel = "writes cloud routes, no kernel routes (see the Compute rows)";
  const agents: Partial<Record<System, Measured>> = {
    podroutes: await measure("pr", { perNode: true, prepare: (lab, workers) => startPodroutesAgents(lab, workers) }, repeat),
    flannel: await measure("fl", { perNode: true, prepare: (lab, workers) => startFlannel(lab, binaries, workers) }, repeat),
    "kube-router": await measure("kr", { perNode: true, prepare: (lab, workers) => startKubeRouter(lab, binaries, workers) }, repeat),
  };
  const controllers: Partial<Record<System, Measured>> = {
    podroutes: await measure("pc", { perNode: false, prepare: (lab, _, gce) => startPodroutesController(lab, gce!) }, repeat),
    "route-controller": await measure("rc", { perNode: false, prepare: (lab, _, gce) => startRouteController(lab, binaries, gce!) }, repeat),
  };
  const row = (figure: string, unit: string, from: Partial<Record<System, Measured>>, pick: (m: Measured) => Cell, otherwise: Cell): Row => ({
    figure,
    unit,
    values: Object.fromEntries(SYSTEMS.map((s) => [s, from[s] ? pick(from[s]!) : otherwise])) as Record<System, Cell>,
  });
  const both = (figure: string, from: Partial<Record<System, Measured>>, samples: (m: Measured) => Cell[] | undefined, otherwise: (s: System) => Cell): Row[] =>
    (["p50", "p99"] as const).map((p, i) => {
      const r = row(`${figure}, ${p}`, "s", from, (m) => { const got = samples(m); return got === undefined ? "" : got.length ? spread(got)[i]! : "not measured (the cold start failed)"; }, "");
      for (const s of SYSTEMS) if (!from[s] || r.values[s] === "") r.values[s] = otherwise(s);
      return r;
    });
  // Counts: no ratio against podroutes.
  const restartRow = (figure: string, unit: string, from: Partial<Record<System, Measured>>, pick: (r: Restart) => Cell | undefined, otherwise: Cell): Row => ({
    ...row(figure, unit, from, (m) => (m.restart ? pick(m.restart) ?? "" : "not measured (an earlier step failed)"), otherwise),
    ratio: false,
  });
  const kernelElse = (s: System) => (s === "route-controller" ? noKernel : "");
  const computeElse = (s: System) => (s === "flannel" || s === "kube-router" ? noCloud : "");
  const idleNodes = [...new Set(Object.values(agents).map((m) => m.idle?.nodes).filter((n) => n !== undefined))].join(" or ") || "?";
  const rows: Row[] = [
    row(`cold start to every kernel route, ${WORKERS} workers`, "s", agents, (m) => m.cold, noKernel),
    row(`cold start to every Compute route, ${WORKERS} Nodes, 50 ms per operation`, "s", controllers, (m) => m.cold, noCloud),
    ...both(`a Node joins → its kernel route on the ${WORKERS} other workers, ${repeat}×`, agents, (m) => m.join, kernelElse),
    ...both(`a Node leaves → its kernel route gone from the ${WORKERS} other workers, ${repeat}×`, agents, (m) => m.leave, kernelElse),
    { ...row(`... of which the trigger, \`kubectl delete node --wait=true\` as a process in the lab, p50`, "s", agents, (m) => (m.deleting?.length ? spread(m.deleting)[0] : "not measured"), noKernel), ratio: false },
    ...both(`a Node joins → its Compute route, ${repeat}×`, controllers, (m) => m.join, computeElse),
    ...both(`a Node leaves → its Compute route gone, ${repeat}×`, controllers, (m) => m.leave, computeElse),
    ...both(`a kernel route deleted by hand → put back, up to ${DRIFT_REPEAT}× (waited up to ${DRIFT_WAIT_MS / 1000} s)`, agents, (m) => m.drift, (s) => (s === "route-controller" ? noKernel : "not measured (the cold start failed)")),
    ...both(`a link flapped (worker-0's eth0 down, up) → its routes to the other workers' pods back, up to ${BULK_REPEAT}× (waited up to ${DRIFT_WAIT_MS / 1000} s)`, agents, (m) => m.flap, (s) => (s === "route-controller" ? noKernel : "not measured (the cold start failed)")),
    ...both(`a networkd-style flush (worker-0's non-kernel routes in the cluster CIDR) → back, up to ${BULK_REPEAT}× (waited up to ${DRIFT_WAIT_MS / 1000} s)`, agents, (m) => m.flush, (s) => (s === "route-controller" ? noKernel : "not measured (the cold start failed)")),
    row(`worker-0's daemon idle, ${IDLE_MS / 1000} s window scaled to an hour, at the lab's size only (${idleNodes} Nodes), CPU (utime + stime, children not included)`, "s/h", agents, (m) => m.idle?.cpuSecondsPerHour ?? "not measured (an earlier step failed)", noKernel),
    row(`... its RSS (VmRSS) at the end of that window`, "MB", agents, (m) => m.idle?.rssMb ?? "not measured (an earlier step failed)", noKernel),
    restartRow(`foreign routes (proto static, placed before start) on pod CIDRs overwritten, ${SETTLE_MS / 1000} s after the rest were in place`, `of ${WORKERS}`, agents, (r) => r.overwritten, noKernel),
    restartRow("a Node deleted while the system was down: its kernel routes left by the stop", `of ${WORKERS}`, agents, (r) => r.leftByStop, noKernel),
    restartRow(`... and still left ${SETTLE_MS / 1000} s after the restart put every other route back`, `of ${WORKERS}`, agents, (r) => r.leftAfterStart, noKernel),
    restartRow("a Node deleted while the controller was down: its Compute route left by the stop", "of 1", controllers, (r) => r.leftByStop, noCloud),
    restartRow(`... and still left ${SETTLE_MS / 1000} s after the restart put every other route back`, "of 1", controllers, (r) => r.leftAfterStart, noCloud),
  ];
  console.log(table(rows));
  console.log(`versions: ${JSON.stringify(binaries.version)}; ratios are the system's figure over podroutes'`);
  if (jsonFile) await writeFile(jsonFile, `${JSON.stringify({ systems: SYSTEMS, rows }, null, 2)}\n`);
}
