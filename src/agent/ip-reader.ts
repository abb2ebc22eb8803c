/**
 * One long-lived `ip -N -json -force -batch -` that reads the agent's route tables on request: every
 * `route show` command written to its stdin prints one JSON array on one line (measured, iproute2 6.1).
 * Why not a new `ip` per read: spawning a process from the agent costs 5–7 ms of the agent's own CPU at
 * its heap size (fork, then the copy-on-write faults of every page the agent touches until the child has
 * exec'd), which is most of a no-op resync's budget and a fifth of a changed Node's latency. Only `route
 * show` commands with canonical arguments are sent (each prints exactly one line); anything unexpected —
 * the process exits (iproute2 exits on an argument it cannot parse), an error on stderr, no answer within
 * the timeout — fails the read and ends the process, and the next read starts a new one. Reads go one at
 * a time.
 *
 * Its output comes through a pipe, not through the socket pair Node gives a child's stdout: `ip` flushes
 * after every route it prints (5,000 writes of about 90 bytes for a table of 5,000 routes), and a socket
 * keeps each write as a buffer of its own, which the agent's reads then take apart one by one in the
 * kernel; a pipe packs them into pages (measured on a no-op resync of 5,000 routes: about 6 ms of the
 * agent's system CPU through the socket, 2 ms through a pipe). Node makes no pipes, so the pipe is a FIFO
 * made in a private directory and unlinked as soon as both ends are open; where that cannot be made the
 * socket pair serves, at that cost. Lines stay bytes: each chunk is searched for the end of a line as it
 * comes, and a line is joined once, never decoded here (the caller decodes, or compares the bytes).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, constants, open as openCallback } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { promisify } from "node:util";
import { run } from "../process.js";
import { READ_ARGS } from "../targets/linux/iproute.js";

/** A read that takes longer than this means the process is stuck: it is ended and the read fails. */
const READ_TIMEOUT_MS = 10_000;

/**
 * A line longer than this is a dump of many routes (a route prints about 90 bytes; the per-change reads of
 * a few destinations never come near): from then on the output is read at most once per COALESCE_MS,
 * not on each of ip's writes. Measured on a read of 5,000 routes: about 80 reads instead of 2,000, 2 ms
 * less of the agent's CPU; the read's wall time grows (ip waits while the pipe is full), which a resync
 * does not mind.
 */
const LONG_LINE_BYTES = 4096;
const COALESCE_MS = 1;

/** `open(2)` giving a bare descriptor (a FileHandle would close it behind the socket that owns it). */
const openFd = promisify(openCallback);

interface Pending {
  want: number;
  lines: Buffer[];
  resolve(lines: Buffer[]): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

export class IpReader {
  private child: ChildProcess | undefined;
  private pending: Pending | undefined;
  /** The start of the line being read: chunks that had no end of line yet. */
  private partial: Buffer[] = [];
  private partialBytes = 0;
  /** Where the running process's output is read (a pipe, or its stdout socket). */
  private output: Readable | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** Processes started (the first included). */
  starts = 0;
  /** Whether the running process prints into a pipe (false: the socket pair, where no FIFO could be made). */
  throughPipe = false;

  constructor(private readonly netns?: string) {}

