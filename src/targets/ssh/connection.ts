/**
 * One SSH connection per node (ssh2), with host keys checked against known_hosts as OpenSSH does, an
 * optional jump host, and an IpRunner on top: the Linux host-route logic then reads and writes the node
 * over this connection exactly as it does locally. Remote commands are built only from fixed words and
 * arguments that pass a strict character check; the data (route batches, files) travels on stdin, so
 * nothing from an inventory is ever parsed by a remote shell. Failures carry a kind (unreachable, auth,
 * host key, permission, ip error, connection lost) so the per-node summary says why a node failed.
 */
import type { Client, ClientChannel, ConnectConfig } from "ssh2";
import { UsageError } from "../../errors.js";
import { TargetError, type CallOptions } from "../target.js";
import { BusyError } from "../../errors.js";
import { BATCH_END, READ_ARGS, READ_BATCH, type HostRead } from "../linux/iproute.js";
import { LOCK_DIR, type IpResult, type IpRunner, type LockedHost, type LockRequest } from "../linux/runner.js";
import { checkHostKey, fingerprint, hostKeyAlgorithms, hostToken, type KnownHostsStore } from "./known-hosts.js";

export type SshFailureKind = "unreachable" | "auth" | "host key" | "permission" | "ip error" | "connection lost";

/** A node could not be worked on; `failure` is what the per-node summary reports. */
export class SshError extends TargetError {
  constructor(
    readonly failure: SshFailureKind,
    table: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super("ssh", `${failure}: ${message}`, { table, ...options });
  }
}

export interface SshEndpoint {
  user: string;
  host: string;
  port: number;
}

export interface SshSettings {
  user: string;
  port: number;
  privateKey?: Buffer;
  /** ssh-agent socket (SSH_AUTH_SOCK). */
  agent?: string;
  knownHosts: KnownHostsStore;
  acceptNew: boolean;
  /** The seed's StrictHostKeyChecking=no: any key accepted, nothing recorded. */
  insecure: boolean;
  sudo: boolean;
  jump?: SshEndpoint;
  /** Seconds to wait for the SSH handshake. */
  timeout: number;
}

const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$|^[0-9a-fA-F:.]+$/;
const USER = /^[a-z_][a-z0-9_.-]{0,31}$/i;

/** `user@host[:port]` of --jump, checked. */
export function parseEndpoint(text: string, defaults: { user: string; port: number }): SshEndpoint {
  const match = /^(?:([^@]+)@)?(\[[^\]]+\]|[^:@]+)(?::(\d+))?$/.exec(text);
  const host = match?.[2]?.replace(/^\[|\]$/g, "");
  const user = match?.[1] ?? defaults.user;
  const port = match?.[3] ? Number(match[3]) : defaults.port;
  if (!match || !host || !HOST.test(host) || !USER.test(user) || port < 1 || port > 65535) {
    throw new UsageError(`--jump ${JSON.stringify(text)}: must be [user@]host[:port]`, { flag: "--jump" });
  }
  return { user, host, port };
}

export function checkHost(host: string, node: string): string {
  if (!HOST.test(host)) throw new TargetError("ssh", `node ${node}: address ${JSON.stringify(host)} is not a host name or IP address`);
  return host;
}

export function checkUser(user: string): string {
  if (!USER.test(user)) throw new UsageError(`--ssh-user ${JSON.stringify(user)}: not a user name`, { flag: "--ssh-user" });
  return user;
}

/** A word of a remote `ip` command: options, CIDRs, addresses, numbers. Nothing a shell would interpret. */
const SAFE_WORD = /^[A-Za-z0-9_.:/=+-]+$/;

/**
 * The remote command line for `program args`, with `sudo -n` in front when asked. Every word must pass
 * SAFE_WORD, so the remote login shell sees plain words; data goes on stdin, never here.
 */
export function remoteCommand(program: string, args: string[], sudo: boolean): string {
  for (const word of [program, ...args]) {
    if (!SAFE_WORD.test(word)) throw new Error(`ssh: refusing to send ${JSON.stringify(word)} in a remote command`);
  }
  return [...(sudo ? ["sudo", "-n"] : []), program, ...args].join(" ");
}

