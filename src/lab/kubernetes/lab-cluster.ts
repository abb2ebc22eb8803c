/**
 * `podroutes lab up --kubernetes`: the lab's control plane for real, as Kubernetes the Hard Way runs it on
 * controller-0 — etcd, kube-apiserver and kube-controller-manager (src/lab/kubernetes/control-plane.ts)
 * in the lab's controller namespace at the seed's controller address — and the kubelets' part of the
 * workers' Nodes (kubelets.ts), in one long-running process (`podroutes lab kubelets`). Every process
 * outlives `lab up` and is recorded in the lab's state, before anything can fail, for `lab down`.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createKubeClient } from "../../kube/client.js";
import { discoverConnection } from "../../kube/kubeconfig.js";
import { packagePath } from "../../package-path.js";
import { run } from "../../process.js";
import { labProcessAlive, loadLab, saveLab, type LabProcess, type LabState } from "../lab.js";
import { startControlPlane } from "./control-plane.js";
import { registerNode, runHeartbeats } from "./kubelets.js";

function logTail(file: string, lines = 10): string {
  try {
    return readFileSync(file, "utf8").trim().split("\n").slice(-lines).join("\n");
  } catch {
    return "(none)";
  }
}

/** bin/podroutes.js of this installation, from dist/src/lab/kubernetes (modules) or dist/ (the bundle). */
function podroutesBin(): string {
  const bin = packagePath(join("bin", "podroutes.js"));
  if (!bin) throw new Error("lab: bin/podroutes.js not found in this podroutes installation");
  return bin;
}

/** `kubectl ARGS` as the lab's admin, from the lab's jumpbox (lab addresses are reached from lab namespaces only). */
export function labKubectl(state: LabState, args: string[], input?: string) {
  if (!state.kubernetes) throw new Error(`lab: lab ${state.name} has no control plane (lab up --kubernetes)`);
  return run("ip", ["netns", "exec", state.jumpboxNetns, "kubectl", "--kubeconfig", state.kubernetes.kubeconfig, ...args], input);
}

/** The Nodes' pod CIDRs as the API server stores them. */
export async function storedPodCIDRs(state: LabState): Promise<Map<string, string>> {
  const listed = await labKubectl(state, ["get", "nodes", "-o", "json"]);
  if (listed.code !== 0) throw new Error(`lab: kubectl get nodes: ${listed.stderr.trim()}`);
  const items = (JSON.parse(listed.stdout) as { items: { metadata: { name: string }; spec?: { podCIDR?: string } }[] }).items;
  return new Map(items.map((node) => [node.metadata.name, node.spec?.podCIDR ?? ""]));
}

/**
 * Starts the control plane and the kubelets' process, and waits until every worker's Node has its pod
 * CIDR from kube-controller-manager — the one the worker's pods were given (the node IPAM controller
 * hands the cluster CIDR's /24s out in order, and the Nodes register in the workers' order).
 */
