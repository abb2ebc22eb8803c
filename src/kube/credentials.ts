/**
 * The credentials of each request, kept fresh as client-go keeps them:
 * - a static bearer token, basic auth, or a client certificate from the kubeconfig;
 * - a token file, re-read at least once a minute and after a 401 (bound service-account tokens rotate
 *   hourly, and the kubelet rewrites the file before the old token expires);
 * - an exec credential plugin (client.authentication.k8s.io/v1 or v1beta1 ExecCredential, as EKS's and
 *   GKE's kubeconfigs use): run without a terminal, its answer cached until `expirationTimestamp` (or
 *   until a 401 when it gives none), run again after a 401. Concurrent requests share one run.
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { PodroutesError } from "../errors.js";
import type { Connection, ExecConfig } from "./kubeconfig.js";

/** What one request authenticates with. */
export interface Credentials {
  /** `Authorization` header value, when there is one. */
  authorization?: string;
  /** A TLS client certificate and key (PEM). */
  cert?: Buffer;
  key?: Buffer;
}

export interface CredentialSource {
  current(signal?: AbortSignal): Promise<Credentials>;
  /** After a 401: forget cached credentials. True when fetching again may give different ones. */
  invalidate(): boolean;
}

/** Credentials cannot be had: a token file that cannot be read, an exec plugin that failed. */
export class CredentialError extends PodroutesError {
  readonly kind = "target" as const;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CredentialError";
  }
}

export const TOKEN_FILE_REFRESH_MS = 60_000;

export interface CredentialOptions {
  now?: () => number;
  /** Runs an exec plugin; tests may replace it. */
  runPlugin?: (exec: ExecConfig, env: NodeJS.ProcessEnv, signal?: AbortSignal) => Promise<string>;
  env?: NodeJS.ProcessEnv;
}

export function credentialSource(connection: Connection, options: CredentialOptions = {}): CredentialSource {
  const { user } = connection;
  const now = options.now ?? Date.now;
  const base: Credentials = {
    ...(user.clientCertificate && user.clientKey ? { cert: user.clientCertificate, key: user.clientKey } : {}),
    ...(user.token ? { authorization: `Bearer ${user.token}` } : {}),
    ...(user.username !== undefined && !user.token ? { authorization: `Basic ${Buffer.from(`${user.username}:${user.password ?? ""}`).toString("base64")}` } : {}),
  };
  if (user.exec) return execSource(user.exec, connection, base, now, options);
  if (user.tokenFile) return tokenFileSource(user.tokenFile, base, now);
  return { current: async () => base, invalidate: () => false };
}

function tokenFileSource(path: string, base: Credentials, now: () => number): CredentialSource {
  let cached: { token: string; readAt: number } | undefined;
  return {
    async current() {
      if (!cached || now() - cached.readAt >= TOKEN_FILE_REFRESH_MS) {
        let text: string;
        try {
          text = await readFile(path, "utf8");
        } catch (error) {
          // An old token still works until it expires; a file being rewritten must not fail a request.
          if (cached) return { ...base, authorization: `Bearer ${cached.token}` };
          throw new CredentialError(`cannot read the token file ${path}: ${(error as Error).message}`, { cause: error });
        }
        cached = { token: text.trim(), readAt: now() };
      }
      return { ...base, authorization: `Bearer ${cached.token}` };
    },
    invalidate() {
      cached = undefined;
      return true;
    },
  };
}

interface ExecCredentialStatus {
  token?: string;
  clientCertificateData?: string;
  clientKeyData?: string;
  expirationTimestamp?: string;
}

