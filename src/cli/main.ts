/**
 * The `podroutes` command: the only code that reads argv, writes the console and picks exit codes.
 * Three layers, as terraform's CLI: arguments are parsed into a typed value with no I/O (commander, then
 * args.ts); results go to the views behind one interface (output.ts); a command wires a node source, a
 * target and the engine and returns its exit code (route-commands.ts, lab-commands.ts). A route
 * command offers the common flags plus exactly the chosen target's and node source's, as they declare
 * them; exit codes are chosen in one place (exit-codes.ts).
 */
import { Command, CommanderError, Option } from "commander";
import { messageOf } from "../apply/engine.js";
import { longFlag, type OptionSpec } from "../options.js";
import { nodeSources } from "../sources/registry.js";
import { targetFactory, targets } from "../targets/registry.js";
import { chooseNodes, commonOptions, DEFAULT_TARGET, pluginOptions, routeArgs, scanArgv, type ArgvScan, type RouteCommand } from "./args.js";
import { agentCommand, runAgent } from "./agent-command.js";
import { CONTROLLER_TARGETS, controllerCommand, runController } from "./controller-command.js";
import { changedNothing, EXIT, exitCodeOf } from "./exit-codes.js";
import { catalogue } from "./help.js";
import { addLabCommands } from "./lab-commands.js";
import { nodeSupportNoticeOnce } from "./node-support.js";
import { createOutput, type Output } from "./output.js";
import { applyCommand, listCommand, planCommand, verifyCommand } from "./route-commands.js";

/**
 * A declared option as commander shows and parses it. Commander only collects the text: choices,
 * defaults, environment and parsing are readOptions' (so every bad flag is reported at once, alike).
 */
export function commanderOption(spec: OptionSpec, group?: string): Option {
  const notes = [
    ...(spec.choices ? [`one of: ${spec.choices.join(", ")}`] : []),
    ...(spec.default !== undefined ? [`default: ${([] as unknown[]).concat(spec.default).join(" ")}`] : []),
    ...(spec.env !== undefined ? [`env: ${([] as string[]).concat(spec.env).join(", ")}`] : []),
  ];
  const option = new Option(spec.flags, notes.length ? `${spec.description} (${notes.join("; ")})` : spec.description);
  if (group) option.helpGroup(group);
  return option;
}

/** `error: unknown option '--ssh-user'` gets which targets or sources have that flag. */
function explainUnknownOption(message: string): string {
  const flag = /unknown option '(--[^'=]+)/.exec(message)?.[1];
  if (!flag) return message;
  const owners = [
    ...targets.filter((t) => t.options.some((spec) => longFlag(spec) === flag)).map((t) => `--target ${t.name}`),
    ...nodeSources.filter((s) => s.options.some((spec) => longFlag(spec) === flag)).map((s) => `--nodes ${s.name}`),
  ];
  return owners.length ? `${message.trimEnd()} (${flag} is a flag of ${owners.join(", ")})\n` : message;
}

const ROUTE_COMMANDS: [RouteCommand, string][] = [
  ["plan", "show what apply would change"],
  ["apply", "create, replace and delete routes so the target matches the inventory"],
  ["delete", "remove every route podroutes owns on the target, and nothing else"],
  ["list", "list the routes of the target that podroutes owns or that sit on its destinations"],
  ["verify", "check that every table matches the plan (and, on the lab, that every pod reaches every other over the right next hop)"],
];

/**
 * A route command with the common flags and those of the target and node source the command line
 * names (`scan`), grouped in its help under their owner's name.
 */
function routeCommand(program: Command, name: RouteCommand, description: string, scan: ArgvScan): Command {
  const chosen = scan.command === name ? scan : {};
  const target = targetFactory(chosen.target ?? DEFAULT_TARGET) ?? targetFactory(DEFAULT_TARGET)!;
  const command = program
    .command(name)
    .description(description)
    .showHelpAfterError(`(podroutes ${name} --target ${target.name}${chosen.nodes !== undefined ? ` --nodes ${chosen.nodes}` : ""} --help shows the flags)`);
  const nodes = chooseNodes(name, target, chosen.nodes);
  const plugin = pluginOptions(target, nodes);
  for (const spec of commonOptions) command.addOption(commanderOption(spec));
  for (const spec of plugin.target) command.addOption(commanderOption(spec, `Target ${target.name} (--target ${target.name}):`));
  const source = nodes?.kind === "source" ? nodes.source.name : "";
  for (const spec of plugin.source) command.addOption(commanderOption(spec, `Node source ${source} (--nodes ${source}):`));
  const nodesNote =
    chosen.nodes !== undefined
      ? ""
      : nodes === undefined
        ? `\n--target ${target.name} has no node source of its own: say which nodes with --nodes.`
        : nodes.kind === "none"
          ? `\nWithout --nodes, ${name} reads --target ${target.name} alone: its own mark tells podroutes' routes.`
          : `\nWithout --nodes, the nodes come from --nodes ${source}.`;
  command.addHelpText("after", `${nodesNote}\n${catalogue(name)}`);
  return command;
}

