/**
 * The agents' path probes (issue 23 item 1) in the lab: four workers, an agent on each with the default
 * probe flags (2 probes/s, a peer again every 30 s, UDP 9466 on cnio0's gateway 10.200.N.1), against the
 * Kubernetes API test server. All paths turn reachable; then worker-1's route to worker-0's pod CIDR is
 * replaced by a blackhole of another protocol (the agent never overwrites a route it does not own, so it
 * stays broken; worker-1's own route to it is right up to then, worker-0's route back is untouched), and
 * exactly the two affected ordered pairs (worker-0 → worker-1: the reply is dropped on worker-1;
 * worker-1 → worker-0: the request is) turn unreachable within the 60 s: on /debug/paths, in the
 * metric, an Event on each of the two Nodes and on no other, the same pairs the lab's pod-to-pod pings
 * find broken. The blackhole removed, the agent puts its route back and both recover. Needs root (runs
 * in CI); processes are stopped by PID and the lab removed in `after`, even when a test fails.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { addLabProcess, labDown, labUp, nodeCommand, removeLabProcess, type LabState } from "../src/lab/lab.js";
import { checkPodPaths } from "../src/lab/paths.js";
import { run } from "../src/process.js";
import { admin, agentRbacRules, getIn, nodeObject, startAgentProcess, startKubeServerProcess, within, writeKubeconfig, type KubeServerProcess, type Started } from "../testkit/agent-lab.js";
import { needsRoot } from "../testkit/root.js";

const gate = needsRoot();
const LAB = `paths${process.pid % 100000}`;
const AGENT_TOKEN = "agent-token";
const HEALTH = "http://127.0.0.1:9465";
/** The bound: a broken path reported within 60 s in the lab. */
const REPORTED_WITHIN_MS = 60_000;

interface DebugPaths {
  node: string;
  address: string;
  bound: boolean;
  peers: number;
  counts: { unknown: number; reachable: number; unreachable: number };
  unreachable: { name: string; address: string; error: string | null }[];
}

