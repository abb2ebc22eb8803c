/**
 * `podroutes controller --target gcp|aws|hetzner|openstack|ssh`: its flags (the controller's own, the common cluster flags
 * and exactly the chosen target's, declared like the route commands' and checked before anything
 * starts), the arguments as a typed value, and the command that runs the controller until SIGTERM or
 * SIGINT (exit 0, the Lease released) or until it loses the Lease (exit 1, to restart clean).
 */
import { Command, type Option } from "commander";
import { startController } from "../controller/controller.js";
import { defaultIdentity, DEFAULT_LEASE_DURATION_MS, DEFAULT_RENEW_DEADLINE_MS, DEFAULT_RETRY_PERIOD_MS, type ElectionSettings } from "../controller/leader.js";
import { UsageError } from "../errors.js";
import { DEFAULT_CLUSTER } from "../inventory.js";
import { parseListen } from "../observe/health.js";
import { createLogger, LOG_FORMATS, type LogFormat } from "../observe/log.js";
import { duration, longFlag, readOptions, requireOption, type OptionSpec } from "../options.js";
import { contextOption, kubeconfigOption } from "../sources/kubernetes.js";
import { targetFactory, type TargetFactory } from "../targets/registry.js";
import { commonOptions, parseOnly, type ArgvScan } from "./args.js";
import { EXIT } from "./exit-codes.js";

/** The targets whose routes live outside the nodes' own processes: where a cluster-wide controller fits. */
export const CONTROLLER_TARGETS = ["gcp", "aws", "azure", "hetzner", "openstack", "ssh"] as const;

/** A Kubernetes object name (DNS-1123 subdomain): the Lease's name and namespace. */
function objectName(text: string): string {
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(text)) throw new Error("must be a Kubernetes name (lowercase letters, digits, '-' and '.')");
  return text;
}

const spell = (ms: number) => `${ms / 1000}s`;

export const controllerOptions: OptionSpec[] = [
  { flags: "--target <name>", description: "where routes live", choices: CONTROLLER_TARGETS, required: `one of ${CONTROLLER_TARGETS.join(", ")}` },
  kubeconfigOption,
  contextOption,
  { flags: "--lease-namespace <namespace>", description: "namespace of the Lease the replicas elect a leader with", default: "podroutes", env: "POD_NAMESPACE", parse: objectName },
  { flags: "--lease-name <name>", description: "name of that Lease", default: "podroutes-controller", parse: objectName },
  { flags: "--identity <name>", description: "this replica's name in the Lease (default: POD_NAME, else the hostname and a random suffix)", env: "POD_NAME" },
  { flags: "--lease-duration <duration>", description: "how long a standby waits, from when it last saw the Lease change, before taking over", default: spell(DEFAULT_LEASE_DURATION_MS), parse: duration(1000, 3_600_000) },
  { flags: "--renew-deadline <duration>", description: "the leader stops writing if it could not renew for this long (shorter than --lease-duration)", default: spell(DEFAULT_RENEW_DEADLINE_MS), parse: duration(500, 3_600_000) },
  { flags: "--retry-period <duration>", description: "how often replicas try to acquire or renew the Lease (shorter than --renew-deadline)", default: spell(DEFAULT_RETRY_PERIOD_MS), parse: duration(100, 600_000) },
  { flags: "--resync <duration>", description: "full reconcile period, catching changes others made to the routes (30s, 10m, 1h)", default: "5m", parse: duration(1000, 24 * 3_600_000) },
  { flags: "--listen <host:port>", description: "where /healthz, /livez, /readyz and /metrics are served", default: "0.0.0.0:9466", parse: parseListen },
  { flags: "--log-format <format>", description: "logs: one JSON object per line, or text", default: "json", choices: LOG_FORMATS },
];

/** The common flags that make sense here: the cluster's name and CIDR, tables at once. */
export const clusterOptions = commonOptions.filter((spec) => ["--cluster", "--cluster-cidr", "--parallel"].includes(longFlag(spec)));

export interface ControllerArgs {
  target: TargetFactory;
  /** The target's flags, checked and parsed, with the common ones: what the target factory reads. */
  values: Record<string, unknown>;
  cluster: string;
  clusterCIDR?: string;
  parallel: number;
  kubeconfig?: string;
  context?: string;
  election: ElectionSettings;
  resyncMs: number;
  listen: { host: string; port: number };
  logFormat: LogFormat;
}

/** The target's own flags (those the controller and the cluster flags do not already declare). */
export function targetOptions(target: TargetFactory): OptionSpec[] {
  const taken = new Set([...controllerOptions, ...clusterOptions].map(longFlag));
  return target.options.filter((spec) => !taken.has(longFlag(spec)));
}

