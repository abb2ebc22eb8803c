/**
 * Runs programs as child processes, with an argument array (never a shell), collecting their output:
 * what every part of podroutes that runs a local program (`ip`, `flock`, the lab's tools) shares.
 */
import { spawn } from "node:child_process";

/** A program's exit code and output. */
export interface ProcessResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a program with an argument array (never a shell) and collects its output. `stdin` is text, or
 * an open file it reads from; `fds` are open descriptors the program gets as 3, 4, ...
 */
export function run(
  command: string,
  args: string[],
  stdin?: string | { fd: number },
  options: { fds?: number[]; signal?: AbortSignal | undefined; stdout?: { fd: number } } = {},
): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const fromFile = typeof stdin === "object";
    // An aborted signal ends the program (SIGTERM) and rejects with the AbortError. `options.stdout`: the
    // output goes to that open file instead of a pipe (the result's stdout is then empty).
    const child = spawn(command, args, {
      stdio: [fromFile ? stdin.fd : "pipe", options.stdout ? options.stdout.fd : "pipe", "pipe", ...(options.fds ?? [])],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout?.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk));
    child.on("error", reject);
    child.on("close", (code, signal) =>
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
      }),
    );
    if (!fromFile) {
      child.stdin!.on("error", () => {}); // the program may exit before reading all of stdin
      child.stdin!.end(stdin ?? "");
    }
  });
}
