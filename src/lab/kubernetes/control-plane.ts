/**
 * The real Kubernetes control plane of a lab: etcd, kube-apiserver and kube-controller-manager (the
 * programs of ./binaries.ts) in one network namespace (the lab's controller), as Kubernetes the Hard Way
 * runs them on controller-0: TLS with a CA of its own, RBAC (and the Node authorizer), service-account
 * tokens signed with a key of its own, and the node IPAM controller giving each Node a pod CIDR from the
 * cluster CIDR (`--allocate-node-cidrs`). Static tokens (`--token-auth-file`) for the admin and the
 * controller manager; ServiceAccounts get theirs from TokenRequest, as in a real cluster. Every process
 * is started and stopped by its PID; everything it writes lives in `stateDir`.
 */
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { run } from "../../process.js";
import { makePki, type Pki } from "./pki.js";
import { kubernetesBinaries, type KubernetesBinaries } from "./binaries.js";

/** One program of the control plane, started by this module. */
export interface ControlPlaneProcess {
  what: string;
  /** The program's path: what /proc/PID/cmdline starts with while it is this process (`ip netns exec` execs it). */
  program: string;
  child: ChildProcess;
  logFile: string;
  pid: number;
}

export interface ControlPlane {
  binaries: KubernetesBinaries;
  netns: string;
  /** https://ADDRESS:6443 */
  url: string;
  caFile: string;
  pki: Pki;
  /** A kubeconfig for the admin (group system:masters), for kubectl run inside `netns` or a worker. */
  adminKubeconfig: string;
  adminToken: string;
  processes: ControlPlaneProcess[];
  /** `kubectl ARGS` as the admin, run inside the control plane's namespace. */
  kubectl(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }>;
  /** A ServiceAccount's token from the TokenRequest API (`kubectl create token`). */
  createToken(namespace: string, serviceAccount: string): Promise<string>;
  /** Compacts etcd at its current revision: watches from before it get 410 Gone, as after a long outage. */
  compactEtcd(): Promise<number>;
  /**
   * Kills kube-apiserver (SIGKILL: a crash, no goodbye bookmarks to watchers), runs `whileDown` (etcd
   * still up: compact it there), and starts it again over the same store, waiting until it is ready.
   */
  crashApiServer(whileDown?: () => Promise<void>): Promise<void>;
  /**
   * The store's revision goes backwards, as after etcd is restored from a backup or replaced by an empty
   * one: kube-apiserver is killed, etcd stopped, its data directory moved aside (a fresh, empty store:
   * only what kube-apiserver bootstraps is written again, at revisions from 1), and both started again,
   * waiting until the API server is ready. Resolves to the new store's revision.
   */
  freshEtcd(): Promise<number>;
  stop(): Promise<void>;
}

const SERVICE_CIDR = "10.32.0.0/24";

function start(argv: string[], logFile: string, what: string, detached = false, program = argv[0]!): ControlPlaneProcess {
  const fd = openSync(logFile, "a");
  try {
    // Detached (`lab up`): a process group of its own and no pipe to us, so it outlives the command.
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", fd, fd], detached });
    child.once("error", () => {});
    if (detached) child.unref();
    return { what, program, child, logFile, pid: child.pid! };
  } finally {
    closeSync(fd);
  }
}

async function stopProcess(process: ControlPlaneProcess, graceMs = 10_000): Promise<void> {
  const { child } = process;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, "utf8").trim().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

/**
 * Starts the control plane inside `netns`, the API server on `address:6443`, and waits until it is
 * ready (`/readyz`, RBAC's bootstrap roles in place). `onStarted` hears each PID as it is spawned, so a
 * lab records it for `lab down` before anything can fail.
 */
