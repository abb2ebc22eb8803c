/**
 * Runs the real hcloud CLI (Debian's hcloud-cli) against the local Hetzner Cloud test server, offline:
 * the token and endpoint from the environment as hcloud reads them (HCLOUD_TOKEN, HCLOUD_ENDPOINT), a
 * config file of its own in a temp dir that does not exist (so no context of the machine's is used), and
 * a short poll interval (hcloud waits on each action by polling it, 500 ms by default). Argument arrays
 * only, never a shell string.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Hcloud {
  env: NodeJS.ProcessEnv;
  /** Runs `hcloud ARGS`; resolves with the exit code and both streams, never rejects on a non-zero exit. */
  run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Runs `hcloud ARGS -o json`, fails unless it exits 0, and parses its output. */
  json<T = unknown>(args: string[]): Promise<T>;
  /** Removes the config dir. */
  dispose(): void;
}

export function hcloud(server: { endpoint: string; token: string }, options: { pollInterval?: string } = {}): Hcloud {
  const dir = mkdtempSync(join(tmpdir(), "podroutes-hcloud-"));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dir,
    HCLOUD_CONFIG: join(dir, "cli.toml"),
    HCLOUD_TOKEN: server.token,
    HCLOUD_ENDPOINT: server.endpoint,
  };
  const pollInterval = options.pollInterval ?? "50ms";
  const run: Hcloud["run"] = (args) =>
    new Promise((resolve) => {
      execFile("hcloud", [...args, "--poll-interval", pollInterval], { env, timeout: 60_000, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
        const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  return {
    env,
    run,
    json: async <T>(args: string[]) => {
      const result = await run([...args, "-o", "json"]);
      if (result.code !== 0) throw new Error(`hcloud ${args.join(" ")} -o json exited ${result.code}: ${result.stderr}`);
      return JSON.parse(result.stdout) as T;
    },
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}
