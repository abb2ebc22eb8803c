/**
 * `--lab NAME`, the one flag for the lab target, the lab node source and the lab commands: alone in its
 * module (no I/O), so the registries that list every target and source load none of the lab's code.
 */
import type { OptionSpec } from "../options.js";

export const DEFAULT_LAB = "podroutes";

const LAB_NAME = /^[a-z][a-z0-9-]{0,30}$/;

/** A lab's name prefixes its namespaces, so it is kept short and plain. */
function labName(text: string): string {
  if (!LAB_NAME.test(text)) throw new Error("must be lowercase letters, digits and '-' (at most 31)");
  return text;
}

export const labOption: OptionSpec<string> = { flags: "--lab <name>", description: "which local lab (its name prefixes its namespaces)", default: DEFAULT_LAB, parse: labName };
