/**
 * The local lab: the seeds' clusters built from network namespaces on one machine, so podroutes can be
 * seen working without a cloud account. A `vpc` namespace holds an L2 bridge; each worker namespace
 * joins it by a veth, forwards IP, and runs one pod created by the real CNI `bridge` + `host-local`
 * plugins. Nothing is created in, or changed of, the root namespace: links are made inside the vpc
 * namespace with their peer sent straight into the worker (`ip -n VPC link add ... netns W`).
 *
 * The lab's state file is written before anything is created, so `lab down` removes exactly what the
 * lab made, even after a half-finished `lab up`.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { RawInventory } from "../inventory.js";
import { readOption } from "../options.js";
import { DEFAULT_LAB, labOption } from "./options.js";
import { removeLockFiles } from "../targets/linux/runner.js";
import { run } from "../process.js";
export { DEFAULT_LAB, labOption } from "./options.js";
import { bridgeCniConfig, labTopology, type LabTopology, type LabWorkerSpec } from "./topology.js";

export const LAB_STATE_ROOT = process.env.PODROUTES_LAB_DIR ?? "/run/podroutes";
export const CNI_PATH = process.env.CNI_PATH ?? "/usr/lib/cni";

export interface LabWorker extends LabWorkerSpec {
  netns: string;
  podNetns: string;
  /** The pod's address, as the CNI plugin assigned it. */
  podIP?: string;
}

export interface LabState extends Omit<LabTopology, "workers"> {
  name: string;
  vpcNetns: string;
  jumpboxNetns: string;
  /** The controller's namespace (absent in state files of labs built before it existed). */
  controllerNetns?: string;
  stateDir: string;
  workers: LabWorker[];
  /** `creating` until `lab up` finished. */
  status: "creating" | "up";
  /**
   * Processes the lab started (sshd per worker, the control plane, agents), by pid, so `lab down` ends
   * exactly those; `program`, when known, is what /proc/PID/cmdline must start with (a PID that went to
   * another process since is left alone).
   */
  processes?: LabProcess[];
  /** The real control plane (`lab up --kubernetes`). */
  kubernetes?: LabKubernetes;
  /** Extra data other parts of podroutes keep with the lab (SSH keys, known_hosts). */
  extra?: Record<string, unknown>;
  /**
   * A VPC router (testkit/vpc-router.ts) forwarding the workers' cluster traffic by a cloud test server's
   * route table: while it runs, `verify --nodes lab` with a cloud target sends the pods' packets through it.
   */
  vpcRouter?: { netns: string; address: string };
}

export interface LabProcess {
  netns: string;
  pid: number;
  what: string;
  program?: string;
}

export interface LabKubernetes {
  /** The Kubernetes release of the programs (`v1.37.2`). */
  release: string;
  /** https://CONTROLLER_IP:6443, reachable from the lab's namespaces only. */
  url: string;
  /** The admin's kubeconfig; use it from a lab namespace (`ip netns exec NAME-jumpbox kubectl --kubeconfig ...`). */
  kubeconfig: string;
  caFile: string;
  /** Where the control plane keeps its store, certificates and logs. */
  dir: string;
}

export function labStatePath(name: string): string {
  return join(LAB_STATE_ROOT, `lab-${name}.json`);
}

function checkName(name: string): void {
  readOption(labOption, { lab: name });
}

export async function loadLab(name = DEFAULT_LAB): Promise<LabState | undefined> {
  checkName(name);
  try {
    return JSON.parse(await readFile(labStatePath(name), "utf8")) as LabState;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`lab: cannot read ${labStatePath(name)}`, { cause: error });
  }
}

export async function saveLab(state: LabState): Promise<void> {
  await mkdir(LAB_STATE_ROOT, { recursive: true });
  await writeFile(labStatePath(state.name), JSON.stringify(state, null, 2));
}

/** Reads the running lab, or explains how to start one. */
export async function requireLab(name = DEFAULT_LAB): Promise<LabState> {
  const state = await loadLab(name);
  if (!state || state.status !== "up") {
    throw new Error(`lab: no lab named ${name} is up; start it with \`podroutes lab up${name === DEFAULT_LAB ? "" : ` --lab ${name}`}\``);
  }
  return state;
}

async function sh(command: string, args: string[], what: string, stdin?: string, env?: NodeJS.ProcessEnv): Promise<string> {
  const result = env ? await runWithEnv(command, args, env, stdin) : await run(command, args, stdin);
  if (result.code !== 0) {
    throw new Error(`lab: ${what} failed: ${command} ${args.join(" ")}: ${(result.stderr || result.stdout).trim()}`);
  }
  return result.stdout;
}

