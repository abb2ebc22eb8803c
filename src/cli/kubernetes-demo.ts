/**
 * `podroutes demo --kubernetes`: the lab with its real control plane, then podroutes as it runs in a
 * cluster — deploy/'s namespace and RBAC applied with kubectl, an agent per worker with its
 * ServiceAccount's own token, pods on different workers reaching each other, a Node joining and being
 * routed, a route deleted by hand coming back. Each step is printed as the command a user would type.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { addLabProcess, addLabWorker, DEFAULT_LAB, labUp, nodeCommand, type LabWorker } from "../lab/lab.js";
import { labKubectl, storedPodCIDRs } from "../lab/kubernetes/lab-cluster.js";
import { kubeletNodeObject } from "../lab/kubernetes/kubelets.js";
import { checkPodPaths } from "../lab/paths.js";
import { packagePath } from "../package-path.js";
import { run } from "../process.js";
import { EXIT } from "./exit-codes.js";
import type { Output } from "./output.js";

/** The package's root (bin/, deploy/). */
function packageRoot(): string {
  const rbac = packagePath(join("deploy", "agent-rbac.yaml"));
  if (!rbac) throw new Error("demo: deploy/agent-rbac.yaml not found: run the demo from a podroutes checkout");
  return dirname(dirname(rbac));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until<T>(what: string, deadlineMs: number, check: () => Promise<T | undefined>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  for (;;) {
    const value = await check();
    if (value !== undefined) return { value, ms: performance.now() - started };
    if (performance.now() - started > deadlineMs) throw new Error(`demo: ${what} did not happen within ${deadlineMs / 1000} s`);
    await sleep(100);
  }
}

/** The routes podroutes owns (proto 150) on a worker: destination → next hop. */
async function ownedRoutes(worker: LabWorker): Promise<Map<string, string>> {
  const listed = await run("ip", ["-n", worker.netns, "-N", "-json", "route", "show", "proto", "150"]);
  return new Map((JSON.parse(listed.stdout || "[]") as { dst: string; gateway?: string }[]).map((r) => [r.dst, r.gateway ?? ""]));
}

async function routedEverywhere(workers: LabWorker[]): Promise<boolean> {
  for (const worker of workers) {
    const routes = await ownedRoutes(worker);
    if (workers.some((other) => other !== worker && routes.get(other.podCIDR) !== other.internalIP)) return false;
  }
  return true;
}

export async function kubernetesDemo(flags: { lab: string; topology: string; workers?: number }, out: Output): Promise<number> {
  const bold = process.stdout.isTTY ? (text: string) => `\x1b[1m${text}\x1b[0m` : (text: string) => text;
  const say = (line: string) => out.human(`\n${bold(`$ ${line}`)}`);
  const labFlag = flags.lab === DEFAULT_LAB ? "" : ` --lab ${flags.lab}`;
  const root = packageRoot();

  say(`podroutes lab up --kubernetes --topology ${flags.topology}${labFlag}`);
  let { state } = await labUp({ name: flags.lab, topology: flags.topology, kubernetes: true, ...(flags.workers ? { workers: flags.workers } : {}), log: (l) => out.human(l) });
  const k8s = state.kubernetes!;
  const kubectl = async (args: string[], input?: string) => {
    const result = await labKubectl(state, args, input);
    if (result.code !== 0) throw new Error(`demo: kubectl ${args.join(" ")}: ${result.stderr.trim()}`);
    return result.stdout;
  };
  const kubectlLine = `ip netns exec ${state.jumpboxNetns} kubectl --kubeconfig ${k8s.kubeconfig}`;
  const showNodes = async () => out.human((await kubectl(["get", "nodes", "-o", "custom-columns=NAME:.metadata.name,INTERNAL_IP:.status.addresses[0].address,POD_CIDR:.spec.podCIDR"])).trimEnd());

  say(`${kubectlLine} get nodes   # pod CIDRs from kube-controller-manager`);
  await showNodes();

  say(`${kubectlLine} apply --server-side -f deploy/namespace.yaml -f deploy/agent-rbac.yaml`);
  out.human((await kubectl(["apply", "--server-side", "-f", join(root, "deploy", "namespace.yaml"), "-f", join(root, "deploy", "agent-rbac.yaml")])).trimEnd());
  const token = (await kubectl(["create", "token", "podroutes-agent", "-n", "podroutes", "--duration", "24h"])).trim();
  const agentDir = join(state.stateDir, "agents");
  await mkdir(agentDir, { recursive: true, mode: 0o700 });
  const agentKubeconfig = join(agentDir, "podroutes-agent.kubeconfig");
  await writeFile(
    agentKubeconfig,
    [
      "apiVersion: v1",
      "kind: Config",
      `clusters: [{name: lab, cluster: {server: "${k8s.url}", certificate-authority: "${k8s.caFile}"}}]`,
      `users: [{name: podroutes-agent, user: {token: "${token}"}}]`,
      "contexts: [{name: podroutes-agent@lab, context: {cluster: lab, user: podroutes-agent}}]",
      "current-context: podroutes-agent@lab",
      "",
    ].join("\n"),
    { mode: 0o600 },
  );

  const bin = join(root, "bin", "podroutes.js");
  const startAgent = async (worker: LabWorker) => {
    // As the DaemonSet's pod: on the node's network, as its Node, with the ServiceAccount's token.
    const argv = [...nodeCommand(state, worker.name, []), "env", `NODE_NAME=${worker.name}`, process.execPath, bin, "agent", "--kubeconfig", agentKubeconfig, "--listen", "127.0.0.1:9465", "--set-node-condition", "--log-format", "text"];
    const fd = openSync(join(agentDir, `${worker.name}.log`), "a");
    try {
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", fd, fd], detached: true });
      child.once("error", () => {});
      child.unref();
      // Recorded at once, so `lab down` ends it whatever happens next.
      await addLabProcess(state.name, { netns: worker.netns, pid: child.pid!, what: `podroutes agent on ${worker.name}` });
    } finally {
      closeSync(fd);
    }
  };

  say(`podroutes agent --kubeconfig podroutes-agent.kubeconfig --set-node-condition   # on every worker, as the DaemonSet runs it`);
  for (const worker of state.workers) await startAgent(worker);
  const first = await until("every worker routed", 60_000, async () => ((await routedEverywhere(state.workers)) ? true : undefined));
  out.human(`every worker has a route to every other worker's pods, ${(first.ms / 1000).toFixed(1)} s after the agents started`);
  await until("NetworkUnavailable=False on every Node", 30_000, async () => {
    const nodes = JSON.parse(await kubectl(["get", "nodes", "-o", "json"])) as { items: { status: { conditions?: { type: string; status: string }[] } }[] };
    return nodes.items.every((n) => n.status.conditions?.some((c) => c.type === "NetworkUnavailable" && c.status === "False")) ? true : undefined;
  });
  say(`${kubectlLine} get nodes -o custom-columns=NAME:.metadata.name,NETWORK_UNAVAILABLE:'.status.conditions[?(@.type=="NetworkUnavailable")].status'`);
  out.human((await kubectl(["get", "nodes", "-o", 'custom-columns=NAME:.metadata.name,NETWORK_UNAVAILABLE:.status.conditions[?(@.type=="NetworkUnavailable")].status'])).trimEnd());

  let failed = false;
  const pingAll = async () => {
    const checks = await checkPodPaths(state);
    for (const check of checks) out.human(`${check.ok ? "ok  " : "FAIL"} ${check.message}`);
    if (checks.some((c) => !c.ok)) failed = true;
  };
  say("ping and traceroute from every pod to every other pod");
  await pingAll();

  out.human(`\n${bold("# a new machine joins: the lab builds its namespace and pod, its kubelet registers the Node")}`);
  const added = await addLabWorker(state.name);
  state = added.state;
  // Registered at once, as its kubelet does when it starts (the lab's kubelets process, which finds the
  // new worker within one 10 s round, then keeps its Lease).
  const joined = performance.now();
  await kubectl(["create", "-f", "-"], JSON.stringify(kubeletNodeObject({ name: added.worker.name, internalIP: added.worker.internalIP })));
  const cidr = await until(`a pod CIDR for ${added.worker.name}`, 30_000, async () => (await storedPodCIDRs(state)).get(added.worker.name) || undefined);
  out.human(`Node ${added.worker.name} (${added.worker.internalIP}) registered; kube-controller-manager gave it ${cidr.value}`);
  if (cidr.value !== added.worker.podCIDR) throw new Error(`demo: ${added.worker.name} got ${cidr.value}, but its pods are in ${added.worker.podCIDR}`);
  await startAgent(added.worker);
  await until(`${added.worker.name} routed everywhere`, 60_000, async () => ((await routedEverywhere(state.workers)) ? true : undefined));
  out.human(`every worker routes ${added.worker.podCIDR} via ${added.worker.internalIP}, ${((performance.now() - joined) / 1000).toFixed(1)} s after the Node registered`);
  await pingAll();

  const [victim, lost] = [state.workers[0]!, state.workers[1]!];
  say(`podroutes lab exec${labFlag} ${victim.name} -- ip route del ${lost.podCIDR}   # drift: a route deleted by hand`);
  const deleted = await run("ip", ["-n", victim.netns, "route", "del", lost.podCIDR]);
  if (deleted.code !== 0) throw new Error(`demo: ip route del ${lost.podCIDR} on ${victim.name}: ${deleted.stderr.trim()}`);
  const repaired = await until(`the route to ${lost.podCIDR} back on ${victim.name}`, 30_000, async () => ((await ownedRoutes(victim)).get(lost.podCIDR) === lost.internalIP ? true : undefined));
  out.human(`${victim.name}'s agent put ${lost.podCIDR} via ${lost.internalIP} back ${repaired.ms.toFixed(0)} ms later`);

  const self = "node bin/podroutes.js";
  out.human(
    `\nThe lab and its cluster are still up. Look around:\n  ${kubectlLine} get nodes,leases -A\nTear it all down (every process, namespace and file) with:\n  ${self} lab down${labFlag}`,
  );
  return failed ? EXIT.failed : EXIT.ok;
}
