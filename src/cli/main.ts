/**
 * The `podroutes` command: the only code that reads argv, writes the console and picks exit codes.
 * Arguments are parsed by commander; each command wires a node source, a target and the engine, and
 * hands values to the views. Exit codes (documented in the README):
 *   0 success / no changes · 1 failure (a change or a check failed, a target unreachable)
 *   2 changes pending (plan --detailed-exitcode) · 3 bad input or usage (nothing was changed)
 */
import { readFile } from "node:fs/promises";
import { Command, CommanderError, Option } from "commander";
import { apply, plan, observe, messageOf, type ApplyReport } from "../apply/engine.js";
import { InputError, validateInventory } from "../inventory.js";
import { DEFAULT_LAB, existingNamespaces, labDown, labNamespaces, labUp, loadLab, nodeCommand, requireLab } from "../lab/lab.js";
import { MAX_LAB_WORKERS, TOPOLOGIES } from "../lab/topology.js";
import type { Inventory } from "../model.js";
import type { CommonOptions, OptionSpec, ResolvedOptions } from "../options.js";
import { hasChanges, type Plan } from "../plan/plan.js";
import { planJson, renderColumns, renderPlan, renderReport, reportJson } from "../plan/render.js";
import { parseNodesFile } from "../sources/file.js";
import { nodeSource, nodeSources } from "../sources/registry.js";
import { targetFactory, targets } from "../targets/registry.js";
import type { Check, Target } from "../targets/target.js";
import { createOutput, type Output } from "./output.js";
import { UsageError } from "../errors.js";

export const EXIT = { ok: 0, failed: 1, changes: 2, badInput: 3 } as const;


interface GlobalFlags {
  nodes: string;
  target: string;
  cluster?: string;
  clusterCidr?: string;
  output: "table" | "json" | "yaml";
  parallel: string;
  [key: string]: unknown;
}

function optionFromSpec(spec: OptionSpec): Option {
  const option = new Option(spec.flags, spec.description);
  if (spec.default !== undefined) option.default(spec.default);
  if (spec.env) option.env(spec.env);
  return option;
}

/**
 * Every target's and source's own flags, once each (the same long flag is one shared option). A default
 * is given to commander only when every declaration agrees; otherwise the chosen target's or source's
 * own default is filled in by `withPluginDefaults` (`--next-hop` is `eni` for aws, `ip` for gcp).
 */
function pluginOptions(): Option[] {
  const byFlag = new Map<string, OptionSpec[]>();
  for (const spec of [...nodeSources.flatMap((s) => s.options), ...targets.flatMap((t) => t.options)]) {
    const long = new Option(spec.flags).long!;
    byFlag.set(long, [...(byFlag.get(long) ?? []), spec]);
  }
  return [...byFlag.values()].map((specs) => {
    const agreed = specs.every((spec) => JSON.stringify(spec.default) === JSON.stringify(specs[0]!.default));
    const option = optionFromSpec(agreed ? specs[0]! : { ...specs[0]!, default: undefined, description: specs.map((s) => s.description).join("; ") });
    if (!agreed) option.description += ` (default: ${specs.map((s) => `${s.description.split(":")[0]} ${JSON.stringify(s.default)}`).join(", ")})`;
    return option;
  });
}

/** Fills in the defaults of the chosen target's and source's own options where the flag was not given. */
function withPluginDefaults(flags: GlobalFlags): GlobalFlags {
  const specs = [...(nodeSource(flags.nodes)?.options ?? []), ...(targetFactory(flags.target)?.options ?? [])];
  const filled: GlobalFlags = { ...flags };
  for (const spec of specs) {
    const key = new Option(spec.flags).attributeName();
    if (filled[key] === undefined && spec.default !== undefined) filled[key] = spec.default;
  }
  return filled;
}

function addRouteOptions(command: Command): Command {
  command
    .option("--nodes <source>", `where nodes come from: a file, - for stdin, or ${nodeSources.map((s) => s.name).join(", ")}`, "lab")
    .addOption(new Option("--target <name>", "where routes live").choices(targets.map((t) => t.name)).default("lab"))
    .option("--cluster <name>", "cluster name (default: from the node source, else kubernetes)")
    .option("--cluster-cidr <cidr>", "every pod CIDR must lie inside it; podroutes never touches routes outside it")
    .addOption(new Option("-o, --output <format>", "output format").choices(["table", "json", "yaml"]).default("table"))
    .option("--parallel <n>", "tables (hosts) or API operations worked on at once", "10");
  for (const option of pluginOptions()) command.addOption(option);
  return command;
}

