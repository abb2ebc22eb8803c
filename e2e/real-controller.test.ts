/**
 * `podroutes controller --target gcp`, two replicas, against the REAL kube-apiserver, etcd and
 * kube-controller-manager (src/lab/kubernetes), all in one network namespace that has only loopback (the seed's controller address on it),
 * beside the Compute Engine test server (its own process there). deploy/controller/rbac.yaml is applied
 * with the real kubectl; each replica holds its ServiceAccount's TokenRequest token. Proven as the real
 * server stores it: one leader on a real coordination.k8s.io Lease, every Node's NetworkUnavailable
 * False once its route exists, the leader killed (SIGKILL) and the standby taking over within the lease
 * duration, then routing a Node that joined meanwhile. Needs root and Go: runs in CI, skips loudly elsewhere.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { createInterface } from "node:readline";
import { run } from "../src/process.js";
import { startLogged, within, writeKubeconfig, type Started } from "../testkit/agent-lab.js";
import { BIN } from "../testkit/cli.js";
import { FAST_ELECTION, LEASE } from "../testkit/controller.js";
import { startControlPlane, type ControlPlane } from "../src/lab/kubernetes/control-plane.js";
import { realControlPlaneGate } from "../testkit/kubernetes/gate.js";

const DEPLOY = fileURLToPath(new URL("../../deploy/", import.meta.url));
const GCE_MAIN = fileURLToPath(new URL("../testkit/gce-server-main.js", import.meta.url));
const NETNS = `krealctl${process.pid % 100000}`;
const NETWORK = "kubernetes-the-hard-way";
const CONTROLLER_IP = "10.240.0.10";

describe("podroutes controller replicas against the real kube-apiserver (gcp)", { ...realControlPlaneGate(), timeout: 1_800_000 }, () => {
  let dir: string;
  let plane: ControlPlane | undefined;
  let gce: { endpoint: string; project: string; stop(): Promise<void> } | undefined;
  let kubeconfig: string;
  const replicas = new Map<string, Started>();

  const kubectl = async (args: string[], input?: string) => {
    const result = await plane!.kubectl(args, input);
    assert.equal(result.code, 0, `kubectl ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  const logs = () => [...replicas].map(([name, r]) => `--- replica ${name}:\n${r.log().split("\n").slice(-12).join("\n")}`).join("\n");

  async function ourRoutes(): Promise<{ name: string; destRange: string; nextHopIp: string }[]> {
    const script = "fetch(process.argv[1],{headers:{authorization:'Bearer test'}}).then(async r=>process.stdout.write(await r.text()),e=>{process.stderr.write(String(e));process.exit(2)})";
    const result = await run("ip", ["netns", "exec", NETNS, process.execPath, "-e", script, `${gce!.endpoint}projects/${gce!.project}/global/routes?maxResults=500`]);
    assert.equal(result.code, 0, result.stderr);
    return ((JSON.parse(result.stdout) as { items?: { name: string; destRange: string; nextHopIp: string; description?: string }[] }).items ?? []).filter((r) => r.description?.startsWith("managed by podroutes"));
  }

  async function register(name: string, ip: string): Promise<void> {
    const node = { apiVersion: "v1", kind: "Node", metadata: { name }, status: { addresses: [{ type: "InternalIP", address: ip }] } };
    await kubectl(["create", "-f", "-"], JSON.stringify(node));
  }

  async function conditions(): Promise<Map<string, string>> {
    const list = JSON.parse(await kubectl(["get", "nodes", "-o", "json"])) as { items: any[] };
    return new Map(list.items.map((n) => [n.metadata.name, ((n.status.conditions ?? []) as any[]).find((c) => c.type === "NetworkUnavailable")?.status ?? "-"]));
  }

  async function leaseHolder(): Promise<{ holder: string; transitions: number }> {
    const lease = JSON.parse(await kubectl(["get", "lease", LEASE.name, "-n", LEASE.namespace, "-o", "json"])) as { spec: { holderIdentity?: string; leaseTransitions?: number } };
    return { holder: lease.spec.holderIdentity ?? "", transitions: lease.spec.leaseTransitions ?? 0 };
  }

  function startReplica(name: string): Promise<void> {
    return (async () => {
      const tokenFile = join(dir, `gcp-token-${name}`);
      await writeFile(tokenFile, `gcp-${name}\n`);
      const argv = [
        "ip", "netns", "exec", NETNS, process.execPath, BIN, "controller", "--target=gcp",
        `--project=${gce!.project}`, `--network=${NETWORK}`, `--compute-endpoint=${gce!.endpoint}`, `--access-token-file=${tokenFile}`,
        "--cluster-cidr=10.200.0.0/16", `--kubeconfig=${kubeconfig}`, `--identity=${name}`,
        `--lease-duration=${FAST_ELECTION.leaseDurationMs}ms`, `--renew-deadline=${FAST_ELECTION.renewDeadlineMs}ms`, `--retry-period=${FAST_ELECTION.retryPeriodMs}ms`,
        "--resync=10m", "--listen=127.0.0.1:0", "--log-format=json",
      ];
      const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, GCE_METADATA_HOST: "127.0.0.1:9", METADATA_SERVER_DETECTION: "none" };
      replicas.set(name, startLogged(argv, join(dir, `replica-${name}.log`), `controller ${name}`, env));
    })();
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-real-ctl-"));
    await run("ip", ["netns", "del", NETNS]);
    const made = await run("ip", ["netns", "add", NETNS]);
    assert.equal(made.code, 0, made.stderr);
    await run("ip", ["-n", NETNS, "link", "set", "lo", "up"]);
    // kube-apiserver refuses a loopback advertise address: the controller's own address, on this namespace's lo.
    const address = await run("ip", ["-n", NETNS, "addr", "add", `${CONTROLLER_IP}/32`, "dev", "lo"]);
    assert.equal(address.code, 0, address.stderr);
    plane = await startControlPlane({ netns: NETNS, address: CONTROLLER_IP, stateDir: join(dir, "control-plane"), clusterCIDR: "10.200.0.0/16", progress: (line) => process.stderr.write(`# ${line}\n`) });
    const child = spawn("ip", ["netns", "exec", NETNS, process.execPath, GCE_MAIN, "50"], { stdio: ["ignore", "pipe", "inherit"] });
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once("line", resolve);
      child.once("exit", (code) => reject(new Error(`the Compute test server exited (${code})`)));
    });
    const where = JSON.parse(line) as { endpoint: string; project: string };
    gce = { ...where, stop: async () => void (child.exitCode === null && (child.kill("SIGTERM"), await new Promise((r) => child.once("exit", r)))) };
  });

  after(async () => {
    for (const replica of replicas.values()) await replica.stop().catch(() => undefined);
    await gce?.stop().catch(() => undefined);
    await plane?.stop().catch(() => undefined);
    await run("ip", ["netns", "del", NETNS]);
    await rm(dir, { recursive: true, force: true });
  });

  it("deploy/controller/rbac.yaml applies; two replicas elect one leader on a real Lease; every Node routed and NetworkUnavailable=False", async () => {
    await kubectl(["apply", "--server-side", "-f", join(DEPLOY, "namespace.yaml")]);
    await kubectl(["apply", "--server-side", "--dry-run=server", "-f", join(DEPLOY, "controller", "rbac.yaml")]);
    await kubectl(["apply", "--server-side", "-f", join(DEPLOY, "controller", "rbac.yaml")]);
    const token = await plane!.createToken("podroutes", "podroutes-controller");
    kubeconfig = await writeKubeconfig(join(dir, "controller.kubeconfig"), plane!, token);
    for (let i = 0; i < 3; i++) await register(`worker-${i}`, `10.240.0.${20 + i}`);
    await startReplica("a");
    await startReplica("b");
    const routed = await within(60_000, async () => (await ourRoutes()).length === 3 && [...(await conditions()).values()].every((s) => s === "False"), 200);
    assert.ok(routed !== undefined, `3 routes and every NetworkUnavailable False: ${JSON.stringify([...(await conditions())])}\n${logs()}`);
    const { holder } = await leaseHolder();
    assert.ok(["a", "b"].includes(holder), `the Lease is held by a replica: ${holder}`);
    // Each route sends its Node's pod CIDR (from the real node IPAM controller) to its InternalIP.
    const nodes = (JSON.parse(await kubectl(["get", "nodes", "-o", "json"])) as { items: any[] }).items;
    const routes = await ourRoutes();
    for (const node of nodes) assert.ok(routes.some((r) => r.destRange === node.spec.podCIDR && r.nextHopIp === node.status.addresses[0].address), `${node.metadata.name}: ${JSON.stringify(routes)}`);
  });

  it("the leader killed (SIGKILL): the standby takes the real Lease within the lease duration and routes a Node that joined meanwhile", async () => {
    const before = await leaseHolder();
    const leader = replicas.get(before.holder)!;
    const standby = before.holder === "a" ? "b" : "a";
    leader.child.kill("SIGKILL");
    await leader.exited;
    const killed = performance.now();
    await register("worker-3", "10.240.0.23");
    const tookOver = await within(FAST_ELECTION.leaseDurationMs * 3, async () => (await leaseHolder()).holder === standby, 100);
    assert.ok(tookOver !== undefined, `standby ${standby} did not take the Lease\n${logs()}`);
    process.stderr.write(`# standby took the real Lease ${(performance.now() - killed).toFixed(0)} ms after the leader was killed (lease duration ${FAST_ELECTION.leaseDurationMs} ms)\n`);
    assert.ok((await leaseHolder()).transitions > before.transitions, "a takeover increments leaseTransitions");
    const routed = await within(30_000, async () => (await ourRoutes()).length === 4 && (await conditions()).get("worker-3") === "False", 200);
    assert.ok(routed !== undefined, `worker-3 not routed by the new leader\n${logs()}`);
  });
});
