/**
 * The agent's reconciler wired as agent.ts wires it (HostRoutesTarget and HostTable on one network
 * namespace), on a real kernel table in a namespace of its own (made before, removed after, even when a
 * test fails): what the kernel holds after Nodes change as hostile clusters change them.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { nodeNamespace, type NodeNamespace } from "../../testkit/netns.js";
import { needsRoot } from "../../testkit/root.js";
import type { KubeNode } from "../kube/nodes.js";
import { createLogger } from "../observe/log.js";
import { HostRoutesTarget } from "../targets/linux/host-routes.js";
import type { HostState } from "../targets/linux/iproute.js";
import { localRunner } from "../targets/linux/runner.js";
import { HostTable } from "./host-table.js";
import { agentMetrics } from "./metrics.js";
import { Reconciler, type NodeStore } from "./reconciler.js";

const NS = `prreckernel${process.pid % 100000}`;
const PROTO = 150;

function node(name: string, addresses: string[], podCIDR: string, uid = `uid-${name}`): KubeNode {
  return {
    kind: "Node",
    metadata: { name, uid, resourceVersion: "1", creationTimestamp: "2026-01-01T00:00:00Z" },
    spec: { podCIDRs: [podCIDR] },
    status: { addresses: addresses.map((address) => ({ type: "InternalIP", address })) },
  };
}

/** A reconciler for node-0 on the namespace's table, over a store the test changes. */
function agentOn(netns: string, nodes: Map<string, KubeNode>) {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ format: "json", level: "debug", write: (line) => lines.push(JSON.parse(line)) });
  const metrics = agentMetrics();
  const runner = localRunner(netns);
  let reconciler: Reconciler;
  const lastRead = new Map<string, HostState>();
  const target = new HostRoutesTarget({ name: "local", proto: PROTO, connect: async () => runner, tables: async () => [reconciler.table()], warn: () => {}, lockedRead: (read, state) => lastRead.set(read.id, state) });
  const table = new HostTable({ proto: PROTO, netns, warn: () => {} });
  const store: NodeStore = { synced: () => true, nodes: () => nodes.values(), get: (name) => nodes.get(name) };
  reconciler = new Reconciler({ target, store, proto: PROTO, node: "node-0", host: { table, lastState: (t) => lastRead.get(t.id) }, hostAddresses: async () => [], metrics, log });
  return {
    reconciler,
    metrics,
    lines,
    async close() {
      await table.close();
      await target.close();
    },
  };
}