function commonOptions(flags: GlobalFlags, out: Output): ResolvedOptions {
  const parallel = Number(flags.parallel);
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 1000) throw new UsageError(`--parallel must be a whole number from 1 to 1000 (got ${flags.parallel})`);
  const common: CommonOptions = {
    cluster: flags.cluster ?? "",
    ...(flags.clusterCidr ? { clusterCIDR: flags.clusterCidr } : {}),
    parallel,
    env: process.env,
    warn: (message) => out.warn(message),
    interactive: out.interactive,
  };
  return { ...flags, ...common };
}

async function readInventory(flags: GlobalFlags, options: ResolvedOptions): Promise<Inventory> {
  const source = nodeSource(flags.nodes);
  let raw;
  if (source) {
    raw = await source.read(options);
  } else {
    const text = flags.nodes === "-" ? await readStdin() : await readFile(flags.nodes, "utf8").catch((error: NodeJS.ErrnoException) => {
      throw new InputError([{ value: flags.nodes, message: error.code === "ENOENT" ? "no such file (and not a node source: " + nodeSources.map((s) => s.name).join(", ") + ")" : error.message }], "cannot read --nodes");
    });
    raw = parseNodesFile(text, flags.nodes === "-" ? "<stdin>" : flags.nodes);
  }
  return validateInventory(raw, {
    ...(flags.clusterCidr ? { clusterCIDR: flags.clusterCidr } : {}),
    ...(flags.cluster ? { cluster: flags.cluster } : {}),
  });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

/** Reads nodes and builds the target: everything that can be wrong with the input fails here, before any change. */
async function setup(given: GlobalFlags, out: Output): Promise<{ inventory: Inventory; target: Target; options: ResolvedOptions }> {
  const flags = withPluginDefaults(given);
  const options = commonOptions(flags, out);
  const inventory = await readInventory(flags, options);
  options.cluster = inventory.cluster;
  if (inventory.clusterCIDR) options.clusterCIDR = inventory.clusterCIDR;
  const factory = targetFactory(flags.target)!;
  const target = await factory.create(options);
  return { inventory, target, options };
}

async function withTarget(flags: GlobalFlags, out: Output, body: (ctx: { inventory: Inventory; target: Target; options: ResolvedOptions }) => Promise<number>): Promise<number> {
  const ctx = await setup(flags, out);
  try {
    return await body(ctx);
  } finally {
    await ctx.target.close?.();
  }
}

function printPlan(out: Output, planned: Plan, verb?: string): void {
  out.result(planJson(planned), () => renderPlan(planned, { verb }));
}

async function confirm(out: Output, question: string): Promise<boolean> {
  if (!process.stdin.isTTY) {
    throw new UsageError("refusing to change anything without confirmation: stdin is not a terminal, pass --yes");
  }
  out.human(`\n${question}\n  Only 'yes' will be accepted to approve.\n`);
  process.stdout.write("  Enter a value: ");
  const { createInterface } = await import("node:readline/promises");
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  try {
    return (await rl.question("")).trim() === "yes";
  } finally {
    rl.close();
  }
}

/** Shared by apply and delete: plan, show, confirm, write, report. */
async function planAndApply(flags: GlobalFlags & { yes?: boolean; dryRun?: boolean }, out: Output, mode: "apply" | "delete"): Promise<number> {
  return withTarget(flags, out, async ({ inventory, target, options }) => {
    const planned = await plan(target, inventory, { parallel: options.parallel, progress: out.progress("read"), deleteAll: mode === "delete" });
    out.endProgress();
    if (!hasChanges(planned) || flags.dryRun) {
      printPlan(out, planned, mode === "delete" ? "remove these routes" : undefined);
      if (flags.dryRun && hasChanges(planned)) out.human("\n--dry-run: nothing was changed.");
      return planned.tables.some((t) => t.error !== undefined) ? EXIT.failed : EXIT.ok;
    }
    if (planned.review.refusals.length) {
      printPlan(out, planned);
      out.error(`${mode} refused before any change: ${planned.review.refusals.join("; ")}`);
      return EXIT.failed;
    }
    if (!out.json) out.human(renderPlan(planned, { verb: mode === "delete" ? "remove these routes" : undefined }));
    if (!flags.yes && !(await confirm(out, `Do you want to ${mode === "delete" ? "remove these routes" : "perform these actions"} on target ${planned.target}?`))) {
      out.human(`${mode === "delete" ? "Delete" : "Apply"} cancelled: nothing was changed.`);
      return EXIT.failed;
    }
    const report: ApplyReport = await apply(target, planned, inventory, { parallel: options.parallel, progress: out.progress(mode) });
    out.endProgress();
    out.result(reportJson(report), () => renderReport(report), { alwaysHuman: true });
    return report.ok ? EXIT.ok : EXIT.failed;
  });
}

async function verifyCommand(flags: GlobalFlags, out: Output): Promise<number> {
  return withTarget(flags, out, async ({ inventory, target, options }) => {
    const planned = await plan(target, inventory, { parallel: options.parallel, progress: out.progress("read") });
    out.endProgress();
    const checks: Check[] = [];
    for (const table of planned.tables) {
      if (table.error !== undefined) checks.push({ table: table.table.id, ok: false, message: `cannot read: ${table.error}` });
      else if (table.changes.length || table.conflicts.length) {
        const problems = [
          ...table.changes.map((c) => (c.action === "create" ? `missing ${c.route.destination} via ${c.route.nextHop}` : c.action === "replace" ? `${c.route.destination} goes via ${c.current.nextHopLabel ?? c.current.nextHop ?? "?"}, should be ${c.route.nextHop}` : `extra route ${c.current.destination}`)),
          ...table.conflicts.map((c) => `${c.route.destination} is held by a route podroutes does not own (via ${c.existing.nextHopLabel ?? c.existing.nextHop})`),
        ];
        checks.push({ table: table.table.id, ok: false, message: `routes differ from the plan: ${problems.join("; ")}` });
      } else {
        checks.push({ table: table.table.id, ok: true, message: `${table.unchanged.length} routes match the plan` });
      }
    }
    for (const warning of planned.review.warnings) checks.push({ ok: true, severity: "warning", message: warning });
    if (target.verify) checks.push(...(await target.verify(inventory, { progress: out.progress("verify") })));
    out.endProgress();
    const failed = checks.filter((c) => !c.ok && c.severity !== "warning");
    out.result(
      { format_version: "1.0", ok: failed.length === 0, checks },
      () =>
        [
          ...checks.map((c) => `${c.ok ? (c.severity === "warning" ? "!" : "✓") : c.severity === "warning" ? "!" : "✗"} ${c.table ? `${c.table}: ` : ""}${c.message}`),
          "",
          failed.length ? `Verify FAILED: ${failed.length} of ${checks.length} checks failed.` : `Verify passed: ${checks.length} checks.`,
        ].join("\n"),
    );
    return failed.length ? EXIT.failed : EXIT.ok;
  });
}

async function listCommand(flags: GlobalFlags, out: Output): Promise<number> {
  return withTarget(flags, out, async ({ inventory, target, options }) => {
    const observed = await observe(target, inventory, { parallel: options.parallel, progress: out.progress("read") });
    out.endProgress();
    const rows = observed.flatMap(({ table, routes }) => routes.map((route) => ({ table, route })));
    const listing = target.listing ?? {
      columns: ["TABLE", "DEST_RANGE", "NEXT_HOP", "OWNED"],
      row: (table: { id: string }, route: { destination: string; nextHopLabel?: string; nextHop?: string; owned: boolean }) => [table.id, route.destination, route.nextHopLabel ?? route.nextHop ?? "", route.owned ? "yes" : "no"],
    };
    out.result(
      rows.map(({ table, route }) => ({ table: table.id, ...(table.node ? { node: table.node } : {}), ...route })),
      () => renderColumns(listing.columns, rows.map(({ table, route }) => listing.row(table, route))),
    );
    for (const { table, error } of observed) if (error !== undefined) out.error(`${table.id}: cannot read: ${error}`);
    return observed.some((o) => o.error !== undefined) ? EXIT.failed : EXIT.ok;
  });
}

async function demoCommand(flags: { lab: string; topology: string; workers?: string }, out: Output): Promise<number> {
  const bold = process.stdout.isTTY ? (text: string) => `\x1b[1m${text}\x1b[0m` : (text: string) => text;
  const say = (line: string) => out.human(`\n${bold(`$ ${line}`)}`);
  const lab = flags.lab === DEFAULT_LAB ? "" : ` --lab ${flags.lab}`;
  say(`podroutes lab up --topology ${flags.topology}${lab}`);
  await labUp({ name: flags.lab, topology: flags.topology, ...(flags.workers ? { workers: Number(flags.workers) } : {}), log: (l) => out.human(l) });
  const base = ["--nodes", "lab", "--target", "lab", "--lab", flags.lab];
  const steps: [string, string[]][] = [
    ["verify (before any route: pods on different workers cannot reach each other)", ["verify", ...base]],
    ["plan", ["plan", ...base]],
    ["apply --yes", ["apply", "--yes", ...base]],
    ["list", ["list", ...base]],
    ["verify", ["verify", ...base]],
    ["apply --yes (again: nothing to do)", ["apply", "--yes", ...base]],
  ];
  let finalCode: number = EXIT.ok;
  for (const [label, argv] of steps) {
    say(`podroutes ${label}${lab}`);
    finalCode = await main(argv);
  }
  const self = "node bin/podroutes.js"; // `npm link` puts it on PATH as `podroutes`
  out.human(
    `\nThe lab is still up. Look around with \`ip netns list\`, or run podroutes on a worker, as on a real node:\n  ${self} lab exec${lab} worker-0 -- ${self} list --nodes lab${lab} --target local\nTear it down with:\n  ${self} lab down${lab}`,
  );
  return finalCode;
}

export function buildProgram(out: Output, setCode: (code: number) => void): Command {
  const program = new Command("podroutes")
    .description("Provision Kubernetes pod network routes: nodes in → plan (a diff) → apply to a target → verify with real packets.")
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s) });

  const routeCommand = (name: string, description: string) => addRouteOptions(program.command(name).description(description));

  routeCommand("plan", "show what apply would change")
    .option("--detailed-exitcode", "exit 0 when there are no changes, 2 when there are, 1 on error (like terraform)")
    .action(async (flags: GlobalFlags & { detailedExitcode?: boolean }) => {
      setCode(
        await withTarget(flags, out, async ({ inventory, target, options }) => {
          const planned = await plan(target, inventory, { parallel: options.parallel, progress: out.progress("read") });
          out.endProgress();
          printPlan(out, planned);
          // A plan apply would refuse (quota, route limit) or could not read is a failed plan.
          if (planned.tables.some((t) => t.error !== undefined) || planned.review.refusals.length) return EXIT.failed;
          return flags.detailedExitcode && hasChanges(planned) ? EXIT.changes : EXIT.ok;
        }),
      );
    });

  routeCommand("apply", "create, replace and delete routes so the target matches the inventory")
    .option("-y, --yes", "do not ask for confirmation")
    .option("--dry-run", "show the plan and change nothing")
    .action(async (flags) => setCode(await planAndApply(flags, out, "apply")));

  routeCommand("delete", "remove every route podroutes owns on the target, and nothing else")
    .option("-y, --yes", "do not ask for confirmation")
    .option("--dry-run", "show what would be removed and change nothing")
    .action(async (flags) => setCode(await planAndApply(flags, out, "delete")));

  routeCommand("list", "list the routes of the target that podroutes owns or that sit on its destinations").action(async (flags) => setCode(await listCommand(flags, out)));

  routeCommand("verify", "check that every table matches the plan (and, on the lab, that every pod reaches every other over the right next hop)").action(async (flags) =>
    setCode(await verifyCommand(flags, out)),
  );

  const labOptions = (command: Command) =>
    command
      .option("--lab <name>", "lab name: prefixes its namespaces", DEFAULT_LAB)
      .addOption(new Option("--topology <name>", "which cluster to build").choices([...TOPOLOGIES]).default("gcp-seed"))
      .option("--workers <n>", `number of workers (1-${MAX_LAB_WORKERS}; default 3)`)
      .addOption(new Option("-o, --output <format>", "output format").choices(["table", "json", "yaml"]).default("table"));

  labOptions(program.command("demo").description("build the local lab, then plan, apply, list and verify its routes, printing each step")).action(async (flags) =>
    setCode(await demoCommand(flags, out)),
  );

  const lab = program.command("lab").description("the local lab: the seeds' clusters in network namespaces (needs root)");
  labOptions(lab.command("up").description("build the lab (a second run changes nothing)"))
    .option("--ssh", "also run an OpenSSH server on every worker and the jumpbox, with keys made for this lab (for --target ssh)")
    .action(async (flags: { lab: string; topology: string; workers?: string; ssh?: boolean }) => {
    const { state, created } = await labUp({ name: flags.lab, topology: flags.topology, ...(flags.workers ? { workers: Number(flags.workers) } : {}), log: (l) => out.human(l) });
    if (flags.ssh) await (await import("../lab/sshd.js")).labSshUp(state, (l) => out.human(l));
    out.result(state, () => (created ? `lab ${state.name} is up: ${state.workers.length} workers (${state.topology}). Next: podroutes plan${flags.lab === DEFAULT_LAB ? "" : ` --lab ${flags.lab}`}` : ""));
    setCode(EXIT.ok);
  });
  lab
    .command("status")
    .description("show the lab's workers, addresses and namespaces")
    .option("--lab <name>", "lab name", DEFAULT_LAB)
    .addOption(new Option("-o, --output <format>", "output format").choices(["table", "json", "yaml"]).default("table"))
    .action(async (flags: { lab: string }) => {
      const state = await loadLab(flags.lab);
      if (!state) {
        out.result({ name: flags.lab, up: false }, () => `lab ${flags.lab} is not up (podroutes lab up)`);
        setCode(EXIT.failed);
        return;
      }
      const present = await existingNamespaces();
      const missing = labNamespaces(state).filter((ns) => !present.has(ns));
      out.result({ ...state, up: state.status === "up" && missing.length === 0, missingNamespaces: missing }, () =>
        [
          `lab ${state.name}: ${state.status === "up" && !missing.length ? "up" : `broken (missing ${missing.join(", ") || "nothing"}, status ${state.status})`}, topology ${state.topology}, cluster ${state.cluster} ${state.clusterCIDR}`,
          `jumpbox ${state.jumpboxIP} (netns ${state.jumpboxNetns})`,
          renderColumns(
            ["NODE", "INTERNAL_IP", "POD_CIDR", "POD_IP", "NETNS"],
            state.workers.map((w) => [w.name, w.internalIP, w.podCIDR, w.podIP ?? "", w.netns]),
          ),
        ].join("\n"),
      );
      setCode(state.status === "up" && !missing.length ? EXIT.ok : EXIT.failed);
    });
  lab
    .command("exec")
    .description("run a command on a lab node: in its network namespace, with its hostname")
    .argument("<node>", "node name, e.g. worker-0")
    .argument("<command...>", "the command and its arguments (put -- before options of the command)")
    .option("--lab <name>", "lab name", DEFAULT_LAB)
    .action(async (node: string, command: string[], flags: { lab: string }) => {
      const argv = nodeCommand(await requireLab(flags.lab), node, command);
      const { spawn } = await import("node:child_process");
      const child = spawn(argv[0]!, argv.slice(1), { stdio: "inherit" });
      setCode(await new Promise<number>((resolve, reject) => child.on("error", reject).on("close", (code) => resolve(code ?? 1))));
    });
  lab
    .command("down")
    .description("remove every namespace, process and file the lab made, and nothing else")
    .option("--lab <name>", "lab name", DEFAULT_LAB)
    .action(async (flags: { lab: string }) => {
      const removed = await labDown(flags.lab, (l) => out.human(l));
      out.human(removed ? `lab ${flags.lab} removed` : "");
      setCode(EXIT.ok);
    });

  return program;
}

/** Runs the CLI; returns the exit code instead of exiting, so tests and `demo` can call it. */
export async function main(argv: string[]): Promise<number> {
  const formatIndex = argv.findIndex((a) => a === "-o" || a === "--output");
  const format = formatIndex >= 0 ? argv[formatIndex + 1] : argv.find((a) => a.startsWith("--output="))?.slice(9);
  const out = createOutput(format === "json" ? "json" : format === "yaml" ? "yaml" : "table");
  let code: number = EXIT.ok;
  const program = buildProgram(out, (c) => (code = c));
  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (error) {
    out.endProgress();
    if (error instanceof CommanderError) {
      return error.exitCode === 0 ? EXIT.ok : EXIT.badInput;
    }
    if (error instanceof InputError) {
      out.error(`${error.message}\nNothing was changed.`);
      return EXIT.badInput;
    }
    if (error instanceof UsageError) {
      out.error(error.message);
      return EXIT.badInput;
    }
    out.error(messageOf(error));
    return EXIT.failed;
  }
}
