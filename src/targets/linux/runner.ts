/**
 * How a host-route target runs `ip`: on this host, in a network namespace, or over SSH. Everything the
 * Linux logic needs from a host is `ip ARGS` with a script on stdin, so a new transport is one function.
 */
import { spawn } from "node:child_process";

export interface IpResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface IpRunner {
  /** Where `ip` runs, for messages: `this host`, `netns lab-worker-0`, `root@203.0.113.10`. */
  readonly where: string;
  /** Runs `ip ARGS` with `stdin`; resolves with the exit code and output, rejects only if `ip` could not run. */
  ip(args: string[], stdin?: string): Promise<IpResult>;
  close?(): Promise<void>;
}

/** Runs a program with an argument array (never a shell) and collects its output. */
export function run(command: string, args: string[], stdin?: string): Promise<IpResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    child.on("error", reject);
    child.on("close", (code, signal) =>
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
      }),
    );
    child.stdin.on("error", () => {}); // the program may exit before reading all of stdin
    child.stdin.end(stdin ?? "");
  });
}

/** `ip` on this host, or, with `netns`, inside that network namespace (`ip -n NS`, no shell, no root-ns writes). */
export function localRunner(netns?: string): IpRunner {
  return {
    where: netns ? `netns ${netns}` : "this host",
    ip: (args, stdin) => run("ip", netns ? ["-n", netns, ...args] : args, stdin),
  };
}
