/**
 * Finds the Kubernetes API and how to authenticate to it, the way kubectl and client-go do:
 *   1. `--kubeconfig FILE` (it must exist);
 *   2. else `KUBECONFIG`, a list of paths (`:`-separated), merged: for clusters, users and contexts the
 *      first file that names an entry wins, and so does the first `current-context`; missing files are
 *      skipped;
 *   3. else `~/.kube/config`;
 *   4. else, when none of those gives a configuration, in-cluster: the service account's token, CA and
 *      namespace (`/var/run/secrets/kubernetes.io/serviceaccount`, overridable for tests) and
 *      `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`.
 * `--context` picks a context, else `current-context`. Relative paths in a kubeconfig are relative to the
 * file that holds them. Certificates and keys are read here; tokens from files and exec plugins are read
 * when used (they rotate: kube/credentials.ts). Every mistake is a UsageError naming the flag, the file
 * and the entry.
 */
import { readFile, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { delimiter, dirname, isAbsolute, join, resolve } from "node:path";
import { UsageError } from "../errors.js";
import { yaml } from "../yaml.js";

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";
/** Tests point the in-cluster lookup at a directory of their own. */
export const SERVICE_ACCOUNT_DIR_ENV = "PODROUTES_SERVICE_ACCOUNT_DIR";

/** An exec credential plugin, as a kubeconfig user's `exec` declares it (EKS's and GKE's way). */
export interface ExecConfig {
  apiVersion: string;
  command: string;
  args: string[];
  env: { name: string; value: string }[];
  installHint?: string;
  provideClusterInfo: boolean;
  interactiveMode?: string;
}

/** How to authenticate: what the user entry says, with certificate and key bytes already read. */
export interface UserAuth {
  token?: string;
  /** Re-read while running (bound service-account tokens rotate). */
  tokenFile?: string;
  clientCertificate?: Buffer;
  clientKey?: Buffer;
  username?: string;
  password?: string;
  exec?: ExecConfig;
}

/** Everything needed to talk to one API server. */
export interface Connection {
  server: URL;
  ca?: Buffer;
  insecureSkipTLSVerify: boolean;
  tlsServerName?: string;
  user: UserAuth;
  namespace: string;
  /** For messages: `context kind-x (/root/.kube/config)` or `in-cluster service account`. */
  description: string;
  /** The cluster entry as an exec plugin with `provideClusterInfo` receives it. */
  clusterInfo: { server: string; "certificate-authority-data"?: string; "insecure-skip-tls-verify"?: boolean; "tls-server-name"?: string };
}

export interface DiscoveryOptions {
  kubeconfig?: string;
  context?: string;
  env?: NodeJS.ProcessEnv;
  homeDir?: string;
}

interface Entry<T> {
  name: string;
  value: T;
  /** The file that defined it, for relative paths and messages. */
  file: string;
}

/** Several kubeconfig files merged as client-go merges them. */
export interface MergedKubeconfig {
  files: string[];
  clusters: Map<string, Entry<Record<string, unknown>>>;
  users: Map<string, Entry<Record<string, unknown>>>;
  contexts: Map<string, Entry<Record<string, unknown>>>;
  currentContext?: string;
}

const KUBECONFIG_FLAG = "--kubeconfig";
const isMapping = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);