/**
 * A fixed shell script (a constant of podroutes, never built from input) as a remote command. It is
 * single-quoted for the remote login shell, so it must hold no single quote.
 */
export function remoteScript(script: string, sudo: boolean, args: string[] = []): string {
  if (script.includes("'")) throw new Error("ssh: a remote script must not contain single quotes");
  for (const word of args) {
    if (!SAFE_WORD.test(word)) throw new Error(`ssh: refusing to send ${JSON.stringify(word)} in a remote command`);
  }
  return `${sudo ? "sudo -n " : ""}sh -c '${script}'${args.length ? ` podroutes ${args.join(" ")}` : ""}`;
}

/** ssh2, loaded when the SSH target is used (its native parts are not needed elsewhere). */
export async function loadSsh2(): Promise<typeof import("ssh2")> {
  const module = (await import("ssh2")) as typeof import("ssh2") & { default?: typeof import("ssh2") };
  return module.default ?? module;
}

/** Why a connection failed, from ssh2's error levels and Node's socket codes. */
export function classifyConnectError(error: unknown): SshFailureKind {
  const e = error as { level?: string; code?: string; message?: string };
  if (e.level === "client-authentication") return "auth";
  if (e.level === "client-socket" || e.level === "client-timeout") return "unreachable";
  if (["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "ECONNRESET"].includes(e.code ?? "")) return "unreachable";
  if (/Channel open failure|Timed out while waiting for handshake/i.test(e.message ?? "")) return "unreachable";
  return "connection lost";
}

/** How to trust a host the operator has checked, shown with an unknown host's fingerprint. */
function trustHint(token: string, port: number, host: string, file: string): string {
  return `if it is the right host, record it with \`ssh-keyscan${port === 22 ? "" : ` -p ${port}`} ${host} >> ${file}\` (after checking the fingerprint), or rerun with --accept-new to trust it on first use`;
}

export interface ConnectTarget {
  /** The node (table) name, for messages. */
  node: string;
  host: string;
  port: number;
  user: string;
}

/**
 * Opens an authenticated SSH connection to `target`, through `via` (a jump connection) when given.
 * Rejects with an SshError naming the kind of failure.
 */
export async function connectSsh(target: ConnectTarget, settings: SshSettings, via?: Client): Promise<Client> {
  const { Client: SshClient } = await loadSsh2();
  const token = hostToken(target.host, target.port);
  const entries = settings.insecure ? [] : await settings.knownHosts.load();
  const where = `${target.user}@${target.host}${target.port === 22 ? "" : `:${target.port}`}`;
  let refusal: string | undefined;

  let sock: ClientChannel | undefined;
  if (via) {
    sock = await new Promise<ClientChannel>((resolve, reject) =>
      via.forwardOut("127.0.0.1", 0, target.host, target.port, (error, stream) => (error ? reject(error) : resolve(stream))),
    ).catch((error: unknown) => {
      throw new SshError("unreachable", target.node, `${where} through the jump host: ${(error as Error).message}`, { cause: error });
    });
  }

  // Offer only the key types known_hosts holds for this host, as OpenSSH does, so a server with
  // several host keys is checked against the one the operator recorded.
  const knownTypes = [...new Set(entries.filter((e) => e.marker === undefined && checkHostKey([e], token, e.key).status === "known").map((e) => e.keyType))];
  const config: ConnectConfig = {
    host: target.host,
    port: target.port,
    username: target.user,
    readyTimeout: settings.timeout * 1000,
    ...(sock ? { sock } : {}),
    ...(settings.privateKey ? { privateKey: settings.privateKey } : {}),
    ...(settings.agent ? { agent: settings.agent } : {}),
    ...(knownTypes.length ? { algorithms: { serverHostKey: knownTypes.flatMap(hostKeyAlgorithms) as never } } : {}),
    hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
      if (settings.insecure) return verify(true);
      const verdict = checkHostKey(entries, token, key);
      const file = settings.knownHosts.file;
      switch (verdict.status) {
        case "known":
          return verify(true);
        case "revoked":
          refusal = `${where} offered a ${key.length ? fingerprint(key) : ""} key that is marked @revoked in ${file}:${verdict.line}`;
          return verify(false);
        case "changed":
          refusal =
            `REMOTE HOST KEY CHANGED for ${token}: it offered ${fingerprint(key)}, but ${file}:${verdict.line} holds ${verdict.knownFingerprint}. ` +
            `Someone may be intercepting the connection, or the host was reinstalled. podroutes never accepts a changed key; ` +
            `if the change is expected, remove the old key with \`ssh-keygen -R ${token} -f ${file}\` and check the new one`;
          return verify(false);
        case "unknown":
          if (verdict.otherTypes.length) {
            refusal = `${token} is known with a ${verdict.otherTypes.join("/")} key but offered ${fingerprint(key)}; refusing, check the host and update ${file}`;
            return verify(false);
          }
          if (!settings.acceptNew) {
            refusal = `${token} is not in ${file}; its key fingerprint is ${fingerprint(key)}. ${trustHint(token, target.port, target.host, file)}`;
            return verify(false);
          }
          settings.knownHosts.record(token, key).then(
            () => verify(true),
            (error: unknown) => {
              refusal = `cannot record ${token} in ${file}: ${(error as Error).message}`;
              verify(false);
            },
          );
      }
    },
  };

  const client = new SshClient();
  return new Promise<Client>((resolve, reject) => {
    let settled = false;
    client.once("ready", () => {
      settled = true;
      // Small request/response exchanges: without TCP_NODELAY each exec waits out delayed ACKs (~40 ms).
      client.setNoDelay(true);
      resolve(client);
    });
    client.once("error", (error: Error) => {
      if (settled) return;
      settled = true;
      client.end();
      if (refusal) reject(new SshError("host key", target.node, refusal, { cause: error }));
      else {
        const kind = classifyConnectError(error);
        const hint = kind === "auth" ? ` (is the key in ${target.user}'s authorized_keys? --ssh-key FILE or an ssh-agent)` : "";
        reject(new SshError(kind, target.node, `${where}: ${error.message}${hint}`, { cause: error }));
      }
    });
    client.connect(config);
  });
}

/**
 * Ends a remote command when `signal` aborts (its channel is closed, which ends the remote process, as a
 * dropped connection would) and rejects with the signal's reason; returns the listener's removal.
 */
function abortChannel(stream: ClientChannel, signal: AbortSignal | undefined, reject: (error: unknown) => void): () => void {
  if (!signal) return () => {};
  const abort = () => {
    reject(signal.reason);
    stream.close();
  };
  signal.addEventListener("abort", abort, { once: true });
  return () => signal.removeEventListener("abort", abort);
}

/** Runs one remote command with `stdin`; the channel closing without an exit status means the connection dropped. */
export function execRemote(client: Client, command: string, stdin: string | undefined, node: string, options: CallOptions = {}): Promise<IpResult> {
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) return reject(options.signal.reason);
    client.exec(command, (error, stream) => {
      if (error) return reject(new SshError("connection lost", node, `cannot run a command: ${error.message}`, { cause: error }));
      const unlisten = abortChannel(stream, options.signal, reject);
      const stdout: Buffer[] = [];
      const stderr: Buffer[] = [];
      let exit: number | undefined;
      stream.on("data", (chunk: Buffer) => stdout.push(chunk));
      stream.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
      stream.on("exit", (code: number | null, signal?: string) => {
        exit = code ?? (signal ? 128 : 1);
      });
      stream.on("close", () => {
        unlisten();
        if (exit === undefined) {
          reject(new SshError("connection lost", node, `the connection closed before \`${command}\` finished; what it did is unknown, a re-run reads the node again and finishes the job`));
          return;
        }
        resolve({ code: exit, stdout: Buffer.concat(stdout).toString("utf8"), stderr: Buffer.concat(stderr).toString("utf8") });
      });
      stream.on("error", () => {});
      stream.end(stdin ?? "");
    });
  });
}

