/**
 * The agent against a REAL kube-apiserver whose revision went backwards (issue 25 item 4): etcd's store is
 * replaced by an empty one under the running control plane (as after a restore from an old backup, or a
 * fresh etcd under the same address), so the agent's resourceVersion is newer than anything the server
 * has. The real server does not refuse the agent's watch from it: it answers 200 and says nothing (no
 * event, no bookmark) until its revision passes that version. The agent checks its version after the
 * broken connection, hears "Too large resource version" (504, cause ResourceVersionTooLarge), lists
 * again, and serves what the new store holds: a Node created after the rewind is routed, one the new
 * store does not have is not. Needs root and Go: runs in CI, skips loudly elsewhere.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { addLabProcess, labDown, labUp, nodeCommand, removeLabProcess, type LabState, type LabWorker } from "../src/lab/lab.js";
import { run } from "../src/process.js";
import { getIn, startAgentProcess, within, writeKubeconfig, type Started } from "../testkit/agent-lab.js";
import type { ControlPlane } from "../src/lab/kubernetes/control-plane.js";
import { labControlPlane } from "../testkit/kubernetes/lab-plane.js";
import { realControlPlaneGate } from "../testkit/kubernetes/gate.js";

const LAB = `krew${process.pid % 100000}`;
const HEALTH = "http://127.0.0.1:9465";

/** A Node with its pod CIDR given (the node IPAM controller's informers would be as stale as anyone's after the rewind). */
function labNode(worker: LabWorker, labels: Record<string, string> = {}): object {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: worker.name, labels: { "kubernetes.io/hostname": worker.name, ...labels } },
    spec: { podCIDR: worker.podCIDR, podCIDRs: [worker.podCIDR] },
    status: { addresses: [{ type: "InternalIP", address: worker.internalIP }, { type: "Hostname", address: worker.name }] },
  };
}

describe("the agent when the real API server's revision goes backwards (etcd replaced)", { ...realControlPlaneGate(), timeout: 600_000 }, () => {
  let state: LabState;
  let dir: string;
  let plane: ControlPlane | undefined;
  let agent: Started | undefined;
  const worker = (name: string) => state.workers.find((w) => w.name === name)!;

  const kubectl = async (args: string[], input?: string) => {
    const result = await plane!.kubectl(args, input);
    assert.equal(result.code, 0, `kubectl ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  async function owned(name: string): Promise<Map<string, string>> {
    const result = await run("ip", ["-n", worker(name).netns, "-N", "-json", "route", "show", "proto", "150"]);
    assert.equal(result.code, 0, result.stderr);
    return new Map((JSON.parse(result.stdout || "[]") as { dst: string; gateway?: string }[]).map((r) => [r.dst, r.gateway ?? ""]));
  }
  async function metric(name: string): Promise<number> {
    const body = (await getIn(worker("worker-0").netns, `${HEALTH}/metrics`)).body;
    return [...body.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))].reduce((sum, m) => sum + Number(m[1]), 0);
  }
  const log = () => agent?.log().split("\n").slice(-25).join("\n") ?? "";

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-real-rewind-"));
    ({ state } = await labUp({ name: LAB, workers: 3 }));
    plane = await labControlPlane(state, dir);
  });

  after(async () => {
    if (agent) {
      await agent.stop().catch(() => undefined);
      await removeLabProcess(LAB, agent.pid).catch(() => undefined);
    }
    if (plane) await plane.stop().catch(() => undefined);
    await labDown(LAB);
    await rm(dir, { recursive: true, force: true });
  });

  it("relists on 'Too large resource version' and routes a Node created after the rewind", async () => {
    const [here, kept, newcomer] = ["worker-0", "worker-1", "worker-2"].map(worker) as [LabWorker, LabWorker, LabWorker];
    for (const w of [here, kept]) await kubectl(["create", "-f", "-"], JSON.stringify(labNode(w)));
    // The static admin token survives the new store (a ServiceAccount's would not: its object is gone).
    const kubeconfig = await writeKubeconfig(join(dir, "admin-in-worker.kubeconfig"), plane!, plane!.adminToken);
    agent = startAgentProcess(nodeCommand(state, here.name, []), ["--kubeconfig", kubeconfig, "--listen", "127.0.0.1:9465", "--resync", "10m", "--log-format", "json"], join(dir, "agent.log"), { NODE_NAME: here.name });
    await addLabProcess(LAB, { netns: here.netns, pid: agent.pid, what: `podroutes agent on ${here.name}` });
    const routed = await within(60_000, async () => (await owned(here.name)).get(kept.podCIDR) === kept.internalIP, 100);
    assert.ok(routed !== undefined, `no route to ${kept.name}\n${log()}`);

    // Move the old store's revision far ahead, then change a Node's labels: the agent's version is that
    // far ahead too (the label change makes it reconcile, which says it saw the event).
    const bumps = Array.from({ length: 200 }, (_, i) => ({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: `bump-${i}`, namespace: "default" } }));
    await kubectl(["create", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "List", items: bumps }));
    const syncs = await metric("podroutes_syncs_total");
    await kubectl(["label", "node", kept.name, "round=1"]);
    const agentVersion = Number((JSON.parse(await kubectl(["get", "node", kept.name, "-o", "json"])) as { metadata: { resourceVersion: string } }).metadata.resourceVersion);
    assert.ok((await within(30_000, async () => (await metric("podroutes_syncs_total")) > syncs, 100)) !== undefined, `the agent did not see the label change\n${log()}`);
    const relists = await metric("podroutes_relists_total");

    const revision = await plane!.freshEtcd();
    process.stderr.write(`# etcd replaced: revision ${revision}, the agent's resourceVersion ${agentVersion}\n`);
    assert.ok(revision + 100 < agentVersion, `the new store (${revision}) must be well behind the agent (${agentVersion})`);
    // What the real server answers at the agent's version: a list is refused, 504 Too large.
    const refused = await plane!.kubectl(["get", "--raw", `/api/v1/nodes?resourceVersion=${agentVersion}&resourceVersionMatch=NotOlderThan&limit=1`]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /Too large resource version/, refused.stderr);

    for (const w of [here, newcomer]) await kubectl(["create", "-f", "-"], JSON.stringify(labNode(w)));
    const served = await within(60_000, async () => {
      const routes = await owned(here.name);
      return routes.get(newcomer.podCIDR) === newcomer.internalIP && !routes.has(kept.podCIDR);
    }, 100);
    assert.ok(served !== undefined, `after the rewind: want a route to ${newcomer.name} and none to ${kept.name} (not in the new store), have ${JSON.stringify([...(await owned(here.name))])}\n${log()}`);
    assert.ok((await metric("podroutes_relists_total")) > relists, "it listed again");
    assert.match(agent.log(), /"failure":"too-large"/, "the refusal is logged by name");
  });
});
