import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BusyError } from "../errors.js";
import { KubeApiError, type KubeClient } from "../kube/client.js";
import type { KubeNode } from "../kube/nodes.js";
import { Reflector } from "../kube/reflector.js";
import { createLogger } from "../observe/log.js";
import type { Inventory } from "../model.js";
import { MemoryTarget } from "../targets/memory/memory.js";
import type { TableRef } from "../targets/target.js";
import type { HostState } from "../targets/linux/iproute.js";
import type { HostTable } from "./host-table.js";
import { agentMetrics } from "./metrics.js";
import { Reconciler, routingChanged, type NodeStore } from "./reconciler.js";

function node(name: string, ip: string, podCIDRs: string[], extra: Partial<KubeNode["metadata"]> = {}): KubeNode {
  return {
    kind: "Node",
    metadata: { name, uid: `uid-${name}`, resourceVersion: "1", creationTimestamp: `2026-01-01T00:00:0${name.slice(-1)}Z`, ...extra },
    spec: { podCIDRs },
    status: { addresses: [{ type: "InternalIP", address: ip }] },
  };
}

const cluster = () => [node("node-0", "10.240.0.20", ["10.200.0.0/24"]), node("node-1", "10.240.0.21", ["10.200.1.0/24"]), node("node-2", "10.240.0.22", ["10.200.2.0/24"])];

/** The memory target with the agent's one table: this host's. */
class HostMemoryTarget extends MemoryTarget {
  constructor(private readonly here: () => TableRef) {
    super("host");
  }
  override async tables(_inventory: Inventory): Promise<TableRef[]> {
    return [this.here()];
  }
}

function setup(store: NodeStore, options: { node?: string; addresses?: string[] } = {}) {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ format: "json", level: "debug", write: (line) => lines.push(JSON.parse(line)) });
  const metrics = agentMetrics();
  let reconciler: Reconciler;
  const target = new HostMemoryTarget(() => reconciler.table());
  reconciler = new Reconciler({
    target,
    store,
    proto: 150,
    ...(options.node ? { node: options.node } : {}),
    hostAddresses: async () => options.addresses ?? [],
    metrics,
    log,
  });
  return { target, reconciler, metrics, lines, routes: () => [...target.table(options.node ?? "node-0").values()].map((r) => `${r.destination} ${r.nextHop}`).sort() };
}

const listed = (nodes: KubeNode[]): NodeStore => ({ synced: () => true, nodes: () => nodes });

