/**
 * Runs the real OpenStack CLI (Debian's python3-openstackclient, on openstacksdk) against the local
 * OpenStack test server, offline: the OS_* variables of the server's credential, a HOME of its own in a
 * temp dir (so no clouds.yaml of the machine's is read), and OS_CLOUD unset. Argument arrays only, never
 * a shell string. The CLI takes about a second to start: callers keep their calls few.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cloudCli, type CloudCli } from "./cloud-cli.js";

export type OpenStackCli = CloudCli;

export function openstackCli(server: { env(): Record<string, string> }, extraEnv: Record<string, string> = {}): OpenStackCli {
  const dir = mkdtempSync(join(tmpdir(), "podroutes-openstack-cli-"));
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: dir, ...server.env(), ...extraEnv };
  return cloudCli("openstack", { env, dir, cwd: dir, jsonFlag: ["-f", "json"] });
}
