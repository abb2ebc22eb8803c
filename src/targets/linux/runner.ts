/**
 * How a host-route target runs `ip`: on this host, in a network namespace, or over SSH. Everything the
 * Linux logic needs from a host is `ip ARGS` with a script on stdin, and a lock on the host's routing
 * table under which it reads and writes, so a new transport is these two functions.
 *
 * The lock (this host and namespaces; ssh/connection.ts does the same on the remote host): flock(2) on
 * `/run/podroutes/lock/net-<inode of the network namespace>`, so every podroutes run that writes one
 * namespace — `local` inside it, `lab` through `ip -n`, the SSH target on that host — takes the same
 * lock. Node has no flock(2); util-linux's `flock(1)` (always on Debian) locks an open file descriptor
 * podroutes passes it and exits, and the lock then belongs to the open file: it lasts while this
 * process, or the `ip` writing a batch, holds the descriptor, and the kernel drops it when both are
 * gone, even after `kill -9`. A crash cannot leave it held.
 */
import { randomUUID } from "node:crypto";
import { mkdir, open, readdir, readFile, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BusyError } from "../../errors.js";
import { run, type ProcessResult } from "../../process.js";
import type { CallOptions } from "../target.js";
import { READ_ARGS, READ_PARTS, type HostRead } from "./iproute.js";

/** What one `ip` run gave. */
export type IpResult = ProcessResult;

/** How a table is locked for a write. */
export interface LockRequest {
  /** Protocol number podroutes writes with: the owner record is per protocol. */
  proto: number;
  /** The cluster this run writes for, recorded as the owner of `proto` in this namespace when it writes; none: record nothing. */
  cluster?: string;
  /** Seconds to wait for another run's lock; undefined: as long as it takes. */
  timeout?: number;
  /** Called once if another run holds the lock: who, as far as the lock file says. */
  waiting(holder: string | undefined): void;
  /** Gives up waiting (and, once locked, reading and writing): the lock is let go. */
  signal?: AbortSignal;
}

/** A host's routing table, locked. Everything podroutes writes to the table happens through this. */
export interface LockedHost {
  /** What `ip` printed for the read batches (READ_BATCH or READ_PARTS), read once the lock was held. */
  readonly state: HostRead[];
  /** The cluster recorded as the writer of `proto` in this namespace (cluster=NAME), if any. */
  readonly owner: string | undefined;
  /**
   * Runs one complete batch (ending with BATCH_END) with `ip -force -batch`, recording the cluster as
   * the owner first. `ip` gets the whole script before it starts and holds the lock itself, so if this
   * process dies, `ip` runs the batch as built, never a cut line, and nobody else writes meanwhile.
   */
  write(script: string): Promise<IpResult>;
  release(): Promise<void>;
}

export interface IpRunner {
  /** Where `ip` runs, for messages: `this host`, `netns lab-worker-0`, `root@203.0.113.10`. */
  readonly where: string;
  /** Runs `ip ARGS` with `stdin`; resolves with the exit code and output, rejects only if `ip` could not run (or `signal` aborted it). */
  ip(args: string[], stdin?: string, options?: CallOptions): Promise<IpResult>;
  /** Reads the host (routes of every table, nexthop objects, addresses): READ_BATCH, or READ_PARTS at once. */
  read(options?: CallOptions): Promise<HostRead[]>;
  /** Takes the table's lock (waiting, or BusyError after `timeout`) and reads the table under it. */
  lock(request: LockRequest): Promise<LockedHost>;
  close?(): Promise<void>;
}

export const LOCK_DIR = "/run/podroutes/lock";

/** flock(1)'s exit code when it did not get the lock (-E). */
const LOCK_BUSY = 75;

/** The lock file of a network namespace: this process's, or a named one's (`ip netns add`). */
export async function lockPath(netns?: string): Promise<string> {
  const { ino } = await stat(netns ? `/run/netns/${netns}` : "/proc/self/ns/net");
  return `${LOCK_DIR}/net-${ino}`;
}

/**
 * Removes a namespace's lock file and owner records, for whoever deletes the namespace (`lab down`,
 * tests): a new namespace may get the same inode, and should not inherit them.
 */
export async function removeLockFiles(netns: string): Promise<void> {
  const path = await lockPath(netns).catch(() => undefined);
  if (!path) return;
  const name = path.slice(LOCK_DIR.length + 1);
  const files = await readdir(LOCK_DIR).catch(() => [] as string[]);
  await Promise.all(files.filter((file) => file === name || file.startsWith(`${name}.`)).map((file) => rm(join(LOCK_DIR, file), { force: true })));
}