const SUDO_FAILED = /^sudo: |sudo: (?:command )?not found|sudo: not found/m;
const NOT_PERMITTED = /Operation not permitted|Permission denied/;

/**
 * Turns failures that concern the whole node into SshErrors: sudo refusing, or a user who may not
 * change routes (every line fails alike, so nothing was changed).
 */
export function checkPermission(result: IpResult, node: string, user: string, sudo: boolean): void {
  if (result.code === 0) return;
  if (sudo && SUDO_FAILED.test(result.stderr)) {
    throw new SshError("permission", node, `sudo -n failed for ${user}: ${result.stderr.trim().split("\n")[0]} (podroutes needs passwordless sudo for ip)`);
  }
  if (NOT_PERMITTED.test(result.stderr)) {
    throw new SshError(
      "permission",
      node,
      `${user} may not change routes: ${result.stderr.trim().split("\n")[0]} (${sudo ? "sudo did not give root" : "log in as root with --ssh-user root, or pass --sudo"})`,
    );
  }
}

const STATE_END = "podroutes-state-end";
const READ_ERRORS = "podroutes-read-stderr";
const WAITING = "podroutes-waiting";
const LOCK_BUSY = 75;

/**
 * The lock of runner.ts, on the node: one remote shell takes flock(2) on the lock file of the network
 * namespace its `ip` writes (`$1`: seconds to wait, or `none`), reads the table under it, then takes the
 * batch from stdin into a file and runs it only if the batch arrived whole (its last line is
 * BATCH_END): a dropped connection runs nothing, never a cut line. `ip` inherits the lock's descriptor
 * and writes its errors to a file, so it finishes its batch, under the lock, even if the connection
 * drops meanwhile; the shell's exit (connection gone or done) releases the lock. `$2` is the protocol,
 * `$3` the cluster recorded as its owner (`-`: none). A constant: no input is ever part of it.
 */