function execSource(exec: ExecConfig, connection: Connection, base: Credentials, now: () => number, options: CredentialOptions): CredentialSource {
  let cached: { credentials: Credentials; expiresAt: number } | undefined;
  let running: Promise<Credentials> | undefined;
  const runPlugin = options.runPlugin ?? runExecPlugin;
  const fetch = async (signal?: AbortSignal): Promise<Credentials> => {
    const info = {
      apiVersion: exec.apiVersion,
      kind: "ExecCredential",
      spec: { interactive: false, ...(exec.provideClusterInfo ? { cluster: { ...connection.clusterInfo, config: null } } : {}) },
    };
    const env: NodeJS.ProcessEnv = { ...(options.env ?? process.env), ...Object.fromEntries(exec.env.map((e) => [e.name, e.value])), KUBERNETES_EXEC_INFO: JSON.stringify(info) };
    const stdout = await runPlugin(exec, env, signal);
    const status = parseExecCredential(stdout, exec);
    const credentials: Credentials = {
      ...base,
      ...(status.token ? { authorization: `Bearer ${status.token}` } : {}),
      ...(status.clientCertificateData && status.clientKeyData ? { cert: Buffer.from(status.clientCertificateData), key: Buffer.from(status.clientKeyData) } : {}),
    };
    const expiresAt = status.expirationTimestamp ? Date.parse(status.expirationTimestamp) : Number.POSITIVE_INFINITY;
    cached = { credentials, expiresAt };
    return credentials;
  };
  return {
    async current(signal) {
      if (cached && now() < cached.expiresAt) return cached.credentials;
      running ??= fetch(signal).finally(() => (running = undefined));
      return running;
    },
    invalidate() {
      cached = undefined;
      return true;
    },
  };
}

/** Checks an exec plugin's answer: the same apiVersion, and a token or a certificate with its key. */
export function parseExecCredential(stdout: string, exec: ExecConfig): ExecCredentialStatus {
  const fail = (message: string) => new CredentialError(`exec plugin ${exec.command}: ${message}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    throw fail(`did not print an ExecCredential (not JSON): ${stdout.slice(0, 200)}`);
  }
  const object = parsed as { apiVersion?: unknown; kind?: unknown; status?: ExecCredentialStatus };
  if (object.kind !== "ExecCredential") throw fail(`printed kind ${JSON.stringify(object.kind ?? null)}, not ExecCredential`);
  if (object.apiVersion !== exec.apiVersion) throw fail(`answered apiVersion ${JSON.stringify(object.apiVersion ?? null)}, the kubeconfig asks for ${exec.apiVersion}`);
  const status = object.status;
  if (typeof status !== "object" || status === null) throw fail("the ExecCredential has no status");
  const strings = ["token", "clientCertificateData", "clientKeyData", "expirationTimestamp"] as const;
  for (const key of strings) if (status[key] !== undefined && typeof status[key] !== "string") throw fail(`status.${key} must be a string`);
  if (!status.token && !(status.clientCertificateData && status.clientKeyData)) throw fail("the ExecCredential has neither a token nor a client certificate and key");
  if ((status.clientCertificateData === undefined) !== (status.clientKeyData === undefined)) throw fail("clientCertificateData and clientKeyData come together");
  if (status.expirationTimestamp !== undefined && Number.isNaN(Date.parse(status.expirationTimestamp))) throw fail(`expirationTimestamp ${JSON.stringify(status.expirationTimestamp)} is not a time`);
  return status;
}

/** Runs the plugin without a terminal (stdin closed), as client-go does for a non-interactive caller. */
function runExecPlugin(exec: ExecConfig, env: NodeJS.ProcessEnv, signal?: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(exec.command, exec.args, { env, maxBuffer: 4 * 1024 * 1024, timeout: 60_000, ...(signal ? { signal } : {}) }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      const code = (error as NodeJS.ErrnoException).code;
      const hint = code === "ENOENT" && exec.installHint ? `\n${exec.installHint}` : "";
      const why = code === "ENOENT" ? "not found" : `failed (${error.message.split("\n")[0]})${stderr.trim() ? `: ${stderr.trim().slice(0, 500)}` : ""}`;
      reject(new CredentialError(`exec plugin ${exec.command} ${why}${hint}`, { cause: error }));
    });
    child.stdin?.end();
  });
}