function buildProgram(out: Output, scan: ArgvScan, setCode: (code: number) => void, run: (argv: string[]) => Promise<number>): Command {
  const program = new Command("podroutes")
    .description("Provision Kubernetes pod network routes: nodes in → plan (a diff) → apply to a target → verify with real packets.")
    .showHelpAfterError("(podroutes --help shows the commands)")
    .exitOverride()
    .configureOutput({
      writeOut: (s) => process.stdout.write(s),
      writeErr: (s) => process.stderr.write(s),
      outputError: (s, write) => write(explainUnknownOption(s)),
    })
    .addHelpText("after", catalogue());

  const args = (name: RouteCommand, command: Command) => routeArgs(name, command.opts(), process.env);
  for (const [name, description] of ROUTE_COMMANDS) {
    const command = routeCommand(program, name, description, scan);
    if (name === "plan") {
      command
        .option("--detailed-exitcode", "exit 0 when there are no changes, 2 when there are, 1 on error (like terraform)")
        .action(async (flags: { detailedExitcode?: boolean }, self: Command) => setCode(await planCommand(args(name, self), flags, out)));
    } else if (name === "apply" || name === "delete") {
      command
        .option("-y, --yes", "do not ask for confirmation")
        .option("--dry-run", name === "delete" ? "show what would be removed and change nothing" : "show the plan and change nothing");
      if (name === "apply") command.option("--allow-conflicts", "exit 0 even when routes podroutes does not own hold some of its destinations (they are still left alone and reported)");
      command.action(async (flags: { yes?: boolean; dryRun?: boolean; allowConflicts?: boolean }, self: Command) => setCode(await applyCommand(args(name, self), flags, out)));
    } else if (name === "list") {
      command.action(async (_flags: unknown, self: Command) => setCode(await listCommand(args(name, self), out)));
    } else {
      command.action(async (_flags: unknown, self: Command) => setCode(await verifyCommand(args(name, self), out)));
    }
  }
  agentCommand(program, (spec) => commanderOption(spec), process.env, async (args) => setCode(await runAgent(args)));
  controllerCommand(program, scan, commanderOption, process.env, async (args) => setCode(await runController(args)));
  addLabCommands(program, out, setCode, (spec) => commanderOption(spec), run);
  return program;
}

/** Runs the CLI; returns the exit code instead of exiting, so tests and `demo` can call it. */
/**
 * `--help` with a target that does not exist: the help of a target podroutes does not have would be
 * someone else's flags, so the command runs without `--help` and says what is wrong (exit 3), exactly
 * as it does without it.
 */
export function withoutHelpForUnknownTarget(argv: string[], scan: ArgvScan): string[] {
  if (scan.target === undefined) return argv;
  const known =
    scan.command === "controller"
      ? (CONTROLLER_TARGETS as readonly string[]).includes(scan.target)
      : ROUTE_COMMANDS.some(([name]) => name === scan.command)
        ? targetFactory(scan.target) !== undefined
        : true;
  if (known) return argv;
  const end = argv.indexOf("--");
  return argv.filter((arg, i) => (end >= 0 && i > end) || (arg !== "--help" && arg !== "-h"));
}

export async function main(argv: string[]): Promise<number> {
  const scan = scanArgv(argv);
  argv = withoutHelpForUnknownTarget(argv, scan);
  const out = createOutput(scan.output === "json" || scan.output === "yaml" ? scan.output : "table");
  let code: number = EXIT.ok;
  const program = buildProgram(out, scan, (c) => (code = c), main);
  // Not on the agent's and the controller's stderr: their log is JSON lines (their image runs Node 26).
  const notice = scan.command === "agent" || scan.command === "controller" ? undefined : nodeSupportNoticeOnce();
  if (notice) out.warn(notice);
  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (error) {
    out.endProgress();
    // Commander has already said what was wrong with the command line (or printed the help asked for).
    if (!(error instanceof CommanderError)) out.error(changedNothing(error) ? `${messageOf(error)}\nNothing was changed.` : messageOf(error));
    return exitCodeOf(error);
  }
}

/**
 * The program a command line would run, built and never run: the commands with exactly the flags that
 * command line's target and node source give them, every action replaced by one that does nothing, and
 * commander's words sent to `writeErr`. No I/O: the docs test parses every command line the README and
 * docs/ show with it.
 */
export function programFor(argv: string[], writeErr: (text: string) => void = () => {}): Command {
  const program = buildProgram(createOutput("table"), scanArgv(argv), () => {}, async () => EXIT.ok);
  const everyCommand = (command: Command): Command[] => [command, ...command.commands.flatMap(everyCommand)];
  for (const command of everyCommand(program)) {
    command.configureOutput({ writeOut: () => {}, writeErr, outputError: (text, write) => write(text) });
    if (command.commands.length === 0) command.action(() => {});
  }
  return program;
}
