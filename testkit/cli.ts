/**
 * Runs the built `podroutes` command as a user would: a separate process, argv, stdin, exit code.
 * With `netns`, inside that network namespace (`ip netns exec`), which is how tests reach lab addresses
 * without sending anything from the root namespace.
 */
import { fileURLToPath } from "node:url";
import { run } from "../src/targets/linux/runner.js";

export const BIN = fileURLToPath(new URL("../../bin/podroutes.js", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCli(args: string[], options: { stdin?: string; env?: NodeJS.ProcessEnv; netns?: string } = {}): Promise<CliResult> {
  const command = [process.execPath, "--enable-source-maps", BIN, ...args];
  const withEnv = options.env ? ["env", ...Object.entries(options.env).map(([k, v]) => `${k}=${v ?? ""}`), ...command] : command;
  const full = options.netns ? ["ip", "netns", "exec", options.netns, ...withEnv] : withEnv;
  return run(full[0]!, full.slice(1), options.stdin ?? "");
}

/** Parses a `-o json` result, failing with the CLI's own words when it is not JSON. */
export function jsonOf<T = any>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`expected JSON on stdout (exit ${result.code}); stdout:\n${result.stdout}\nstderr:\n${result.stderr}`);
  }
}