describe("agents' path probes in the lab", { ...gate, timeout: 400_000 }, () => {
  let state: LabState;
  let dir: string;
  let server: KubeServerProcess;
  const agents = new Map<string, Started>();
  const netns = (name: string) => state.workers.find((w) => w.name === name)!.netns;

  function logs(): string {
    return [...agents].map(([name, agent]) => `--- agent ${name}:\n${agent.log().split("\n").filter((l) => /path|error/i.test(l)).slice(-10).join("\n")}`).join("\n");
  }

  async function debugPaths(name: string): Promise<DebugPaths> {
    const response = await getIn(netns(name), `${HEALTH}/debug/paths`);
    assert.equal(response.status, 200, response.body);
    return JSON.parse(response.body) as DebugPaths;
  }

  async function metric(name: string, series: string): Promise<number | undefined> {
    const response = await getIn(netns(name), `${HEALTH}/metrics`);
    const line = response.body.split("\n").find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  }

  /** Each worker's unreachable peers, as /debug/paths lists them. */
  async function unreachableByWorker(): Promise<Record<string, string[]>> {
    const result: Record<string, string[]> = {};
    for (const w of state.workers) result[w.name] = (await debugPaths(w.name)).unreachable.map((u) => u.name);
    return result;
  }

  const allReachable = async () => {
    for (const w of state.workers) {
      const debug = await debugPaths(w.name);
      if (debug.counts.reachable !== state.workers.length - 1) return false;
    }
    return true;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-paths-e2e-"));
    ({ state } = await labUp({ name: LAB, workers: 4 }));
    server = await startKubeServerProcess({
      netns: state.controllerNetns!,
      listen: `${state.controllerIP}:6443`,
      stateDir: dir,
      tokens: ["admin-token", `${AGENT_TOKEN}=${agentRbacRules()}`],
      nodes: state.workers.map((w) => nodeObject(w.name, w.internalIP, w.podCIDR)),
    });
    await addLabProcess(LAB, { netns: state.controllerNetns!, pid: server.pid, what: "Kubernetes API test server" });
    const kubeconfig = await writeKubeconfig(join(dir, "kubeconfig"), server, AGENT_TOKEN);
    for (const w of state.workers) {
      const agent = startAgentProcess(nodeCommand(state, w.name, []), ["--kubeconfig", kubeconfig, "--listen", "127.0.0.1:9465", "--log-format", "json"], join(dir, `agent-${w.name}.log`), { NODE_NAME: w.name });
      agents.set(w.name, agent);
      await addLabProcess(LAB, { netns: w.netns, pid: agent.pid, what: `podroutes agent on ${w.name}` });
    }
  });

  after(async () => {
    for (const agent of agents.values()) {
      await agent.stop().catch(() => undefined);
      await removeLabProcess(LAB, agent.pid).catch(() => undefined);
    }
    if (server) {
      await server.stop().catch(() => undefined);
      await removeLabProcess(LAB, server.pid).catch(() => undefined);
    }
    await labDown(LAB);
    await rm(dir, { recursive: true, force: true });
  });

  it("every agent probes every peer's bridge gateway from its own, and every path is reachable", async () => {
    for (const w of state.workers) {
      const up = await within(60_000, async () => (await getIn(w.netns, `${HEALTH}/readyz`)).status === 200, 200);
      assert.ok(up !== undefined, `agent on ${w.name} not ready\n${logs()}`);
    }
    const took = await within(REPORTED_WITHIN_MS, allReachable, 500);
    assert.ok(took !== undefined, `not all paths reachable: ${JSON.stringify(await unreachableByWorker())}\n${logs()}`);
    for (const w of state.workers) {
      const debug = await debugPaths(w.name);
      assert.equal(debug.address, w.podGateway);
      assert.ok(debug.bound);
      assert.deepEqual(debug.counts, { unknown: 0, reachable: 3, unreachable: 0 });
      assert.equal(await metric(w.name, 'podroutes_path_peers{state="reachable"}'), 3);
      assert.equal(await metric(w.name, 'podroutes_path_peers{state="unreachable"}'), 0);
      assert.ok((await metric(w.name, "podroutes_path_rtt_seconds_count"))! >= 3);
      assert.ok((await metric(w.name, "podroutes_path_requests_answered_total"))! >= 3, "its peers' probes answered");
    }
    process.stderr.write(`# every path reachable ${took.toFixed(0)} ms after the first check\n`);
  });

  it("a return route broken on worker-1: exactly worker-0 ⇄ worker-1 unreachable within 60 s, an Event on each of their Nodes; fixed, both recover", async () => {
    const [w0, w1] = [state.workers[0]!, state.workers[1]!];
    const before = (await admin(server).events()).length;
    // Replaced with a route of another protocol: the agent reports the conflict and never overwrites it.
    const broke = await run("ip", ["-n", w1.netns, "route", "replace", "blackhole", w0.podCIDR, "proto", "static"]);
    assert.equal(broke.code, 0, broke.stderr);
    const expected = { [w0.name]: [w1.name], [w1.name]: [w0.name], [state.workers[2]!.name]: [], [state.workers[3]!.name]: [] };
    const took = await within(REPORTED_WITHIN_MS, async () => JSON.stringify(await unreachableByWorker()) === JSON.stringify(expected), 500);
    assert.ok(took !== undefined, `after ${REPORTED_WITHIN_MS} ms: ${JSON.stringify(await unreachableByWorker())}\n${logs()}`);
    process.stderr.write(`# broken return route: both affected pairs on /debug/paths ${took.toFixed(0)} ms after the break\n`);
    for (const w of state.workers) assert.equal(await metric(w.name, 'podroutes_path_peers{state="unreachable"}'), w === w0 || w === w1 ? 1 : 0, w.name);
    assert.match((await debugPaths(w1.name)).unreachable[0]!.error!, /send failed/, "worker-1's requests die in its blackhole");
    assert.match((await debugPaths(w0.name)).unreachable[0]!.error!, /no reply/, "worker-0's replies die in worker-1's blackhole");
    // The pods agree: exactly these two ordered pairs fail.
    const pods = (await checkPodPaths(state)).filter((c) => !c.ok).map((c) => c.message.replace(/ \(.*$/, "").replace(/^pod /, ""));
    assert.equal(pods.length, 2, pods.join("\n"));

    const events = await within(REPORTED_WITHIN_MS, async () => (await admin(server).events()).slice(before).filter((e: any) => e.reason === "PodroutesPathsUnreachable").length >= 2, 500);
    assert.ok(events !== undefined, `no Events: ${JSON.stringify(await admin(server).events())}`);
    const warnings = (await admin(server).events()).slice(before).filter((e: any) => e.reason === "PodroutesPathsUnreachable") as any[];
    assert.deepEqual(warnings.map((e) => e.involvedObject.name).sort(), [w0.name, w1.name]);
    assert.match(warnings.find((e) => e.involvedObject.name === w0.name).message, new RegExp(`unreachable: ${w1.name} \\(${w1.podGateway.replace(/\./g, "\\.")}`));
    assert.ok(logs().includes("path probes: peers unreachable"));

    const fixed = await run("ip", ["-n", w1.netns, "route", "del", "blackhole", w0.podCIDR, "proto", "static"]);
    assert.equal(fixed.code, 0, fixed.stderr);
    const recovered = await within(REPORTED_WITHIN_MS, allReachable, 500);
    assert.ok(recovered !== undefined, `not recovered: ${JSON.stringify(await unreachableByWorker())}\n${logs()}`);
    process.stderr.write(`# fixed: every path reachable again ${recovered.toFixed(0)} ms after the fix\n`);
    // The recovery Event waits out the minute since the last Event of the agent.
    const normal = await within(2 * REPORTED_WITHIN_MS, async () => (await admin(server).events()).slice(before).filter((e: any) => e.reason === "PodroutesPathsRecovered").length >= 2, 500);
    assert.ok(normal !== undefined, `no recovery Events: ${JSON.stringify(await admin(server).events())}`);
    const recoveries = (await admin(server).events()).slice(before).filter((e: any) => e.reason === "PodroutesPathsRecovered") as any[];
    assert.deepEqual(recoveries.map((e) => [e.involvedObject.name, e.type]).sort(), [[w0.name, "Normal"], [w1.name, "Normal"]]);
    assert.equal((await checkPodPaths(state)).filter((c) => !c.ok).length, 0);
  });
});
