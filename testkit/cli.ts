/**
 * Runs the built `podroutes` command as a user would: a separate process, argv, stdin, exit code.
 * With `netns`, inside that network namespace (`ip netns exec`), which is how tests reach lab addresses
 * without sending anything from the root namespace.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { run } from "../src/process.js";

export const BIN = fileURLToPath(new URL("../../bin/podroutes.js", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  stdin?: string;
  env?: NodeJS.ProcessEnv;
  netns?: string;
}

/** The argv that runs podroutes as `runCli` does: `ip netns exec` and `env` exec in place, so the PID is podroutes'. */
function commandLine(args: string[], options: CliOptions): string[] {
  const command = [process.execPath, "--enable-source-maps", BIN, ...args];
  const withEnv = options.env ? ["env", ...Object.entries(options.env).map(([k, v]) => `${k}=${v ?? ""}`), ...command] : command;
  return options.netns ? ["ip", "netns", "exec", options.netns, ...withEnv] : withEnv;
}

export async function runCli(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const full = commandLine(args, options);
  return run(full[0]!, full.slice(1), options.stdin ?? "");
}

/** A podroutes run still going: its process (to kill by PID), its stderr so far, and its result. */
export interface RunningCli {
  child: ChildProcess;
  stderr(): string;
  /** Resolves once stderr matches `pattern` (or rejects when the process ends without it). */
  stderrMatches(pattern: RegExp): Promise<void>;
  result: Promise<CliResult>;
}

/** Starts podroutes as `runCli` does, without waiting for it. */
export function startCli(args: string[], options: CliOptions = {}): RunningCli {
  const full = commandLine(args, options);
  const child = spawn(full[0]!, full.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  const watchers: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
    for (const watcher of watchers) if (watcher.pattern.test(stderr)) watcher.resolve();
  });
  child.stdin!.on("error", () => {});
  child.stdin!.end(options.stdin ?? "");
  const result = new Promise<CliResult>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });
  return {
    child,
    stderr: () => stderr,
    stderrMatches: (pattern) =>
      new Promise<void>((resolve, reject) => {
        if (pattern.test(stderr)) return resolve();
        watchers.push({ pattern, resolve });
        result.then(() => (pattern.test(stderr) ? resolve() : reject(new Error(`podroutes ended without ${pattern} on stderr:\n${stderr}`))), reject);
      }),
    result,
  };
}

/** Parses a `-o json` result, failing with the CLI's own words when it is not JSON. */
export function jsonOf<T = any>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`expected JSON on stdout (exit ${result.code}); stdout:\n${result.stdout}\nstderr:\n${result.stderr}`);
  }
}
