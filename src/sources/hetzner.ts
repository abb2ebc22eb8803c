/**
 * `--nodes hetzner`: the cluster's nodes are Hetzner Cloud servers, selected by a label selector
 * (`--hetzner-selector`, as `hcloud server list -l` takes it; default `podroutes.io/cluster=<cluster>`).
 * Each server's private IP on `--network` is its internal IP (a server not attached to that network is
 * no node of it, and is left out with a warning; without `--network`, its first private network's), its
 * name the node name, and its pod CIDR the label `--pod-cidr-label` (default `podroutes.io/pod-cidr`).
 * Hetzner label values cannot hold a `/`, so the CIDR is written with a `-` before the prefix length:
 * `hcloud server add-label node-1 podroutes.io/pod-cidr=10.244.1.0-24`. A server without the label runs
 * no pods (a control plane): a node with no routes. Only servers starting or running count: one stopping,
 * off or being deleted is a node that is leaving.
 */
import { InputError, type Problem, type RawInventory, type RawNode } from "../inventory.js";
import { readOption, type OptionSpec } from "../options.js";
import { createHetznerApi, type CloudServer } from "../targets/hetzner/api.js";
import { defaultSelector, hcloudEndpointOption, hetznerNetworkOption, hetznerSettingsFrom, selectorOption } from "../targets/hetzner/options.js";
import type { NodeSourceFactory } from "./registry.js";

export const DEFAULT_POD_CIDR_LABEL = "podroutes.io/pod-cidr";
/** Server states in which a server is a node: coming up, up, or moving while up. */
const NODE_STATES = new Set(["initializing", "starting", "running", "migrating"]);

/** `10.244.1.0-24` → `10.244.1.0/24`: a CIDR as a Hetzner label value can hold it; undefined when it is none. */
export function podCidrFromLabel(value: string): string | undefined {
  const m = value.match(/^(\d{1,3}(?:\.\d{1,3}){3})-(\d{1,2})$/);
  return m ? `${m[1]}/${m[2]}` : undefined;
}

/** `10.244.1.0/24` → `10.244.1.0-24`: the label value for a pod CIDR. */
export function podCidrLabelValue(cidr: string): string {
  return cidr.replace("/", "-");
}

/** One node per selected server; validation (names, CIDRs, overlaps) happens afterwards, for every source alike. Pure. */
export function serversToInventory(
  servers: CloudServer[],
  options: { network?: { id: number; name: string }; podCidrLabel: string; source: string; warn?: (message: string) => void },
): RawInventory {
  const problems: Problem[] = [];
  const nodes: RawNode[] = [];
  for (const server of servers) {
    if (!NODE_STATES.has(server.status)) {
      options.warn?.(`hetzner: server ${server.name} (${server.id}) is ${server.status}: left out`);
      continue;
    }
    const attached = options.network ? server.privateNet.find((p) => p.network === options.network!.id) : server.privateNet[0];
    if (!attached) {
      if (options.network) options.warn?.(`hetzner: server ${server.name} (${server.id}) is not attached to network ${options.network.name}: left out`);
      else problems.push({ node: server.name, message: `server ${server.id} is attached to no network: attach it (hcloud server attach-to-network) or name the network with --network` });
      continue;
    }
    const label = server.labels[options.podCidrLabel];
    const podCIDR = label === undefined ? undefined : podCidrFromLabel(label);
    if (label !== undefined && podCIDR === undefined) {
      problems.push({
        node: server.name,
        message: `label ${options.podCidrLabel}=${label} is not a pod CIDR written as a label value can hold it (10.244.1.0-24 for 10.244.1.0/24)`,
      });
      continue;
    }
    nodes.push({
      name: server.name,
      internalIPs: [attached.ip],
      podCIDRs: podCIDR ? [podCIDR] : [],
      labels: { "podroutes.io/server-id": String(server.id) },
    });
  }
  if (problems.length) throw new InputError(problems, "hetzner nodes");
  return { nodes: nodes.sort((a, b) => (a.name ?? "").localeCompare(b.name ?? "")), source: options.source };
}

const podCidrLabelOption: OptionSpec<string> = {
  flags: "--pod-cidr-label <key>",
  description: `hetzner nodes: the server label holding its pod CIDR, written 10.244.1.0-24 for 10.244.1.0/24`,
  default: DEFAULT_POD_CIDR_LABEL,
};

export const hetznerSource: NodeSourceFactory = {
  name: "hetzner",
  description: "Hetzner Cloud servers by --hetzner-selector (private IP on --network, pod CIDR label)",
  options: [hcloudEndpointOption, hetznerNetworkOption, selectorOption, podCidrLabelOption],
  async read(options) {
    const cluster = options.cluster || "kubernetes";
    const selector = readOption(selectorOption, options) ?? defaultSelector(cluster);
    const networkName = readOption(hetznerNetworkOption, options);
    const api = createHetznerApi(hetznerSettingsFrom(options));
    let network: { id: number; name: string } | undefined;
    if (networkName !== undefined) {
      network = await api.findNetwork(networkName).catch((error: unknown) => {
        throw new Error(`hetzner nodes: cannot look up network ${networkName}: ${(error as Error).message}`, { cause: error });
      });
      if (!network) throw new InputError([{ message: `no network ${JSON.stringify(networkName)}; see \`hcloud network list\`` }], "hetzner nodes");
    }
    const servers = await api.listServers({ labelSelector: selector }).catch((error: unknown) => {
      throw new Error(`hetzner nodes: cannot list servers: ${(error as Error).message}`, { cause: error });
    });
    return serversToInventory(servers, {
      ...(network ? { network } : {}),
      podCidrLabel: readOption(podCidrLabelOption, options)!,
      source: `hetzner:${selector}`,
      warn: options.warn,
    });
  },
};
