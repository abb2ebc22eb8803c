/**
 * `--nodes gcp`: the cluster's nodes are Compute Engine instances of the project, selected by name
 * prefix, label or network tag. Each instance's internal IP is that of its interface on `--network`
 * (an instance with none there is no node of that network; without `--network`, nic0's, as Kubernetes
 * reports a node's InternalIP), its metadata key `pod-cidr` its pod CIDR(s) (comma-separated for
 * dual-stack), as Kubernetes the Hard Way sets it. Instances that hold their IP and will carry pods
 * count: RUNNING, PROVISIONING, STAGING and REPAIRING (being repaired in place, IP kept); a stopping or
 * stopped one is a node leaving.
 */
import { UsageError } from "../errors.js";
import type { RawInventory, RawNode } from "../inventory.js";
import { readOption, readOptionList, type FlagValues, type OptionSpec } from "../options.js";
import {
  accessTokenFileOption,
  computeEndpointOption,
  computeErrorText,
  computeSettingsFrom,
  createCompute,
  interfaceOn,
  networkOption,
  projectOption,
  type ComputeApi,
  type ComputeInstance,
} from "../targets/gcp/compute.js";
import type { NodeSourceFactory } from "./registry.js";

export const POD_CIDR_KEY = "pod-cidr";
const LIVE = new Set(["RUNNING", "PROVISIONING", "STAGING", "REPAIRING"]);

export interface GcpSelector {
  namePrefix?: string;
  /** `key=value` or `key` (any value). */
  labels: string[];
  tags: string[];
  /** The network whose interface gives a node its IP; instances without one there are left out. */
  network?: string;
}

export function selects(instance: ComputeInstance, selector: GcpSelector): boolean {
  if (selector.namePrefix && !instance.name.startsWith(selector.namePrefix)) return false;
  if (selector.network && !interfaceOn(instance, selector.network)) return false;
  for (const label of selector.labels) {
    const [key, value] = label.split("=", 2) as [string, string | undefined];
    const have = instance.labels?.[key];
    if (have === undefined || (value !== undefined && have !== value)) return false;
  }
  const tags = instance.tags?.items ?? [];
  return selector.tags.every((tag) => tags.includes(tag));
}

export function instanceToNode(instance: ComputeInstance, network?: string): RawNode {
  const pod = instance.metadata?.items?.find((item) => item.key === POD_CIDR_KEY)?.value ?? "";
  const nic = network ? interfaceOn(instance, network) : instance.networkInterfaces?.[0];
  return {
    name: instance.name,
    internalIPs: [nic?.networkIP, nic?.ipv6Address].filter((a): a is string => !!a),
    podCIDRs: pod.split(",").map((c) => c.trim()).filter(Boolean),
    labels: { ...(instance.labels ?? {}), "topology.kubernetes.io/zone": instance.zone.split("/").pop()! },
  };
}

/** Reads and selects the instances; `compute` is injectable for tests. */
export async function readGcpNodes(compute: ComputeApi, selector: GcpSelector): Promise<RawInventory> {
  let instances: ComputeInstance[];
  try {
    instances = await compute.listInstances(selector.namePrefix ? `name eq "${selector.namePrefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}.*"` : undefined);
  } catch (error) {
    throw new Error(`gcp nodes: cannot list instances of ${compute.project}: ${computeErrorText(error)}`, { cause: error });
  }
  const nodes = instances
    .filter((i) => LIVE.has(i.status ?? "RUNNING") && selects(i, selector))
    .map((i) => instanceToNode(i, selector.network))
    .sort((a, b) => (a.name ?? "").localeCompare(b.name ?? ""));
  const described = [selector.namePrefix && `name=${selector.namePrefix}*`, selector.network && `network=${selector.network}`, ...selector.labels.map((l) => `label=${l}`), ...selector.tags.map((t) => `tag=${t}`)].filter(Boolean).join(" ");
  return { nodes, source: `gcp:${compute.project}${described ? ` ${described}` : ""}` };
}

const namePrefixOption: OptionSpec<string> = { flags: "--gcp-name-prefix <prefix>", description: "gcp nodes: instance names starting with this (e.g. worker-)" };
const labelOption: OptionSpec<string> = { flags: "--gcp-label <key=value...>", description: "gcp nodes: instance label (repeatable; all must match)" };
const tagOption: OptionSpec<string> = { flags: "--gcp-tag <tag...>", description: "gcp nodes: network tag (repeatable; all must match)" };

/** Which instances to read. They must be chosen: a project holds more than one cluster's machines. */
function selectorOf(options: FlagValues): GcpSelector {
  const namePrefix = readOption(namePrefixOption, options);
  const network = readOption(networkOption, options);
  const selector = {
    ...(namePrefix ? { namePrefix } : {}),
    labels: readOptionList(labelOption, options),
    tags: readOptionList(tagOption, options),
    ...(network ? { network } : {}),
  };
  if (!namePrefix && !selector.labels.length && !selector.tags.length) {
    throw new UsageError("--nodes gcp: select the nodes with --gcp-name-prefix, --gcp-label or --gcp-tag (e.g. --gcp-tag worker)", { flag: "--gcp-name-prefix" });
  }
  return selector;
}

export const gcpSource: NodeSourceFactory = {
  name: "gcp",
  description: "Compute Engine instances by --gcp-name-prefix/--gcp-label/--gcp-tag (networkIP, pod-cidr metadata)",
  options: [projectOption, computeEndpointOption, accessTokenFileOption, networkOption, namePrefixOption, labelOption, tagOption],
  check: (options) => void selectorOf(options),
  async read(options) {
    const selector = selectorOf(options);
    return readGcpNodes(await createCompute(computeSettingsFrom(options)), selector);
  },
};