export const LOCK_SESSION_SCRIPT = `set -u
d=${LOCK_DIR}
mkdir -p "$d" || exit 70
lock="$d/net-$(stat -L -c %i /proc/self/ns/net)" || exit 70
exec 9>>"$lock" || exit 70
if ! flock -n 9; then
  echo "${WAITING} $(head -c 300 "$lock" | tr "\\n" " ")" >&2
  if [ "$1" = none ]; then flock 9; else flock -w "$1" -E ${LOCK_BUSY} 9; fi || exit ${LOCK_BUSY}
fi
echo "pid $$ on $(hostname) since $(date -u +%Y-%m-%dT%H:%M:%SZ), podroutes over ssh" > "$lock"
owner="$lock.proto-$2"
tmp=$(mktemp -d) || exit 70
trap "rm -rf $tmp" EXIT
printf "owner %s\\n" "$(cat "$owner" 2>/dev/null | tr -d "\\n")"
printf "${READ_BATCH.replace(/\n/g, "\\n")}" | ip -N -json -force -batch - 2>"$tmp/read.err"
echo ${READ_ERRORS}
cat "$tmp/read.err"
echo ${STATE_END}
cat > "$tmp/batch"
[ "$(tail -n 1 "$tmp/batch")" = "${BATCH_END}" ] || exit 0
[ "$3" = - ] || printf "cluster=%s\\n" "$3" > "$owner"
ip -force -batch "$tmp/batch" 2>"$tmp/write.err"
rc=$?
cat "$tmp/write.err" >&2
exit $rc`;

/**
 * Takes a node's table lock over one SSH channel (LOCK_SESSION_SCRIPT) and reads the table under it.
 * The lock lasts until `write` ran its batch or `release` closed the channel; a dropped connection
 * ends the remote shell, and with it the lock.
 */
