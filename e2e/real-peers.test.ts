/**
 * The real peers podroutes is compared with (issue 21), each built from its Go module (testkit/peers/go,
 * cached outside the repository) and run as it runs on a cluster, each in a fresh lab with the REAL
 * control plane (`lab up --kubernetes`: etcd, kube-apiserver, kube-controller-manager giving the Nodes
 * their pod CIDRs, the workers' kubelets' part):
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
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { addLabProcess, labDown, labUp, type LabState, type LabWorker } from "../src/lab/lab.js";
import { labKubectl } from "../src/lab/kubernetes/lab-cluster.js";
import { checkPodPaths } from "../src/lab/paths.js";
import { run } from "../src/process.js";
import { startLogged, within, writeKubeconfig, type Started } from "../testkit/agent-lab.js";
import { realControlPlaneGate } from "../testkit/kubernetes/gate.js";
import { peerBinaries, peersGate, type PeerBinaries } from "../testkit/peers/binaries.js";
import { FLANNEL_RBAC, KUBE_ROUTER_RBAC } from "../testkit/peers/rbac.js";

const GCE_MAIN = fileURLToPath(new URL("../testkit/gce-server-main.js", import.meta.url));
const WORKERS = 3;
const NETWORK = "kubernetes-the-hard-way";
const ZONE = "us-west1-c";

function gate(): { skip?: string } {
  const plane = realControlPlaneGate();
  return plane.skip ? plane : peersGate();
}

/** A fresh lab with the real control plane, its processes and namespaces removed whatever happens. */
class PeerLab {
  state!: LabState;
  dir!: string;
  readonly processes: Started[] = [];
  constructor(readonly name: string) {}