/** Merges parsed kubeconfig files, first file first: the first definition of a name wins. Pure. */
export function mergeKubeconfigs(files: { path: string; text: string }[]): MergedKubeconfig {
  const merged: MergedKubeconfig = { files: files.map((f) => f.path), clusters: new Map(), users: new Map(), contexts: new Map() };
  for (const { path, text } of files) {
    let document: unknown;
    try {
      document = yaml().parse(text);
    } catch (error) {
      const line = (error as { linePos?: { line: number }[] }).linePos?.[0]?.line;
      throw new UsageError(`kubeconfig ${path}${line ? `:${line}` : ""}: not YAML: ${(error as Error).message.split("\n")[0]}`, { flag: KUBECONFIG_FLAG, cause: error });
    }
    if (document === null || document === undefined) continue;
    if (!isMapping(document)) throw new UsageError(`kubeconfig ${path}: expected a mapping with clusters, users and contexts`, { flag: KUBECONFIG_FLAG });
    for (const [section, field, target] of [
      ["clusters", "cluster", merged.clusters],
      ["users", "user", merged.users],
      ["contexts", "context", merged.contexts],
    ] as const) {
      const list = document[section];
      if (list === undefined || list === null) continue;
      if (!Array.isArray(list)) throw new UsageError(`kubeconfig ${path}: ${section} must be a list`, { flag: KUBECONFIG_FLAG });
      list.forEach((item: unknown, index) => {
        if (!isMapping(item) || typeof item.name !== "string") throw new UsageError(`kubeconfig ${path}: ${section}[${index}] needs a name`, { flag: KUBECONFIG_FLAG });
        const value = item[field] ?? {};
        if (!isMapping(value)) throw new UsageError(`kubeconfig ${path}: ${section}[${index}] (${item.name}).${field} must be a mapping`, { flag: KUBECONFIG_FLAG });
        if (!target.has(item.name)) target.set(item.name, { name: item.name, value, file: path });
      });
    }
    const current = document["current-context"];
    if (merged.currentContext === undefined && typeof current === "string" && current !== "") merged.currentContext = current;
  }
  return merged;
}

/** The kubeconfig files to read, in order, and whether they must exist. */
export function kubeconfigPaths(options: DiscoveryOptions): { paths: string[]; explicit: boolean } {
  if (options.kubeconfig) return { paths: [options.kubeconfig], explicit: true };
  const fromEnv = options.env?.KUBECONFIG;
  if (fromEnv) return { paths: [...new Set(fromEnv.split(delimiter).filter(Boolean))], explicit: false };
  return { paths: [join(options.homeDir ?? options.env?.HOME ?? homedir(), ".kube", "config")], explicit: false };
}

/** Finds the API server and credentials as kubectl does (see the module comment). */
export async function discoverConnection(options: DiscoveryOptions = {}): Promise<Connection> {
  const env = options.env ?? process.env;
  const { paths, explicit } = kubeconfigPaths({ ...options, env });
  const files: { path: string; text: string }[] = [];
  for (const path of paths) {
    try {
      files.push({ path, text: await readFile(path, "utf8") });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (explicit || code !== "ENOENT") {
        throw new UsageError(`${explicit ? `${KUBECONFIG_FLAG} ${path}` : `kubeconfig ${path}`}: ${code === "ENOENT" ? "no such file" : (error as Error).message}`, { flag: KUBECONFIG_FLAG, cause: error });
      }
    }
  }
  const merged = mergeKubeconfigs(files);
  const empty = merged.contexts.size === 0 && merged.clusters.size === 0 && merged.currentContext === undefined;
  if (!empty || explicit) return connectionFromKubeconfig(merged, options.context);
  if (options.context) throw new UsageError(`--context ${options.context}: no kubeconfig found (looked at ${paths.join(", ")})`, { flag: "--context" });
  const inCluster = await inClusterConnection(env);
  if (inCluster) return inCluster;
  throw new UsageError(
    `no Kubernetes configuration: pass ${KUBECONFIG_FLAG} FILE, set KUBECONFIG, create ${paths.join(" or ")}, or run in a pod (KUBERNETES_SERVICE_HOST is not set)`,
    { flag: KUBECONFIG_FLAG },
  );
}

