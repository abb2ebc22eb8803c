/**
 * `podroutes agent`: its flags (declared like the targets', checked before anything starts), the
 * arguments as a typed value, and the command that runs the agent until SIGTERM or SIGINT.
 */
import { Command, type Option } from "commander";
import { startAgent, type AgentOptions } from "../agent/agent.js";
import { parseListen } from "../observe/health.js";
import { createLogger, LOG_FORMATS, type LogFormat } from "../observe/log.js";
import { duration, readOptions, wholeNumber, type OptionSpec } from "../options.js";
import { contextOption, kubeconfigOption } from "../sources/kubernetes.js";
import { protoOption } from "../targets/linux/factories.js";
import { parseOnly } from "./args.js";
import { PATH_PROBE_DEFAULTS } from "../agent/paths/probes.js";
import { EXIT } from "./exit-codes.js";
import { UsageError } from "../errors.js";

export const agentOptions: OptionSpec[] = [
  kubeconfigOption,
  contextOption,
  { flags: "--node <name>", description: "which Node this host is (default: found from its addresses)", env: "NODE_NAME" },
  { flags: "--resync <duration>", description: "full reconcile period, a backstop to the watches (30s, 10m, 1h)", default: "5m", parse: duration(1000, 24 * 3_600_000) },
  { flags: "--listen <host:port>", description: "where /healthz, /livez, /readyz and /metrics are served", default: "0.0.0.0:9465", parse: parseListen },
  protoOption,
  { flags: "--set-node-condition", description: "set this Node's NetworkUnavailable condition to False once its routes are in place" },
  { flags: "--cleanup-on-exit", description: "on SIGTERM, delete the routes and nexthops podroutes owns on this host (default: leave them)" },
  { flags: "--path-probes <on|off>", description: "probe the path to every peer's pod CIDR with UDP datagrams the agents answer (reported on /metrics, /debug/paths, Events)", default: "on", choices: ["on", "off"] },
  { flags: "--path-probe-rate <per-second>", description: "path probes sent per second at most (at 5,000 Nodes, 2 covers every peer in 42 minutes)", default: "2", parse: wholeNumber(1, 100) },
  { flags: "--path-probe-every <duration>", description: "a peer is probed again no sooner than this (a changed path is probed at once)", default: "30s", parse: duration(1000, 3_600_000) },
  { flags: "--path-probe-port <port>", description: "the UDP port every agent answers path probes on, on its pod CIDR's probe address", default: "9466", parse: wholeNumber(1, 65535) },
  { flags: "--path-probe-address <n>", description: "which address of a pod CIDR is probed and probed from: the n-th (1: the CNI bridge's gateway, as Kubernetes the Hard Way's bridge config has it)", default: "1", parse: wholeNumber(0, 65535) },
  { flags: "--path-probe-readiness", description: "/readyz fails while a path to a peer's pod CIDR is unreachable (default: paths are reported, readiness is routes only)" },
  { flags: "--nodes-from <source>", description: "where Nodes are read: a watch of every Node, or the route set one agent publishes (--publish-route-set; at thousands of Nodes, what reaches each agent is then one shard per route change instead of every kubelet's status report)", default: "nodes", choices: ["nodes", "route-set"] },
  { flags: "--publish-route-set", description: "compete for the Lease podroutes-route-set and, while holding it, publish every Node's name, pod CIDRs and addresses as the route set (with --nodes-from nodes)" },
  { flags: "--route-set-fallback-after <duration>", description: "with --nodes-from route-set: watch every Node once the route set's Lease has not been renewed for this long (its publishers are gone), and go back to the set when one returns", default: "3m", parse: duration(3000, 24 * 3_600_000) },
  { flags: "--route-set-namespace <namespace>", description: "where the route set and its Lease live", default: "podroutes", env: "POD_NAMESPACE" },
  { flags: "--log-format <format>", description: "logs: one JSON object per line, or text", default: "json", choices: LOG_FORMATS },
];

/** The agent's options as flags give them: all but the logger (made from --log-format) and the environment. */
export type AgentArgs = Omit<AgentOptions, "log" | "env"> & { logFormat: LogFormat };

/** The agent's flags as commander collected them, checked and parsed (every bad flag at once). Pure. */
export function agentArgs(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): AgentArgs {
  const values = readOptions(agentOptions, { ...flags, env });
  // The route set has every Node but not their conditions: this Node's is watched by name.
  if (values.nodesFrom === "route-set" && values.node === undefined) throw new UsageError("--nodes-from route-set needs --node (or NODE_NAME): this Node is watched by its name");
  if (values.nodesFrom === "route-set" && values.publishRouteSet === true) throw new UsageError("--publish-route-set needs --nodes-from nodes: the publisher watches every Node");
  return {
    ...(values.kubeconfig !== undefined ? { kubeconfig: values.kubeconfig as string } : {}),
    ...(values.context !== undefined ? { context: values.context as string } : {}),
    ...(values.node !== undefined ? { node: values.node as string } : {}),
    resyncMs: values.resync as number,
    listen: values.listen as AgentArgs["listen"],
    proto: values.proto as number,
    setNodeCondition: values.setNodeCondition === true,
    nodesFrom: values.nodesFrom as AgentArgs["nodesFrom"],
    publishRouteSet: values.publishRouteSet === true,
    routeSetNamespace: values.routeSetNamespace as string,
    routeSetFallbackAfterMs: values.routeSetFallbackAfter as number,
    cleanupOnExit: values.cleanupOnExit === true,
    ...(values.pathProbes === "on"
      ? {
          pathProbes: {
            ratePerSecond: values.pathProbeRate as number,
            minIntervalMs: values.pathProbeEvery as number,
            port: values.pathProbePort as number,
            addressOffset: values.pathProbeAddress as number,
            readiness: values.pathProbeReadiness === true,
            ...PATH_PROBE_DEFAULTS,
          },
        }
      : {}),
    logFormat: values.logFormat as LogFormat,
  };
}

const DESCRIPTION = "run on every node (a DaemonSet): keep this host's routes to every other node's pod CIDRs in step with the Kubernetes API";

/** The `agent` subcommand with its flags; `action` receives the checked arguments. */
export function agentCommand(program: Command, toOption: (spec: OptionSpec) => Option, env: NodeJS.ProcessEnv, action: (args: AgentArgs) => Promise<void>): Command {
  const command = program.command("agent").description(DESCRIPTION);
  for (const spec of agentOptions) command.addOption(toOption(spec));
  return command.action(async (flags: Record<string, unknown>) => action(agentArgs(flags, env)));
}

/** Parses `agent ...` argv with the CLI's own argument layer, running nothing (the manifests test uses it). */
export function parseAgentArgv(argv: string[], env: NodeJS.ProcessEnv, toOption: (spec: OptionSpec) => Option): Promise<AgentArgs> {
  return parseOnly<AgentArgs>(argv, (program, action) => agentCommand(program, toOption, env, action));
}

/** Runs the agent until SIGTERM or SIGINT; routes stay unless --cleanup-on-exit. */
export async function runAgent(args: AgentArgs): Promise<number> {
  const log = createLogger({ format: args.logFormat });
  const agent = await startAgent({ ...args, log, env: process.env });
  const signal = await new Promise<string>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  log.info("stopping", { signal });
  await agent.stop();
  return EXIT.ok;
}
