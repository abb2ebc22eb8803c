/**
 * The route commands' arguments as a typed value, with no I/O: which target, where the nodes come from
 * (a source, a file, or none where the target's own mark suffices), and every flag's value checked and
 * parsed. Everything wrong with the command line is a UsageError naming the flag, raised here, before
 * anything is read, built or called. Flags come from the targets' and sources' declarations, so a new
 * target or source needs no change here.
 */
import { Command } from "commander";
import { UsageError } from "../errors.js";
import { CLUSTER_NAME } from "../inventory.js";
import { parseCidr } from "../model.js";
import { longFlag, readOptions, requireOption, wholeNumber, type FlagValues, type OptionSpec } from "../options.js";
import { nodeSource, nodeSources, type NodeSourceFactory } from "../sources/registry.js";
import { targetFactory, targets, type TargetFactory } from "../targets/registry.js";

/** The commands that read a target's routes. */
export type RouteCommand = "plan" | "apply" | "delete" | "list" | "verify";

/** What the nodes are read from. `none`: `list`/`delete` on a target whose mark tells its routes. */
export type NodesChoice = { kind: "source"; source: NodeSourceFactory } | { kind: "file"; path: string } | { kind: "none" };

export const DEFAULT_TARGET = "lab";
export const OUTPUT_FORMATS = ["table", "json", "yaml"] as const;

function clusterName(text: string): string {
  if (!CLUSTER_NAME.test(text)) throw new Error("must be lowercase letters, digits and '-' (at most 63)");
  return text;
}

/** One range per family, comma-separated, in canonical form (`10.200.0.0/16,fd00:10:200::/56`). */
function clusterCidr(text: string): string {
  const ranges = text.split(",").map((part) => {
    const parsed = parseCidr(part.trim());
    if (!parsed.ok) throw new Error(parsed.reason);
    return parsed.cidr;
  });
  if (new Set(ranges.map((range) => range.family)).size !== ranges.length) throw new Error("at most one range per family");
  return ranges.map((range) => range.text).join(",");
}

/** The flags every route command has, whatever the target. */
export const commonOptions: OptionSpec[] = [
  { flags: "--nodes <source>", description: `where nodes come from: a file, - for stdin, or a node source (${nodeSources.map((s) => s.name).join(", ")}); default: the target's own source` },
  { flags: "--target <name>", description: "where routes live", default: DEFAULT_TARGET, choices: targets.map((t) => t.name) },
  { flags: "--cluster <name>", description: "cluster name (default: from the node source, else kubernetes)", parse: clusterName },
  { flags: "--cluster-cidr <cidr>", description: "every pod CIDR must lie inside it; podroutes never touches routes outside it", parse: clusterCidr },
  { flags: "-o, --output <format>", description: "output format", default: "table", choices: OUTPUT_FORMATS },
  { flags: "--parallel <n>", description: "tables (hosts) worked on at once (1-1000)", default: "10", parse: wholeNumber(1, 1000) },
];

/**
 * Where the nodes come from: `--nodes` when given; else nothing for `list` and `delete` where the
 * target's mark suffices; else the target's own source. Undefined: the target has none, --nodes is needed.
 */
export function chooseNodes(command: RouteCommand, target: TargetFactory, given: string | undefined): NodesChoice | undefined {
  if (given !== undefined) {
    const source = nodeSource(given);
    return source ? { kind: "source", source } : { kind: "file", path: given };
  }
  if ((command === "list" || command === "delete") && target.marksSuffice) return { kind: "none" };
  const natural = target.defaultNodes === undefined ? undefined : nodeSource(target.defaultNodes);
  return natural ? { kind: "source", source: natural } : undefined;
}

/** The options of a target and of a node source, once per long flag (the target's declaration first). */
export function pluginOptions(target: TargetFactory, nodes: NodesChoice | undefined): { target: OptionSpec[]; source: OptionSpec[] } {
  const seen = new Set(commonOptions.map(longFlag));
  const fresh = (specs: OptionSpec[]) =>
    specs.filter((spec) => {
      const flag = longFlag(spec);
      if (seen.has(flag)) return false;
      seen.add(flag);
      return true;
    });
  const targetSpecs = fresh(target.options);
  return { target: targetSpecs, source: nodes?.kind === "source" ? fresh(nodes.source.options) : [] };
}

