/**
 * `podroutes controller --target openstack` in-process against the OpenStack test server (atomic extra
 * routes) and the Kubernetes API test server with exactly deploy/controller/rbac.yaml's permissions:
 * nodes join (routes in the router, the pod CIDRs in their ports' pairs, conditions False), a node past
 * the router's route limit (condition True naming the limit, an Event, no write past it), a deleted
 * node's route removed (its server, still there, carries the cluster's metadata key). Test credentials, 127.0.0.1 only.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { openstackTarget } from "../src/targets/openstack/factory.js";
import { nodeObject } from "../testkit/agent-lab.js";
import { controllerKubeconfig, eventually, networkCondition, startInProcessController, type InProcessController } from "../testkit/controller.js";
import { startKubeServer, type KubeApiServer } from "../testkit/kube-server.js";
import { startOpenStackServer, type OpenStackServerApi, type OsPort, type OsRouter } from "../testkit/openstack-server.js";

const NODES = [
  { name: "worker-0", ip: "10.240.0.20", podCIDR: "10.200.0.0/24" },
  { name: "worker-1", ip: "10.240.0.21", podCIDR: "10.200.1.0/24" },
  { name: "worker-2", ip: "10.240.0.22", podCIDR: "10.200.2.0/24" },
];

describe("podroutes controller (openstack, in-process)", () => {
  let openstack: OpenStackServerApi;
  let router: OsRouter;
  const ports = new Map<string, OsPort>();
  let kube: KubeApiServer;
  let dir: string;
  let kubeconfig: string;
  let running: InProcessController | undefined;

  before(async () => {
    openstack = await startOpenStackServer();
    const { subnet } = openstack.addNetwork({ name: "k8s", cidr: "10.240.0.0/24" });
    router = openstack.addRouter({ name: "k8s-router", subnets: [subnet], routes: [{ destination: "192.168.0.0/24", nexthop: "10.240.0.5" }] });
    for (const node of NODES) ports.set(node.name, openstack.addServer({ name: node.name, subnet, ip: node.ip, metadata: { "kubernetes.io/cluster/kubernetes": "owned" } }).port);
    kube = await startKubeServer({ tokens: {} });
    dir = await mkdtemp(join(tmpdir(), "podroutes-controller-openstack-"));
    kubeconfig = await controllerKubeconfig(kube, dir, "controller-openstack");
  });
  after(async () => {
    await running?.stop();
    await kube.close();
    await openstack.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const podRoutes = () => router.routes.filter((r) => r.destination.startsWith("10.200.")).map((r) => `${r.destination} via ${r.nexthop}`).sort();

  it("nodes join, one is past the route limit, one leaves", async () => {
    for (const node of NODES.slice(0, 2)) kube.put("nodes", nodeObject(node.name, node.ip, node.podCIDR));
    // The router's own route and two nodes' fill a limit of 3.
    running = await startInProcessController({
      target: openstackTarget,
      values: { router: "k8s-router", routeLimit: "3" },
      kubeconfig,
      identity: "controller-openstack",
      clusterCIDR: "10.200.0.0/16",
      env: openstack.env(),
    });
    await eventually("it leads and has reconciled", () => running!.controller.term?.reconciler.reconciled === true);
    await running.controller.term!.loop.settled();
    assert.deepEqual(podRoutes(), ["10.200.0.0/24 via 10.240.0.20", "10.200.1.0/24 via 10.240.0.21"]);
    for (const node of NODES.slice(0, 2)) {
      assert.equal(networkCondition(kube, node.name)?.state, "False/RouteCreated");
      assert.ok(ports.get(node.name)!.allowed_address_pairs.some((p) => p.ip_address === node.podCIDR), `${node.name}'s port lets its pods out`);
    }

    kube.put("nodes", nodeObject("worker-2", NODES[2]!.ip, NODES[2]!.podCIDR));
    await eventually("worker-2 refused", () => /route limit/.test(networkCondition(kube, "worker-2")?.message ?? ""));
    await running.controller.term!.loop.settled();
    assert.equal(networkCondition(kube, "worker-2")?.state, "True/NoRouteCreated");
    assert.match(networkCondition(kube, "worker-2")!.message, /route limit of 3 routes .*--route-limit.*10\.200\.2\.0\/24/);
    assert.ok(!openstack.requests.some((r) => r.error === "RoutesExhausted"), "Neutron never had to refuse one");
    const events = kube.objects("events") as unknown as { involvedObject: { name: string }; reason: string }[];
    assert.deepEqual(events.map((e) => [e.involvedObject.name, e.reason]), [["worker-2", "RouteLimitExceeded"]]);

    kube.remove("nodes", "worker-0");
    await eventually("worker-0's route removed", () => !podRoutes().includes("10.200.0.0/24 via 10.240.0.20"));
    assert.ok(podRoutes().includes("10.200.1.0/24 via 10.240.0.21"));
    assert.deepEqual(router.routes.find((r) => r.destination === "192.168.0.0/24"), { destination: "192.168.0.0/24", nexthop: "10.240.0.5" }, "the router's own route stays");
    assert.deepEqual(kube.requests.filter((r) => r.code === 403).map((r) => `${r.verb} ${r.resource}`), []);
  });
});
