/**
 * One long-lived `ip -N -json -force -batch -` that reads the agent's route tables on request: every
 * `route show` command written to its stdin prints one JSON array on one line, flushed at once
 * (measured, iproute2 6.1). Why not a new `ip` per read: spawning a process from the agent costs 5–7 ms of
 * the agent's own CPU at its heap size (fork, then the copy-on-write faults of every page the agent
 * touches until the child has exec'd), which is most of a no-op resync's budget and a fifth of a changed
 * Node's latency. Only `route show` commands with canonical arguments are sent (each prints exactly one
 * line); anything unexpected — the process exits (iproute2 exits on an argument it cannot parse), an
 * error on stderr, no answer within the timeout — fails the read and ends the process, and the next read
 * starts a new one. Reads go one at a time.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import { READ_ARGS } from "../targets/linux/iproute.js";

/** A read that takes longer than this means the process is stuck: it is ended and the read fails. */
const READ_TIMEOUT_MS = 10_000;

interface Pending {
  want: number;
  lines: string[];
  resolve(lines: string[]): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
}

export class IpReader {
  private child: ChildProcessWithoutNullStreams | undefined;
  private pending: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** Processes started (the first included). */
  starts = 0;

  constructor(private readonly netns?: string) {}

  /** Runs `route show ...` commands; resolves with the line each printed (a JSON array). */
  read(commands: string[]): Promise<string[]> {
    const next = this.queue.then(() => this.readNow(commands));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private readNow(commands: string[]): Promise<string[]> {
    if (commands.some((command) => !command.startsWith("route show ") || command.includes("\n"))) {
      return Promise.reject(new Error("the ip reader runs `route show` commands only, one per line"));
    }
    if (!commands.length) return Promise.resolve([]);
    const child = this.child ?? this.start();
    return new Promise<string[]>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(new Error(`ip did not answer within ${READ_TIMEOUT_MS / 1000} s`)), READ_TIMEOUT_MS);
      this.pending = { want: commands.length, lines: [], resolve, reject, timer };
      child.stdin.write(commands.map((command) => `${command}\n`).join(""));
    });
  }

  private start(): ChildProcessWithoutNullStreams {
    const args = this.netns ? ["-n", this.netns, ...READ_ARGS] : READ_ARGS;
    const child = spawn("ip", args, { stdio: ["pipe", "pipe", "pipe"] });
    this.child = child;
    this.starts++;
    createInterface({ input: child.stdout, crlfDelay: Infinity }).on("line", (line) => {
      const pending = this.pending;
      if (!pending) return this.fail(new Error(`ip printed a line nobody asked for: ${line.slice(0, 100)}`));
      pending.lines.push(line);
      if (pending.lines.length === pending.want) {
        clearTimeout(pending.timer);
        this.pending = undefined;
        pending.resolve(pending.lines);
      }
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => this.fail(new Error(`ip: ${chunk.trim()}`)));
    child.stdin.on("error", () => {}); // the exit reports it
    child.on("error", (error) => this.fail(error));
    child.on("exit", (code, signal) => {
      if (this.child === child) this.child = undefined;
      this.fail(new Error(`ip exited (${signal ?? `code ${code}`})`));
    });
    return child;
  }

  /** Fails the read in flight, if any, and ends the process: the next read starts a fresh one. */
  private fail(error: Error): void {
    const pending = this.pending;
    this.pending = undefined;
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
      child.stdin.end();
    });
  }
}
