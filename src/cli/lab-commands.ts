/**
 * `podroutes demo` and `podroutes lab up|status|exec|down`: the local lab's commands. Their flags are
 * declared like the targets' (checked before anything is built) and each action returns its exit code.
 */
import { Option, type Command } from "commander";
import { existingNamespaces, labDown, labNamespaces, labOption, labProcessAlive, labUp, loadLab, nodeCommand, requireLab, DEFAULT_LAB, type LabState } from "../lab/lab.js";
import { MAX_LAB_WORKERS, TOPOLOGIES } from "../lab/topology.js";
import { readOptions, wholeNumber, type OptionSpec } from "../options.js";
import { renderColumns } from "../plan/render.js";
import { OUTPUT_FORMATS } from "./args.js";
import { EXIT } from "./exit-codes.js";
import type { Output } from "./output.js";

const topologyOption: OptionSpec<string> = { flags: "--topology <name>", description: "which cluster to build", default: "gcp-seed", choices: TOPOLOGIES };
const workersOption: OptionSpec<number> = { flags: "--workers <n>", description: `number of workers (1-${MAX_LAB_WORKERS}; default 3)`, parse: wholeNumber(1, MAX_LAB_WORKERS) };
const outputOption: OptionSpec<string> = { flags: "-o, --output <format>", description: "output format", default: "table", choices: OUTPUT_FORMATS };

const kubernetesOption: OptionSpec<boolean> = {
  flags: "--kubernetes",
  description: "also run the real control plane: etcd, kube-apiserver and kube-controller-manager (pod CIDRs from --allocate-node-cidrs) on the controller, a Node per worker with kubelet heartbeats, an admin kubeconfig (built with Go on first use, then cached)",
};

interface LabFlags {
  lab: string;
  topology: string;
  workers?: number;
  kubernetes?: boolean;
}

/** The checked values of a lab command's flags. */
function labFlags(flags: Record<string, unknown>, specs: OptionSpec[]): LabFlags {
  return readOptions(specs, { ...flags, env: {} }) as unknown as LabFlags;
}

function addOptions(command: Command, specs: OptionSpec[], toOption: (spec: OptionSpec) => Option): Command {
  for (const spec of specs) command.addOption(toOption(spec));
  return command;
}

/** The lab as `-o json` shows it: its state, and the kubeconfig at the top where a script looks first. */
function labView(state: LabState): LabState & { kubeconfig?: string } {
  return { ...state, ...(state.kubernetes ? { kubeconfig: state.kubernetes.kubeconfig } : {}) };
}

/** `demo`: lab up, then each step through `run` (the CLI itself), printed as the user would type it. */
async function demo(flags: LabFlags, out: Output, run: (argv: string[]) => Promise<number>): Promise<number> {
  const bold = process.stdout.isTTY ? (text: string) => `\x1b[1m${text}\x1b[0m` : (text: string) => text;
  const say = (line: string) => out.human(`\n${bold(`$ ${line}`)}`);
  const lab = flags.lab === DEFAULT_LAB ? "" : ` --lab ${flags.lab}`;
  say(`podroutes lab up --topology ${flags.topology}${lab}`);
  await labUp({ name: flags.lab, topology: flags.topology, ...(flags.workers ? { workers: flags.workers } : {}), log: (l) => out.human(l) });
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
    finalCode = await run(argv);
  }
  const self = "node bin/podroutes.js"; // `npm link` puts it on PATH as `podroutes`
  out.human(
    `\nThe lab is still up. Look around with \`ip netns list\`, or run podroutes on a worker, as on a real node:\n  ${self} lab exec${lab} worker-0 -- ${self} list --nodes lab${lab} --target local\nTear it down with:\n  ${self} lab down${lab}`,
  );
  return finalCode;
}

