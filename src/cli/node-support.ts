/**
 * Which Node.js lines podroutes supports, and the one line it says, once, on any other. Node 20 left
 * support in April 2026 and the AWS SDK's releases after the first week of January 2027 require Node ≥ 22;
 * the SDK itself would print a nine-line warning on every `--target aws` command, so podroutes silences it
 * (ec2.ts) and says it here instead: plainly, once per user and Node version.
 */
import { mkdirSync, openSync, closeSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** The oldest Node major podroutes supports; `engines` in package.json says the same. */
export const OLDEST_SUPPORTED_NODE = 22;
/** The lines the test suite runs on (`npm test`: the machine's Node, then the newest LTS). */
export const TESTED_NODE_LINES = "20 (the machine's, past its end of life) and 26 (the newest LTS)";

/** The notice for a Node version podroutes no longer supports, or undefined. Pure. */
export function nodeSupportNotice(version: string): string | undefined {
  const major = Number(/^v?(\d+)\./.exec(version)?.[1]);
  if (!Number.isFinite(major) || major >= OLDEST_SUPPORTED_NODE) return undefined;
  return `Node ${version} is past its end of life and unsupported (the AWS SDK's releases after early January 2027 need Node >= 22); use Node ${OLDEST_SUPPORTED_NODE} or newer (the tests run on Node 26, the newest LTS). Said once.`;
}

/** Where podroutes remembers what it has said (XDG state, as ~/.local/state/podroutes). */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_STATE_HOME || join(homedir(), ".local", "state"), "podroutes");
}

/**
 * True the first time it is asked for `key` in `dir` (a stamp file made atomically, so two processes at
 * once say it once); also true when the stamp cannot be written (a read-only home): better said twice
 * than never.
 */
export function firstTime(dir: string, key: string): boolean {
  try {
    mkdirSync(dir, { recursive: true });
    closeSync(openSync(join(dir, key), "wx"));
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== "EEXIST";
  }
}

/** The notice for this process's Node, when it is the first time for this user. */
export function nodeSupportNoticeOnce(version = process.version, dir = join(stateDir(), "notices")): string | undefined {
  const notice = nodeSupportNotice(version);
  return notice && firstTime(dir, `node-${version}`) ? notice : undefined;
}
