/**
 * The kernel's route, nexthop, link and address changes as they happen: one `ip -N monitor` process in
 * the agent's own network namespace, its lines parsed by kernel-events.ts. If the process dies it is
 * started again (after 0.5 s, doubling to 30 s while it keeps dying), and the caller hears of it: while it
 * was down, changes went unseen, so a reconcile is due.
 *
 * The process dies with the agent, however the agent dies: it runs under `setpriv --pdeathsig KILL`
 * (util-linux, in the image and on every Debian host), so the kernel kills it when the agent's process
 * goes, SIGKILL and crashes included. Without that an `ip monitor` outlives a killed agent until the next
 * kernel event makes its write to the closed pipe fail, which on a quiet host can be never (issue 25 item 5).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { createInterface } from "node:readline";
import { parseMonitorLine, type KernelEvent } from "./kernel-events.js";

export const MONITOR_ARGS = ["-N", "monitor", "route", "nexthop", "link", "address"];

/**
 * `program args` run so that the kernel kills it when this process dies (PR_SET_PDEATHSIG through
 * setpriv, which then execs the program: the PID is the program's); as given when setpriv is not on PATH.
 */
export function diesWithParent(program: string, args: string[], path = process.env.PATH ?? ""): { program: string; args: string[] } {
  const setpriv = path
    .split(delimiter)
    .filter(Boolean)
    .map((dir) => join(dir, "setpriv"))
    .find((file) => {
      try {
        accessSync(file, constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  return setpriv ? { program: setpriv, args: ["--pdeathsig", "KILL", "--", program, ...args] } : { program, args };
}

export interface KernelMonitorOptions {
  onEvent(event: KernelEvent): void;
  /** The monitor (re)started after having died: changes may have gone unseen. */
  onRestart(why: string): void;
  /** The program and arguments; tests and benchmarks run it in a namespace (`ip -n NS ...`). */
  command?: { program: string; args: string[] };
}

export class KernelMonitor {
  /** Times the monitor process had to be started again. */
  restarts = 0;
  private child: ChildProcess | undefined;
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private delayMs = 500;
  private startedAt = 0;

  constructor(private readonly options: KernelMonitorOptions) {}

  start(): void {
    this.stopped = false;
    this.spawn();
  }

  private spawn(): void {
    const command = this.options.command ?? { program: "ip", args: MONITOR_ARGS };
    const { program, args } = diesWithParent(command.program, command.args);
    const child = spawn(program, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    this.startedAt = Date.now();
    let stderr = "";
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on("line", (line) => {
      const event = parseMonitorLine(line);
      if (event) this.options.onEvent(event);
    });
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => (stderr = (stderr + chunk).slice(-500)));
    const died = (why: string) => {
      if (this.child !== child) return;
      this.child = undefined;
      if (this.stopped) return;
      // A monitor that ran a while and then died is restarted promptly; one that dies at once backs off.
      if (Date.now() - this.startedAt > 60_000) this.delayMs = 500;
      const delay = this.delayMs;
      this.delayMs = Math.min(30_000, this.delayMs * 2);
      this.retry = setTimeout(() => {
        if (this.stopped) return;
        this.restarts++;
        this.spawn();
        this.options.onRestart(`${why}${stderr.trim() ? `: ${stderr.trim()}` : ""}`);
      }, delay);
    };
    child.on("error", (error) => died(`ip monitor could not run (${error.message})`));
    child.on("exit", (code, signal) => died(`ip monitor exited (${signal ?? `code ${code}`})`));
  }

  /** Stops the monitor process (by its PID, the one this object started). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
  }

  /** The PID of the running monitor process, if any (tests kill it to prove the restart). */
  get pid(): number | undefined {
    return this.child?.pid;
  }
}