export function lockOverSsh(client: Client, target: ConnectTarget, settings: SshSettings, request: LockRequest): Promise<LockedHost> {
  const command = remoteScript(LOCK_SESSION_SCRIPT, settings.sudo, [request.timeout === undefined ? "none" : String(request.timeout), String(request.proto), request.cluster ?? "-"]);
  return new Promise((resolve, reject) => {
    if (request.signal?.aborted) return reject(request.signal.reason);
    client.exec(command, (error, stream) => {
      if (error) return reject(new SshError("connection lost", target.node, `cannot run a command: ${error.message}`, { cause: error }));
      // Aborted while waiting or locked: the channel closes, the remote shell ends, and the lock with it.
      const unlisten = abortChannel(stream, request.signal, (reason) => {
        reject(reason);
        fail?.(reason as Error);
      });
      let stdout = "";
      let stderr = "";
      let exit: number | undefined;
      let locked = false;
      let warned = false;
      let finish: ((result: IpResult) => void) | undefined;
      let fail: ((error: Error) => void) | undefined;
      const done = new Promise<IpResult>((res, rej) => {
        finish = res;
        fail = rej;
      });
      done.catch(() => {});
      stream.on("data", (chunk: Buffer) => {
        stdout += chunk.toString("utf8");
        const end = stdout.indexOf(`\n${STATE_END}\n`);
        if (locked || end < 0) return;
        locked = true;
        const [head, ...rest] = stdout.slice(0, end).split("\n");
        const body = rest.join("\n");
        const split = body.lastIndexOf(READ_ERRORS);
        const owner = /^owner cluster=(\S+)/.exec(head ?? "")?.[1];
        resolve({
          state: [{ batch: READ_BATCH, stdout: body.slice(0, split), stderr: body.slice(split + READ_ERRORS.length) }],
          owner,
          write: (script) => {
            stdout = "";
            stderr = "";
            stream.end(script);
            return done;
          },
          release: async () => {
            stream.end();
            await done.catch(() => undefined);
          },
        });
      });
      stream.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8");
        const line = new RegExp(`^${WAITING} (.*)$`, "m").exec(stderr);
        if (line && !warned) {
          warned = true;
          request.waiting(line[1]!.trim() || undefined);
        }
      });
      stream.on("exit", (code: number | null, signal?: string) => {
        exit = code ?? (signal ? 128 : 1);
      });
      stream.on("close", () => {
        unlisten();
        const result = { code: exit ?? 255, stdout, stderr: stderr.replace(new RegExp(`^${WAITING} .*\n?`, "m"), "") };
        if (locked) {
          if (exit === undefined) fail!(new SshError("connection lost", target.node, "the connection closed while writing; what the batch did is unknown, a re-run reads the node again and finishes the job"));
          else finish!(result);
          return;
        }
        if (exit === LOCK_BUSY) {
          reject(new BusyError(`ssh ${target.node}: another podroutes run holds the lock on ${target.user}@${target.host} and did not let go within --lock-timeout ${request.timeout}s; nothing was changed`));
          return;
        }
        try {
          checkPermission(result, target.node, target.user, settings.sudo);
        } catch (problem) {
          reject(problem as Error);
          return;
        }
        reject(new SshError("permission", target.node, `cannot lock the routing table on ${target.user}@${target.host} (podroutes needs flock(1), util-linux, and /run/podroutes): ${result.stderr.trim() || `exit ${result.code}`}`));
      });
      stream.on("error", () => {});
    });
  });
}

/** `ip` on a node over an open connection. */
export function sshRunner(client: Client, target: ConnectTarget, settings: SshSettings, onClose: () => void): IpRunner & { exec(command: string, stdin?: string, options?: CallOptions): Promise<IpResult> } {
  const where = `${target.user}@${target.host}`;
  const ipRemote = async (args: string[], stdin: string | undefined, options?: CallOptions) => {
    const result = await execRemote(client, remoteCommand("ip", args, settings.sudo), stdin, target.node, options);
    checkPermission(result, target.node, target.user, settings.sudo);
    return result;
  };
  return {
    where,
    lock: (request) => lockOverSsh(client, target, settings, request),
    exec: (command, stdin, options) => execRemote(client, command, stdin, target.node, options),
    ip: ipRemote,
    // One round trip: the whole read in one `ip` (over SSH the connection, not the kernel, is the cost).
    read: async (options): Promise<HostRead[]> => [{ batch: READ_BATCH, ...(await ipRemote(READ_ARGS, READ_BATCH, options)) }],
    async close() {
      client.end();
      onClose();
    },
  };
}