describe("the agent's reconciler on a real kernel table", { ...needsRoot(), timeout: 120_000 }, () => {
  let ns: NodeNamespace;
  before(async () => {
    ns = await nodeNamespace(NS, "10.240.0.20/16");
  });
  after(async () => {
    await ns?.remove();
  });

  const ownedNexthops = async () => (await ns.ipJson(["nexthop", "show"])).filter((nh) => String(nh.protocol) === String(PROTO));
  const ownedRoutes = async () => (await ns.ipJson(["route", "show", "proto", String(PROTO)])).map((r) => `${r.dst} via ${r.gateway ?? "?"}`).sort();

  it("an InternalIP changed again and again, a Node deleted and made again: the nexthop objects left unused are removed by the next resync (issue 25 item 3)", async () => {
    const nodes = new Map([
      ["node-0", node("node-0", ["10.240.0.20"], "10.200.0.0/24")],
      ["node-1", node("node-1", ["10.240.0.21"], "10.200.1.0/24")],
      ["node-2", node("node-2", ["10.240.0.22"], "10.200.2.0/24")],
    ]);
    const agent = agentOn(NS, nodes);
    try {
      assert.equal((await agent.reconciler.reconcile(["list"])).result, "changed");
      assert.equal((await ownedNexthops()).length, 2);
      // The churn: each change its own reconcile, through the per-change path (one Node's destinations).
      for (let i = 0; i < 20; i++) {
        nodes.set("node-1", node("node-1", [`10.240.1.${10 + i}`], "10.200.1.0/24"));
        agent.reconciler.nodesChanged(["node-1"]);
        const outcome = await agent.reconciler.reconcile([`node-1 changed (${i})`]);
        assert.deepEqual([outcome.result, outcome.path], ["changed", "nodes"]);
      }
      nodes.delete("node-2");
      agent.reconciler.nodesChanged(["node-2"]);
      await agent.reconciler.reconcile(["node-2 deleted"]);
      nodes.set("node-2", node("node-2", ["10.240.2.22"], "10.200.2.0/24", "uid-node-2-again"));
      agent.reconciler.nodesChanged(["node-2"]);
      await agent.reconciler.reconcile(["node-2 added"]);
      assert.deepEqual(await ownedRoutes(), ["10.200.1.0/24 via 10.240.1.29", "10.200.2.0/24 via 10.240.2.22"]);
      agent.reconciler.requireCheck();
      const resync = await agent.reconciler.reconcile(["periodic resync"]);
      assert.notEqual(resync.result, "failed", JSON.stringify(agent.lines.slice(-3)));
      const left = await ownedNexthops();
      assert.deepEqual(left.map((nh) => nh.gateway).sort(), ["10.240.1.29", "10.240.2.22"], `only the objects the routes use: ${JSON.stringify(left)}`);
      assert.deepEqual(await ownedRoutes(), ["10.200.1.0/24 via 10.240.1.29", "10.200.2.0/24 via 10.240.2.22"], "the routes stay");
      // And the per-change path goes on working after the cleanup (no object it remembered is reused).
      nodes.set("node-1", node("node-1", ["10.240.1.50"], "10.200.1.0/24"));
      agent.reconciler.nodesChanged(["node-1"]);
      assert.equal((await agent.reconciler.reconcile(["node-1 changed"])).result, "changed");
      assert.deepEqual(await ownedRoutes(), ["10.200.1.0/24 via 10.240.1.50", "10.200.2.0/24 via 10.240.2.22"]);
    } finally {
      await agent.close();
    }
  });

  it("Nodes whose routes this IPv4-only host cannot hold (an IPv6-only Node, an off-link IPv4, a dual-stack Node's IPv6 half) are left out and reported; the rest is written and the sync converges (issue 25 item 2)", async () => {
    const nodes = new Map([
      ["node-0", node("node-0", ["10.240.0.20"], "10.200.0.0/24")],
      ["node-1", node("node-1", ["10.240.0.21"], "10.200.1.0/24")],
      ["node-6", node("node-6", ["fd00:240::26"], "fd00:200:6::/64")],
      ["node-7", node("node-7", ["192.0.2.7"], "10.200.7.0/24")],
      ["node-8", { ...node("node-8", ["10.240.0.28", "fd00:240::28"], "10.200.8.0/24"), spec: { podCIDRs: ["10.200.8.0/24", "fd00:200:8::/64"] } }],
    ]);
    const agent = agentOn(NS, nodes);
    const leftOut = () => agent.lines.filter((line) => line.msg === "route left out: this host cannot hold it; every other route is still served").map((line) => `${line.node} ${line.destination}`).sort();
    try {
      const first = await agent.reconciler.reconcile(["list"]);
      assert.equal(first.result, "changed", JSON.stringify(agent.lines.filter((line) => line.level !== "debug")));
      assert.equal(first.nodeServed, true);
      assert.equal(agent.reconciler.converged, true, "ready: every route that can be written is in");
      assert.deepEqual(await ownedRoutes(), ["10.200.1.0/24 via 10.240.0.21", "10.200.8.0/24 via 10.240.0.28"]);
      assert.equal(agent.metrics.unroutable.get(), 3);
      assert.equal(agent.metrics.quarantined.get(), 0, "the Nodes themselves are well-formed");
      assert.deepEqual(leftOut(), ["node-6 fd00:200:6::/64", "node-7 10.200.7.0/24", "node-8 fd00:200:8::/64"]);
      // The resync tries them again: still left out, not a failure, not logged again.
      agent.reconciler.requireCheck();
      assert.notEqual((await agent.reconciler.reconcile(["periodic resync"])).result, "failed");
      assert.equal(leftOut().length, 3);
      // A Node fixed is served at once.
      nodes.set("node-7", node("node-7", ["10.240.0.27"], "10.200.7.0/24"));
      agent.reconciler.nodesChanged(["node-7"]);
      assert.equal((await agent.reconciler.reconcile(["node-7 changed"])).result, "changed");
      assert.deepEqual(await ownedRoutes(), ["10.200.1.0/24 via 10.240.0.21", "10.200.7.0/24 via 10.240.0.27", "10.200.8.0/24 via 10.240.0.28"]);
      assert.equal(agent.metrics.unroutable.get(), 2);
      assert.ok(agent.lines.some((line) => line.msg === "route no longer left out" && line.node === "node-7"));
      agent.reconciler.requireCheck();
      assert.notEqual((await agent.reconciler.reconcile(["periodic resync"])).result, "failed");
      assert.equal(agent.metrics.unroutable.get(), 2);
    } finally {
      await agent.close();
    }
  });
});
