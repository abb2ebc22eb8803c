/**
 * Each system of the peers comparison (issue 21) started as it runs on a cluster, in a fresh lab with the
 * real control plane (`lab up --kubernetes`): podroutes' agent and flanneld and kube-router one per
 * worker in the worker's namespace (host network); Kubernetes' route controller one for the cluster in
 * the controller's namespace, beside the Compute Engine test server. Shared by e2e/real-peers.test.ts
 * and `npm run bench -- peers`. Every process is recorded with the lab (ended by PID by `lab down` too).
 */
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { addLabProcess, addLabWorker, labDown, labUp, nodeCommand, removeLabProcess, type LabState, type LabWorker } from "../../src/lab/lab.js";
import { kubeletNodeObject } from "../../src/lab/kubernetes/kubelets.js";
import { labKubectl, storedPodCIDRs } from "../../src/lab/kubernetes/lab-cluster.js";
import { checkPodPaths } from "../../src/lab/paths.js";
import { run } from "../../src/process.js";
import type { Check } from "../../src/targets/target.js";
import { inClusterEnv, startAgentProcess, startLogged, within, writeKubeconfig, type Started } from "../agent-lab.js";
import { BIN } from "../cli.js";
import type { GceInstance, GceRequest } from "../gce-server.js";
import type { PeerBinaries } from "./binaries.js";
import { FLANNEL_RBAC, KUBE_ROUTER_RBAC } from "./rbac.js";

const GCE_MAIN = fileURLToPath(new URL("../gce-server-main.js", import.meta.url));
const DEPLOY = fileURLToPath(new URL("../../../deploy/", import.meta.url));
export const GCE_NETWORK = "kubernetes-the-hard-way";
export const GCE_ZONE = "us-west1-c";

export const SYSTEMS = ["podroutes", "flannel", "kube-router", "route-controller"] as const;
export type System = (typeof SYSTEMS)[number];

/** A fresh lab with the real control plane; `down()` removes its processes, namespaces and files whatever happened. */
export class PeerLab {
  state!: LabState;
  dir!: string;
  readonly processes: Started[] = [];
  constructor(
    readonly name: string,
    readonly workers = 3,
    readonly log: (line: string) => void = () => {},
    /** The lab's cluster CIDR when larger than the topology's (see LabUpOptions.clusterCIDR). */
    readonly clusterCIDR?: string,
  ) {}

