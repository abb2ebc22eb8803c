/**
 * The route set against the REAL control plane (etcd, kube-apiserver, kube-controller-manager in the
 * lab's controller namespace): two agents run with `--publish-route-set` (they watch every Node and
 * elect a publisher on the Lease podroutes-route-set), the others with `--nodes-from route-set` (they
 * watch the shards and their own Node, never every Node), all in-cluster with the ServiceAccount's
 * token and deploy/'s RBAC. The publisher is SIGKILLed with a change pending; kubelet heartbeats must
 * write nothing. Needs root and Go: runs in CI, skips loudly elsewhere. Every process is stopped by its
 * PID, the lab removed.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { addLabProcess, labDown, labUp, nodeCommand, removeLabProcess, type LabState, type LabWorker } from "../src/lab/lab.js";
import { checkPodPaths } from "../src/lab/paths.js";
import type { ControlPlane } from "../src/lab/kubernetes/control-plane.js";
import { DEFAULT_ROUTE_SET_SHARDS, ROUTE_SET_LABEL, ROUTE_SET_LEASE } from "../src/kube/route-set.js";
import { ROUTE_SET_LEASE_TIMING } from "../src/agent/route-set-publisher.js";
import { getIn, inClusterEnv, startAgentProcess, within, type Started } from "../testkit/agent-lab.js";
import { convergedOn, kubectlOk, labControlPlane, ownedRoutes, registerNode } from "../testkit/kubernetes/lab-plane.js";
import { realControlPlaneGate } from "../testkit/kubernetes/gate.js";

const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));
const LAB = `krset${process.pid % 100000}`;
const HEALTH = "http://127.0.0.1:9465";
/** The readers' bound for a publisher gone (the default is 3 minutes). */
const FALLBACK_S = 6;

