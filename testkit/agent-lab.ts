/**
 * What the agent's end-to-end tests and benchmark run: the Kubernetes API test server as its own process
 * in a network namespace (the lab's controller), `podroutes agent` processes in worker namespaces, each
 * started and stopped by its PID, kubeconfigs for them, and HTTP GETs to their health endpoints made
 * from inside their namespace (never from the root one). Each process's output goes to a log file, so a
 * failing test can show what the agent said.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import { run } from "../src/process.js";
import { BIN } from "./cli.js";
import { adminCall } from "./kube-server-admin.js";
import { kubeconfigYaml, type KubeObject } from "./kube-server.js";

const SERVER_MAIN = fileURLToPath(new URL("./kube-server-main.js", import.meta.url));
const RBAC_FILE = fileURLToPath(new URL("../../deploy/agent-rbac.yaml", import.meta.url));
const DAEMONSET_FILE = fileURLToPath(new URL("../../deploy/agent-daemonset.yaml", import.meta.url));

/** A process this harness started: its PID, its log, and how it ended. */
export class Started {
  readonly exited: Promise<number | null>;
  constructor(
    readonly child: ChildProcess,
    readonly logFile: string,
    readonly what: string,
  ) {
    this.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve(code ?? (signal ? null : 0))));
  }
  get pid(): number {
    return this.child.pid!;
  }
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
  log(): string {
    try {
      return readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }
  /** Sends SIGTERM to this PID (never by name) and waits for the exit; SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<number | null> {
    if (!this.running) return this.exited;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.running && this.child.kill("SIGKILL"), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

export function startLogged(argv: string[], logFile: string, what: string, env?: NodeJS.ProcessEnv): Started {
  const fd = openSync(logFile, "a");
  try {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", fd, fd], env: env ?? process.env });
    return new Started(child, logFile, what);
  } finally {
    closeSync(fd);
  }
}

export interface KubeServerProcess extends Started {
  url: string;
  caFile: string;
  adminSocket: string;
}

/** The RBAC rules of deploy/agent-rbac.yaml's ClusterRole in the test server's `verbs:resources;...` form. */
export function agentRbacRules(): string {
  const role = manifestDocument<{ rules?: { verbs: string[]; resources: string[] }[] }>(RBAC_FILE, "ClusterRole");
  if (!role?.rules) throw new Error(`${RBAC_FILE} has no ClusterRole rules`);
  return role.rules.map((rule) => `${rule.verbs.join(",")}:${rule.resources.join(",")}`).join(";");
}

/** The first document of `kind` in a manifest file of deploy/. */
function manifestDocument<T>(file: string, kind: string): T | undefined {
  return parseAllDocuments(readFileSync(file, "utf8"))
    .map((doc) => doc.toJS() as { kind: string } & T)
    .find((doc) => doc.kind === kind);
}

let deployedEnv: Record<string, string> | undefined;

/**
 * The plain `value:` environment of the agent container in deploy/agent-daemonset.yaml (NODE_OPTIONS:
 * the V8 heap settings the agent runs with), so the lab and the benchmark run the agent as deployed.
 * Read once: the manifest does not change while tests run.
 */
export function agentDeployedEnv(): Record<string, string> {
  if (deployedEnv) return deployedEnv;
  const daemonSet = manifestDocument<{ spec?: { template: { spec: { containers: { name: string; env?: { name: string; value?: string }[] }[] } } } }>(DAEMONSET_FILE, "DaemonSet");
  const container = daemonSet?.spec?.template.spec.containers.find((c) => c.name === "agent");
  if (!container) throw new Error(`${DAEMONSET_FILE} has no DaemonSet with an agent container`);
  deployedEnv = Object.fromEntries((container.env ?? []).filter((entry) => entry.value !== undefined).map((entry) => [entry.name, entry.value!]));
  return deployedEnv;
}

/**
 * Starts the test server as its own process inside `netns`, listening on `listen`, and waits until it
 * says where it is. Its state (CA, certificates, admin socket) lives in `stateDir`.
 */
export async function startKubeServerProcess(options: {
  netns: string;
  listen: string;
  stateDir: string;
  tokens: string[];
  nodes?: KubeObject[];
  firstRevision?: number;
  historyWindow?: number;
}): Promise<KubeServerProcess> {
  const args = [process.execPath, SERVER_MAIN, "--listen", options.listen, "--state-dir", options.stateDir];
  for (const token of options.tokens) args.push("--token", token);
  if (options.nodes) {
    const nodesFile = join(options.stateDir, "nodes.json");
    await writeFile(nodesFile, JSON.stringify(options.nodes));
    args.push("--nodes", nodesFile);
  }
  if (options.firstRevision) args.push("--first-revision", String(options.firstRevision));
  if (options.historyWindow) args.push("--history-window", String(options.historyWindow));
  const readyFile = join(options.stateDir, "server.json");
  await run("rm", ["-f", readyFile]);
  const started = startLogged(["ip", "netns", "exec", options.netns, ...args], join(options.stateDir, "server.log"), "kube API test server");
  for (let i = 0; i < 600; i++) {
    const text = await readFile(readyFile, "utf8").catch(() => "");
    if (text.trim()) {
      const { url, caFile, adminSocket } = JSON.parse(text) as { url: string; caFile: string; adminSocket: string };
      return Object.assign(started, { url, caFile, adminSocket });
    }
    if (!started.running) throw new Error(`the test server exited: ${started.log()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await started.stop();
  throw new Error(`the test server did not start in 30 s: ${started.log()}`);
}

/**
 * What a pod sees of its service account (`dir`: token, ca.crt, namespace, as the kubelet mounts them)
 * and of its cluster (KUBERNETES_SERVICE_HOST/PORT), as the environment of a process run "in a pod":
 * podroutes then finds the API server as it does in the DaemonSet, with no kubeconfig (HOME is a
 * directory that does not exist).
 */
export async function inClusterEnv(dir: string, server: { url: string; caFile: string }, token: string, namespace = "kube-system"): Promise<Record<string, string>> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "token"), `${token}\n`);
  await copyFile(server.caFile, join(dir, "ca.crt"));
  await writeFile(join(dir, "namespace"), namespace);
  const url = new URL(server.url);
  return { HOME: join(dir, "no-home"), KUBERNETES_SERVICE_HOST: url.hostname, KUBERNETES_SERVICE_PORT: url.port, PODROUTES_SERVICE_ACCOUNT_DIR: dir };
}

/** A kubeconfig with a bearer token, as a ServiceAccount's would be. */
export async function writeKubeconfig(path: string, server: { url: string; caFile: string }, token: string): Promise<string> {
  await writeFile(path, kubeconfigYaml({ server: server.url, caFile: server.caFile, token }));
  return path;
}

/**
 * Starts `podroutes agent ARGS` with `prefix` (e.g. `ip netns exec W unshare --uts ...`) before it, as
 * the image runs it (deploy/Dockerfile: `node /app/bin/podroutes.js agent`): bin/podroutes.js, which runs
 * the bundle, and no --enable-source-maps (which would parse the bundle's map at start, time and memory
 * the DaemonSet does not spend); with the DaemonSet's environment (NODE_OPTIONS among it) and `env` on
 * top (a key set to undefined is removed).
 */
export function startAgentProcess(prefix: string[], args: string[], logFile: string, env: NodeJS.ProcessEnv = {}): Started {
  const environment = { ...process.env, ...agentDeployedEnv(), ...env };
  for (const [key, value] of Object.entries(env)) if (value === undefined) delete environment[key];
  return startLogged([...prefix, process.execPath, BIN, "agent", ...args], logFile, "podroutes agent", environment);
}

/** GET `url` from inside `netns`, with a client run there: status and body. */
export async function getIn(netns: string, url: string): Promise<{ status: number; body: string }> {
  const script = "fetch(process.argv[1]).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { process.stderr.write(String(e)); process.exit(2); })";
  const result = await run("ip", ["netns", "exec", netns, process.execPath, "-e", script, url]);
  if (result.code !== 0) return { status: 0, body: result.stderr.trim() };
  return JSON.parse(result.stdout) as { status: number; body: string };
}

/** The admin interface of a standalone test server. */
export function admin(server: { adminSocket: string }) {
  return {
    nodes: () => adminCall<KubeObject[]>(server.adminSocket, "GET", "/objects/nodes"),
    events: () => adminCall<KubeObject[]>(server.adminSocket, "GET", "/objects/events"),
    put: (object: KubeObject) => adminCall<KubeObject>(server.adminSocket, "PUT", "/objects/nodes", object),
    remove: (name: string) => adminCall(server.adminSocket, "DELETE", `/objects/nodes/${encodeURIComponent(name)}`),
    state: () => adminCall<{ url: string; resourceVersion: string; openWatches: number }>(server.adminSocket, "GET", "/state"),
    requests: () => adminCall<{ method: string; path: string; query: Record<string, string>; token?: string; verb?: string; resource?: string; code: number }[]>(server.adminSocket, "GET", "/requests"),
    fault: (name: string, body?: unknown) => adminCall(server.adminSocket, "POST", `/faults/${name}`, body),
  };
}

/** A Node object as the kubelet registers it and the node IPAM controller gives it a pod CIDR. */
export function nodeObject(name: string, internalIP: string, podCIDR: string | undefined, created = new Date()): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name, labels: { "kubernetes.io/hostname": name }, creationTimestamp: created.toISOString().replace(/\.\d+Z$/, "Z") },
    spec: podCIDR ? { podCIDR, podCIDRs: [podCIDR] } : {},
    status: {
      addresses: [
        { type: "InternalIP", address: internalIP },
        { type: "Hostname", address: name },
      ],
      conditions: [{ type: "NetworkUnavailable", status: "True", reason: "NoRouteCreated", message: "no pod routes yet" }],
    },
  };
}

/** Polls `check` until it returns true or `deadlineMs` passes; the time it took, or undefined. */
export async function within(deadlineMs: number, check: () => Promise<boolean>, everyMs = 20): Promise<number | undefined> {
  const start = performance.now();
  for (;;) {
    if (await check()) return performance.now() - start;
    if (performance.now() - start > deadlineMs) return undefined;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
