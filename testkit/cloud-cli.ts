/**
 * A cloud's real CLI run as the tests' independent client (hcloud, openstack, az): argument arrays only,
 * never a shell string, in an environment and a temp dir of its own that `dispose` removes. The three
 * differ only in their environment and their JSON flag; running, failing and parsing are the same.
 */
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";

export interface CloudCli {
  env: NodeJS.ProcessEnv;
  /** Runs `PROGRAM ARGS`; resolves with the exit code and both streams, never rejects on a non-zero exit. */
  run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Runs `PROGRAM ARGS` with the JSON flag, fails unless it exits 0, and parses its output. */
  json<T = unknown>(args: string[]): Promise<T>;
  /** Removes the CLI's temp dir. */
  dispose(): void;
}

export function cloudCli(
  program: string,
  settings: { env: NodeJS.ProcessEnv; dir: string; jsonFlag: string[]; appendArgs?: string[]; timeoutMs?: number; cwd?: string },
): CloudCli {
  const { env, dir } = settings;
  const run: CloudCli["run"] = (args) =>
    new Promise((resolve) => {
      execFile(program, [...args, ...(settings.appendArgs ?? [])], { env, timeout: settings.timeoutMs ?? 60_000, maxBuffer: 16 << 20, ...(settings.cwd ? { cwd: settings.cwd } : {}) }, (error, stdout, stderr) => {
        const code = error ? (typeof (error as { code?: unknown }).code === "number" ? (error as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  return {
    env,
    run,
    json: async <T>(args: string[]) => {
      const full = [...args, ...settings.jsonFlag];
      const result = await run(full);
      if (result.code !== 0) throw new Error(`${program} ${full.join(" ")} exited ${result.code}: ${result.stderr}`);
      return JSON.parse(result.stdout) as T;
    },
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}
