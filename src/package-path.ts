/**
 * Files of this podroutes installation outside the compiled code (bin/, deploy/, the Go modules of a
 * source checkout), found by walking up from this module: it runs from dist/src (the modules) or from
 * dist/ (the bundle), so the package root is a few folders up either way.
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The absolute path of `relative` (e.g. `bin/podroutes.js`) in the package, or undefined when it has none. */
export function packagePath(relative: string): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++, dir = dirname(dir)) {
    const candidate = join(dir, relative);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}
