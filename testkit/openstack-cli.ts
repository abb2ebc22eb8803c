/**
 * Runs the real OpenStack CLI (Debian's python3-openstackclient, on openstacksdk) against the local
 * OpenStack test server, offline: the OS_* variables of the server's credential, a HOME of its own in a
 * temp dir (so no clouds.yaml of the machine's is read), and OS_CLOUD unset. Argument arrays only, never
 * a shell string. The CLI takes about a second to start: callers keep their calls few.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface OpenStackCli {
  env: NodeJS.ProcessEnv;
  /** Runs `openstack ARGS`; resolves with the exit code and both streams, never rejects on a non-zero exit. */
  run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Runs `openstack ARGS -f json`, fails unless it exits 0, and parses its output. */
  json<T = unknown>(args: string[]): Promise<T>;
  /** Removes the temp HOME. */
  dispose(): void;
}

export function openstackCli(server: { env(): Record<string, string> }, extraEnv: Record<string, string> = {}): OpenStackCli {
  const dir = mkdtempSync(join(tmpdir(), "podroutes-openstack-cli-"));
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: dir, ...server.env(), ...extraEnv };
  const run: OpenStackCli["run"] = (args) =>
    new Promise((resolve) => {
      execFile("openstack", args, { env, cwd: dir, timeout: 60_000, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
        const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  return {
    env,
    run,
    json: async <T>(args: string[]) => {
      const result = await run([...args, "-f", "json"]);
      if (result.code !== 0) throw new Error(`openstack ${args.join(" ")} -f json exited ${result.code}: ${result.stderr}`);
      return JSON.parse(result.stdout) as T;
    },
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}