  async up(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), `podroutes-${this.name}-`));
    await labDown(this.name);
    ({ state: this.state } = await labUp({ name: this.name, workers: WORKERS, kubernetes: true, log: (line) => process.stderr.write(`# ${line}\n`) }));
  }

  async down(): Promise<void> {
    for (const started of this.processes) await started.stop().catch(() => undefined);
    await labDown(this.name);
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  async kubectl(args: string[], input?: string): Promise<string> {
    const result = await labKubectl(this.state, args, input);
    assert.equal(result.code, 0, `kubectl ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  }

  /** A kubeconfig holding the ServiceAccount's TokenRequest token, as its pod would have. */
  async serviceAccountKubeconfig(namespace: string, serviceAccount: string): Promise<string> {
    const token = (await this.kubectl(["create", "token", serviceAccount, "-n", namespace, "--duration", "2h"])).trim();
    return writeKubeconfig(join(this.dir, `${serviceAccount}.kubeconfig`), this.state.kubernetes!, token);
  }

  /** Starts `argv` inside `netns`, recorded with the lab so `lab down` ends it by PID too. */
  async start(netns: string, argv: string[], what: string, env: NodeJS.ProcessEnv = {}): Promise<Started> {
    const started = startLogged(["ip", "netns", "exec", netns, ...argv], join(this.dir, `${what.replace(/\W+/g, "-")}.log`), what, { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: this.dir, ...env });
    this.processes.push(started);
    await addLabProcess(this.name, { netns, pid: started.pid, what, program: argv[0]! });
    return started;
  }

  logs(lines = 15): string {
    return this.processes.map((p) => `--- ${p.what}:\n${p.log().trim().split("\n").slice(-lines).join("\n")}`).join("\n");
  }

  /** Each worker's route to every other worker's pod CIDR: next hop that worker's internal IP (whoever wrote it). */
  async kernelRoutesInPlace(): Promise<boolean> {
    for (const w of this.state.workers) {
      const shown = await run("ip", ["-n", w.netns, "-json", "route", "show"]);
      if (shown.code !== 0) return false;
      const routes = new Map((JSON.parse(shown.stdout || "[]") as { dst: string; gateway?: string }[]).map((r) => [r.dst, r.gateway ?? ""]));
      if (this.state.workers.some((o) => o !== w && routes.get(o.podCIDR) !== o.internalIP)) return false;
    }
    return true;
  }

  async podsReachEachOther(): Promise<void> {
    const checks = await checkPodPaths(this.state);
    assert.deepEqual(checks.filter((c) => !c.ok).map((c) => c.message), [], this.logs());
  }
}

/** Waits for `check`, printing how long it took from `since`; fails with the peers' logs after `deadlineMs`. */
async function timed(lab: PeerLab, what: string, since: number, deadlineMs: number, check: () => Promise<boolean>): Promise<void> {
  const took = await within(deadlineMs, check, 50);
  assert.ok(took !== undefined, `${what}: not within ${deadlineMs / 1000} s\n${lab.logs()}`);
  process.stderr.write(`# ${what}: ${((performance.now() - since) / 1000).toFixed(2)} s from start (${WORKERS} workers)\n`);
}

describe("the real peers (flannel, kube-router, Kubernetes' route controller) against the real control plane", { ...gate(), timeout: 3_600_000 }, () => {
  let binaries: PeerBinaries;

  before(async () => {
    const started = performance.now();
    binaries = await peerBinaries((line) => process.stderr.write(`# ${line}\n`));
    process.stderr.write(`# peers ${JSON.stringify(binaries.version)} in ${binaries.dir} (${((performance.now() - started) / 1000).toFixed(1)} s, a build if the cache lacked them)\n`);
  });

  describe("flanneld --kube-subnet-mgr, backend host-gw, one per worker", () => {
    const lab = new PeerLab(`kflan${process.pid % 10000}`);
    before(() => lab.up());
    after(() => lab.down());

    it("routes every worker's pod CIDR on every other worker; pods ping across workers over the right next hop", async () => {
      await lab.kubectl(["apply", "--server-side", "-f", "-"], FLANNEL_RBAC);
      const kubeconfig = await lab.serviceAccountKubeconfig("kube-flannel", "flannel");
      const netConf = join(lab.dir, "net-conf.json");
      await writeFile(netConf, JSON.stringify({ Network: lab.state.clusterCIDR, Backend: { Type: "host-gw" } }));
      const started = performance.now();
      for (const w of lab.state.workers) {
        await lab.start(w.netns, [
          binaries.path.flannel, "--kube-subnet-mgr", `--kubeconfig-file=${kubeconfig}`, "--iface=eth0",
          `--net-config-path=${netConf}`, `--subnet-file=${join(lab.dir, `subnet-${w.name}.env`)}`, "--ip-masq=false",
        ], `flanneld on ${w.name}`, { NODE_NAME: w.name });
      }
      await timed(lab, "flannel host-gw: every route in place", started, 120_000, () => lab.kernelRoutesInPlace());
      await lab.podsReachEachOther();
      for (const p of lab.processes) assert.ok(p.running, `${p.what} exited\n${lab.logs()}`);
    });
  });

  describe("kube-router --run-router (BGP between the workers), firewall and service proxy off, one per worker", () => {
    const lab = new PeerLab(`kkr${process.pid % 10000}`);
    before(() => lab.up());
    after(() => lab.down());

    it("routes every worker's pod CIDR on every other worker; pods ping across workers over the right next hop", async () => {
      await lab.kubectl(["apply", "--server-side", "-f", "-"], KUBE_ROUTER_RBAC);
      const kubeconfig = await lab.serviceAccountKubeconfig("kube-system", "kube-router");
      const started = performance.now();
      for (const w of lab.state.workers) {
        await lab.start(w.netns, [
          binaries.path["kube-router"], `--kubeconfig=${kubeconfig}`, `--hostname-override=${w.name}`,
          "--run-router=true", "--run-firewall=false", "--run-service-proxy=false",
          "--enable-cni=false", "--enable-overlay=false", "--enable-pod-egress=false", "--bgp-graceful-restart=false",
        ], `kube-router on ${w.name}`);
      }
      await timed(lab, "kube-router: every route in place", started, 180_000, () => lab.kernelRoutesInPlace());
      await lab.podsReachEachOther();
      for (const p of lab.processes) assert.ok(p.running, `${p.what} exited\n${lab.logs()}`);
    });
  });

  describe("Kubernetes' route controller (k8s.io/cloud-provider) with GCE-shaped Routes, one for the cluster", () => {
    const lab = new PeerLab(`krc${process.pid % 10000}`);
    let gce: { endpoint: string; project: string };
    before(async () => {
      await lab.up();
      const instances = lab.state.workers.map((w: LabWorker) => ({ name: w.name, zone: ZONE, networkIP: w.internalIP, network: NETWORK, canIpForward: true }));
      const server = await lab.start(lab.state.controllerNetns!, [process.execPath, GCE_MAIN, "50", JSON.stringify(instances)], "Compute Engine test server");
      // The server prints where it listens as its first line (into its log: it is a Started with a file).
      const line = await within(10_000, async () => server.log().includes("endpoint"), 50);
      assert.ok(line !== undefined, `the Compute test server did not start\n${lab.logs()}`);
      gce = JSON.parse(server.log().split("\n").find((l) => l.includes("endpoint"))!) as typeof gce;
    });
    after(() => lab.down());

    async function gceRoutes(): Promise<{ name: string; destRange: string; nextHopInstance?: string; description?: string }[]> {
      const script = "fetch(process.argv[1],{headers:{authorization:'Bearer test'}}).then(async r=>process.stdout.write(await r.text()),e=>{process.stderr.write(String(e));process.exit(2)})";
      const result = await run("ip", ["netns", "exec", lab.state.controllerNetns!, process.execPath, "-e", script, `${gce.endpoint}projects/${gce.project}/global/routes?maxResults=500`]);
      assert.equal(result.code, 0, result.stderr);
      return (JSON.parse(result.stdout) as { items?: [] }).items ?? [];
    }

    it("writes a k8s-node-route per Node to the Compute API (CLUSTER-UID, next hop the Node's instance) and sets NetworkUnavailable=False", async () => {
      const kubeconfig = await (async () => {
        // The bootstrap policy binds system:controller:route-controller to this ServiceAccount.
        await lab.kubectl(["create", "serviceaccount", "route-controller", "-n", "kube-system"]);
        return lab.serviceAccountKubeconfig("kube-system", "route-controller");
      })();
      const tokenFile = join(lab.dir, "gce-token");
      await writeFile(tokenFile, "route-controller-test-token\n");
      const started = performance.now();
      await lab.start(lab.state.controllerNetns!, [
        binaries.path["route-controller"], `--kubeconfig=${kubeconfig}`, "--cluster-name=kubernetes", `--cluster-cidr=${lab.state.clusterCIDR}`,
        `--compute-endpoint=${gce.endpoint}`, `--project=${gce.project}`, `--network=${NETWORK}`, `--zones=${ZONE}`, `--access-token-file=${tokenFile}`,
      ], "route controller", { GCE_METADATA_HOST: "127.0.0.1:9" });
      const nodes = async () => (JSON.parse(await lab.kubectl(["get", "nodes", "-o", "json"])) as { items: any[] }).items;
      await timed(lab, "route controller: every route in the Compute API", started, 120_000, async () => (await gceRoutes()).length === WORKERS);
      const routes = await gceRoutes();
      for (const node of await nodes()) {
        const route = routes.find((r) => r.name === `kubernetes-${node.metadata.uid}`);
        assert.ok(route, `no route kubernetes-${node.metadata.uid} for ${node.metadata.name}: ${JSON.stringify(routes)}`);
        assert.equal(route.destRange, node.spec.podCIDR);
        assert.equal(route.description, "k8s-node-route");
        assert.match(route.nextHopInstance ?? "", new RegExp(`/zones/${ZONE}/instances/${node.metadata.name}$`));
      }
      await timed(lab, "route controller: NetworkUnavailable=False on every Node", started, 60_000, async () =>
        (await nodes()).every((n) => (n.status.conditions as any[]).some((c) => c.type === "NetworkUnavailable" && c.status === "False" && c.reason === "RouteCreated")),
      );
      for (const p of lab.processes) assert.ok(p.running, `${p.what} exited\n${lab.logs()}`);
    });
  });
});
