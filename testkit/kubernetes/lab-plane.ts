/**
 * The real control plane in a lab's controller namespace, as the real-control-plane tests start it: at
 * the seed's controller address, pod CIDRs from the lab's cluster CIDR, every process recorded with the
 * lab (so `labDown` ends it whatever happens), its progress and start-up time on stderr.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { addLabProcess, type LabState, type LabWorker } from "../../src/lab/lab.js";
import { run } from "../../src/process.js";
import { within } from "../agent-lab.js";
import { startControlPlane, type ControlPlane } from "../../src/lab/kubernetes/control-plane.js";

export async function labControlPlane(state: LabState, dir: string): Promise<ControlPlane> {
  const started = performance.now();
  const plane = await startControlPlane({
    netns: state.controllerNetns!,
    address: state.controllerIP,
    stateDir: join(dir, "control-plane"),
    clusterCIDR: state.clusterCIDR,
    progress: (line) => process.stderr.write(`# ${line}\n`),
    onStarted: (p) => addLabProcess(state.name, { netns: state.controllerNetns!, pid: p.pid, what: p.what, program: p.program }),
  });
  process.stderr.write(`# real control plane ${plane.binaries.release} ready in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  return plane;
}

/** A Node as the kubelet registers it: addresses and conditions in status, no pod CIDR (IPAM gives it). */
export function kubeletNode(worker: LabWorker): object {
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: worker.name, labels: { "kubernetes.io/hostname": worker.name, "kubernetes.io/os": "linux" } },
    status: {
      addresses: [
        { type: "InternalIP", address: worker.internalIP },
        { type: "Hostname", address: worker.name },
      ],
      conditions: [{ type: "Ready", status: "True", reason: "KubeletReady", message: "kubelet is posting ready status", lastHeartbeatTime: now, lastTransitionTime: now }],
    },
  };
}

/** `kubectl ARGS` on the plane; its stdout, or an assertion naming the command and its stderr. */
export async function kubectlOk(plane: ControlPlane, args: string[], input?: string): Promise<string> {
  const result = await plane.kubectl(args, input);
  assert.equal(result.code, 0, `kubectl ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

/** Registers `worker`'s Node as its kubelet would (again, if it was deleted) and waits for IPAM's pod CIDR. */
export async function registerNode(plane: ControlPlane, worker: LabWorker): Promise<string> {
  await kubectlOk(plane, ["delete", "node", worker.name, "--ignore-not-found", "--wait=true"]);
  await kubectlOk(plane, ["create", "-f", "-"], JSON.stringify(kubeletNode(worker)));
  let cidr = "";
  const took = await within(30_000, async () => {
    cidr = (JSON.parse(await kubectlOk(plane, ["get", "node", worker.name, "-o", "json"])) as { spec?: { podCIDR?: string } }).spec?.podCIDR ?? "";
    return cidr !== "";
  }, 100);
  assert.ok(took !== undefined, `kube-controller-manager gave ${worker.name} no pod CIDR in 30 s`);
  return cidr;
}

/** The routes podroutes owns (proto 150) in `worker`'s namespace: destination → gateway. */
export async function ownedRoutes(worker: LabWorker): Promise<Map<string, string>> {
  const result = await run("ip", ["-n", worker.netns, "-N", "-json", "route", "show", "proto", "150"]);
  assert.equal(result.code, 0, result.stderr);
  return new Map((JSON.parse(result.stdout || "[]") as { dst: string; gateway?: string }[]).map((r) => [r.dst, r.gateway ?? ""]));
}

/** Every one of `workers` has exactly a route to each other's pod CIDR via its internal IP. */
export async function convergedOn(workers: LabWorker[]): Promise<boolean> {
  for (const w of workers) {
    const routes = await ownedRoutes(w);
    const others = workers.filter((o) => o.name !== w.name);
    if (routes.size !== others.length || others.some((o) => routes.get(o.podCIDR) !== o.internalIP)) return false;
  }
  return true;
}
