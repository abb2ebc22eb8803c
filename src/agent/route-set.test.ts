import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { startKubeServer, type KubeApiServer } from "../../testkit/kube-server.js";
import { KubeClient } from "../kube/client.js";
import { discoverConnection } from "../kube/kubeconfig.js";
import { readKubeNode, routingView, type KubeNode } from "../kube/nodes.js";
import { Reflector, type ReflectorEvent } from "../kube/reflector.js";
import { decodeShard, DEFAULT_ROUTE_SET_SHARDS, encodeRouteSet, ROUTE_SET_LABEL, ROUTE_SET_LEASE, shardName, shardOf, type ShardConfigMap } from "../kube/route-set.js";
import { RouteSetPublisher } from "./route-set-publisher.js";
import { RouteSetSource } from "./route-set-source.js";
import { RouteSetWithFallback } from "./route-set-fallback.js";

const node = (i: number, extra: Partial<KubeNode["status"]> = {}): KubeNode => ({
  apiVersion: "v1",
  kind: "Node",
  metadata: { name: `worker-${i}`, uid: `uid-${i}`, creationTimestamp: "2026-01-01T00:00:00Z", labels: { "kubernetes.io/hostname": `worker-${i}` } },
  spec: { podCIDR: `10.200.${i}.0/24`, podCIDRs: [`10.200.${i}.0/24`] },
  status: {
    addresses: [
      { type: "InternalIP", address: `10.240.0.${20 + i}` },
      { type: "Hostname", address: `worker-${i}` },
    ],
    conditions: [{ type: "Ready", status: "True", lastHeartbeatTime: "2026-01-01T00:00:00Z" }],
    ...extra,
  },
});

/** What routing makes of a Node: the same through the route set as through a watch of Nodes. */
const routed = (object: unknown) => {
  const { node: read, problems } = readKubeNode(object);
  return { node: read && { ...read, labels: undefined }, problems };
};

describe("the route set's encoding", () => {
  it("the same Nodes in any order encode to the same shard texts; each Node lands in its name's shard", () => {
    const nodes = Array.from({ length: 40 }, (_, i) => routingView(node(i)));
    const texts = encodeRouteSet(nodes, DEFAULT_ROUTE_SET_SHARDS);
    assert.deepEqual(encodeRouteSet([...nodes].reverse(), DEFAULT_ROUTE_SET_SHARDS), texts);
    assert.equal(texts.length, DEFAULT_ROUTE_SET_SHARDS);
    for (const n of nodes) assert.ok(texts[shardOf(n.metadata.name, DEFAULT_ROUTE_SET_SHARDS)]!.includes(`"${n.metadata.name}"`));
    // Spread: no shard holds more than half of them.
    assert.ok(Math.max(...texts.map((t) => (t ? t.split("\n").length : 0))) < 20);
  });

  it("a Node read back from its shard routes exactly as the Node itself: name, uid, pod CIDRs, InternalIPs; problems kept", () => {
    const dual = node(3);
    dual.spec!.podCIDRs = ["10.200.3.0/24", "fd00:200:3::/64"];
    dual.status!.addresses!.push({ type: "InternalIP", address: "fd00:240::23" });
    const malformed = node(4);
    malformed.spec = { podCIDRs: "10.200.4.0/24" as unknown as string[] };
    const legacy = node(5);
    legacy.spec = { podCIDR: "10.200.5.0/24" };
    const nodes = [node(1), dual, malformed, legacy];
    const texts = encodeRouteSet(nodes.map(routingView), 4);
    const back = new Map(texts.flatMap((t, i) => decodeShard(t, `shard ${i}`)).map((n) => [n.metadata.name, n]));
    for (const original of nodes) {
      const decoded = back.get(original.metadata.name)!;
      assert.deepEqual(routed(decoded), routed(routingView(original)), original.metadata.name);
      assert.equal(decoded.metadata.uid, original.metadata.uid);
    }
    assert.ok(routed(back.get("worker-4")).problems.length > 0, "a malformed pod CIDR is still reported");
  });

  it("a shard that is not the route set's is an error naming it and the line", () => {
    assert.throws(() => decodeShard('["worker-1"]\nnot json', "ConfigMap podroutes/podroutes-route-set-3"), /podroutes-route-set-3: line 1 is not a route set entry/);
    assert.throws(() => decodeShard('["worker-1",null,null,null,null]\n{', "ConfigMap x"), /ConfigMap x: line 2 is not JSON/);
  });
});