/** Who holds a lock, from what its holder wrote in the lock file and the kernel's view of that process. */
async function describeHolder(path: string): Promise<string | undefined> {
  const said = (await readFile(path, "utf8").catch(() => "")).trim();
  const pid = /^pid (\d+)/.exec(said)?.[1];
  if (!pid) return said || undefined;
  const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0").filter(Boolean).join(" ");
  return cmdline ? `${said}: ${cmdline}` : said;
}

/** A flock(1) timeout: whole and fractional seconds. */
function seconds(timeout: number): string {
  return String(Math.round(timeout * 1000) / 1000);
}

/** Locks this host's (or a namespace's) routing table; see the module comment. */
export async function lockLocal(netns: string | undefined, request: LockRequest): Promise<LockedHost> {
  const { signal } = request;
  signal?.throwIfAborted();
  const path = await lockPath(netns);
  await mkdir(LOCK_DIR, { recursive: true, mode: 0o755 });
  const handle = await open(path, "a+", 0o644);
  try {
    // One `flock` process when the lock is free (about 1.5 ms, measured): cheaper than any co-process,
    // and no native addon is needed (the ones with flock(2) build from source or come from forks).
    const flock = (wait: string[]) => run("flock", [...wait, "-E", String(LOCK_BUSY), "3"], undefined, { fds: [handle.fd], signal });
    let locked = await flock(["-n"]);
    if (locked.code === LOCK_BUSY) {
      request.waiting(await describeHolder(path));
      locked = await flock(request.timeout === undefined ? [] : ["-w", seconds(request.timeout)]);
      if (locked.code === LOCK_BUSY) {
        throw new BusyError(`another podroutes run holds the lock on ${netns ? `netns ${netns}` : "this host"} (${path}${await describeHolder(path).then((h) => (h ? `: ${h}` : ""))}) and did not let go within --lock-timeout ${seconds(request.timeout!)}s; nothing was changed`);
      }
    }
    if (locked.code !== 0) throw new Error(`flock ${path} failed: ${locked.stderr.trim() || `exit ${locked.code}`}`);
    await handle.truncate(0);
    await handle.write(`pid ${process.pid} since ${new Date().toISOString()}\n`);

    const ownerFile = `${path}.proto-${request.proto}`;
    const ns = netns ? ["-n", netns] : [];
    const [owner, state] = await Promise.all([
      readFile(ownerFile, "utf8").then((text) => /^cluster=(\S+)/.exec(text)?.[1], () => undefined),
      readLocal(netns, signal),
    ]);
    return {
      state,
      owner,
      async write(script) {
        signal?.throwIfAborted();
        if (request.cluster !== undefined && owner !== request.cluster) await writeFile(ownerFile, `cluster=${request.cluster}\n`);
        // The whole script goes into a file nobody else can open (created exclusively, unlinked at once)
        // before `ip` starts: a crash of this process cannot cut it.
        const scratch = join(tmpdir(), `podroutes-batch-${process.pid}-${randomUUID()}`);
        const file = await open(scratch, "wx+", 0o600);
        try {
          await unlink(scratch);
          await file.write(script, 0);
          return await run("ip", [...ns, "-force", "-batch", "-"], { fd: file.fd }, { fds: [handle.fd], signal });
        } finally {
          await file.close();
        }
      },
      release: () => handle.close(),
    };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Reads this host (or a namespace) with READ_PARTS, one `ip` process per part, at once. */
function readLocal(netns: string | undefined, signal: AbortSignal | undefined): Promise<HostRead[]> {
  const ns = netns ? ["-n", netns] : [];
  return Promise.all(READ_PARTS.map(async (batch) => ({ batch, ...(await run("ip", [...ns, ...READ_ARGS], batch, { signal })) })));
}

/** `ip` on this host, or, with `netns`, inside that network namespace (`ip -n NS`, no shell, no root-ns writes). */
export function localRunner(netns?: string): IpRunner {
  return {
    where: netns ? `netns ${netns}` : "this host",
    ip: (args, stdin, options) => run("ip", netns ? ["-n", netns, ...args] : args, stdin, { signal: options?.signal }),
    read: (options) => readLocal(netns, options?.signal),
    lock: (request) => lockLocal(netns, request),
  };
}