describe("agent reconciler", () => {
  it("refuses to plan before a complete list, and an API error never reads as 'no nodes'", async () => {
    // A real reflector whose API fails: no complete list, an empty store.
    let failing = true;
    const client = {
      request: async () => {
        if (failing) throw new KubeApiError("GET /api/v1/nodes: 500 etcd is down", 500, "InternalError");
        return { items: cluster(), metadata: { resourceVersion: "7" } };
      },
      // The watch stays open, silent, until the reflector stops it.
      watch: async function* (_path: string, options: { signal?: AbortSignal }) {
        await new Promise((resolve) => options.signal?.addEventListener("abort", resolve));
      },
    } as unknown as KubeClient;
    const reflector = new Reflector<KubeNode>({ client, path: "/api/v1/nodes", backoff: { initialMs: 5, maxMs: 5, jitter: 0, resetAfterMs: 1000 } });
    const { target, reconciler, metrics, routes } = setup({ synced: () => reflector.hasSynced, nodes: () => [...reflector.store.values()] }, { node: "node-0" });
    // Routes from an earlier life of the agent, which an empty plan would delete.
    target.table("node-0").set("10.200.1.0/24", { destination: "10.200.1.0/24", nextHop: "10.240.0.21", owned: true });
    const errors: string[] = [];
    reflector.subscribe((event) => event.type === "error" && errors.push(event.error.message));
    const stop = new AbortController();
    const running = reflector.run(stop.signal);
    try {
      while (errors.length < 2) await new Promise((resolve) => setTimeout(resolve, 2));
      assert.equal(reflector.hasSynced, false);
      const outcome = await reconciler.reconcile(["periodic resync"]);
      assert.equal(outcome.result, "failed");
      assert.deepEqual(target.calls, [], "nothing read, nothing written");
      assert.deepEqual(routes(), ["10.200.1.0/24 10.240.0.21"]);
      assert.equal(metrics.errors.get({ kind: "target" }), 1);

      failing = false;
      await new Promise<void>((resolve) => reflector.subscribe((event) => event.type === "synced" && resolve()));
      assert.equal((await reconciler.reconcile(["complete list of 3 Nodes"])).result, "changed");
      assert.deepEqual(routes(), ["10.200.1.0/24 10.240.0.21", "10.200.2.0/24 10.240.0.22"]);

      // The API fails again: the store keeps the last complete list, so nothing is deleted.
      failing = true;
      assert.equal((await reconciler.reconcile(["kernel: owned route removed"])).result, "unchanged");
      assert.deepEqual(routes(), ["10.200.1.0/24 10.240.0.21", "10.200.2.0/24 10.240.0.22"]);
    } finally {
      stop.abort();
      await running;
    }
  });

  it("quarantines a malformed Node, reports it once, and serves every other node", async () => {
    const nodes = [
      ...cluster(),
      // Overlaps node-1's range: the newcomer is the one left out.
      node("node-3", "10.240.0.23", ["10.200.1.0/25"]),
      node("node-4", "10.240.0.24", ["10.200.4.0/24"]),
    ];
    const { reconciler, metrics, routes, lines } = setup(listed(nodes), { node: "node-0" });
    const first = await reconciler.reconcile(["complete list"]);
    assert.equal(first.result, "changed");
    assert.deepEqual(first.newlyQuarantined.map((q) => q.name), ["node-3"]);
    assert.match(first.newlyQuarantined[0]!.problems.join(), /overlaps 10\.200\.1\.0\/24 of node node-1/);
    assert.equal(first.newlyQuarantined[0]!.uid, "uid-node-3");
    assert.deepEqual(routes(), ["10.200.1.0/24 10.240.0.21", "10.200.2.0/24 10.240.0.22", "10.200.4.0/24 10.240.0.24"]);
    assert.equal(metrics.quarantined.get(), 1);
    assert.ok(lines.some((l) => l.msg?.toString().startsWith("node quarantined") && l.node === "node-3" && l.level === "warn"));

    const again = await reconciler.reconcile(["periodic resync"]);
    assert.deepEqual(again.newlyQuarantined, [], "reported once, not on every reconcile");
    assert.equal(again.result, "unchanged");

    nodes[3] = node("node-3", "10.240.0.23", ["10.200.3.0/24"], { resourceVersion: "2" });
    await reconciler.reconcile(["node node-3 modified"]);
    assert.equal(metrics.quarantined.get(), 0);
    assert.ok(routes().includes("10.200.3.0/24 10.240.0.23"), "served once fixed");
  });

  it("a quarantined own Node is not served (no condition), but its host still routes to the others", async () => {
    const nodes = [...cluster(), node("node-9", "10.240.0.29", ["10.200.0.0/23"])];
    const { reconciler, routes } = setup(listed(nodes), { node: "node-9" });
    const outcome = await reconciler.reconcile(["x"]);
    assert.equal(outcome.nodeServed, false);
    assert.deepEqual(outcome.newlyQuarantined.map((q) => q.name), ["node-9"]);
    assert.deepEqual(routes(), ["10.200.0.0/24 10.240.0.20", "10.200.1.0/24 10.240.0.21", "10.200.2.0/24 10.240.0.22"], "node-9's own table routes to every served node");
    assert.equal(outcome.result, "changed");
  });

  it("a Node without a pod CIDR yet still gets routes to the others; it is found from its addresses", async () => {
    const nodes = [...cluster(), node("node-new", "10.240.0.30", [])];
    const { reconciler, target } = setup(listed(nodes), { addresses: ["127.0.0.1", "10.240.0.30"] });
    const outcome = await reconciler.reconcile(["x"]);
    assert.equal(outcome.node, "node-new");
    assert.equal(outcome.nodeServed, true);
    assert.deepEqual([...target.table("node-new").keys()].sort(), ["10.200.0.0/24", "10.200.1.0/24", "10.200.2.0/24"]);
  });

  it("cannot tell which node it is: plans nothing and says how to fix it", async () => {
    const { reconciler, target, lines } = setup(listed(cluster()), { addresses: ["192.0.2.1"] });
    assert.equal((await reconciler.reconcile(["x"])).result, "failed");
    assert.deepEqual(target.calls, []);
    assert.match(String(lines.find((l) => l.msg === "reconcile failed")?.error), /--node NAME or NODE_NAME/);
  });

  it("counts writes, owned routes and drift repairs (changes while the Nodes stayed the same)", async () => {
    const nodes = cluster();
    const { reconciler, target, metrics } = setup(listed(nodes), { node: "node-0" });
    await reconciler.reconcile(["list"]);
    assert.equal(metrics.kernelWrites.get({ action: "create" }), 2);
    assert.equal(metrics.ownedRoutes.get(), 2);
    assert.equal(metrics.driftRepairs.get(), 0, "the first sync repairs nothing");
    target.table("node-0").delete("10.200.2.0/24");
    await reconciler.reconcile(["owned route 10.200.2.0/24 removed"]);
    assert.equal(metrics.driftRepairs.get(), 1);
    nodes.push(node("node-5", "10.240.0.25", ["10.200.5.0/24"]));
    await reconciler.reconcile(["node node-5 added"]);
    assert.equal(metrics.driftRepairs.get(), 1, "a new node is not drift");
    assert.equal(metrics.ownedRoutes.get(), 3);
    assert.equal(metrics.syncs.get({ result: "changed" }), 3);
    assert.equal(reconciler.desired.routes.get("10.200.5.0/24")?.nextHop, "10.240.0.25");
  });

  // issue 25 item 6: an owned route beside a foreign one at another metric was left out of the count.
  it("counts owned routes as the kernel's read holds them, a foreign route at another metric beside one included", async () => {
    const lines: Record<string, unknown>[] = [];
    const metrics = agentMetrics();
    let reconciler: Reconciler;
    const target = new HostMemoryTarget(() => reconciler.table());
    // What the kernel holds: the agent's two routes at metric 0, and `proto static metric 100` beside one.
    const read: HostState = {
      routes: [
        { dst: "10.200.1.0/24", gateway: "10.240.0.21", dev: "eth0", protocol: "150", metric: 0, table: "main" },
        { dst: "10.200.1.0/24", gateway: "10.240.0.99", dev: "eth0", protocol: "static", metric: 100, table: "main" },
        { dst: "10.200.2.0/24", gateway: "10.240.0.22", dev: "eth0", protocol: "150", metric: 0, table: "main" },
      ],
      nexthops: [],
      nexthopObjects: false,
      addresses: [],
    };
    // The memory target's table has one route a destination: the plan sees the foreign one there (a conflict).
    target.table("node-0").set("10.200.1.0/24", { destination: "10.200.1.0/24", nextHop: "10.240.0.99", owned: false });
    target.table("node-0").set("10.200.2.0/24", { destination: "10.200.2.0/24", nextHop: "10.240.0.22", owned: true });
    const table = { remember: () => {}, forget: () => {} } as unknown as HostTable;
    reconciler = new Reconciler({
      target,
      store: listed(cluster()),
      proto: 150,
      node: "node-0",
      hostAddresses: async () => [],
      host: { table, lastState: () => read },
      metrics,
      log: createLogger({ format: "json", level: "debug", write: (line) => lines.push(JSON.parse(line)) }),
    });
    await reconciler.reconcile(["list"]);
    assert.equal(metrics.conflicts.get(), 1);
    assert.equal(metrics.ownedRoutes.get(), 2, "both proto-150 routes the kernel holds");
  });

  it("checks again only the Nodes said changed (a resync does not validate them all again)", async () => {
    const nodes = cluster();
    const store: NodeStore = { synced: () => true, nodes: () => nodes, get: (name) => nodes.find((n) => n.metadata.name === name) };
    const { reconciler, routes } = setup(store, { node: "node-0" });
    await reconciler.reconcile(["list"]);
    nodes.push(node("node-5", "10.240.0.25", ["10.200.5.0/24"]));
    nodes[1] = node("node-1", "10.240.0.21", ["10.200.9.0/24"]);
    assert.equal((await reconciler.reconcile(["periodic resync"])).result, "unchanged", "nothing said changed: the index as it was");
    assert.deepEqual(routes(), ["10.200.1.0/24 10.240.0.21", "10.200.2.0/24 10.240.0.22"]);
    reconciler.nodesChanged(["node-5"]);
    assert.equal((await reconciler.reconcile(["node node-5 added"])).result, "changed");
    assert.deepEqual(routes(), ["10.200.1.0/24 10.240.0.21", "10.200.2.0/24 10.240.0.22", "10.200.5.0/24 10.240.0.25"], "node-1's change was not said: not seen yet");
    reconciler.nodesRelisted();
    await reconciler.reconcile(["complete list"]);
    assert.deepEqual(routes(), ["10.200.2.0/24 10.240.0.22", "10.200.5.0/24 10.240.0.25", "10.200.9.0/24 10.240.0.21"], "a relist compares every Node");
  });

  it("only updates that can change routing count (status heartbeats do not)", () => {
    const before = node("node-1", "10.240.0.21", ["10.200.1.0/24"]);
    const heartbeat = { ...structuredClone(before), metadata: { ...before.metadata, resourceVersion: "2" }, status: { ...before.status, conditions: [{ type: "Ready", status: "True" as const }] } };
    assert.equal(routingChanged(before, heartbeat), false);
    const moved = structuredClone(before);
    moved.spec!.podCIDRs = ["10.200.9.0/24"];
    assert.equal(routingChanged(before, moved), true);
    const readdressed = structuredClone(before);
    readdressed.status!.addresses = [{ type: "InternalIP", address: "10.240.0.99" }];
    assert.equal(routingChanged(before, readdressed), true);
  });

  it("counts a lock held by another run as a busy error, not a target one", async () => {
    const { reconciler, target, metrics } = setup(listed(cluster()), { node: "node-0" });
    const begin = target.begin.bind(target);
    target.begin = (inventory) => ({
      ...begin(inventory),
      open: async () => {
        throw new BusyError("another podroutes run holds the lock on this host and did not let go within --lock-timeout 1s; nothing was changed");
      },
    });
    assert.equal((await reconciler.reconcile(["list"])).result, "failed");
    assert.equal(metrics.errors.get({ kind: "busy" }), 1);
    assert.equal(metrics.errors.get({ kind: "target" }), 0);
  });
});
