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
import { mkdir, open, readdir, readFile, rm, stat, unlink, writeFile, type FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BusyError } from "../../errors.js";
import { run, type ProcessResult } from "../../process.js";
import type { CallOptions, TakenAhead } from "../target.js";
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

/** A namespace's lock, taken, with the read of its table under the lock started. */
interface Taken {
  path: string;
  handle: FileHandle;
  reading: Promise<HostRead[]>;
}

/**
 * Takes a namespace's lock: at once, or with `wait` as long as the request allows (BusyError after its
 * timeout); undefined when another run holds it and `wait` is false. The read of the table starts as
 * soon as the lock is held.
 */
async function takeLock(netns: string | undefined, request: Pick<LockRequest, "timeout" | "waiting" | "signal">, wait: boolean, read: LockRead = "table"): Promise<Taken | undefined> {
  const { signal } = request;
  signal?.throwIfAborted();
  const path = await lockPath(netns);
  await mkdir(LOCK_DIR, { recursive: true, mode: 0o755 });
  const handle = await open(path, "a+", 0o644);
  try {
    // One `flock` process when the lock is free (1.4 ms measured, against the 35 ms of the read and the
    // 300 ms of a whole run): no co-process or native addon (those with flock(2) build from source or
    // come from forks) would pay for itself.
    const flock = (args: string[]) => run("flock", [...args, "-E", String(LOCK_BUSY), "3"], undefined, { fds: [handle.fd], signal });
    let locked = await flock(["-n"]);
    if (locked.code === LOCK_BUSY) {
      if (!wait) {
        await handle.close();
        return undefined;
      }
      request.waiting(await describeHolder(path));
      locked = await flock(request.timeout === undefined ? [] : ["-w", seconds(request.timeout)]);
      if (locked.code === LOCK_BUSY) {
        throw new BusyError(`another podroutes run holds the lock on ${netns ? `netns ${netns}` : "this host"} (${path}${await describeHolder(path).then((h) => (h ? `: ${h}` : ""))}) and did not let go within --lock-timeout ${seconds(request.timeout!)}s; nothing was changed`);
      }
    }
    if (locked.code !== 0) throw new Error(`flock ${path} failed: ${locked.stderr.trim() || `exit ${locked.code}`}`);
    const reading = read === "table" ? readLocal(netns, signal) : Promise.resolve([]);
    reading.catch(() => {}); // awaited by whoever takes the lock over; not an unhandled rejection meanwhile
    await handle.truncate(0);
    await handle.write(`pid ${process.pid} since ${new Date().toISOString()}\n`);
    return { path, handle, reading };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** A taken lock as a LockedHost, once its read is done. */
async function lockedHost(netns: string | undefined, taken: Taken, request: LockRequest): Promise<LockedHost> {
  const { path, handle, reading } = taken;
  const { signal } = request;
  const ownerFile = `${path}.proto-${request.proto}`;
  const ns = netns ? ["-n", netns] : [];
  try {
    const [owner, state] = await Promise.all([readFile(ownerFile, "utf8").then((text) => /^cluster=(\S+)/.exec(text)?.[1], () => undefined), reading]);
    return {
      state,
      owner,
      async write(script) {
        signal?.throwIfAborted();
        if (request.cluster !== undefined && owner !== request.cluster) await writeFile(ownerFile, `cluster=${request.cluster}\n`);
        // The whole script goes into a file nobody else can open (created exclusively, unlinked at once)
        // before `ip` starts: a crash of this process cannot cut it.
        const file = await scratchFile("batch");
        try {
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

/**
 * What is read once a lock is held: the whole table, or nothing (the agent's per-change write reads its
 * few destinations itself; `state` is then empty).
 */
export type LockRead = "table" | "nothing";

/** Locks this host's (or a namespace's) routing table and reads it under the lock; see the module comment. */
export async function lockLocal(netns: string | undefined, request: LockRequest, read: LockRead = "table"): Promise<LockedHost> {
  return lockedHost(netns, (await takeLock(netns, request, true, read))!, request);
}

/**
 * A namespace's lock taken ahead, before the run knows its inventory: `lockAhead` tries the lock at once
 * and starts the read under it, so `ip` dumps the table while this process reads and checks the
 * inventory (its output goes to a file, so it never waits for this process). The run's first lock of
 * that namespace takes it over; a busy lock is left alone, and that lock is then taken as usual.
 */
export interface LockedAhead extends TakenAhead {
  /** The lock as a LockedHost (first call only), or undefined: not taken ahead, then lock as usual. */
  take(request: LockRequest): Promise<LockedHost | undefined>;
}

export function lockAhead(netns: string | undefined, signal?: AbortSignal): LockedAhead {
  const taking = takeLock(netns, { waiting: () => {}, ...(signal ? { signal } : {}) }, false).catch(() => undefined);
  let claimed = false;
  return {
    started: taking,
    async take(request) {
      if (claimed) return undefined;
      claimed = true;
      const taken = await taking;
      return taken && lockedHost(netns, taken, request);
    },
    async release() {
      if (claimed) return;
      claimed = true;
      const taken = await taking;
      if (!taken) return;
      await taken.reading.catch(() => undefined);
      await taken.handle.close();
    },
  };
}

/** A file created exclusively and unlinked at once: nobody else can open it, and it goes with its last descriptor. */
async function scratchFile(what: string): Promise<FileHandle> {
  const path = join(tmpdir(), `podroutes-${what}-${process.pid}-${randomUUID()}`);
  const file = await open(path, "wx+", 0o600);
  await unlink(path).catch(async (error: unknown) => {
    await file.close();
    throw error;
  });
  return file;
}

/**
 * Reads this host (or a namespace) with READ_PARTS, one `ip` process per part, at once. Their output goes
 * to scratch files rather than pipes: `ip` finishes at its own pace even while this process is busy
 * (a table of 5,000 routes is a megabyte of JSON, 16 times a pipe's buffer), and is read in one piece.
 */
function readLocal(netns: string | undefined, signal: AbortSignal | undefined): Promise<HostRead[]> {
  const ns = netns ? ["-n", netns] : [];
  return Promise.all(
    READ_PARTS.map(async (batch): Promise<HostRead> => {
      const output = await scratchFile("read");
      try {
        const result = await run("ip", [...ns, ...READ_ARGS], batch, { signal, stdout: output });
        const { size } = await output.stat();
        const { buffer, bytesRead } = await output.read({ buffer: Buffer.alloc(size), position: 0 });
        return { batch, stdout: buffer.toString("utf8", 0, bytesRead), stderr: result.stderr };
      } finally {
        await output.close();
      }
    }),
  );
}

/**
 * `ip` on this host, or, with `netns`, inside that network namespace (`ip -n NS`, no shell, no root-ns
 * writes). `ahead`: the namespace's lock taken ahead (lockAhead), which its first lock takes over.
 */
export function localRunner(netns?: string, ahead?: LockedAhead): IpRunner {
  return {
    where: netns ? `netns ${netns}` : "this host",
    ip: (args, stdin, options) => run("ip", netns ? ["-n", netns, ...args] : args, stdin, { signal: options?.signal }),
    read: (options) => readLocal(netns, options?.signal),
    lock: async (request) => (await ahead?.take(request)) ?? lockLocal(netns, request),
    close: async () => ahead?.release(),
  };
}
