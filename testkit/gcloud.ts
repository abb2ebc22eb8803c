/**
 * Runs the real gcloud CLI against the local Compute Engine server, offline: its own config dir, a
 * fixed access token, the compute endpoint overridden, metadata detection and update checks off
 * (the environment measured in ../shared/TESTBED.md). Argument arrays only, never a shell string.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { GceServer } from "./gce-server.js";

export interface Gcloud {
  env: NodeJS.ProcessEnv;
  /** Runs `gcloud ARGS`; resolves with the exit code and both streams, never rejects on a non-zero exit. */
  run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Removes the config dir. */
  dispose(): void;
}

/** The environment that keeps gcloud and google-auth-library on the test server and off metadata servers. */
export function offlineGcpEnv(server: GceServer, configDir: string): NodeJS.ProcessEnv {
  const tokenFile = join(configDir, "token");
  writeFileSync(tokenFile, "test-token\n");
  return {
    PATH: process.env.PATH,
    HOME: configDir,
    CLOUDSDK_CONFIG: configDir,
    CLOUDSDK_CORE_PROJECT: server.project,
    CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: tokenFile,
    CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: server.endpoint,
    CLOUDSDK_CORE_DISABLE_PROMPTS: "1",
    CLOUDSDK_CORE_CHECK_GCE_METADATA: "false",
    CLOUDSDK_METRICS_ENVIRONMENT: "test",
    CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK: "true",
    GCE_METADATA_ROOT: "127.0.0.1:9",
    GCE_METADATA_IP: "127.0.0.1:9",
    GCE_METADATA_HOST: "127.0.0.1:9",
    METADATA_SERVER_DETECTION: "none",
  };
}

export function gcloud(server: GceServer): Gcloud {
  const dir = mkdtempSync(join(tmpdir(), "podroutes-gcloud-"));
  const env = offlineGcpEnv(server, dir);
  return {
    env,
    run: (args) =>
      new Promise((resolve) => {
        execFile("gcloud", args, { env, timeout: 60_000, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
          const code = error ? (typeof (error as { code?: unknown }).code === "number" ? ((error as { code: number }).code) : 1) : 0;
          resolve({ code, stdout, stderr });
        });
      }),
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}