async function runWithEnv(command: string, args: string[], env: NodeJS.ProcessEnv, stdin?: string) {
  // `env` as a program keeps the argument-array rule: no shell is involved.
  const assignments = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return run("env", [...assignments, command, ...args], stdin);
}

export async function existingNamespaces(): Promise<Set<string>> {
  const out = await sh("ip", ["netns", "list"], "listing namespaces");
  return new Set(out.split("\n").map((line) => line.split(" ")[0]!).filter(Boolean));
}

const ip = (args: string[], what: string) => sh("ip", args, what);

export function labNamespaces(state: LabState): string[] {
  return [state.vpcNetns, state.jumpboxNetns, ...(state.controllerNetns ? [state.controllerNetns] : []), ...state.workers.flatMap((w) => [w.netns, w.podNetns]), ...(state.vpcRouter ? [state.vpcRouter.netns] : [])];
}

export interface LabUpOptions {
  name?: string;
  topology?: string;
  workers?: number;
  /** Also the real control plane: etcd, kube-apiserver, kube-controller-manager and the workers' Nodes. */
  kubernetes?: boolean;
  /**
   * A cluster CIDR larger than the topology's (which holds 256 /24s), given to kube-controller-manager:
   * for benchmarks that register more Nodes than that. It must hold the workers' pod CIDRs (10.200.N.0/24).
   */
  clusterCIDR?: string;
  log?: (line: string) => void;
}

/** Whether the process recorded as `entry` still runs as that program (not a PID since reused). */
export function labProcessAlive(entry: LabProcess): boolean {
  try {
    const argv0 = readFileSync(`/proc/${entry.pid}/cmdline`, "utf8").split("\0")[0] ?? "";
    return entry.program === undefined || argv0 === entry.program;
  } catch {
    return false;
  }
}

/** Builds the lab; a second call with the lab already up changes nothing and returns it. */
export async function labUp(options: LabUpOptions = {}): Promise<{ state: LabState; created: boolean }> {
  const name = options.name ?? DEFAULT_LAB;
  checkName(name);
  const log = options.log ?? (() => {});
  const existing = await loadLab(name);
  if (existing) {
    const present = await existingNamespaces();
    const whole = existing.status === "up" && labNamespaces(existing).every((ns) => present.has(ns)) && (existing.processes ?? []).every(labProcessAlive);
    if (whole && options.kubernetes && !existing.kubernetes) {
      throw new Error(`lab: lab ${name} is up without its control plane; nothing was changed. Take it down first (podroutes lab down${name === DEFAULT_LAB ? "" : ` --lab ${name}`}), then lab up --kubernetes`);
    }
    if (whole) {
      log(`lab ${name} is already up (${existing.workers.length} workers, ${existing.topology}${existing.kubernetes ? `; Kubernetes ${existing.kubernetes.release} at ${existing.kubernetes.url}, kubeconfig ${existing.kubernetes.kubeconfig}` : ""}): nothing was changed`);
      return { state: existing, created: false };
    }
    log(`lab ${name} is incomplete: removing it before building it again`);
    await labDown(name);
  }

  const topology = labTopology(options.topology ?? "gcp-seed", options.workers);
  const stateDir = join(LAB_STATE_ROOT, `lab-${name}`);
  const state: LabState = {
    ...topology,
    clusterCIDR: options.clusterCIDR ?? topology.clusterCIDR,
    name,
    vpcNetns: `${name}-vpc`,
    jumpboxNetns: `${name}-jumpbox`,
    controllerNetns: `${name}-controller`,
    stateDir,
    status: "creating",
    workers: topology.workers.map((w) => ({ ...w, netns: `${name}-${w.name}`, podNetns: `${name}-${w.name}-pod` })),
  };
  const taken = await existingNamespaces();
  const clash = labNamespaces(state).filter((ns) => taken.has(ns));
  if (clash.length) throw new Error(`lab: namespaces already exist that this lab did not make: ${clash.join(", ")}; nothing was changed`);
  await mkdir(stateDir, { recursive: true });
  await saveLab(state);

  const vpc = state.vpcNetns;
  await ip(["netns", "add", vpc], "creating the vpc namespace");
  await ip(["-n", vpc, "link", "set", "lo", "up"], "vpc loopback");
  await ip(["-n", vpc, "link", "add", "br0", "type", "bridge"], "the vpc bridge");
  await ip(["-n", vpc, "link", "set", "br0", "up"], "the vpc bridge");

  await joinVpc(state, state.jumpboxNetns, "vjump", state.jumpboxIP);
  log(`jumpbox ${state.jumpboxIP} (netns ${state.jumpboxNetns})`);
  await joinVpc(state, state.controllerNetns!, "vctl", state.controllerIP);
  log(`controller ${state.controllerIP} (netns ${state.controllerNetns})`);
  for (const [index, worker] of state.workers.entries()) {
    await buildWorker(state, worker, index);
    log(`${worker.name} ${worker.internalIP} pods ${worker.podCIDR} (pod ${worker.podIP}, netns ${worker.netns})`);
  }
  if (options.kubernetes) await (await import("./kubernetes/lab-cluster.js")).startLabCluster(state, log);
  state.status = "up";
  await saveLab(state);
  return { state, created: true };
}