/** Resolves a context of a merged kubeconfig into a Connection (reads certificate files). */
export async function connectionFromKubeconfig(merged: MergedKubeconfig, contextName?: string): Promise<Connection> {
  const where = merged.files.join(":") || "(no file)";
  const name = contextName ?? merged.currentContext;
  if (!name) {
    throw new UsageError(`kubeconfig ${where} has no current-context: pass --context (one of: ${[...merged.contexts.keys()].join(", ") || "none defined"})`, { flag: "--context" });
  }
  const context = merged.contexts.get(name);
  if (!context) {
    throw new UsageError(`--context ${name}: no such context in ${where} (known: ${[...merged.contexts.keys()].join(", ") || "none"})`, { flag: contextName ? "--context" : KUBECONFIG_FLAG });
  }
  const bad = (message: string) => new UsageError(`kubeconfig ${context.file}: context ${name}: ${message}`, { flag: contextName ? "--context" : KUBECONFIG_FLAG });
  const clusterName = context.value.cluster;
  const cluster = typeof clusterName === "string" ? merged.clusters.get(clusterName) : undefined;
  if (!cluster) throw bad(`cluster ${JSON.stringify(clusterName ?? null)} is not defined`);
  const userName = context.value.user;
  const userEntry = typeof userName === "string" && userName !== "" ? merged.users.get(userName) : undefined;
  if (typeof userName === "string" && userName !== "" && !userEntry) throw bad(`user ${JSON.stringify(userName)} is not defined`);

  const c = cluster.value;
  const field = (entry: Entry<Record<string, unknown>>, key: string): string | undefined => {
    const value = entry.value[key];
    if (value === undefined || value === null || value === "") return undefined;
    if (typeof value !== "string") throw new UsageError(`kubeconfig ${entry.file}: ${entry === cluster ? "cluster" : "user"} ${entry.name}: ${key} must be a string`, { flag: KUBECONFIG_FLAG });
    return value;
  };
  const readBytes = async (entry: Entry<Record<string, unknown>>, dataKey: string, fileKey: string): Promise<Buffer | undefined> => {
    const data = field(entry, dataKey);
    if (data !== undefined) return Buffer.from(data, "base64");
    const file = field(entry, fileKey);
    if (file === undefined) return undefined;
    const path = relativeTo(entry.file, file);
    try {
      return await readFile(path);
    } catch (error) {
      throw new UsageError(`kubeconfig ${entry.file}: ${entry.name}: ${fileKey} ${path}: ${(error as Error).message}`, { flag: KUBECONFIG_FLAG, cause: error });
    }
  };

  const serverText = field(cluster, "server");
  if (!serverText) throw new UsageError(`kubeconfig ${cluster.file}: cluster ${cluster.name} has no server`, { flag: KUBECONFIG_FLAG });
  const server = parseServer(serverText, `kubeconfig ${cluster.file}: cluster ${cluster.name}`);
  const ca = await readBytes(cluster, "certificate-authority-data", "certificate-authority");
  const insecure = c["insecure-skip-tls-verify"] === true;
  const tlsServerName = field(cluster, "tls-server-name");

  const user: UserAuth = {};
  if (userEntry) {
    const u = userEntry.value;
    if (u["auth-provider"] !== undefined) {
      throw new UsageError(`kubeconfig ${userEntry.file}: user ${userEntry.name}: auth-provider plugins are not supported (use an exec plugin, e.g. gke-gcloud-auth-plugin or aws eks get-token)`, { flag: KUBECONFIG_FLAG });
    }
    const token = field(userEntry, "token");
    if (token) user.token = token;
    const tokenFile = field(userEntry, "tokenFile");
    if (tokenFile) user.tokenFile = relativeTo(userEntry.file, tokenFile);
    const cert = await readBytes(userEntry, "client-certificate-data", "client-certificate");
    const key = await readBytes(userEntry, "client-key-data", "client-key");
    if ((cert === undefined) !== (key === undefined)) throw new UsageError(`kubeconfig ${userEntry.file}: user ${userEntry.name}: a client certificate needs its key (and the other way round)`, { flag: KUBECONFIG_FLAG });
    if (cert && key) Object.assign(user, { clientCertificate: cert, clientKey: key });
    const username = field(userEntry, "username");
    const password = field(userEntry, "password");
    if (username !== undefined) Object.assign(user, { username, password: password ?? "" });
    if (u.exec !== undefined && u.exec !== null) user.exec = execConfig(u.exec, userEntry);
  }

  const namespace = typeof context.value.namespace === "string" && context.value.namespace ? context.value.namespace : "default";
  return {
    server,
    ...(ca ? { ca } : {}),
    insecureSkipTLSVerify: insecure,
    ...(tlsServerName ? { tlsServerName } : {}),
    user,
    namespace,
    description: `context ${name} (${context.file})`,
    clusterInfo: {
      server: serverText,
      ...(ca ? { "certificate-authority-data": ca.toString("base64") } : {}),
      ...(insecure ? { "insecure-skip-tls-verify": true } : {}),
      ...(tlsServerName ? { "tls-server-name": tlsServerName } : {}),
    },
  };
}

