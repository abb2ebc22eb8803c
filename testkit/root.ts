/**
 * Gate for tests that need root and network namespaces. In CI (CI=true, root there) they always run,
 * and a missing privilege fails loudly instead of skipping; elsewhere they skip with a reason.
 */
import { execFileSync } from "node:child_process";
import type { TestContext } from "node:test";

let canUseNamespaces: boolean | undefined;

function probe(): boolean {
  if (canUseNamespaces !== undefined) return canUseNamespaces;
  try {
    canUseNamespaces = process.getuid?.() === 0 && execFileSync("ip", ["netns", "list"], { stdio: "pipe" }) !== undefined;
  } catch {
    canUseNamespaces = false;
  }
  return canUseNamespaces;
}

/** Options for `describe`/`test`: skip outside CI without root, never inside CI. */
export function needsRoot(): { skip?: string } {
  if (probe()) return {};
  if (process.env.CI) {
    throw new Error("CI=true but this process cannot use network namespaces (not root?): root tests must not skip in CI");
  }
  const reason = "SKIPPED: needs root and network namespaces (run `sudo npm test`); CI runs these";
  process.stderr.write(`\n*** ${reason} ***\n`);
  return { skip: reason };
}

export type { TestContext };