export async function startControlPlane(options: {
  netns: string;
  address: string;
  stateDir: string;
  clusterCIDR: string;
  nodeCIDRMaskSize?: number;
  progress?: (line: string) => void;
  onStarted?: (process: ControlPlaneProcess) => Promise<void> | void;
  /**
   * The programs outlive this process (`podroutes lab up --kubernetes`; `lab down` ends them by the PIDs
   * `onStarted` recorded). Without it they are this process's children, as a test harness wants them.
   */
  detached?: boolean;
  /**
   * kube-apiserver writes an audit log here (JSON lines, level Metadata, one event per request as its
   * response completes, or starts for a watch): who made which request, for a bench to count.
   */
  auditLog?: string;
}): Promise<ControlPlane> {
  const progress = options.progress ?? (() => {});
  const binaries = await kubernetesBinaries(progress);
  const dir = options.stateDir;
  await mkdir(join(dir, "etcd"), { recursive: true, mode: 0o700 });
  await mkdir(join(dir, "pki"), { recursive: true, mode: 0o700 });
  const pki = await makePki(join(dir, "pki"), { ips: [options.address, "127.0.0.1", "10.32.0.1"], dns: ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"] });
  const saKey = join(pki.dir, "service-account.key");
  const saPub = join(pki.dir, "service-account.pub");
  for (const [argv, what] of [
    [["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", saKey], "service-account key"],
    [["pkey", "-in", saKey, "-pubout", "-out", saPub], "service-account public key"],
  ] as const) {
    const made = await run("openssl", [...argv]);
    if (made.code !== 0) throw new Error(`openssl: ${what}: ${made.stderr.trim()}`);
  }
  const adminToken = `admin-${Math.random().toString(36).slice(2)}`;
  const kcmToken = `kcm-${Math.random().toString(36).slice(2)}`;
  const tokenFile = join(pki.dir, "tokens.csv");
  await writeFile(tokenFile, `${adminToken},admin,admin,"system:masters"\n${kcmToken},system:kube-controller-manager,kcm\n`, { mode: 0o600 });
  const url = `https://${options.address}:6443`;
  const kubeconfig = (token: string, user: string) =>
    [
      "apiVersion: v1",
      "kind: Config",
      `clusters: [{name: lab, cluster: {server: "${url}", certificate-authority: "${pki.caFile}"}}]`,
      `users: [{name: ${user}, user: {token: "${token}"}}]`,
      `contexts: [{name: ${user}@lab, context: {cluster: lab, user: ${user}}}]`,
      `current-context: ${user}@lab`,
      "",
    ].join("\n");
  const adminKubeconfig = join(dir, "admin.kubeconfig");
  const kcmKubeconfig = join(dir, "kube-controller-manager.kubeconfig");
  await writeFile(adminKubeconfig, kubeconfig(adminToken, "admin"), { mode: 0o600 });
  await writeFile(kcmKubeconfig, kubeconfig(kcmToken, "kube-controller-manager"), { mode: 0o600 });

  const apiserverArgv = [
    binaries.path["kube-apiserver"],
    "--etcd-servers", "http://127.0.0.1:2379",
    "--bind-address", options.address,
    "--advertise-address", options.address,
    "--secure-port", "6443",
    "--cert-dir", join(dir, "apiserver-certs"),
    "--tls-cert-file", pki.certFile,
    "--tls-private-key-file", pki.keyFile,
    "--client-ca-file", pki.caFile,
    "--token-auth-file", tokenFile,
    "--authorization-mode", "Node,RBAC",
    "--service-cluster-ip-range", SERVICE_CIDR,
    "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
    "--service-account-key-file", saPub,
    "--service-account-signing-key-file", saKey,
    "--allow-privileged=true",
    "--v=1",
  ];
  if (options.auditLog) {
    const policy = join(dir, "audit-policy.yaml");
    await writeFile(policy, "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n");
    apiserverArgv.push("--audit-policy-file", policy, "--audit-log-path", options.auditLog, "--audit-log-format", "json");
  }
  const etcdArgv = [
    binaries.path.etcd,
    "--name", "controller",
    "--data-dir", join(dir, "etcd"),
    "--listen-client-urls", "http://127.0.0.1:2379",
    "--advertise-client-urls", "http://127.0.0.1:2379",
    "--listen-peer-urls", "http://127.0.0.1:2380",
    "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
    "--initial-cluster", "controller=http://127.0.0.1:2380",
    "--listen-metrics-urls", "http://127.0.0.1:2381",
    // A test's store: losing it with the machine is fine, and fsync would cost every write.
    "--unsafe-no-fsync",
    "--log-level", "warn",
  ];
  const processes: ControlPlaneProcess[] = [];
  const inNetns = (argv: string[]) => ["ip", "netns", "exec", options.netns, ...argv];
  const launch = async (argv: string[], what: string) => {
    const started = start(inNetns(argv), join(dir, `${what}.log`), what, options.detached, argv[0]);
    processes.push(started);
    await options.onStarted?.(started);
    return started;
  };
  const plane: ControlPlane = {
    binaries,
    netns: options.netns,
    url,
    caFile: pki.caFile,
    pki,
    adminKubeconfig,
    adminToken,
    processes,
    kubectl: (args, input) => run("ip", ["netns", "exec", options.netns, "kubectl", "--kubeconfig", adminKubeconfig, ...args], input),
    async createToken(namespace, serviceAccount) {
      const made = await plane.kubectl(["create", "token", serviceAccount, "-n", namespace, "--duration", "2h"]);
      if (made.code !== 0) throw new Error(`kubectl create token ${serviceAccount} -n ${namespace}: ${made.stderr.trim()}`);
      return made.stdout.trim();
    },
    async compactEtcd() {
      return compact(options.netns);
    },
    async crashApiServer(whileDown) {
      const index = processes.findIndex((p) => p.what === "kube-apiserver");
      const old = processes[index]!;
      old.child.kill("SIGKILL");
      if (old.child.exitCode === null && old.child.signalCode === null) await new Promise((resolve) => old.child.once("exit", resolve));
      await whileDown?.();
      const restarted = start(inNetns(apiserverArgv), old.logFile, old.what, options.detached, old.program);
      processes[index] = restarted;
      await options.onStarted?.(restarted);
      await waitReady(plane, [restarted]);
    },
    async freshEtcd() {
      const apiserverAt = processes.findIndex((p) => p.what === "kube-apiserver");
      const etcdAt = processes.findIndex((p) => p.what === "etcd");
      const [apiserver, etcd] = [processes[apiserverAt]!, processes[etcdAt]!];
      apiserver.child.kill("SIGKILL");
      if (apiserver.child.exitCode === null && apiserver.child.signalCode === null) await new Promise((resolve) => apiserver.child.once("exit", resolve));
      await stopProcess(etcd);
      await rename(join(dir, "etcd"), join(dir, `etcd-before-${Date.now()}`));
      await mkdir(join(dir, "etcd"), { mode: 0o700 });
      const etcdAgain = start(inNetns(etcdArgv), etcd.logFile, etcd.what, options.detached, etcd.program);
      processes[etcdAt] = etcdAgain;
      await options.onStarted?.(etcdAgain);
      const apiserverAgain = start(inNetns(apiserverArgv), apiserver.logFile, apiserver.what, options.detached, apiserver.program);
      processes[apiserverAt] = apiserverAgain;
      await options.onStarted?.(apiserverAgain);
      await waitReady(plane, [etcdAgain, apiserverAgain]);
      return compact(options.netns, false);
    },
    async stop() {
      for (const process of [...processes].reverse()) await stopProcess(process);
    },
  };
  try {
    progress("starting etcd");
    const etcd = await launch(etcdArgv, "etcd");
    progress("starting kube-apiserver");
    const apiserver = await launch(apiserverArgv, "kube-apiserver");
    progress("waiting for kube-apiserver to be ready");
    await waitReady(plane, [etcd, apiserver]);
    progress("starting kube-controller-manager");
    const kcm = await launch(
      [
        binaries.path["kube-controller-manager"],
        "--kubeconfig", kcmKubeconfig,
        "--authentication-kubeconfig", kcmKubeconfig,
        "--authorization-kubeconfig", kcmKubeconfig,
        "--bind-address", "127.0.0.1",
        "--controllers", "nodeipam",
        "--allocate-node-cidrs=true",
        "--cluster-cidr", options.clusterCIDR,
        "--node-cidr-mask-size", String(options.nodeCIDRMaskSize ?? 24),
        "--service-cluster-ip-range", SERVICE_CIDR,
        "--leader-elect=false",
        // Each controller its own ServiceAccount (TokenRequest), as Kubernetes the Hard Way runs it: the
        // node IPAM controller acts as kube-system:node-controller, which RBAC's bootstrap lets patch Nodes.
        "--use-service-account-credentials=true",
        "--v=1",
      ],
      "kube-controller-manager",
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    if (kcm.child.exitCode !== null) throw new Error(`kube-controller-manager exited:\n${tail(kcm.logFile)}`);
  } catch (error) {
    await plane.stop();
    throw error;
  }
  return plane;
}
async function waitReady(plane: ControlPlane, watched: ControlPlaneProcess[]): Promise<void> {
  const started = performance.now();
  let last = "";
  while (performance.now() - started < 120_000) {
    for (const process of watched) {
      if (process.child.exitCode !== null || process.child.signalCode !== null) throw new Error(`${process.what} exited:\n${tail(process.logFile)}`);
    }
    const ready = await plane.kubectl(["get", "--raw", "/readyz"]);
    if (ready.code === 0 && ready.stdout.trim() === "ok") {
      // RBAC's bootstrap policy is written by a post-start hook that /readyz waits for; the role the
      // controller manager needs is the last thing checked, so its first list is not refused.
      const role = await plane.kubectl(["get", "clusterrole", "system:kube-controller-manager", "-o", "name"]);
      if (role.code === 0) return;
    }
    last = (ready.stderr || ready.stdout).trim();
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`kube-apiserver not ready within 120 s: ${last}\n${tail(watched.at(-1)!.logFile)}`);
}

/** etcd's v3 HTTP gateway (no etcdctl needed): the current revision, then (unless told not to) a compaction at it. */
async function compact(netns: string, compaction = true): Promise<number> {
  const post = async (path: string, body: unknown) => {
    const script = `fetch("http://127.0.0.1:2379${path}",{method:"POST",body:process.argv[1]}).then(async r=>{const t=await r.text();if(!r.ok){process.stderr.write(t);process.exit(1)}process.stdout.write(t)},e=>{process.stderr.write(String(e));process.exit(2)})`;
    const result = await run("ip", ["netns", "exec", netns, process.execPath, "-e", script, JSON.stringify(body)]);
    if (result.code !== 0) throw new Error(`etcd ${path}: ${result.stderr.trim()}`);
    return JSON.parse(result.stdout) as { header?: { revision?: string } };
  };
  // A range read of one key gives the store's revision in its header.
  const header = await post("/v3/kv/range", { key: Buffer.from("/registry/").toString("base64"), limit: 1 });
  const revision = Number(header.header?.revision);
  if (!Number.isFinite(revision)) throw new Error("etcd gave no revision");
  if (compaction) await post("/v3/kv/compaction", { revision, physical: true });
  return revision;
}