function execConfig(value: unknown, entry: Entry<Record<string, unknown>>): ExecConfig {
  const bad = (message: string) => new UsageError(`kubeconfig ${entry.file}: user ${entry.name}: exec: ${message}`, { flag: KUBECONFIG_FLAG });
  if (!isMapping(value)) throw bad("must be a mapping");
  const { apiVersion, command, args, env, installHint, provideClusterInfo, interactiveMode } = value;
  if (apiVersion !== "client.authentication.k8s.io/v1" && apiVersion !== "client.authentication.k8s.io/v1beta1") {
    throw bad(`apiVersion ${JSON.stringify(apiVersion ?? null)} is not supported (client.authentication.k8s.io/v1 or v1beta1)`);
  }
  if (typeof command !== "string" || command === "") throw bad("command must be a string");
  if (args !== undefined && args !== null && !(Array.isArray(args) && args.every((a) => typeof a === "string"))) throw bad("args must be a list of strings");
  const envList: { name: string; value: string }[] = [];
  if (env !== undefined && env !== null) {
    if (!Array.isArray(env)) throw bad("env must be a list of {name, value}");
    for (const item of env) {
      if (!isMapping(item) || typeof item.name !== "string" || typeof item.value !== "string") throw bad("env must be a list of {name, value}");
      envList.push({ name: item.name, value: item.value });
    }
  }
  if (interactiveMode === "Always") throw bad("interactiveMode Always needs a terminal, and podroutes runs without one");
  // client-go resolves a command with a path separator relative to the kubeconfig; a bare name is looked up on PATH.
  const resolvedCommand = command.includes("/") ? relativeTo(entry.file, command) : command;
  return {
    apiVersion,
    command: resolvedCommand,
    args: (args as string[] | undefined) ?? [],
    env: envList,
    ...(typeof installHint === "string" ? { installHint } : {}),
    provideClusterInfo: provideClusterInfo === true,
    ...(typeof interactiveMode === "string" ? { interactiveMode } : {}),
  };
}

function relativeTo(kubeconfigFile: string, path: string): string {
  return isAbsolute(path) ? path : resolve(dirname(kubeconfigFile), path);
}

function parseServer(text: string, where: string): URL {
  let url: URL;
  try {
    url = new URL(/^[a-z]+:\/\//i.test(text) ? text : `https://${text}`);
  } catch {
    throw new UsageError(`${where}: server ${JSON.stringify(text)} is not a URL`, { flag: KUBECONFIG_FLAG });
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new UsageError(`${where}: server ${JSON.stringify(text)} must be https:// or http://`, { flag: KUBECONFIG_FLAG });
  return url;
}

/** The pod's own service account, when running in a cluster; undefined when not in one. */
export async function inClusterConnection(env: NodeJS.ProcessEnv): Promise<Connection | undefined> {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return undefined;
  const dir = env[SERVICE_ACCOUNT_DIR_ENV] || SERVICE_ACCOUNT_DIR;
  const tokenFile = join(dir, "token");
  try {
    await stat(tokenFile);
  } catch (error) {
    throw new UsageError(`in-cluster configuration: KUBERNETES_SERVICE_HOST is set but the service account token ${tokenFile} cannot be read (${(error as Error).message}); is automountServiceAccountToken off?`, { flag: KUBECONFIG_FLAG, cause: error });
  }
  const ca = await readFile(join(dir, "ca.crt")).catch(() => undefined);
  const namespace = (await readFile(join(dir, "namespace"), "utf8").catch(() => "default")).trim() || "default";
  const server = new URL(`https://${host.includes(":") ? `[${host}]` : host}:${port}`);
  return {
    server,
    ...(ca ? { ca } : {}),
    insecureSkipTLSVerify: false,
    user: { tokenFile },
    namespace,
    description: `in-cluster service account (${server.host})`,
    clusterInfo: { server: server.toString(), ...(ca ? { "certificate-authority-data": ca.toString("base64") } : {}) },
  };
}