export async function startLabCluster(state: LabState, log: (line: string) => void): Promise<void> {
  const dir = join(state.stateDir, "kubernetes");
  const record = async (entry: Omit<LabProcess, "netns">) => {
    state.processes = [...(state.processes ?? []), { netns: state.controllerNetns!, ...entry }];
    await saveLab(state);
  };
  const plane = await startControlPlane({
    netns: state.controllerNetns!,
    address: state.controllerIP,
    stateDir: dir,
    clusterCIDR: state.clusterCIDR,
    detached: true,
    progress: log,
    onStarted: (p) => record({ pid: p.pid, what: p.what, program: p.program }),
  });
  state.kubernetes = { release: plane.binaries.release, url: plane.url, kubeconfig: plane.adminKubeconfig, caFile: plane.caFile, dir };
  await saveLab(state);
  log(`Kubernetes ${plane.binaries.release}: kube-apiserver at ${plane.url}`);

  const logFile = join(dir, "kubelets.log");
  let kubelets: LabProcess | undefined;
  const fd = openSync(logFile, "a");
  try {
    const argv = ["ip", "netns", "exec", state.controllerNetns!, process.execPath, podroutesBin(), "lab", "kubelets", "--lab", state.name];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", fd, fd], detached: true });
    child.once("error", () => {});
    child.unref();
    kubelets = { netns: state.controllerNetns!, pid: child.pid!, what: "the workers' kubelets (Node registration, Leases, status)", program: process.execPath };
    await record(kubelets);
  } finally {
    closeSync(fd);
  }

  // Generous: on a loaded machine the controller manager's informers take their time to start.
  const deadline = performance.now() + 180_000;
  let cidrs = new Map<string, string>();
  while (performance.now() < deadline) {
    cidrs = await storedPodCIDRs(state);
    if (state.workers.every((w) => cidrs.get(w.name))) break;
    if (kubelets && !labProcessAlive(kubelets)) throw new Error(`lab: the kubelets' process ended; its log ends:\n${logTail(logFile)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const missing = state.workers.filter((w) => !cidrs.get(w.name));
  if (missing.length) {
    throw new Error(`lab: no pod CIDR from kube-controller-manager within 180 s for ${missing.map((w) => w.name).join(", ")} (logs in ${dir}); the kubelets' log ends:\n${logTail(logFile)}\nkube-controller-manager's:\n${logTail(join(dir, "kube-controller-manager.log"))}`);
  }
  const wrong = state.workers.filter((w) => cidrs.get(w.name) !== w.podCIDR);
  if (wrong.length) {
    throw new Error(`lab: kube-controller-manager gave ${wrong.map((w) => `${w.name} ${cidrs.get(w.name)}`).join(", ")}, but the lab's pods are in ${wrong.map((w) => w.podCIDR).join(", ")}`);
  }
  for (const w of state.workers) log(`Node ${w.name} registered: InternalIP ${w.internalIP}, podCIDR ${cidrs.get(w.name)} (from kube-controller-manager)`);
}

/**
 * `podroutes lab kubelets`: registers each worker of the lab's state as its kubelet would (in the
 * workers' order, each waiting for its pod CIDR; workers added later are registered as they appear),
 * then keeps their Leases and status fresh until SIGTERM.
 */
export async function runLabKubelets(name: string, log: (line: string) => void): Promise<void> {
  const first = await loadLab(name);
  if (!first?.kubernetes) throw new Error(`lab: lab ${name} has no control plane`);
  const client = createKubeClient(await discoverConnection({ kubeconfig: first.kubernetes.kubeconfig }), { userAgent: "podroutes-lab-kubelets" });
  const stop = new AbortController();
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => stop.abort());
  const registered: string[] = [];
  const registerNew = async () => {
    const state = await loadLab(name);
    for (const worker of state?.workers ?? []) {
      if (registered.includes(worker.name)) continue;
      // As a kubelet does: a failed registration (the API server restarting, a controller manager slow
      // to hand out the CIDR on a loaded machine) is tried again, never given up; in the workers' order.
      for (let attempt = 1; !stop.signal.aborted; attempt++) {
        try {
          const cidr = await registerNode(client, { name: worker.name, internalIP: worker.internalIP }, { signal: stop.signal, timeoutMs: 30_000 });
          registered.push(worker.name);
          log(`registered Node ${worker.name} (${worker.internalIP}): podCIDR ${cidr}`);
          break;
        } catch (error) {
          log(`registering Node ${worker.name} (attempt ${attempt}): ${(error as Error).message}; trying again`);
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      }
    }
  };
  await registerNew();
  let pending: Promise<void> | undefined;
  await runHeartbeats(
    client,
    () => {
      // New workers (lab's addLabWorker) are registered between rounds, one round at a time; a failure
      // is tried again at the next round.
      pending ??= registerNew()
        .catch((error: Error) => log(`registering: ${error.message}`))
        .finally(() => (pending = undefined));
      return registered;
    },
    { signal: stop.signal, log },
  );
}
