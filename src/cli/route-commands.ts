/**
 * The route commands (plan, apply, delete, list, verify): each wires a node source, a target and the
 * engine from checked RouteArgs, hands values to the views and returns its exit code.
 */
import { readFile } from "node:fs/promises";
import { apply, converge, observe, plan, verifyTarget } from "../apply/engine.js";
import { DEFAULT_CLUSTER, InputError, validateInventory } from "../inventory.js";
import type { Inventory } from "../model.js";
import type { ResolvedOptions } from "../options.js";
import { hasChanges, unattributedRoutes, type Plan } from "../plan/plan.js";
import { planJson, renderColumns, renderPlan, renderReport, reportJson } from "../plan/render.js";
import { parseNodesFile } from "../sources/file.js";
import { nodeSources } from "../sources/registry.js";
import type { Check, TableRef, Target } from "../targets/target.js";
import { UsageError } from "../errors.js";
import type { RouteArgs } from "./args.js";
import { EXIT } from "./exit-codes.js";
import type { Output } from "./output.js";

interface Context {
  inventory: Inventory;
  target: Target;
  options: ResolvedOptions;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

async function readInventory(args: RouteArgs, options: ResolvedOptions): Promise<Inventory> {
  const { nodes } = args;
  if (nodes.kind === "none") {
    // `list` and `delete` by the target's own mark: no nodes, the cluster named by the flags.
    return { cluster: args.cluster ?? DEFAULT_CLUSTER, ...(args.clusterCIDR ? { clusterCIDR: args.clusterCIDR } : {}), nodes: [], source: `--target ${args.target.name}` };
  }
  let raw;
  if (nodes.kind === "source") raw = await nodes.source.read(options);
  else {
    const text =
      nodes.path === "-"
        ? await readStdin()
        : await readFile(nodes.path, "utf8").catch((error: NodeJS.ErrnoException) => {
            const why = error.code === "ENOENT" ? `no such file (and not a node source: ${nodeSources.map((s) => s.name).join(", ")})` : error.message;
            throw new InputError([{ value: nodes.path, message: why }], "cannot read --nodes");
          });
    raw = parseNodesFile(text, nodes.path === "-" ? "<stdin>" : nodes.path);
  }
  return validateInventory(raw, { ...(args.clusterCIDR ? { clusterCIDR: args.clusterCIDR } : {}), ...(args.cluster ? { cluster: args.cluster } : {}) });
}

/**
 * Reads the nodes and builds the target, then runs `body`; the target is always closed. `lockAhead`: the
 * run will lock and write without showing its plan first, so a target that can lock its table before
 * knowing the inventory does so, and reads it while the inventory is read.
 */
async function withTarget(args: RouteArgs, out: Output, body: (context: Context) => Promise<number>, settings: { lockAhead?: boolean } = {}): Promise<number> {
  const options: ResolvedOptions = {
    ...args.values,
    cluster: args.cluster ?? "",
    ...(args.clusterCIDR ? { clusterCIDR: args.clusterCIDR } : {}),
    parallel: args.parallel,
    env: process.env,
    warn: (message) => out.warn(message),
    interactive: out.interactive,
  };
  const ahead = settings.lockAhead ? args.target.lockAhead?.(options) : undefined;
  try {
    await ahead?.started;
    const inventory = await readInventory(args, options);
    options.cluster = inventory.cluster;
    if (inventory.clusterCIDR) options.clusterCIDR = inventory.clusterCIDR;
    const target = await args.target.create(ahead ? { ...options, lockedAhead: ahead } : options);
    try {
      return await body({ inventory, target, options });
    } finally {
      await target.close?.();
    }
  } finally {
    await ahead?.release();
  }
}

function printPlan(out: Output, planned: Plan, deleting = false): void {
  out.result(planJson(planned), () => renderPlan(planned, { deleting }));
}

async function confirm(out: Output, question: string): Promise<boolean> {
  if (!process.stdin.isTTY) {
    throw new UsageError("refusing to change anything without confirmation: stdin is not a terminal, pass --yes", { flag: "--yes" });
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

export async function planCommand(args: RouteArgs, flags: { detailedExitcode?: boolean }, out: Output): Promise<number> {
  return withTarget(args, out, async ({ inventory, target, options }) => {
    const planned = await plan(target, inventory, { parallel: options.parallel, progress: out.progress("read") });
    out.endProgress();
    printPlan(out, planned);
    // A plan apply would refuse (quota, route limit) or could not read is a failed plan.
    if (planned.tables.some((t) => t.error !== undefined) || planned.review.refusals.length) return EXIT.failed;
    return flags.detailedExitcode && hasChanges(planned) ? EXIT.changes : EXIT.ok;
  });
}

/**
 * Shared by apply and delete: plan, show, confirm, write, report. Exits 0 only when the target ends as
 * planned: every change done, every table reached, and no foreign route on a destination podroutes
 * wants unless --allow-conflicts accepts them.
 */
export async function applyCommand(args: RouteArgs, flags: { yes?: boolean; dryRun?: boolean; allowConflicts?: boolean }, out: Output): Promise<number> {
  const mode = args.command === "delete" ? "delete" : "apply";
  // Nobody looks at the plan before it is written (--yes): each table is locked, read once, planned and
  // written in one pass. Otherwise the plan is read unlocked, shown, and re-checked when written.
  const unattended = flags.yes === true && flags.dryRun !== true;
  return withTarget(args, out, async ({ inventory, target, options }) => {
    const planOptions = { parallel: options.parallel, progress: out.progress("read"), deleteAll: mode === "delete" };
    let shown = false;
    const show = (planned: Plan) => {
      out.endProgress();
      if (!out.json) out.human(renderPlan(planned, { deleting: mode === "delete" }));
      shown = true;
    };
    const converged = unattended ? await converge(target, inventory, { ...planOptions, onPlanned: show }) : { plan: await plan(target, inventory, planOptions) };
    const planned = converged.plan;
    out.endProgress();
    const conflictsFail = planned.summary.conflicts > 0 && flags.allowConflicts !== true;
    // A delete asked to remove the cluster's routes: those it cannot attribute may be some of them.
    const mayRemain = mode === "delete" ? unattributedRoutes(planned).length : 0;
    if (!converged.report && (!hasChanges(planned) || flags.dryRun)) {
      printPlan(out, planned, mode === "delete");
      if (flags.dryRun && hasChanges(planned)) out.human("\n--dry-run: nothing was changed.");
      else if (conflictsFail) out.human("\nThe target does not end as planned: remove the routes in the way, or pass --allow-conflicts to accept them.");
      return planned.tables.some((t) => t.error !== undefined) || (conflictsFail && !flags.dryRun) || (mayRemain && !flags.dryRun) ? EXIT.failed : EXIT.ok;
    }
    if (planned.review.refusals.length) {
      printPlan(out, planned);
      out.error(`${mode} refused before any change: ${planned.review.refusals.join("; ")}`);
      return EXIT.failed;
    }
    if (!shown) show(planned);
    let report = converged.report;
    if (!report) {
      if (!flags.yes && !(await confirm(out, `Do you want to ${mode === "delete" ? "remove these routes" : "perform these actions"} on target ${planned.target}?`))) {
        out.human(`${mode === "delete" ? "Delete" : "Apply"} cancelled: nothing was changed.`);
        return EXIT.failed;
      }
      report = await apply(target, planned, inventory, { parallel: options.parallel, progress: out.progress(mode) });
    }
    out.endProgress();
    const done = report;
    // The JSON form only for -o json|yaml: 5,000 changes cost a cold process milliseconds to convert.
    out.result(out.json ? reportJson(done) : undefined, () => renderReport(done, { allowConflicts: flags.allowConflicts === true }), { alwaysHuman: true });
    if (mayRemain) out.human(`${mayRemain} route${mayRemain === 1 ? "" : "s"} in the cluster CIDR that may be the cluster's ${mayRemain === 1 ? "was" : "were"} left (see "?" above).`);
    return done.ok && !mayRemain && (done.counts.conflicts === 0 || flags.allowConflicts === true) ? EXIT.ok : EXIT.failed;
  }, { lockAhead: unattended });
}

/**
 * A cloud target's routes, proven with packets where that can be done: in the lab, while a VPC router
 * forwards the workers' cluster traffic by the cloud's route table (the test servers'), each pod pings and
 * traces every other through it. Elsewhere a cloud's routes are proven by its API's state alone.
 */
async function cloudPacketsInLab(inventory: Inventory, tables: TableRef[], out: Output): Promise<Check[]> {
  const lab = /^lab (\S+)$/.exec(inventory.source ?? "")?.[1];
  // VPC-level tables only: a host table's routes are in the workers' kernels, proven by the lab target.
  if (lab === undefined || !tables.length || tables.some((table) => table.scope !== "shared")) return [];
  const [{ loadLab }, { checkPodPaths }] = await Promise.all([import("../lab/lab.js"), import("../lab/paths.js")]);
  const state = await loadLab(lab);
  if (!state?.vpcRouter) return [];
  return checkPodPaths(state, { via: state.vpcRouter.address, progress: out.progress("packets") });
}

export async function verifyCommand(args: RouteArgs, out: Output): Promise<number> {
  return withTarget(args, out, async ({ inventory, target, options }) => {
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
    checks.push(...(await verifyTarget(target, inventory, { progress: out.progress("verify") })));
    checks.push(...(await cloudPacketsInLab(inventory, planned.tables.map((t) => t.table), out)));
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

export async function listCommand(args: RouteArgs, out: Output): Promise<number> {
  return withTarget(args, out, async ({ inventory, target, options }) => {
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
    const unknown = rows.filter(({ route }) => route.unattributed !== undefined);
    if (unknown.length) {
      out.warn(
        [
          `${unknown.length} route${unknown.length === 1 ? "" : "s"} in the cluster CIDR may be the cluster's but cannot be attributed to it (not owned, left alone by delete):`,
          ...unknown.map(({ table, route }) => `  ${table.id}: ${route.destination} via ${route.nextHopLabel ?? route.nextHop ?? "?"}: ${route.unattributed}`),
        ].join("\n"),
      );
    }
    for (const { table, error } of observed) if (error !== undefined) out.error(`${table.id}: cannot read: ${error}`);
    return observed.some((o) => o.error !== undefined) ? EXIT.failed : EXIT.ok;
  });
}