export interface RouteArgs {
  command: RouteCommand;
  target: TargetFactory;
  nodes: NodesChoice;
  parallel: number;
  cluster?: string;
  clusterCIDR?: string;
  /** Every flag as the target and the source read it: checked, parsed, defaults and environment filled in. */
  values: Record<string, unknown>;
}

/**
 * Turns a route command's parsed flags into RouteArgs, checking every flag of the chosen target and
 * source (all problems at once, then the checks that span several flags). Pure.
 */
export function routeArgs(command: RouteCommand, flags: Record<string, unknown>, env: NodeJS.ProcessEnv): RouteArgs {
  const targetName = String(flags.target ?? DEFAULT_TARGET);
  const target = targetFactory(targetName);
  if (!target) throw new UsageError(`--target ${JSON.stringify(targetName)}: must be one of ${targets.map((t) => t.name).join(", ")}`, { flag: "--target" });
  const nodes = chooseNodes(command, target, flags.nodes as string | undefined);
  if (!nodes) {
    throw new UsageError(
      `--target ${target.name} has no node source of its own: say which nodes with --nodes (a file, - for stdin, or ${nodeSources.map((s) => s.name).join(", ")})`,
      { flag: "--nodes" },
    );
  }
  const plugin = pluginOptions(target, nodes);
  const values: FlagValues = { ...flags, ...readOptions([...commonOptions, ...plugin.target, ...plugin.source], { ...flags, env }), env };
  target.check?.(values);
  if (nodes.kind === "source") nodes.source.check?.(values);
  // A file may carry the cluster CIDR (checked once it is read); a source either does or does not.
  const clusterCIDRMayCome = nodes.kind === "file" || (nodes.kind === "source" && nodes.source.givesClusterCIDR === true);
  if (target.needsClusterCIDR !== undefined && !clusterCIDRMayCome) {
    requireOption(`--target ${target.name}`, values, "clusterCidr", "--cluster-cidr", target.needsClusterCIDR);
  }
  return {
    command,
    target,
    nodes,
    parallel: values.parallel as number,
    ...(values.cluster !== undefined ? { cluster: values.cluster as string } : {}),
    ...(values.clusterCidr !== undefined ? { clusterCIDR: values.clusterCidr as string } : {}),
    values,
  };
}

export interface ArgvScan {
  command?: string;
  target?: string;
  nodes?: string;
  output?: string;
}

/**
 * The command, target and node source a command line names, read before commander parses it, so the
 * command is built with exactly that target's and source's flags (and its help shows them). Stops at
 * `--`, after which the arguments belong to another program (`lab exec NODE -- podroutes ...`).
 */
export function scanArgv(argv: string[]): ArgvScan {
  const end = argv.indexOf("--");
  const args = end < 0 ? argv : argv.slice(0, end);
  const valueOf = (long: string, short?: string): string | undefined => {
    let value: string | undefined;
    args.forEach((arg, i) => {
      if (arg === long || arg === short) value = args[i + 1];
      else if (arg.startsWith(`${long}=`)) value = arg.slice(long.length + 1);
    });
    return value;
  };
  const command = args.find((arg) => !arg.startsWith("-"));
  const target = valueOf("--target");
  const nodes = valueOf("--nodes");
  const output = valueOf("--output", "-o");
  return { ...(command ? { command } : {}), ...(target ? { target } : {}), ...(nodes ? { nodes } : {}), ...(output ? { output } : {}) };
}

/**
 * Parses a subcommand's argv with the CLI's own argument layer, running nothing: `register` adds the
 * subcommand to a program with the action it is given, which here only keeps the checked arguments (the
 * manifests test parses the Deployments' and the DaemonSet's args with it).
 */
export async function parseOnly<T>(argv: string[], register: (program: Command, action: (args: T) => Promise<void>) => void): Promise<T> {
  let parsed: T | undefined;
  const program = new Command("podroutes").exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  register(program, async (args) => {
    parsed = args;
  });
  await program.parseAsync(argv, { from: "user" });
  if (parsed === undefined) throw new Error(`not a command line of this subcommand: ${argv.join(" ")}`);
  return parsed;
}