describe("publishing the route set and reading it, against the Kubernetes API test server", () => {
  let dir: string;
  let server: KubeApiServer;
  let client: KubeClient;
  const abort = new AbortController();
  let nodes: Reflector<KubeNode>;
  let source: RouteSetSource;
  let publisher: RouteSetPublisher;
  let shards: Reflector<ShardConfigMap>;
  const noticed: boolean[] = [];
  const events: ReflectorEvent<KubeNode>[] = [];
  const warnings: string[] = [];

  const until = async (what: string, check: () => boolean) => {
    for (let i = 0; i < 200 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok(check(), what);
  };
  const configMapWrites = () => server.requests.filter((r) => r.resource === "configmaps" && (r.verb === "update" || r.verb === "create")).length;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-route-set-"));
    server = await startKubeServer({ nodes: [1, 2, 3, 4, 5].map((i) => node(i)) });
    client = new KubeClient(await discoverConnection({ kubeconfig: await server.writeKubeconfig(join(dir, "kubeconfig")) }));
    nodes = new Reflector<KubeNode>({ client, path: "/api/v1/nodes", transform: routingView });
    void nodes.run(abort.signal);
    publisher = new RouteSetPublisher({ client, namespace: "podroutes", shards: 4, nodes: () => nodes.store.values() });
    // The publisher's view of the shards, as its wiring (startRouteSetPublisher) gives it.
    shards = new Reflector<ShardConfigMap>({ client, path: "/api/v1/namespaces/podroutes/configmaps", labelSelector: ROUTE_SET_LABEL });
    shards.subscribe((event) => {
      if (event.type === "added" || event.type === "modified" || event.type === "deleted") noticed.push(publisher.noticed(event.object, event.type === "deleted"));
    });
    void shards.run(abort.signal);
    source = new RouteSetSource(client, "podroutes", (message) => warnings.push(message));
    source.subscribe((event) => events.push(event));
    void source.run(abort.signal);
  });
  after(async () => {
    abort.abort();
    client.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("before the set is published whole, a reader has not listed: no Nodes, nothing planned", async () => {
    await until("the Node reflector synced", () => nodes.hasSynced);
    await until("the reader warned that the set is incomplete or absent", () => warnings.length > 0 || source.counters.lists > 0);
    assert.equal(source.hasSynced, false);
    assert.equal(source.store.size, 0);
  });

  it("published, the reader lists every Node as the watch of Nodes has it", async () => {
    const result = await publisher.publish(abort.signal);
    assert.equal(result.nodes, 5);
    await until("the reader synced", () => source.hasSynced);
    assert.ok(events.some((e) => e.type === "synced" && e.objects === 5));
    for (const [name, n] of nodes.store) assert.deepEqual(routed(source.store.get(name)), routed(n), name);
  });

  it("kubelet heartbeats change no shard: the publisher writes nothing", async () => {
    const writes = configMapWrites();
    for (const i of [1, 2, 3]) server.update("nodes", `worker-${i}`, (n) => void ((n.status as any).conditions[0].lastHeartbeatTime = "2026-01-01T00:05:00Z"));
    await until("the heartbeats were watched", () => (nodes.store.get("worker-3")!.status as any) !== undefined);
    assert.equal((await publisher.publish(abort.signal)).written, 0);
    assert.equal(configMapWrites(), writes);
  });

  it("a Node joins: one shard written, the reader gets exactly that Node as added", async () => {
    events.length = 0;
    server.put("nodes", node(6) as any);
    await until("the publisher's watch saw worker-6", () => nodes.store.has("worker-6"));
    assert.equal((await publisher.publish(abort.signal)).written, 1);
    await until("the reader got worker-6", () => source.store.has("worker-6"));
    assert.deepEqual(events.map((e) => `${e.type} ${"object" in e ? e.object.metadata.name : ""}`), ["added worker-6"]);
  });

  it("a Node's address changes: modified; a Node leaves: deleted", async () => {
    events.length = 0;
    server.update("nodes", "worker-2", (n) => void ((n.status as any).addresses[0].address = "10.240.0.99"));
    await until("watched", () => (nodes.store.get("worker-2")!.status!.addresses as any)[0].address === "10.240.0.99");
    await publisher.publish(abort.signal);
    await until("the reader got the new address", () => (source.store.get("worker-2")?.status?.addresses as any)?.[0]?.address === "10.240.0.99");
    server.remove("nodes", "worker-5");
    await until("watched", () => !nodes.store.has("worker-5"));
    await publisher.publish(abort.signal);
    await until("the reader lost worker-5", () => !source.store.has("worker-5"));
    assert.deepEqual(events.map((e) => `${e.type} ${"object" in e ? e.object.metadata.name : ""}`), ["modified worker-2", "deleted worker-5"]);
  });

  it("its own writes are not news to the publisher; a shard deleted by hand is: it is put back, and the reader never saw Nodes leave", async () => {
    await until("the publisher's shard watch caught up", () => shards.store.size === 4);
    assert.deepEqual(noticed.filter(Boolean), [], "none of the publisher's own writes counted as someone else's");
    events.length = 0;
    const shard = shardOf("worker-1", 4);
    server.remove("configmaps", shardName(shard), "podroutes");
    await until("the publisher noticed", () => noticed.some(Boolean));
    await until("the reader saw the set incomplete", () => warnings.some((w) => w.includes("incomplete")));
    assert.ok(source.store.has("worker-1"));
    assert.equal((await publisher.publish(abort.signal)).written, 1);
    await until("the shard is back", () => server.object("configmaps", shardName(shard), "podroutes") !== undefined);
    await until("the reader is complete again", () => events.length > 0 || source.store.has("worker-1"));
    assert.deepEqual(events.filter((e) => e.type === "deleted"), []);
  });

  it("a shard someone else emptied: the publisher rewrites it from its Nodes, and the reader has them back", async () => {
    noticed.length = 0;
    const shard = shardOf("worker-3", 4);
    server.update("configmaps", shardName(shard), (cm) => void ((cm as any).data.nodes = ""), "podroutes");
    await until("the publisher noticed", () => noticed.some(Boolean));
    await until("the reader saw worker-3 go", () => !source.store.has("worker-3"));
    assert.equal((await publisher.publish(abort.signal)).written, 1);
    await until("the reader has worker-3 again", () => source.store.has("worker-3"));
    assert.deepEqual(routed(source.store.get("worker-3")), routed(nodes.store.get("worker-3")));
  });
});

describe("a reader of the route set whose publisher is gone: it falls back to watching Nodes, and comes back", () => {
  let dir: string;
  let server: KubeApiServer;
  let client: KubeClient;
  const abort = new AbortController();
  let nodes: Reflector<KubeNode>;
  let publisher: RouteSetPublisher;
  let reader: RouteSetWithFallback;
  let now = 0;
  const events: ReflectorEvent<KubeNode>[] = [];
  const logged: string[] = [];
  const AFTER = 60_000;

  const until = async (what: string, check: () => boolean) => {
    for (let i = 0; i < 300 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.ok(check(), what);
  };
  const renew = (holder: string) => {
    const lease = server.object("leases", ROUTE_SET_LEASE, "podroutes");
    const spec = { holderIdentity: holder, renewTime: new Date(Date.parse("2026-01-01T00:00:00Z") + now).toISOString(), leaseDurationSeconds: 4 };
    if (lease) server.update("leases", ROUTE_SET_LEASE, (l) => void ((l as any).spec = spec), "podroutes");
    else server.put("leases", { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: ROUTE_SET_LEASE, namespace: "podroutes" }, spec } as any);
  };
  const nodeWatches = () => server.requests.filter((r) => r.resource === "nodes" && (r.verb === "list" || r.verb === "watch")).length;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-route-set-fallback-"));
    server = await startKubeServer({ nodes: [1, 2, 3].map((i) => node(i)) });
    client = new KubeClient(await discoverConnection({ kubeconfig: await server.writeKubeconfig(join(dir, "kubeconfig")) }));
    nodes = new Reflector<KubeNode>({ client, path: "/api/v1/nodes", transform: routingView });
    void nodes.run(abort.signal);
    await until("the publisher's Nodes listed", () => nodes.hasSynced);
    publisher = new RouteSetPublisher({ client, namespace: "podroutes", shards: 4, nodes: () => nodes.store.values() });
    await publisher.publish(abort.signal);
    renew("worker-1");
    const log = { info: (message: string) => logged.push(message), warn: (message: string) => logged.push(message) };
    reader = new RouteSetWithFallback(new RouteSetSource(client, "podroutes", () => undefined), {
      client,
      namespace: "podroutes",
      nodeWatch: () => new Reflector<KubeNode>({ client, path: "/api/v1/nodes", transform: routingView }),
      // Reads of the Lease are made by the test (check()), on a clock it moves.
      options: { afterMs: AFTER, checkEveryMs: 3_600_000 },
      now: () => now,
      log,
    });
    reader.subscribe((event) => events.push(event));
    void reader.run(abort.signal);
    await until("the reader read the set", () => reader.hasSynced);
  });
  after(async () => {
    abort.abort();
    client.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("while the Lease is renewed, it reads the set and never lists a Node", async () => {
    server.clearRequests();
    for (let i = 0; i < 5; i++) {
      now += 30_000;
      renew("worker-1");
      await reader.check();
    }
    assert.equal(reader.source, "route-set");
    assert.equal(nodeWatches(), 0);
    assert.deepEqual([...reader.store.keys()].sort(), ["worker-1", "worker-2", "worker-3"]);
  });

  it("a failed read of the Lease judges nothing: an API server down longer than the bound does not send it to the Nodes", async () => {
    now += AFTER * 3;
    server.failNext(1, 503);
    await reader.check();
    await new Promise((resolve) => setTimeout(resolve, 150)); // time for a Node list, had one been started
    assert.equal(reader.source, "route-set");
    assert.equal(nodeWatches(), 0);
    renew("worker-1");
    await reader.check();
    assert.equal(reader.source, "route-set");
    assert.equal(nodeWatches(), 0);
  });

  it("the Lease unrenewed past the bound: it lists and watches every Node, switches once they are listed, and a Node that joins then is routed", async () => {
    now += AFTER / 2;
    await reader.check();
    assert.equal(reader.source, "route-set", "not yet past the bound");
    now += AFTER;
    events.length = 0;
    await reader.check();
    await until("it switched to the Nodes", () => reader.source === "nodes");
    assert.ok(events.some((e) => e.type === "synced"), "the switch is a synced event: the agent reconciles in full");
    assert.ok(logged.some((m) => m.includes("no publisher for a while")));
    server.put("nodes", node(7) as any);
    await until("the joiner reached the reader without a publisher", () => reader.store.has("worker-7"));
    assert.ok(events.some((e) => e.type === "added" && e.object.metadata.name === "worker-7"));
  });

  it("a publisher back: not on its first renewal, on the second; the set again, and the Node watch stopped", async () => {
    await publisher.publish(abort.signal); // the new publisher's first pass: worker-7 in the set
    now += 20_000;
    renew("worker-2");
    await reader.check();
    assert.equal(reader.source, "nodes", "a Lease just taken is not yet a publisher seen renewing");
    now += 20_000;
    renew("worker-2");
    events.length = 0;
    await reader.check();
    assert.equal(reader.source, "route-set");
    assert.ok(events.some((e) => e.type === "synced"));
    assert.ok(reader.store.has("worker-7"));
    assert.equal(reader.returns, 1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    server.clearRequests();
    server.put("nodes", node(8) as any);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(nodeWatches(), 0, "the Node watch was stopped");
    assert.ok(!reader.store.has("worker-8"), "Nodes come from the set again (no publisher ran for worker-8)");
  });
});