/** The controller's flags as commander collected them, checked and parsed (every bad flag at once). Pure. */
export function controllerArgs(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): ControllerArgs {
  const mine = readOptions([...controllerOptions, ...clusterOptions], { ...flags, env });
  const target = targetFactory(mine.target as string)!;
  const values = { ...flags, ...mine, ...readOptions(targetOptions(target), { ...flags, env }), env };
  target.check?.(values);
  if (target.needsClusterCIDR !== undefined) requireOption(`--target ${target.name}`, values, "clusterCidr", "--cluster-cidr", target.needsClusterCIDR);
  const election: ElectionSettings = {
    namespace: mine.leaseNamespace as string,
    name: mine.leaseName as string,
    identity: (mine.identity as string | undefined) ?? defaultIdentity(env),
    leaseDurationMs: mine.leaseDuration as number,
    renewDeadlineMs: mine.renewDeadline as number,
    retryPeriodMs: mine.retryPeriod as number,
  };
  // client-go's own checks: a leader must stop before its lease can expire, and try more than once.
  if (election.renewDeadlineMs >= election.leaseDurationMs) {
    throw new UsageError(`--renew-deadline ${spell(election.renewDeadlineMs)} must be shorter than --lease-duration ${spell(election.leaseDurationMs)}: a leader that cannot renew must stop writing before its lease expires for the others`, { flag: "--renew-deadline" });
  }
  if (election.retryPeriodMs >= election.renewDeadlineMs) {
    throw new UsageError(`--retry-period ${spell(election.retryPeriodMs)} must be shorter than --renew-deadline ${spell(election.renewDeadlineMs)}: the leader must get more than one try to renew`, { flag: "--retry-period" });
  }
  return {
    target,
    values,
    cluster: (mine.cluster as string | undefined) ?? DEFAULT_CLUSTER,
    ...(mine.clusterCidr !== undefined ? { clusterCIDR: mine.clusterCidr as string } : {}),
    parallel: mine.parallel as number,
    ...(mine.kubeconfig !== undefined ? { kubeconfig: mine.kubeconfig as string } : {}),
    ...(mine.context !== undefined ? { context: mine.context as string } : {}),
    election,
    resyncMs: mine.resync as number,
    listen: mine.listen as ControllerArgs["listen"],
    logFormat: mine.logFormat as LogFormat,
  };
}

const DESCRIPTION = "run in the control plane (a Deployment, leader-elected): keep a cloud's VPC routes (gcp, aws, hetzner, openstack) or every node's (ssh) in step with the Kubernetes API";

/**
 * The `controller` subcommand with the controller's flags, the cluster flags and the flags of the target
 * the command line names (`scan`), grouped in its help; `action` receives the checked arguments.
 */
export function controllerCommand(program: Command, scan: ArgvScan, toOption: (spec: OptionSpec, group?: string) => Option, env: NodeJS.ProcessEnv, action: (args: ControllerArgs) => Promise<void>): Command {
  const command = program.command("controller").description(DESCRIPTION);
  for (const spec of [...controllerOptions, ...clusterOptions]) command.addOption(toOption(spec));
  const named = scan.command === "controller" && scan.target !== undefined ? targetFactory(scan.target) : undefined;
  if (named && (CONTROLLER_TARGETS as readonly string[]).includes(named.name)) {
    for (const spec of targetOptions(named)) command.addOption(toOption(spec, `Target ${named.name} (--target ${named.name}):`));
  } else command.addHelpText("after", `\n\`podroutes controller --target ${CONTROLLER_TARGETS.join("|")} --help\` shows a target's flags.`);
  return command.action(async (flags: Record<string, unknown>) => action(controllerArgs(flags, env)));
}

/** Parses `controller ...` argv with the CLI's own argument layer, running nothing (the manifests test uses it). */
export function parseControllerArgv(argv: string[], env: NodeJS.ProcessEnv, scan: ArgvScan, toOption: (spec: OptionSpec, group?: string) => Option): Promise<ControllerArgs> {
  return parseOnly<ControllerArgs>(argv, (program, action) => controllerCommand(program, scan, toOption, env, action));
}

/** Runs the controller until SIGTERM or SIGINT (exit 0) or until it loses the Lease (exit 1: restart clean). */
export async function runController(args: ControllerArgs): Promise<number> {
  const log = createLogger({ format: args.logFormat });
  const controller = await startController({
    target: args.target,
    targetOptions: {
      ...args.values,
      cluster: args.cluster,
      ...(args.clusterCIDR ? { clusterCIDR: args.clusterCIDR } : {}),
      parallel: args.parallel,
      env: process.env,
      warn: (message) => log.warn(message),
      interactive: false,
    },
    ...(args.kubeconfig ? { kubeconfig: args.kubeconfig } : {}),
    ...(args.context ? { context: args.context } : {}),
    election: args.election,
    resyncMs: args.resyncMs,
    listen: args.listen,
    log,
    env: process.env,
  });
  const outcome = await new Promise<{ signal: string } | { lost: string }>((resolve) => {
    process.once("SIGTERM", () => resolve({ signal: "SIGTERM" }));
    process.once("SIGINT", () => resolve({ signal: "SIGINT" }));
    void controller.lost.then((why) => resolve({ lost: why }));
  });
  if ("signal" in outcome) log.info("stopping: cancelling in-flight work, then releasing the Lease", { signal: outcome.signal });
  await controller.stop();
  return "lost" in outcome ? EXIT.failed : EXIT.ok;
}
