/**
 * Runs the real hcloud CLI (Debian's hcloud-cli) against the local Hetzner Cloud test server, offline:
 * the token and endpoint from the environment as hcloud reads them (HCLOUD_TOKEN, HCLOUD_ENDPOINT), a
 * config file of its own in a temp dir that does not exist (so no context of the machine's is used), and
 * a short poll interval (hcloud waits on each action by polling it, 500 ms by default). Argument arrays
 * only, never a shell string.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cloudCli, type CloudCli } from "./cloud-cli.js";

export type Hcloud = CloudCli;

export function hcloud(server: { endpoint: string; token: string }, options: { pollInterval?: string } = {}): Hcloud {
  const dir = mkdtempSync(join(tmpdir(), "podroutes-hcloud-"));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dir,
    HCLOUD_CONFIG: join(dir, "cli.toml"),
    HCLOUD_TOKEN: server.token,
    HCLOUD_ENDPOINT: server.endpoint,
  };
  return cloudCli("hcloud", { env, dir, jsonFlag: ["-o", "json"], appendArgs: ["--poll-interval", options.pollInterval ?? "50ms"] });
}