/** Adds `demo` and `lab ...` to the program; `run` runs another podroutes command line (for demo's steps). */
export function addLabCommands(program: Command, out: Output, setCode: (code: number) => void, toOption: (spec: OptionSpec) => Option, run: (argv: string[]) => Promise<number>): void {
  const buildSpecs = [labOption, topologyOption, workersOption, kubernetesOption, outputOption];
  addOptions(program.command("demo").description("build the local lab, then plan, apply, list and verify its routes, printing each step (--kubernetes: with its control plane, an agent per worker)"), buildSpecs, toOption).action(
    async (flags: Record<string, unknown>) => {
      const checked = labFlags(flags, buildSpecs);
      setCode(checked.kubernetes ? await (await import("./kubernetes-demo.js")).kubernetesDemo(checked, out) : await demo(checked, out, run));
    },
  );

  const lab = program.command("lab").description("the local lab: the seeds' clusters in network namespaces (needs root)");
  addOptions(lab.command("up").description("build the lab (a second run changes nothing)"), buildSpecs, toOption)
    .option("--ssh", "also run an OpenSSH server on every worker and the jumpbox, with keys made for this lab (for --target ssh)")
    .action(async (flags: Record<string, unknown>) => {
      const { lab: name, topology, workers, kubernetes } = labFlags(flags, buildSpecs);
      const { state, created } = await labUp({ name, topology, ...(workers ? { workers } : {}), ...(kubernetes ? { kubernetes } : {}), log: (l) => (out.json ? process.stderr.write(`${l}\n`) : out.human(l)) });
      if (flags.ssh) await (await import("../lab/sshd.js")).labSshUp(state, (l) => out.human(l));
      const lab = name === DEFAULT_LAB ? "" : ` --lab ${name}`;
      out.result(labView(state), () =>
        created
          ? [
              `lab ${state.name} is up: ${state.workers.length} workers (${state.topology}). Next: podroutes plan${lab}`,
              ...(state.kubernetes
                ? [
                    `Kubernetes ${state.kubernetes.release} at ${state.kubernetes.url}; admin kubeconfig: ${state.kubernetes.kubeconfig}`,
                    `From a lab namespace: ip netns exec ${state.jumpboxNetns} kubectl --kubeconfig ${state.kubernetes.kubeconfig} get nodes`,
                  ]
                : []),
            ].join("\n")
          : "",
      );
      setCode(EXIT.ok);
    });
  addOptions(lab.command("status").description("show the lab's workers, addresses and namespaces"), [labOption, outputOption], toOption).action(async (flags: Record<string, unknown>) => {
    const { lab: name } = labFlags(flags, [labOption]);
    const state = await loadLab(name);
    if (!state) {
      out.result({ name, up: false }, () => `lab ${name} is not up (podroutes lab up)`);
      setCode(EXIT.failed);
      return;
    }
    const present = await existingNamespaces();
    const missing = labNamespaces(state).filter((ns) => !present.has(ns));
    const stopped = (state.processes ?? []).filter((p) => !labProcessAlive(p));
    const whole = state.status === "up" && !missing.length && !stopped.length;
    out.result({ ...labView(state), up: whole, missingNamespaces: missing, stoppedProcesses: stopped }, () =>
      [
        `lab ${state.name}: ${whole ? "up" : `broken (${[missing.length ? `missing ${missing.join(", ")}` : "", stopped.length ? `stopped: ${stopped.map((p) => p.what).join(", ")}` : "", `status ${state.status}`].filter(Boolean).join("; ")})`}, topology ${state.topology}, cluster ${state.cluster} ${state.clusterCIDR}`,
        `jumpbox ${state.jumpboxIP} (netns ${state.jumpboxNetns})${state.controllerNetns ? `, controller ${state.controllerIP} (netns ${state.controllerNetns})` : ""}`,
        ...(state.kubernetes ? [`Kubernetes ${state.kubernetes.release} at ${state.kubernetes.url}, kubeconfig ${state.kubernetes.kubeconfig}`] : []),
        renderColumns(
          ["NODE", "INTERNAL_IP", "POD_CIDR", "POD_IP", "NETNS"],
          state.workers.map((w) => [w.name, w.internalIP, w.podCIDR, w.podIP ?? "", w.netns]),
        ),
      ].join("\n"),
    );
    setCode(whole ? EXIT.ok : EXIT.failed);
  });
  // The kubelets' part of a --kubernetes lab's Nodes, started by `lab up --kubernetes` (not for users).
  addOptions(lab.command("kubelets", { hidden: true }).description("register the lab's Nodes and keep their Leases fresh, until SIGTERM"), [labOption], toOption).action(async (flags: Record<string, unknown>) => {
    const { runLabKubelets } = await import("../lab/kubernetes/lab-cluster.js");
    await runLabKubelets(labFlags(flags, [labOption]).lab, (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`));
    setCode(EXIT.ok);
  });
  addOptions(
    lab
      .command("exec")
      .description("run a command on a lab node: in its network namespace, with its hostname")
      .argument("<node>", "node name, e.g. worker-0")
      .argument("<command...>", "the command and its arguments (put -- before options of the command)"),
    [labOption],
    toOption,
  ).action(async (node: string, command: string[], flags: Record<string, unknown>) => {
    const argv = nodeCommand(await requireLab(labFlags(flags, [labOption]).lab), node, command);
    const { spawn } = await import("node:child_process");
    const child = spawn(argv[0]!, argv.slice(1), { stdio: "inherit" });
    setCode(await new Promise<number>((resolve, reject) => child.on("error", reject).on("close", (code) => resolve(code ?? 1))));
  });
  addOptions(lab.command("down").description("remove every namespace, process and file the lab made, and nothing else"), [labOption], toOption).action(async (flags: Record<string, unknown>) => {
    const { lab: name } = labFlags(flags, [labOption]);
    const removed = await labDown(name, (l) => out.human(l));
    out.human(removed ? `lab ${name} removed` : "");
    setCode(EXIT.ok);
  });
}