/** A namespace on the VPC bridge: its own veth pair, made inside the vpc namespace, at `address`. */
export async function joinVpc(state: LabState, netns: string, port: string, address: string): Promise<void> {
  const vpc = state.vpcNetns;
  await ip(["netns", "add", netns], `creating ${netns}`);
  await ip(["-n", netns, "link", "set", "lo", "up"], `${netns} loopback`);
  await ip(["-n", vpc, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns], `${netns} veth`);
  await ip(["-n", vpc, "link", "set", port, "master", "br0", "up"], `${netns} bridge port`);
  await ip(["-n", netns, "addr", "add", `${address}/${state.vpcPrefixLength}`, "dev", "eth0"], `${netns} address`);
  await ip(["-n", netns, "link", "set", "eth0", "up"], `${netns} eth0`);
}

/** One worker: its namespace on the VPC, forwarding, and its pod from the real CNI plugin. */
async function buildWorker(state: LabState, worker: LabWorker, index: number): Promise<void> {
  await joinVpc(state, worker.netns, `vw${index}`, worker.internalIP);
  // Forward pods' packets; answer every traceroute probe (the kernel rate-limits ICMP errors to one a
  // second per peer, which would blank the hops verify reads when it traces several pods at once).
  await sh("ip", ["netns", "exec", worker.netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0"], `${worker.name} sysctls`);
  await ip(["netns", "add", worker.podNetns], `creating ${worker.podNetns}`);
  await ip(["-n", worker.podNetns, "link", "set", "lo", "up"], `${worker.podNetns} loopback`);
  worker.podIP = await cniAdd(state, worker);
  await saveLab(state);
}

/**
 * Adds the next worker to a lab that is up (a node joining the cluster): `worker-N` with the
 * topology's next address and pod CIDR. It is in the state file before anything is created, so
 * `lab down` removes it whatever happens.
 */
export async function addLabWorker(name = DEFAULT_LAB): Promise<{ state: LabState; worker: LabWorker }> {
  const state = await requireLab(name);
  const index = state.workers.length;
  const spec = labTopology(state.topology, index + 1).workers[index]!;
  const worker: LabWorker = { ...spec, netns: `${name}-${spec.name}`, podNetns: `${name}-${spec.name}-pod` };
  const taken = await existingNamespaces();
  if (taken.has(worker.netns) || taken.has(worker.podNetns)) throw new Error(`lab: namespaces of ${worker.name} already exist; nothing was changed`);
  state.workers.push(worker);
  await saveLab(state);
  await buildWorker(state, worker, index);
  return { state, worker };
}

/**
 * Records a process started for the lab (an API server on the controller, an agent on a worker), so
 * `lab down` ends it even if its starter could not; whoever stops it removes it again, so `lab down`
 * never signals a PID that has since gone to another process.
 */
export async function addLabProcess(name: string, entry: LabProcess): Promise<void> {
  const state = await requireLab(name);
  state.processes = [...(state.processes ?? []), entry];
  await saveLab(state);
}

export async function removeLabProcess(name: string, pid: number): Promise<void> {
  const state = await loadLab(name);
  if (!state?.processes?.some((p) => p.pid === pid)) return;
  state.processes = state.processes.filter((p) => p.pid !== pid);
  await saveLab(state);
}

function cniEnv(state: LabState, worker: LabWorker, command: "ADD" | "DEL"): NodeJS.ProcessEnv {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: `${state.name}-${worker.name}-pod`,
    CNI_NETNS: `/var/run/netns/${worker.podNetns}`,
    CNI_IFNAME: "eth0",
    CNI_PATH,
  };
}

/** Runs the real `bridge` plugin inside the worker's namespace, as the kubelet's runtime would. */
async function cniAdd(state: LabState, worker: LabWorker): Promise<string> {
  const config = JSON.stringify(bridgeCniConfig(worker, join(state.stateDir, "ipam", worker.name)));
  const out = await sh(
    "ip",
    ["netns", "exec", worker.netns, join(CNI_PATH, "bridge")],
    `CNI ADD for ${worker.name}'s pod (is containernetworking-plugins installed in ${CNI_PATH}?)`,
    config,
    cniEnv(state, worker, "ADD"),
  );
  const result = JSON.parse(out) as { ips?: { address: string }[] };
  const address = result.ips?.[0]?.address;
  if (!address) throw new Error(`lab: CNI ADD for ${worker.name} returned no IP: ${out}`);
  return address.split("/")[0]!;
}

/** Removes every namespace, process and file this lab made, and nothing else. */
export async function labDown(name = DEFAULT_LAB, log: (line: string) => void = () => {}): Promise<boolean> {
  const state = await loadLab(name);
  if (!state) {
    log(`lab ${name} is not up: nothing to remove`);
    return false;
  }
  await stopLabProcesses(state.processes ?? [], log);
  const present = await existingNamespaces();
  for (const worker of state.workers) {
    if (present.has(worker.netns) && present.has(worker.podNetns)) {
      const config = JSON.stringify(bridgeCniConfig(worker, join(state.stateDir, "ipam", worker.name)));
      // DEL releases the IPAM lease; failure here must not keep the namespaces alive.
      await runWithEnv("ip", ["netns", "exec", worker.netns, join(CNI_PATH, "bridge")], cniEnv(state, worker, "DEL"), config);
    }
  }
  for (const netns of labNamespaces(state).reverse()) {
    if (!present.has(netns)) continue;
    await removeLockFiles(netns);
    await sh("ip", ["netns", "del", netns], `removing ${netns}`);
    log(`removed netns ${netns}`);
  }
  await rm(state.stateDir, { recursive: true, force: true });
  await rm(labStatePath(name), { force: true });
  return true;
}

/**
 * Ends the lab's processes one at a time, newest first (the agents and kubelets before the API server,
 * kube-apiserver before etcd: an API server whose etcd is gone does not finish its shutdown): SIGTERM,
 * then SIGKILL if it still runs 10 s later; resolves once every one is gone.
 */
export async function stopLabProcesses(processes: LabProcess[], log: (line: string) => void = () => {}): Promise<void> {
  const gone = async (proc: LabProcess, ms: number) => {
    const deadline = performance.now() + ms;
    while (labProcessAlive(proc)) {
      if (performance.now() > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return true;
  };
  for (const proc of [...processes].reverse()) {
    if (!labProcessAlive(proc)) continue;
    try {
      process.kill(proc.pid, "SIGTERM");
    } catch {
      continue; // gone meanwhile
    }
    if (await gone(proc, 10_000)) {
      log(`stopped ${proc.what} (pid ${proc.pid})`);
      continue;
    }
    try {
      process.kill(proc.pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
    await gone(proc, 10_000);
    log(`killed ${proc.what} (pid ${proc.pid}): still running 10 s after SIGTERM`);
  }
}

/** The lab's nodes as a node source sees them. */
export function labInventory(state: LabState): RawInventory {
  return {
    cluster: state.cluster,
    clusterCIDR: state.clusterCIDR,
    source: `lab ${state.name}`,
    nodes: state.workers.map((worker) => ({
      name: worker.name,
      internalIPs: [worker.internalIP],
      podCIDRs: [worker.podCIDR],
      labels: { "podroutes.dev/lab": state.name },
    })),
  };
}

/**
 * The argv that runs `command` on a lab node as if logged in there: inside the worker's network
 * namespace, in a UTS namespace of its own whose hostname is the node's name (namespaces alone share the
 * machine's hostname). The hostname and command travel as positional arguments, never inside the script.
 */
export function nodeCommand(state: LabState, node: string, command: string[]): string[] {
  const worker = state.workers.find((w) => w.name === node);
  if (!worker) throw new Error(`lab: no node ${JSON.stringify(node)} in lab ${state.name} (${state.workers.map((w) => w.name).join(", ")})`);
  return ["ip", "netns", "exec", worker.netns, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', worker.name, ...command];
}

export function labExists(name = DEFAULT_LAB): boolean {
  return existsSync(labStatePath(name));
}
