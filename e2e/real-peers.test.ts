/**
 * The real peers podroutes is compared with (issue 21), each built from its Go module (testkit/peers/go,
 * cached outside the repository) and run as it runs on a cluster (testkit/peers/lab.ts), each in a fresh
 * lab with the REAL control plane (`lab up --kubernetes`: etcd, kube-apiserver, kube-controller-manager
 * giving the Nodes their pod CIDRs, the workers' kubelets' part):
 * - flanneld --kube-subnet-mgr, backend host-gw: one per worker, in the worker's namespace (host network),
 *   with flannel's own RBAC and its ServiceAccount's token;
 * - kube-router, routing only (BGP between the workers, firewall and service proxy off): one per worker;
 * - Kubernetes' route controller (k8s.io/cloud-provider) with our GCE-shaped Routes: one for the cluster,
 *   in the controller's namespace, writing routes to the Compute Engine test server.
 * Proven: routes on every worker (kernel) or in the Compute API, pods pinging across workers over the
 * right next hop, NetworkUnavailable=False from the route controller. Prints each peer's time from start
 * to every route in place (not asserted). Needs root, Go and gcc: runs in CI, skips loudly elsewhere.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { within } from "../testkit/agent-lab.js";
import { realControlPlaneGate } from "../testkit/kubernetes/gate.js";
import { peerBinaries, peersGate, type PeerBinaries } from "../testkit/peers/binaries.js";
import { GCE_ZONE, PeerLab, gceRoutes, startFlannel, startGce, startKubeRouter, startRouteController, type GceEndpoint } from "../testkit/peers/lab.js";

const WORKERS = 3;

function gate(): { skip?: string } {
  const plane = realControlPlaneGate();
  return plane.skip ? plane : peersGate();
}

const log = (line: string) => process.stderr.write(`# ${line}\n`);

/** Waits for `check`, printing how long it took from `since`; fails with the peers' logs after `deadlineMs`. */
async function timed(lab: PeerLab, what: string, since: number, deadlineMs: number, check: () => Promise<boolean>): Promise<void> {
  const took = await within(deadlineMs, check, 50);
  assert.ok(took !== undefined, `${what}: not within ${deadlineMs / 1000} s\n${lab.logs()}`);
  log(`${what}: ${((performance.now() - since) / 1000).toFixed(2)} s from start (${WORKERS} workers)`);
}

async function kernelPeer(lab: PeerLab, what: string, prepare: () => Promise<() => Promise<void>>): Promise<void> {
  const launch = await prepare();
  const started = performance.now();
  await launch();
  await timed(lab, `${what}: every route in place`, started, 180_000, () => lab.kernelRoutesInPlace());
  assert.deepEqual(await lab.podPathFailures(), [], lab.logs());
  for (const p of lab.processes) assert.ok(p.running, `${p.what} exited\n${lab.logs()}`);
}

describe("the real peers (flannel, kube-router, Kubernetes' route controller) against the real control plane", { ...gate(), timeout: 3_600_000 }, () => {
  let binaries: PeerBinaries;

  before(async () => {
    const started = performance.now();
    binaries = await peerBinaries(log);
    log(`peers ${JSON.stringify(binaries.version)} in ${binaries.dir} (${((performance.now() - started) / 1000).toFixed(1)} s, a build if the cache lacked them)`);
  });

  describe("flanneld --kube-subnet-mgr, backend host-gw, one per worker", () => {
    const lab = new PeerLab(`kflan${process.pid % 10000}`, WORKERS, log);
    before(() => lab.up());
    after(() => lab.down());

    it("routes every worker's pod CIDR on every other worker; pods ping across workers over the right next hop", () => kernelPeer(lab, "flannel host-gw", () => startFlannel(lab, binaries)));
  });

  describe("kube-router --run-router (BGP between the workers), firewall and service proxy off, one per worker", () => {
    const lab = new PeerLab(`kkr${process.pid % 10000}`, WORKERS, log);
    before(() => lab.up());
    after(() => lab.down());

    it("routes every worker's pod CIDR on every other worker; pods ping across workers over the right next hop", () => kernelPeer(lab, "kube-router", () => startKubeRouter(lab, binaries)));
  });

  describe("Kubernetes' route controller (k8s.io/cloud-provider) with GCE-shaped Routes, one for the cluster", () => {
    const lab = new PeerLab(`krc${process.pid % 10000}`, WORKERS, log);
    let gce: GceEndpoint;
    before(async () => {
      await lab.up();
      gce = await startGce(lab);
    });
    after(() => lab.down());

    it("writes a k8s-node-route per Node to the Compute API (CLUSTER-UID, next hop the Node's instance) and sets NetworkUnavailable=False", async () => {
      const launch = await startRouteController(lab, binaries, gce);
      const started = performance.now();
      await launch();
      const nodes = async () => (JSON.parse(await lab.kubectl(["get", "nodes", "-o", "json"])) as { items: any[] }).items;
      await timed(lab, "route controller: every route in the Compute API", started, 120_000, async () => (await gceRoutes(lab, gce)).length === WORKERS);
      const routes = await gceRoutes(lab, gce);
      for (const node of await nodes()) {
        const route = routes.find((r) => r.name === `kubernetes-${node.metadata.uid}`);
        assert.ok(route, `no route kubernetes-${node.metadata.uid} for ${node.metadata.name}: ${JSON.stringify(routes)}`);
        assert.equal(route.destRange, node.spec.podCIDR);
        assert.equal(route.description, "k8s-node-route");
        assert.match(route.nextHopInstance ?? "", new RegExp(`/zones/${GCE_ZONE}/instances/${node.metadata.name}$`));
      }
      await timed(lab, "route controller: NetworkUnavailable=False on every Node", started, 60_000, async () =>
        (await nodes()).every((n) => (n.status.conditions as any[]).some((c) => c.type === "NetworkUnavailable" && c.status === "False" && c.reason === "RouteCreated")),
      );
      for (const p of lab.processes) assert.ok(p.running, `${p.what} exited\n${lab.logs()}`);
    });
  });
});
