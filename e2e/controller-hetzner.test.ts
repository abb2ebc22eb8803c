/**
 * `podroutes controller --target hetzner` in-process against the Hetzner Cloud API test server and the
 * Kubernetes API test server with exactly deploy/controller/rbac.yaml's permissions: routes in the network
 * for every Node, conditions set; a new address as delete then add; a deleted Node's route removed while its
 * server, labelled as the cluster's, still runs; a
 * network at Hetzner's 100-route limit (the node past it gets a condition naming the limit and an Event, no
 * write past it); a stale route of a server deleted while no controller ran removed by the new leader's
 * first reconcile. A test token, 127.0.0.1 only.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { hetznerTarget } from "../src/targets/hetzner/factory.js";
import { nodeObject } from "../testkit/agent-lab.js";
import { controllerKubeconfig, eventually, networkCondition, startInProcessController, type InProcessController } from "../testkit/controller.js";
import { startHetznerServer, type HetznerNetwork, type HetznerServerApi } from "../testkit/hetzner-server.js";
import { startKubeServer, type KubeApiServer } from "../testkit/kube-server.js";

const CLUSTER_CIDR = "10.244.0.0/16";
const NODES = [0, 1, 2].map((i) => ({ name: `node-${i}`, ip: `10.0.0.${i + 2}`, podCIDR: `10.244.${i}.0/24` }));

describe("podroutes controller (hetzner, in-process, API test server)", () => {
  let kube: KubeApiServer;
  let dir: string;
  let kubeconfig: string;
  let hetzner: HetznerServerApi | undefined;
  let network: HetznerNetwork;
  let running: InProcessController | undefined;

  before(async () => {
    kube = await startKubeServer({ tokens: {} });
    dir = await mkdtemp(join(tmpdir(), "podroutes-controller-hetzner-"));
    kubeconfig = await controllerKubeconfig(kube, dir, "controller-hetzner");
  });
  after(async () => {
    await running?.stop();
    await hetzner?.stop();
    await kube.close();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    await running?.stop();
    running = undefined;
    await hetzner?.stop();
    for (const resource of ["nodes", "events", "leases"] as const) for (const o of kube.objects(resource)) kube.remove(resource, o.metadata.name, o.metadata.namespace);
    hetzner = await startHetznerServer({ actionDelayMs: 5 });
    network = hetzner.addNetwork({ name: "k8s", ipRange: "10.0.0.0/16", subnets: ["10.0.0.0/24"] });
    // node-2's server carries the cluster's label (the default --hetzner-selector); the others only the Nodes name.
    for (const node of NODES) {
      hetzner.addServer({ name: node.name, labels: node.name === "node-2" ? { "podroutes.io/cluster": "kubernetes" } : {}, privateNet: [{ network: network.id, ip: node.ip }] });
    }
    hetzner.addServer({ name: "db", privateNet: [{ network: network.id, ip: "10.0.0.50" }] });
  });

  const start = async () => {
    running = await startInProcessController({
      target: hetznerTarget,
      values: { network: "k8s", hcloudEndpoint: hetzner!.endpoint, pollInterval: "10ms" },
      kubeconfig,
      identity: "controller-hetzner",
      clusterCIDR: CLUSTER_CIDR,
      env: { HCLOUD_TOKEN: hetzner!.token },
    });
    await eventually("it leads and has reconciled", () => running!.controller.term?.reconciler.reconciled === true);
    await running.controller.term!.loop.settled();
    return running;
  };
  const routes = () => network.routes.filter((r) => r.destination.startsWith("10.244.")).map((r) => `${r.destination} via ${r.gateway}`).sort();
  const expected = (names: string[]) => names.map((n) => NODES.find((s) => s.name === n)!).map((n) => `${n.podCIDR} via ${n.ip}`).sort();
  const seedNode = (i: number) => nodeObject(NODES[i]!.name, NODES[i]!.ip, NODES[i]!.podCIDR);
  const posts = () => hetzner!.requests.filter((r) => r.method === "POST").map((r) => `${r.path.split("/").at(-1)} ${(r.body as { destination: string }).destination} ${(r.body as { gateway: string }).gateway}`);

  it("nodes join: routes in the network, conditions False; a node's new address is a delete then an add; a deleted node's route goes", async () => {
    for (const i of [0, 1, 2]) kube.put("nodes", seedNode(i));
    await start();
    assert.deepEqual(routes(), expected(["node-0", "node-1", "node-2"]));
    for (const i of [0, 1, 2]) assert.equal(networkCondition(kube, `node-${i}`)?.state, "False/RouteCreated");

    // node-1's server is attached to the network again at another IP: its old one is no server's now.
    const mark = posts().length;
    hetzner!.servers.find((s) => s.name === "node-1")!.private_net[0]!.ip = "10.0.0.31";
    kube.update("nodes", "node-1", (node) => {
      (node.status as { addresses: { type: string; address: string }[] }).addresses[0]!.address = "10.0.0.31";
    });
    await eventually("moved", () => routes().includes("10.244.1.0/24 via 10.0.0.31"));
    await running!.controller.term!.loop.settled();
    assert.deepEqual(posts().slice(mark), ["delete_route 10.244.1.0/24 10.0.0.3", "add_route 10.244.1.0/24 10.0.0.31"]);

    // A Node deleted while its server still runs: the server's label says it is the cluster's, so its route is.
    kube.remove("nodes", "node-2");
    await eventually("node-2's route deleted", () => !routes().some((r) => r.startsWith("10.244.2.0/24")));
    await running!.controller.term!.loop.settled();
    assert.deepEqual(routes(), ["10.244.0.0/24 via 10.0.0.2", "10.244.1.0/24 via 10.0.0.31"]);
    assert.equal(hetzner!.requests.filter((r) => r.error === "conflict" || r.error === "locked").length, 0, "one action at a time: the API never refused one as busy");
    assert.deepEqual(kube.requests.filter((r) => r.code === 403).map((r) => `${r.verb} ${r.resource}`), []);
  });

  it("a network at Hetzner's 100-route limit: the node past it gets condition True naming the limit and a RouteLimitExceeded Event, and no write past it", async () => {
    for (let i = 0; i < 98; i++) network.routes.push({ destination: `172.16.${i}.0/24`, gateway: "10.0.0.50" });
    for (const i of [0, 1]) kube.put("nodes", seedNode(i));
    await start();
    assert.deepEqual(routes(), expected(["node-0", "node-1"]));
    kube.put("nodes", seedNode(2));
    await eventually("node-2 refused", () => /limit/.test(networkCondition(kube, "node-2")?.message ?? ""));
    await running!.controller.term!.loop.settled();
    assert.equal(networkCondition(kube, "node-2")?.state, "True/NoRouteCreated");
    assert.match(networkCondition(kube, "node-2")!.message, /network k8s is at Hetzner's limit of 100 routes per network: no room for 10\.244\.2\.0\/24/);
    assert.ok(!posts().some((p) => p.includes("10.244.2.0/24")), "no add_route attempted past the limit");
    assert.equal(hetzner!.requests.filter((r) => r.error === "resource_limit_exceeded").length, 0, "the API never had to refuse one");
    const events = kube.objects("events") as unknown as { involvedObject: { name: string }; reason: string; type: string }[];
    assert.deepEqual(events.map((e) => [e.involvedObject.name, e.reason, e.type]), [["node-2", "RouteLimitExceeded", "Warning"]]);
    assert.equal(networkCondition(kube, "node-0")?.state, "False/RouteCreated");
  });

  it("a server deleted with its Node while no controller ran: the new leader's first reconcile removes its stale route, and only that", async () => {
    for (const i of [0, 1, 2]) kube.put("nodes", seedNode(i));
    network.routes.push({ destination: "192.168.7.0/24", gateway: "10.0.0.3" });
    await start();
    await running!.stop();
    running = undefined;
    // node-1's server is no cluster server by label: its route is the cluster's by its Node, and once both
    // are gone, by being stale (an IP no server on the network holds).
    const gone = hetzner!.servers.findIndex((s) => s.name === "node-1");
    hetzner!.servers.splice(gone, 1);
    network.servers = network.servers.filter((id) => hetzner!.servers.some((s) => s.id === id));
    kube.remove("nodes", "node-1");
    const mark = posts().length;
    await start();
    assert.deepEqual(routes(), expected(["node-0", "node-2"]));
    assert.deepEqual(posts().slice(mark), ["delete_route 10.244.1.0/24 10.0.0.3"]);
    assert.ok(network.routes.some((r) => r.destination === "192.168.7.0/24"), "a route outside the cluster CIDR is not podroutes' and stays");
  });
});
