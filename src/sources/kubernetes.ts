/**
 * `--nodes kubernetes`: the cluster's Node objects are the inventory (kube/nodes.ts maps them), read from
 * the API found as kubectl finds it (kube/kubeconfig.ts: `--kubeconfig`, `KUBECONFIG`, `~/.kube/config`,
 * in-cluster; `--context`), optionally narrowed by `--selector`. One complete paged list, or an error:
 * a failed list is never an empty inventory. A Node without a pod CIDR yet stays in the inventory without
 * routes to it (it still gets routes to the others on host targets) and is noted on stderr.
 */
import { InputError, type Problem } from "../inventory.js";
import { createKubeClient, KubeApiError } from "../kube/client.js";
import { CredentialError } from "../kube/credentials.js";
import { discoverConnection } from "../kube/kubeconfig.js";
import { readKubeNode } from "../kube/nodes.js";
import { listAll } from "../kube/reflector.js";
import { parseSelector } from "../kube/selector.js";
import { readOption, type OptionSpec } from "../options.js";
import type { NodeSourceFactory } from "./registry.js";

/** Shared with `podroutes agent`, which finds the API the same way. */
export const kubeconfigOption: OptionSpec<string> = { flags: "--kubeconfig <file>", description: "kubernetes: kubeconfig file (default: KUBECONFIG, ~/.kube/config, else the in-cluster service account)" };
export const contextOption: OptionSpec<string> = { flags: "--context <name>", description: "kubernetes: kubeconfig context (default: its current-context)" };
const selectorOption: OptionSpec<string> = {
  flags: "--selector <labels>",
  description: "kubernetes nodes: label selector, e.g. 'node-role.kubernetes.io/worker,zone in (a,b)'",
  // Checked before any request: a typo is a usage error, not an API 400.
  parse: (text) => (parseSelector(text), text),
};

export const kubernetesSource: NodeSourceFactory = {
  name: "kubernetes",
  description: "Node objects from the Kubernetes API (--kubeconfig, --context, --selector; kubeconfig found like kubectl)",
  options: [kubeconfigOption, contextOption, selectorOption],
  async read(options) {
    const selector = readOption(selectorOption, options);
    const kubeconfig = readOption(kubeconfigOption, options);
    const context = readOption(contextOption, options);
    const connection = await discoverConnection({ ...(kubeconfig ? { kubeconfig } : {}), ...(context ? { context } : {}), env: options.env });
    const client = createKubeClient(connection);
    const where = `${connection.server.origin}, ${connection.description}`;
    let items: unknown[];
    try {
      items = (await listAll<unknown>(client, "/api/v1/nodes", selector ? { labelSelector: selector } : {})).items;
    } catch (error) {
      if (error instanceof KubeApiError) throw new KubeApiError(`kubernetes nodes: cannot list Nodes (${where}): ${error.message}`, error.code, error.reason, error.status, { cause: error, failure: error.failure });
      if (error instanceof CredentialError) throw new CredentialError(`kubernetes nodes (${where}): ${error.message}`, { cause: error });
      throw error;
    } finally {
      client.close();
    }

    const problems: Problem[] = [];
    const nodes = [];
    for (const [index, item] of items.entries()) {
      const reading = readKubeNode(item);
      const name = reading.name ?? `items[${index}]`;
      for (const problem of reading.problems) problems.push({ node: name, message: problem.message });
      for (const note of reading.notes) options.warn(`kubernetes nodes: node ${name} ${note}`);
      if (reading.node) nodes.push(reading.node);
    }
    const source = `kubernetes (${where}${selector ? `, selector ${selector}` : ""})`;
    if (problems.length) throw new InputError(problems, `invalid Nodes from ${source}`);
    return { nodes: nodes.sort((a, b) => (a.name ?? "").localeCompare(b.name ?? "")), source };
  },
};

