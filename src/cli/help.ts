/**
 * What `--help` adds to commander's own text: the targets and node sources, one line each, and how to
 * see a target's flags. Built from the registries, so a new target or source shows up by itself.
 */
import { nodeSources } from "../sources/registry.js";
import { targets } from "../targets/registry.js";

function lines(rows: { name: string; description: string }[]): string {
  const width = Math.max(...rows.map((row) => row.name.length));
  return rows.map((row) => `  ${row.name.padEnd(width)}  ${row.description}`).join("\n");
}

/** The catalogue shown after a command's (or the program's) help. */
export function catalogue(command = "COMMAND"): string {
  return [
    "",
    `Targets (--target NAME; \`podroutes ${command} --target NAME --help\` shows a target's flags and its node source's):`,
    lines(targets),
    "",
    "Node sources (--nodes NAME; anything else is a nodes file, - is stdin):",
    lines(nodeSources),
  ].join("\n");
}
