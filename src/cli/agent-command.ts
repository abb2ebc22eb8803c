/**
 * `podroutes agent`: its flags (declared like the targets', checked before anything starts), the
 * arguments as a typed value, and the command that runs the agent until SIGTERM or SIGINT.
 */
import { Command, type Option } from "commander";
import { startAgent, type AgentOptions } from "../agent/agent.js";
import { parseListen } from "../observe/health.js";
import { createLogger, LOG_FORMATS, type LogFormat } from "../observe/log.js";
import { duration, readOptions, type OptionSpec } from "../options.js";
import { contextOption, kubeconfigOption } from "../sources/kubernetes.js";
import { protoOption } from "../targets/linux/factories.js";
import { parseOnly } from "./args.js";
import { EXIT } from "./exit-codes.js";

export const agentOptions: OptionSpec[] = [
  kubeconfigOption,
  contextOption,
  { flags: "--node <name>", description: "which Node this host is (default: found from its addresses)", env: "NODE_NAME" },
  { flags: "--resync <duration>", description: "full reconcile period, a backstop to the watches (30s, 10m, 1h)", default: "5m", parse: duration(1000, 24 * 3_600_000) },
  { flags: "--listen <host:port>", description: "where /healthz, /livez, /readyz and /metrics are served", default: "0.0.0.0:9465", parse: parseListen },
  protoOption,
  { flags: "--set-node-condition", description: "set this Node's NetworkUnavailable condition to False once its routes are in place" },
  { flags: "--cleanup-on-exit", description: "on SIGTERM, delete the routes and nexthops podroutes owns on this host (default: leave them)" },
  { flags: "--log-format <format>", description: "logs: one JSON object per line, or text", default: "json", choices: LOG_FORMATS },
];

/** The agent's options as flags give them: all but the logger (made from --log-format) and the environment. */
export type AgentArgs = Omit<AgentOptions, "log" | "env"> & { logFormat: LogFormat };

/** The agent's flags as commander collected them, checked and parsed (every bad flag at once). Pure. */
export function agentArgs(flags: Record<string, unknown>, env: NodeJS.ProcessEnv): AgentArgs {
  const values = readOptions(agentOptions, { ...flags, env });
  return {
    ...(values.kubeconfig !== undefined ? { kubeconfig: values.kubeconfig as string } : {}),
    ...(values.context !== undefined ? { context: values.context as string } : {}),
    ...(values.node !== undefined ? { node: values.node as string } : {}),
    resyncMs: values.resync as number,
    listen: values.listen as AgentArgs["listen"],
    proto: values.proto as number,
    setNodeCondition: values.setNodeCondition === true,
    cleanupOnExit: values.cleanupOnExit === true,
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
