/**
 * `podroutes agent` against the REAL Kubernetes control plane: etcd, kube-apiserver and
 * kube-controller-manager (built from the Go module in testkit/kubernetes/go, cached outside the
 * repository) in the lab's controller namespace. deploy/namespace.yaml and deploy/agent-rbac.yaml are
 * applied with the real kubectl (server-side dry run first); each agent runs in its worker as the
 * DaemonSet's pod does, in-cluster with its ServiceAccount's own token from TokenRequest; Nodes are
 * registered through the API and get their pod CIDRs from the real node IPAM controller. Needs root
 * and Go: runs in CI, skips loudly elsewhere. Every process is stopped by its PID, the lab removed.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { addLabProcess, labDown, labUp, nodeCommand, removeLabProcess, type LabState, type LabWorker } from "../src/lab/lab.js";
import { checkPodPaths } from "../src/lab/paths.js";
import { run } from "../src/process.js";
import { getIn, inClusterEnv, startAgentProcess, within, writeKubeconfig, type Started } from "../testkit/agent-lab.js";
import type { ControlPlane } from "../src/lab/kubernetes/control-plane.js";
import { convergedOn, labControlPlane, ownedRoutes, registerNode } from "../testkit/kubernetes/lab-plane.js";
import { realControlPlaneGate } from "../testkit/kubernetes/gate.js";

const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));
const LAB = `kreal${process.pid % 100000}`;
const HEALTH = "http://127.0.0.1:9465";
const DEADLINE_MS = 2000;

describe("the agent against the real kube-apiserver, etcd and kube-controller-manager", { ...realControlPlaneGate(), timeout: 1_800_000 }, () => {
  let state: LabState;
  let dir: string;
  let plane: ControlPlane | undefined;
  let agentToken: string;
  const agents = new Map<string, Started>();
  const worker = (name: string) => state.workers.find((w) => w.name === name)!;

  const kubectl = async (args: string[], input?: string) => {
    const result = await plane!.kubectl(args, input);
    assert.equal(result.code, 0, `kubectl ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  const nodeJson = async (name: string) => JSON.parse(await kubectl(["get", "node", name, "-o", "json"])) as any;

  const register = (w: LabWorker) => registerNode(plane!, w);

  function logs(): string {
    return [...agents].map(([name, agent]) => `--- agent ${name}:\n${agent.log().split("\n").slice(-15).join("\n")}`).join("\n");
  }

  const owned = (name: string) => ownedRoutes(worker(name));
  const converged = (workers: LabWorker[]) => convergedOn(workers);

  async function startAgent(name: string): Promise<void> {
    const env = await inClusterEnv(join(dir, `sa-${name}`), plane!, agentToken, "podroutes");
    const agent = startAgentProcess(nodeCommand(state, name, []), ["--listen", "127.0.0.1:9465", "--resync", "10m", "--set-node-condition", "--log-format", "json"], join(dir, `agent-${name}.log`), { ...env, NODE_NAME: name });
    agents.set(name, agent);
    await addLabProcess(LAB, { netns: worker(name).netns, pid: agent.pid, what: `podroutes agent on ${name}` });
    const took = await within(60_000, async () => (await getIn(worker(name).netns, `${HEALTH}/readyz`)).status === 200, 100);
    assert.ok(took !== undefined, `agent on ${name} not ready in 60 s\n${logs()}`);
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-real-cp-"));
    ({ state } = await labUp({ name: LAB, workers: 4 }));
    plane = await labControlPlane(state, dir);
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

  it("the real kubectl shows the real release, and deploy/ applies (server-side dry run, then for real)", async () => {
    const version = JSON.parse(await kubectl(["version", "-o", "json"])) as { serverVersion: { gitVersion: string } };
    assert.equal(version.serverVersion.gitVersion, plane!.binaries.release === "(given)" ? version.serverVersion.gitVersion : plane!.binaries.release);
    assert.match(version.serverVersion.gitVersion, /^v1\.\d+\.\d+/);
    // The namespace first, for real: the namespaced objects' dry run needs it to exist.
    await kubectl(["apply", "--server-side", "--dry-run=server", "-f", join(DEPLOY, "namespace.yaml")]);
    await kubectl(["apply", "--server-side", "-f", join(DEPLOY, "namespace.yaml")]);
    for (const file of ["agent-rbac.yaml", "agent-daemonset.yaml"]) {
      const dry = await kubectl(["apply", "--server-side", "--dry-run=server", "-f", join(DEPLOY, file)]);
      assert.match(dry, /serverside-applied \(server dry run\)/, dry);
    }
    // The DaemonSet itself is validated (dry run) but not run: no kubelet here; its pods are the agents below.
    await kubectl(["apply", "--server-side", "-f", join(DEPLOY, "agent-rbac.yaml")]);
    agentToken = await plane!.createToken("podroutes", "podroutes-agent");
    assert.ok(agentToken.split(".").length === 3, "TokenRequest gives a JWT");
  });

  it("Nodes registered through the API get pod CIDRs from the real kube-controller-manager; kubectl shows them", async () => {
    // One at a time, so the allocator hands out 10.200.0.0/24, .1, .2 as the lab's pods are addressed.
    for (const w of state.workers.slice(0, 3)) assert.equal(await register(w), w.podCIDR, `${w.name}'s pod CIDR from the node IPAM controller`);
    const wide = await kubectl(["get", "nodes", "-o", "custom-columns=NAME:.metadata.name,POD_CIDR:.spec.podCIDR,IP:.status.addresses[0].address", "--no-headers"]);
    for (const w of state.workers.slice(0, 3)) assert.match(wide, new RegExp(`^${w.name}\\s+${w.podCIDR.replace(/\./g, "\\.")}\\s+${w.internalIP.replace(/\./g, "\\.")}$`, "m"), wide);
  });

  it("first sync with the ServiceAccount's token: every pod reaches every other, NetworkUnavailable=False as the real server stored it", async () => {
    const workers = state.workers.slice(0, 3);
    for (const w of workers) await startAgent(w.name);
    assert.ok(await within(10_000, () => converged(workers)) !== undefined, logs());
    const checks = await checkPodPaths({ ...state, workers });
    assert.deepEqual(checks.filter((c) => !c.ok).map((c) => c.message), [], logs());
    const set = await within(15_000, async () => {
      for (const w of workers) {
        const condition = ((await nodeJson(w.name)).status.conditions as any[]).find((c) => c.type === "NetworkUnavailable");
        if (condition?.status !== "False") return false;
      }
      return true;
    }, 200);
    assert.ok(set !== undefined, `NetworkUnavailable not False on every Node\n${logs()}`);
  });

  it("a Node joins (IPAM gives its CIDR) and is routed within 2 s; deleted, its routes go within 2 s", async () => {
    const added = state.workers[3]!;
    await startAgent(added.name);
    const workers = state.workers.slice(0, 4);
    const created = performance.now();
    assert.equal(await register(added), added.podCIDR);
    const joined = await within(DEADLINE_MS + 30_000, () => converged(workers));
    assert.ok(joined !== undefined, logs());
    process.stderr.write(`# node joined: routed on every worker ${(performance.now() - created).toFixed(0)} ms after its create (IPAM included)\n`);
    await kubectl(["delete", "node", added.name, "--wait=false"]);
    const left = await within(DEADLINE_MS, () => converged(state.workers.slice(0, 3)), 20);
    assert.ok(left !== undefined, `routes to ${added.name} still present after ${DEADLINE_MS} ms\n${logs()}`);
  });

  it("drift: a route deleted by hand comes back", async () => {
    const w = state.workers[0]!;
    const target = state.workers[1]!;
    const removed = await run("ip", ["-n", w.netns, "route", "del", target.podCIDR, "proto", "150"]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.ok(await within(DEADLINE_MS, async () => (await owned(w.name)).get(target.podCIDR) === target.internalIP) !== undefined, logs());
  });

  it("Events as the real API server stores them: a Node whose internal IP lies in another's pod CIDR is quarantined, and its own agent says so on it", async () => {
    // worker-3's agent still runs (the join test above); its Node comes back with an address inside
    // worker-1's pod CIDR, so it is the later claimant, left out of routing, and its agent posts the Event.
    const taken = state.workers[1]!;
    const inside = taken.podCIDR.replace(/\.0\/24$/, ".7");
    const self = state.workers[3]!;
    const bad = { apiVersion: "v1", kind: "Node", metadata: { name: self.name }, status: { addresses: [{ type: "InternalIP", address: inside }] } };
    await kubectl(["delete", "node", self.name, "--ignore-not-found", "--wait=true"]);
    await kubectl(["create", "-f", "-"], JSON.stringify(bad));
    try {
      type StoredEvent = { reason: string; type: string; message: string; count?: number; source?: { component?: string; host?: string }; involvedObject: { kind: string; name: string; uid?: string } };
      let events: StoredEvent[] = [];
      const posted = await within(15_000, async () => {
        events = (JSON.parse(await kubectl(["get", "events", "-n", "default", "--field-selector", `involvedObject.name=${self.name}`, "-o", "json"])) as { items: StoredEvent[] }).items;
        return events.some((e) => e.reason === "PodroutesQuarantined");
      }, 200);
      assert.ok(posted !== undefined, `no PodroutesQuarantined Event on Node ${self.name}\n${logs()}`);
      const event = events.find((e) => e.reason === "PodroutesQuarantined")!;
      assert.equal(event.type, "Warning");
      assert.equal(event.involvedObject.kind, "Node");
      assert.equal(event.involvedObject.uid, (await nodeJson(self.name)).metadata.uid, "the Event names the Node by its uid, as the server stored it");
      assert.match(event.message, new RegExp(inside.replace(/\./g, "\\.")));
      // worker-1, whose pod CIDR holds the address, keeps its routes everywhere; the quarantined Node gets none.
      assert.ok(await converged(state.workers.slice(0, 3)), logs());
    } finally {
      await kubectl(["delete", "node", self.name, "--wait=true"]);
    }
  });

  it("a relist after a real 410 Gone: the API server crashes, etcd is compacted past the agents' resourceVersion, and they list again", async () => {
    const relists = async (name: string) => {
      const body = (await getIn(worker(name).netns, `${HEALTH}/metrics`)).body;
      return Number(/^podroutes_relists_total (\d+)/m.exec(body)?.[1] ?? NaN);
    };
    const workers = state.workers.slice(0, 3);
    const before = await Promise.all(workers.map((w) => relists(w.name)));
    // Writes the Node watches never see move etcd's revision past every agent's resourceVersion.
    for (let i = 0; i < 5; i++) await kubectl(["create", "configmap", `bump-${i}`, "-n", "podroutes"]);
    let compactedAt = 0;
    await plane!.crashApiServer(async () => {
      compactedAt = await plane!.compactEtcd();
    });
    process.stderr.write(`# etcd compacted at revision ${compactedAt}, kube-apiserver restarted\n`);
    const relisted = await within(30_000, async () => {
      const now = await Promise.all(workers.map((w) => relists(w.name)));
      return now.every((n, i) => n > before[i]!);
    }, 200);
    assert.ok(relisted !== undefined, `not every agent relisted after the 410: ${before} -> ${await Promise.all(workers.map((w) => relists(w.name)))}\n${logs()}`);
    // And the agents serve changes again: a Node joins after the relist and is routed everywhere.
    // (The allocator hands out the next free block, not the one the lab's pod has: routes are checked
    // against what the Node was given.)
    const added = state.workers[3]!;
    const cidr = await register(added);
    const routed = await within(10_000, async () => {
      for (const w of workers) if ((await owned(w.name)).get(cidr) !== added.internalIP) return false;
      return true;
    });
    assert.ok(routed !== undefined, `${cidr} via ${added.internalIP} not on every worker\n${logs()}`);
  });

  it("least privilege, proven by the real authorizer: the agent's own token may not change a Node's spec, nor read Secrets", async () => {
    const kubeconfig = await writeKubeconfig(join(dir, "agent.kubeconfig"), plane!, agentToken);
    const asAgent = (args: string[]) => run("ip", ["netns", "exec", state.controllerNetns!, "kubectl", "--kubeconfig", kubeconfig, ...args]);
    const allowed = await asAgent(["auth", "can-i", "watch", "nodes"]);
    assert.equal(allowed.stdout.trim(), "yes", allowed.stderr);
    const patch = await asAgent(["patch", "node", "worker-0", "--type", "merge", "-p", '{"spec":{"unschedulable":true}}']);
    assert.notEqual(patch.code, 0);
    assert.match(patch.stderr, /forbidden: User "system:serviceaccount:podroutes:podroutes-agent" cannot patch resource "nodes"/, patch.stderr);
    const secrets = await asAgent(["get", "secrets", "-A"]);
    assert.notEqual(secrets.code, 0);
    assert.match(secrets.stderr, /forbidden/);
    // Nothing the agents asked for was refused: their logs carry no 403.
    assert.doesNotMatch(logs(), /"code":403|\b403\b.*Forbidden/);
  });
});