  async up(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), `podroutes-${this.name}-`));
    await labDown(this.name);
    ({ state: this.state } = await labUp({ name: this.name, workers: this.workers, kubernetes: true, log: this.log, ...(this.clusterCIDR ? { clusterCIDR: this.clusterCIDR } : {}) }));
  }

  async down(): Promise<void> {
    for (const started of this.processes) await started.stop().catch(() => undefined);
    await labDown(this.name);
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  async kubectl(args: string[], input?: string): Promise<string> {
    const result = await labKubectl(this.state, args, input);
    if (result.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${result.stderr.trim()}`);
    return result.stdout;
  }

  async token(namespace: string, serviceAccount: string): Promise<string> {
    return (await this.kubectl(["create", "token", serviceAccount, "-n", namespace, "--duration", "2h"])).trim();
  }

  /** A kubeconfig holding the ServiceAccount's TokenRequest token, as its pod would have. */
  async serviceAccountKubeconfig(namespace: string, serviceAccount: string): Promise<string> {
    return writeKubeconfig(join(this.dir, `${serviceAccount}.kubeconfig`), this.state.kubernetes!, await this.token(namespace, serviceAccount));
  }

  /** Records a process this lab's user started inside `netns` (argv[0] is what /proc/PID/cmdline shows once `ip netns exec` exec'd it). */
  async record(netns: string, started: Started, program: string): Promise<Started> {
    this.processes.push(started);
    await addLabProcess(this.name, { netns, pid: started.pid, what: started.what, program });
    return started;
  }

  /** Starts `argv` inside `netns`, with a bare environment plus `env`. */
  async start(netns: string, argv: string[], what: string, env: NodeJS.ProcessEnv = {}): Promise<Started> {
    const started = startLogged(["ip", "netns", "exec", netns, ...argv], join(this.dir, `${what.replace(/\W+/g, "-")}.log`), what, { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: this.dir, ...env });
    return this.record(netns, started, argv[0]!);
  }

  logs(lines = 15): string {
    return this.processes.map((p) => `--- ${p.what}:\n${p.log().trim().split("\n").slice(-lines).join("\n")}`).join("\n");
  }

  /** Each of `workers`' route to every other one's pod CIDR: next hop that worker's internal IP (whoever wrote it). */
  async kernelRoutesInPlace(workers: LabWorker[] = this.state.workers): Promise<boolean> {
    for (const w of workers) {
      const routes = await this.kernelRoutes(w);
      if (!routes || workers.some((o) => o !== w && routes.get(o.podCIDR) !== o.internalIP)) return false;
    }
    return true;
  }

  /** The worker's main-table routes, destination → next hop ("" when none); undefined when `ip` failed. */
  async kernelRoutes(worker: LabWorker): Promise<Map<string, string> | undefined> {
    const shown = await run("ip", ["-n", worker.netns, "-json", "route", "show"]);
    if (shown.code !== 0) return undefined;
    return new Map((JSON.parse(shown.stdout || "[]") as { dst: string; gateway?: string }[]).map((r) => [r.dst, r.gateway ?? ""]));
  }

  /**
   * One more worker (namespace, pod) whose Node can join and leave while the systems run: built by
   * `addLabWorker`, registered by the lab's kubelets, then its Node deleted again, so the systems start
   * without it.
   */
  async addJoiner(): Promise<LabWorker> {
    const { state, worker } = await addLabWorker(this.name);
    this.state = state;
    // Deleted only once the kubelets' registration has seen its pod CIDR: deleted before, it registers it again.
    const registered = () => readFile(join(this.state.kubernetes!.dir, "kubelets.log"), "utf8").then((text) => text.includes(`registered Node ${worker.name} `), () => false);
    if ((await within(120_000, registered, 200)) === undefined) throw new Error(`the lab's kubelets did not register ${worker.name} within 120 s`);
    await this.kubectl(["delete", "node", worker.name, "--wait=true"]);
    return worker;
  }

  /** Registers the worker's Node as its kubelet does (the lab's kubelets then keep its Lease). */
  async createNode(worker: LabWorker): Promise<void> {
    await this.kubectl(["create", "-f", "-"], JSON.stringify(kubeletNodeObject({ name: worker.name, internalIP: worker.internalIP })));
  }

  /** The Node's pod CIDR as the API server stores it, "" when it has none or no such Node. */
  async podCIDR(node: string): Promise<string> {
    return (await storedPodCIDRs(this.state)).get(node) ?? "";
  }

  /** Stops one of this lab's processes by its PID and forgets it (so `lab down` never signals a reused PID). */
  async stop(started: Started): Promise<void> {
    await started.stop();
    await removeLabProcess(this.name, started.pid);
    this.processes.splice(this.processes.indexOf(started), 1);
  }

  async podPathFailures(): Promise<string[]> {
    const checks: Check[] = await checkPodPaths(this.state);
    return checks.filter((c) => !c.ok).map((c) => c.message);
  }
}

/**
 * Each starter below applies the system's RBAC and gets its tokens, then resolves to the function that
 * starts its processes: what is timed is the systems' own work, not our kubectl calls.
 */
export type Launch = () => Promise<void>;

/** podroutes' agent per worker, as its DaemonSet runs it: in-cluster with its ServiceAccount's token (deploy/). */
export async function startPodroutesAgents(lab: PeerLab, workers: LabWorker[] = lab.state.workers): Promise<Launch> {
  for (const file of ["namespace.yaml", "agent-rbac.yaml"]) await lab.kubectl(["apply", "--server-side", "-f", join(DEPLOY, file)]);
  const token = await lab.token("podroutes", "podroutes-agent");
  const envs = new Map<string, Record<string, string>>();
  for (const w of workers) envs.set(w.name, await inClusterEnv(join(lab.dir, `sa-${w.name}`), lab.state.kubernetes!, token, "podroutes"));
  return async () => {
    for (const w of workers) {
      const env = envs.get(w.name)!;
      const agent = startAgentProcess(nodeCommand(lab.state, w.name, []), ["--listen", "127.0.0.1:9465", "--resync", "10m", "--set-node-condition", "--log-format", "json"], join(lab.dir, `agent-${w.name}.log`), { ...env, NODE_NAME: w.name });
      await lab.record(w.netns, agent, process.execPath);
    }
  };
}

/** flanneld --kube-subnet-mgr, backend host-gw, per worker, with flannel's own RBAC. */
export async function startFlannel(lab: PeerLab, binaries: PeerBinaries, workers: LabWorker[] = lab.state.workers): Promise<Launch> {
  await lab.kubectl(["apply", "--server-side", "-f", "-"], FLANNEL_RBAC);
  const kubeconfig = await lab.serviceAccountKubeconfig("kube-flannel", "flannel");
  const netConf = join(lab.dir, "net-conf.json");
  await writeFile(netConf, JSON.stringify({ Network: lab.state.clusterCIDR, Backend: { Type: "host-gw" } }));
  return async () => {
    for (const w of workers) {
      await lab.start(w.netns, [
        binaries.path.flannel, "--kube-subnet-mgr", `--kubeconfig-file=${kubeconfig}`, "--iface=eth0",
        `--net-config-path=${netConf}`, `--subnet-file=${join(lab.dir, `subnet-${w.name}.env`)}`, "--ip-masq=false",
      ], `flanneld on ${w.name}`, { NODE_NAME: w.name });
    }
  };
}

/** kube-router, routing only (iBGP full mesh between the workers), per worker, with kube-router's own RBAC. */
export async function startKubeRouter(lab: PeerLab, binaries: PeerBinaries, workers: LabWorker[] = lab.state.workers): Promise<Launch> {
  await lab.kubectl(["apply", "--server-side", "-f", "-"], KUBE_ROUTER_RBAC);
  const kubeconfig = await lab.serviceAccountKubeconfig("kube-system", "kube-router");
  return async () => {
    for (const w of workers) {
      await lab.start(w.netns, [
        binaries.path["kube-router"], `--kubeconfig=${kubeconfig}`, `--hostname-override=${w.name}`,
        "--run-router=true", "--run-firewall=false", "--run-service-proxy=false",
        // No CNI config written to the machine's /etc/cni, no tunnels (one subnet), no masquerading.
        "--enable-cni=false", "--enable-overlay=false", "--enable-pod-egress=false", "--bgp-graceful-restart=false",
      ], `kube-router on ${w.name}`);
    }
  };
}

export interface GceEndpoint {
  endpoint: string;
  project: string;
  /** The server's PID (SIGUSR2 writes its request log) and that log's file, when it keeps one. */
  pid?: number;
  requestLogFile?: string;
}

/**
 * The Compute Engine test server in the controller's namespace, with an instance per worker and
 * `more.instances` (Nodes without a worker); with `more.requestLogFile`, `requestLog` below reads its
 * calls; `more.routesQuota` raises the project's ROUTES quota from the server's 250 (GCP's default).
 */
export async function startGce(lab: PeerLab, latencyMs = 50, more: { instances?: GceInstance[]; requestLogFile?: string; routesQuota?: number } = {}): Promise<GceEndpoint> {
  const { instances: extraInstances = [], requestLogFile, routesQuota } = more;
  const workers = lab.state.workers.map((w) => ({ name: w.name, zone: GCE_ZONE, networkIP: w.internalIP, network: GCE_NETWORK, canIpForward: true }));
  const instancesFile = join(lab.dir, "gce-instances.json");
  await writeFile(instancesFile, JSON.stringify([...workers, ...extraInstances]));
  const argv = [process.execPath, GCE_MAIN, String(latencyMs), `@${instancesFile}`, ...(requestLogFile ? [requestLogFile] : [])];
  const server = await lab.start(lab.state.controllerNetns!, argv, "Compute Engine test server", routesQuota ? { GCE_ROUTES_QUOTA: String(routesQuota) } : {});
  const up = await within(10_000, async () => server.log().includes('"endpoint"'), 50);
  if (up === undefined) throw new Error(`the Compute Engine test server did not start\n${lab.logs()}`);
  return { ...(JSON.parse(server.log().split("\n").find((l) => l.includes('"endpoint"'))!) as GceEndpoint), pid: server.pid, ...(requestLogFile ? { requestLogFile } : {}) };
}

/** The calls the Compute Engine test server (started with a request log file) has seen so far. */
export async function requestLog(gce: GceEndpoint): Promise<GceRequest[]> {
  if (!gce.requestLogFile || gce.pid === undefined) throw new Error("the Compute Engine test server was started without a request log file");
  await rm(gce.requestLogFile, { force: true });
  process.kill(gce.pid, "SIGUSR2");
  const written = await within(30_000, async () => existsSync(gce.requestLogFile!), 50);
  if (written === undefined) throw new Error(`the Compute Engine test server (PID ${gce.pid}) wrote no request log to ${gce.requestLogFile} within 30 s`);
  return JSON.parse(await readFile(gce.requestLogFile, "utf8")) as GceRequest[];
}

/** The Compute API's routes, every page of them, read from inside the controller's namespace. */
export async function gceRoutes(lab: PeerLab, gce: GceEndpoint): Promise<{ name: string; destRange: string; nextHopInstance?: string; nextHopIp?: string; description?: string; creationTimestamp?: string }[]> {
  const script = [
    "(async()=>{const items=[];let token='';",
    "do{const r=await fetch(process.argv[1]+(token?'&pageToken='+encodeURIComponent(token):''),{headers:{authorization:'Bearer test'}});",
    "if(!r.ok)throw new Error(r.status+' '+await r.text());const page=await r.json();items.push(...(page.items??[]));token=page.nextPageToken??''}while(token);",
    "process.stdout.write(JSON.stringify(items))})().catch(e=>{process.stderr.write(String(e));process.exit(2)})",
  ].join("");
  const result = await run("ip", ["netns", "exec", lab.state.controllerNetns!, process.execPath, "-e", script, `${gce.endpoint}projects/${gce.project}/global/routes?maxResults=500`]);
  if (result.code !== 0) throw new Error(`listing the Compute API's routes: ${result.stderr.trim()}`);
  return JSON.parse(result.stdout) as [];
}

/** Kubernetes' route controller for the cluster, with the bootstrap policy's own route-controller RBAC. */
export async function startRouteController(lab: PeerLab, binaries: PeerBinaries, gce: GceEndpoint): Promise<Launch> {
  // The bootstrap policy binds system:controller:route-controller to this ServiceAccount.
  // Made once: a restart of the controller prepares it again.
  await lab.kubectl(["create", "serviceaccount", "route-controller", "-n", "kube-system"]).catch((error: Error) => {
    if (!/already exists/.test(error.message)) throw error;
  });
  const kubeconfig = await lab.serviceAccountKubeconfig("kube-system", "route-controller");
  const tokenFile = join(lab.dir, "gce-token");
  await writeFile(tokenFile, "route-controller-test-token\n");
  return async () => void await lab.start(lab.state.controllerNetns!, [
    binaries.path["route-controller"], `--kubeconfig=${kubeconfig}`, "--cluster-name=kubernetes", `--cluster-cidr=${lab.state.clusterCIDR}`,
    `--compute-endpoint=${gce.endpoint}`, `--project=${gce.project}`, `--network=${GCE_NETWORK}`, `--zones=${GCE_ZONE}`, `--access-token-file=${tokenFile}`,
  ], "route controller", { GCE_METADATA_HOST: "127.0.0.1:9" });
}

/** `podroutes controller --target gcp`, one replica, with deploy/controller/rbac.yaml's ServiceAccount. */
export async function startPodroutesController(lab: PeerLab, gce: GceEndpoint): Promise<Launch> {
  for (const file of ["namespace.yaml", "controller/rbac.yaml"]) await lab.kubectl(["apply", "--server-side", "-f", join(DEPLOY, file)]);
  const kubeconfig = await lab.serviceAccountKubeconfig("podroutes", "podroutes-controller");
  const tokenFile = join(lab.dir, "gcp-token");
  await writeFile(tokenFile, "podroutes-controller-test-token\n");
  return async () => void await lab.start(lab.state.controllerNetns!, [
    process.execPath, BIN, "controller", "--target=gcp", `--project=${gce.project}`, `--network=${GCE_NETWORK}`, `--compute-endpoint=${gce.endpoint}`,
    `--access-token-file=${tokenFile}`, `--cluster-cidr=${lab.state.clusterCIDR}`, `--kubeconfig=${kubeconfig}`, "--identity=bench",
    "--resync=10m", "--listen=127.0.0.1:0", "--log-format=json",
  ], "podroutes controller", { GCE_METADATA_HOST: "127.0.0.1:9", METADATA_SERVER_DETECTION: "none" });
}