  /** Runs `route show ...` commands; resolves with the line each printed (a JSON array), as bytes. */
  read(commands: string[]): Promise<Buffer[]> {
    const next = this.queue.then(() => this.readNow(commands));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async readNow(commands: string[]): Promise<Buffer[]> {
    if (commands.some((command) => !command.startsWith("route show ") || command.includes("\n"))) {
      throw new Error("the ip reader runs `route show` commands only, one per line");
    }
    if (!commands.length) return [];
    const child = this.child ?? (await this.start());
    return new Promise<Buffer[]>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`ip did not answer within ${READ_TIMEOUT_MS / 1000} s`)), READ_TIMEOUT_MS);
      this.pending = { want: commands.length, lines: [], resolve, reject, timer };
      child.stdin!.write(commands.map((command) => `${command}\n`).join(""));
    });
  }

  private async start(): Promise<ChildProcess> {
    const args = this.netns ? ["-n", this.netns, ...READ_ARGS] : READ_ARGS;
    const pipe = await outputPipe();
    let child: ChildProcess;
    try {
      child = spawn("ip", args, { stdio: ["pipe", pipe ? pipe.writeFd : "pipe", "pipe"] });
    } finally {
      // The child has its copy (or never started): the write end is its alone, so its exit ends the stream.
      pipe?.closeWriteEnd();
    }
    const output: Readable = pipe ? pipe.readable : child.stdout!;
    this.child = child;
    this.output = output;
    this.partial = [];
    this.partialBytes = 0;
    this.throughPipe = pipe !== undefined;
    this.starts++;
    // A process this reader gave up on (fail ended it) may still print, or exit, after the next one
    // started: only the current process's output answers reads, and only its end fails them.
    const current = () => this.child === child;
    output.on("data", (chunk: Buffer) => current() && this.take(chunk));
    output.on("error", () => {}); // the exit reports it
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => current() && this.fail(new Error(`ip: ${chunk.trim()}`)));
    child.stdin!.on("error", () => {}); // the exit reports it
    child.on("error", (error) => current() && this.fail(error));
    child.on("exit", (code, signal) => {
      if (pipe) output.destroy();
      if (current()) this.fail(new Error(`ip exited (${signal ?? `code ${code}`})`));
    });
    return child;
  }

  /** One chunk of output: every line it ends goes to the read in flight. */
  private take(chunk: Buffer): void {
    let from = 0;
    for (let end = chunk.indexOf(10); end >= 0; end = chunk.indexOf(10, from)) {
      const tail = chunk.subarray(from, end);
      const line = this.partial.length ? Buffer.concat([...this.partial, tail]) : tail;
      this.partial = [];
      this.partialBytes = 0;
      from = end + 1;
      const pending = this.pending;
      if (!pending) return this.fail(new Error(`ip printed a line nobody asked for: ${line.toString("utf8", 0, 100)}`));
      pending.lines.push(line);
      if (pending.lines.length === pending.want) {
        clearTimeout(pending.timer);
        this.pending = undefined;
        pending.resolve(pending.lines);
      }
    }
    if (from < chunk.length) {
      this.partial.push(chunk.subarray(from));
      this.partialBytes += chunk.length - from;
    }
    if (this.partialBytes > LONG_LINE_BYTES && this.output) {
      // A dump of many routes under way: let ip's writes pile up in the pipe for a moment, to be taken in
      // one read rather than a few routes per wake-up.
      const output = this.output;
      output.pause();
      setTimeout(() => output.resume(), COALESCE_MS);
    }
  }

  /** Fails the read in flight, if any, and ends the process: the next read starts a fresh one. */
  private fail(error: Error): void {
    const pending = this.pending;
    this.pending = undefined;
    this.partial = [];
    this.partialBytes = 0;
    if (pending) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    const child = this.child;
    this.child = undefined;
    if (child && child.exitCode === null && child.signalCode === null) child.kill();
  }

  /** The PID of the running process, if any (tests end it to prove a new one is started). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Ends the process (by the PID this object started). */
  async close(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.stdin!.end();
    });
  }
}

/** A pipe for `ip`'s output: the read end as a stream, the write end as a descriptor for the child. */
interface OutputPipe {
  readable: Readable;
  writeFd: number;
  closeWriteEnd(): void;
}

/**
 * A FIFO in a directory of its own (mode 0700, so nobody else can open it), opened at both ends and
 * unlinked at once: an anonymous pipe. Undefined when it cannot be made (no `mkfifo`, no writable
 * temporary directory): the caller falls back to the socket pair.
 */
export async function outputPipe(): Promise<OutputPipe | undefined> {
  let dir: string | undefined;
  try {
    dir = await mkdtemp(join(tmpdir(), "podroutes-ip-"));
    const path = join(dir, "out");
    if ((await run("mkfifo", ["-m", "600", path])).code !== 0) return undefined;
    // The read end first, not blocking (no writer yet); then the write end, which a reader lets open at once.
    const readFd = await openFd(path, constants.O_RDONLY | constants.O_NONBLOCK);
    let writeFd: number;
    try {
      writeFd = await openFd(path, constants.O_WRONLY);
    } catch (error) {
      new Socket({ fd: readFd, readable: true, writable: false }).destroy();
      throw error;
    }
    const readable = new Socket({ fd: readFd, readable: true, writable: false });
    let open = true;
    return {
      readable,
      writeFd,
      closeWriteEnd: () => {
        if (open) closeSync(writeFd);
        open = false;
      },
    };
  } catch {
    return undefined;
  } finally {
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}
