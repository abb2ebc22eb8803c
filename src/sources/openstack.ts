/**
 * `--nodes openstack`: the cluster's nodes are Nova servers, selected by metadata (`--os-metadata
 * role=worker`, repeatable, all must hold; default: servers with the key `kubernetes.io/cluster/<cluster>`).
 * A server's fixed IPs (its ports' addresses as Nova reports them; on `--os-network` when given, the
 * server's only network otherwise) are its internal IPs, one per family; its `pod-cidr` metadata its pod
 * CIDR(s) (comma-separated for dual-stack); its name its node name. Only ACTIVE (or BUILD) servers count: a
 * stopped, errored or deleted one is a node that is leaving.
 */
import type { RawInventory, RawNode } from "../inventory.js";
import { readOption, readOptionList, type OptionSpec } from "../options.js";
import { openstackErrorText, type OpenStackApi, type Server } from "../targets/openstack/client.js";
import { openstackApiFrom, osCloudOption } from "../targets/openstack/factory.js";
import { clusterMetadataKey } from "../targets/openstack/target.js";
import type { NodeSourceFactory } from "./registry.js";

export const POD_CIDR_METADATA = "pod-cidr";
const LIVE_STATUSES = new Set(["ACTIVE", "BUILD"]);

/** `role=worker` (the key with that value) or `kubernetes.io/cluster/k8s` (the key, any value). */
export interface MetadataRequirement {
  key: string;
  value?: string;
}

export function parseMetadataRequirement(text: string): MetadataRequirement {
  const eq = text.indexOf("=");
  if (eq === 0 || text.trim() === "") throw new Error("must be KEY or KEY=VALUE (e.g. role=worker)");
  return eq < 0 ? { key: text } : { key: text.slice(0, eq), value: text.slice(eq + 1) };
}

export function matchesMetadata(requirements: MetadataRequirement[], metadata: Record<string, string>): boolean {
  return requirements.every((r) => Object.hasOwn(metadata, r.key) && (r.value === undefined || metadata[r.key] === r.value));
}

/** One node per server (pure); undefined with a reason when its network cannot be told. */
export function serverToNode(server: Server, network?: string): { node: RawNode } | { skipped: string } {
  const networks = Object.keys(server.addresses).sort();
  const chosen = network ?? (networks.length === 1 ? networks[0] : undefined);
  if (chosen === undefined) {
    return { skipped: networks.length ? `server ${server.name} is on ${networks.length} networks (${networks.join(", ")}): name the cluster's with --os-network` : `server ${server.name} has no fixed IP` };
  }
  const fixed = (server.addresses[chosen] ?? []).filter((a) => (a.type ?? "fixed") === "fixed");
  const internalIPs = [fixed.find((a) => a.version === 4)?.addr, fixed.find((a) => a.version === 6)?.addr].filter((a): a is string => !!a);
  const podCIDRs = (server.metadata[POD_CIDR_METADATA] ?? "").split(",").map((c) => c.trim()).filter(Boolean);
  return { node: { name: server.name, internalIPs, podCIDRs, labels: { "podroutes.io/server-id": server.id, "podroutes.io/network": chosen } } };
}

/** Reads the servers; `api` is injectable for tests. */
export async function readOpenStackNodes(api: OpenStackApi, selector: MetadataRequirement[], options: { network?: string; warn: (message: string) => void; source: string }): Promise<RawInventory> {
  let servers: Server[];
  try {
    servers = await api.listServers();
  } catch (error) {
    throw new Error(`openstack nodes: cannot list servers: ${openstackErrorText(error)}`, { cause: error });
  }
  const nodes: RawNode[] = [];
  for (const server of servers) {
    if (!LIVE_STATUSES.has(server.status) || !matchesMetadata(selector, server.metadata)) continue;
    const found = serverToNode(server, options.network);
    if ("skipped" in found) options.warn(`openstack nodes: ${found.skipped}; left out`);
    else nodes.push(found.node);
  }
  nodes.sort((a, b) => (a.name ?? "").localeCompare(b.name ?? ""));
  return { nodes, source: options.source };
}

const metadataOption: OptionSpec<MetadataRequirement> = {
  flags: "--os-metadata <key[=value]...>",
  description: "openstack nodes: server metadata KEY or KEY=VALUE every node holds (repeatable; default the key kubernetes.io/cluster/<cluster>)",
  parse: parseMetadataRequirement,
};
const networkOption: OptionSpec<string> = {
  flags: "--os-network <name>",
  description: "openstack nodes: the network whose fixed IPs are the nodes' internal IPs (default: each server's only network)",
};

export const openstackSource: NodeSourceFactory = {
  name: "openstack",
  description: "Nova servers selected by --os-metadata (fixed IPs, pod-cidr metadata, server name)",
  options: [osCloudOption, metadataOption, networkOption],
  async read(options) {
    const given = readOptionList(metadataOption, options);
    const selector = given.length ? given : [{ key: clusterMetadataKey(options.cluster || "kubernetes") }];
    const network = readOption(networkOption, options);
    const source = `openstack:${selector.map((r) => (r.value === undefined ? r.key : `${r.key}=${r.value}`)).join(",")}`;
    return readOpenStackNodes(openstackApiFrom(options), selector, { ...(network ? { network } : {}), warn: options.warn, source });
  },
};