describe("the route set against the real kube-apiserver: publishers elected on a Lease, agents reading the set", { ...realControlPlaneGate(), timeout: 1_800_000 }, () => {
  let state: LabState;
  let dir: string;
  let plane: ControlPlane | undefined;
  let token: string;
  const agents = new Map<string, Started>();
  const worker = (name: string) => state.workers.find((w) => w.name === name)!;
  const kubectl = (args: string[], input?: string) => kubectlOk(plane!, args, input);
  const logs = () => [...agents].map(([name, agent]) => `--- agent ${name}:\n${agent.log().split("\n").slice(-12).join("\n")}`).join("\n");
  const shardVersions = async () => (JSON.parse(await kubectl(["get", "configmaps", "-n", "podroutes", "-l", ROUTE_SET_LABEL, "-o", "json"])) as { items: { metadata: { name: string; resourceVersion: string } }[] }).items.map((cm) => `${cm.metadata.name}@${cm.metadata.resourceVersion}`).sort();
  const leaseHolder = async () => (await kubectl(["get", "lease", ROUTE_SET_LEASE, "-n", "podroutes", "-o", "jsonpath={.spec.holderIdentity}"])).trim();

  async function startAgent(w: LabWorker, mode: "publisher" | "reader"): Promise<void> {
    const env = await inClusterEnv(join(dir, `sa-${w.name}`), plane!, token, "podroutes");
    const flags = mode === "publisher" ? ["--publish-route-set"] : ["--nodes-from", "route-set", "--route-set-fallback-after", `${FALLBACK_S}s`];
    const agent = startAgentProcess(nodeCommand(state, w.name, []), [...flags, "--listen", "127.0.0.1:9465", "--resync", "10m", "--set-node-condition", "--path-probes", "off", "--log-format", "json"], join(dir, `agent-${w.name}.log`), { ...env, NODE_NAME: w.name });
    agents.set(w.name, agent);
    await addLabProcess(LAB, { netns: w.netns, pid: agent.pid, what: `podroutes agent (${mode}) on ${w.name}` });
    const took = await within(60_000, async () => (await getIn(w.netns, `${HEALTH}/readyz`)).status === 200, 100);
    assert.ok(took !== undefined, `agent on ${w.name} not ready in 60 s\n${logs()}`);
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-route-set-"));
    ({ state } = await labUp({ name: LAB, workers: 4 }));
    plane = await labControlPlane(state, dir);
    for (const file of ["namespace.yaml", "agent-rbac.yaml", "route-set-rbac.yaml"]) await kubectl(["apply", "--server-side", "-f", join(DEPLOY, file)]);
    token = await plane.createToken("podroutes", "podroutes-agent");
    // One at a time, so the allocator hands out the lab's pod CIDRs in order.
    for (const w of state.workers.slice(0, 3)) assert.equal(await registerNode(plane, w), w.podCIDR);
  });

  after(async () => {
    for (const [name, agent] of agents) {
      await agent.stop().catch(() => undefined);
      await removeLabProcess(LAB, agent.pid).catch(() => undefined);
      agents.delete(name);
    }
    if (plane) await plane.stop().catch(() => undefined);
    await labDown(LAB);
    await rm(dir, { recursive: true, force: true });
  });

  it("two publishers, one elected: the set published whole; a reader routes from it, pods reach pods, its Node's condition is set", async () => {
    const [w0, w1, w2] = state.workers;
    await startAgent(w0!, "publisher");
    await startAgent(w1!, "publisher");
    await startAgent(w2!, "reader");
    const workers = state.workers.slice(0, 3);
    assert.ok((await within(15_000, () => convergedOn(workers))) !== undefined, logs());
    assert.equal((await shardVersions()).length, DEFAULT_ROUTE_SET_SHARDS);
    assert.ok(["worker-0", "worker-1"].includes(await leaseHolder()));
    const checks = await checkPodPaths({ ...state, workers });
    assert.deepEqual(checks.filter((c) => !c.ok).map((c) => c.message), [], logs());
    const condition = await within(15_000, async () => {
      const node = JSON.parse(await kubectl(["get", "node", w2!.name, "-o", "json"])) as { status: { conditions: { type: string; status: string }[] } };
      return node.status.conditions.find((c) => c.type === "NetworkUnavailable")?.status === "False";
    }, 200);
    assert.ok(condition !== undefined, `the reader did not set its Node's condition\n${logs()}`);
    // The reader never lists or watches every Node: its log names the route set as its source.
    assert.match(agents.get(w2!.name)!.log(), /"read the route set whole"/);
    assert.doesNotMatch(agents.get(w2!.name)!.log(), /"listed Nodes"/);
  });

  it("kubelet heartbeats (status patches of every Node) write no shard", async () => {
    const before = await shardVersions();
    for (let round = 0; round < 3; round++) {
      for (const w of state.workers.slice(0, 3)) {
        const now = new Date(Date.now() + round * 1000).toISOString().replace(/\.\d+Z$/, "Z");
        await kubectl(["patch", "node", w.name, "--subresource=status", "--type=strategic", "-p", JSON.stringify({ status: { conditions: [{ type: "Ready", status: "True", reason: "KubeletReady", message: "kubelet is posting ready status", lastHeartbeatTime: now }] } })]);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.deepEqual(await shardVersions(), before);
  });

  it("a Node joins: a reader on it and every other agent route it", async () => {
    const joiner = state.workers[3]!;
    assert.equal(await registerNode(plane!, joiner), joiner.podCIDR);
    await startAgent(joiner, "reader");
    const took = await within(10_000, () => convergedOn(state.workers.slice(0, 4)));
    assert.ok(took !== undefined, logs());
  });

  it("the elected publisher SIGKILLed with a change pending: the standby takes the Lease and publishes it; no reader drops a route meanwhile", async () => {
    const leader = await leaseHolder();
    const standby = leader === "worker-0" ? "worker-1" : "worker-0";
    const killed = agents.get(leader)!;
    killed.child.kill("SIGKILL");
    await killed.exited;
    const killedAt = performance.now();
    // The change: worker-3's Node deleted while no publisher runs.
    await kubectl(["delete", "node", "worker-3", "--wait=true"]);
    const remaining = state.workers.slice(0, 3);
    const live = [worker(standby), worker("worker-2")];
    const dropped: string[] = [];
    const gone = await within(45_000, async () => {
      let done = true;
      for (const w of live) {
        const routes = await ownedRoutes(w);
        // No live agent loses a route to a Node that is still there, at any moment of the handover.
        for (const o of remaining) if (o.name !== w.name && routes.get(o.podCIDR) !== o.internalIP) dropped.push(`${w.name} → ${o.name}`);
        if (routes.has(state.workers[3]!.podCIDR)) done = false;
      }
      return done;
    }, 100);
    assert.deepEqual(dropped, [], "a live agent lost a route to a Node still there");
    assert.ok(gone !== undefined, `worker-3's routes not gone within 45 s of the publisher's death\n${logs()}`);
    process.stderr.write(`# publisher ${leader} SIGKILLed; worker-3's Node deleted; its routes gone from every live agent ${((performance.now() - killedAt) / 1000).toFixed(1)} s later (lease ${ROUTE_SET_LEASE_TIMING.leaseDurationMs / 1000} s)\n`);
    assert.equal(await leaseHolder(), standby);
  });

  it("every publisher gone: the readers fall back to watching Nodes after the bound, and a Node registered then is routed", async () => {
    const standby = await leaseHolder();
    const last = agents.get(standby)!;
    last.child.kill("SIGKILL");
    await last.exited;
    const killedAt = performance.now();
    const joiner = state.workers[3]!;
    // Registered again, it gets the allocator's next pod CIDR, not its old one: any will do here.
    const podCIDR = await registerNode(plane!, joiner);
    const reader = worker("worker-2");
    const routed = await within(60_000, async () => (await ownedRoutes(reader)).get(podCIDR) === joiner.internalIP, 200);
    assert.ok(routed !== undefined, `worker-3 not routed on worker-2 within 60 s with no publisher\n${logs()}`);
    assert.match(agents.get("worker-2")!.log(), /no publisher for a while; watching every Node/);
    // Not before the bound: the fallback is for a publisher gone, not a slow one. The bound runs from the
    // last read that saw the Lease change, which may be a read interval (a third of it) before the kill.
    assert.ok(performance.now() - killedAt >= (FALLBACK_S * 2_000) / 3, "routed sooner than the bound allows: not by the fallback");
    process.stderr.write(`# every publisher SIGKILLed; a Node registered; routed on a reader ${((performance.now() - killedAt) / 1000).toFixed(1)} s after (fallback after ${FALLBACK_S} s)\n`);
  });
});
