/**
 * `--nodes azure`: the cluster's nodes are Azure VMs of a resource group, selected by tags (`--azure-tag
 * role=worker`, repeatable, all must match; default: `k8s-azure-cluster-name=<cluster>`, the tag
 * cloud-provider-azure puts on a cluster's resources). Each VM's primary network interface gives its
 * internal IPs (the private IPs of its IP configurations), its `pod-cidr` tag its pod CIDR(s)
 * (comma-separated for dual-stack), its `node-name` tag its node name (default: the VM name, lowercased,
 * as Kubernetes names an Azure node). A VM being deleted is a node that is leaving, and is left out.
 */
import type { RawInventory, RawNode } from "../inventory.js";
import { readOption, readOptionList, type OptionSpec } from "../options.js";
import { armEndpointOption, armErrorText, armSettingsFrom, caFileOption, createArm, credentialOption, resourceGroupOption, subscriptionOption, tokenFileOption, type ArmApi, type ArmNic, type ArmVm } from "../targets/azure/arm.js";
import { CLUSTER_TAG } from "../targets/azure/target.js";
import type { NodeSourceFactory } from "./registry.js";

export const POD_CIDR_TAG = "pod-cidr";
export const NODE_NAME_TAG = "node-name";

export interface TagSelector {
  key: string;
  /** Undefined: the tag need only exist. */
  value?: string;
}

/** `role=worker` or `role` (the tag exists). */
export function parseTagSelector(text: string): TagSelector {
  const eq = text.indexOf("=");
  const key = eq < 0 ? text : text.slice(0, eq);
  if (!key || /[<>%&\\?/]/.test(key)) throw new Error("must be KEY[=VALUE], KEY without < > % & \\ ? / (e.g. role=worker)");
  return eq < 0 ? { key } : { key, value: text.slice(eq + 1) };
}

/** Whether a VM's tags match every selector (tag names compare case-insensitively, as Azure's do). */
export function matchesTags(tags: Record<string, string>, selectors: TagSelector[]): boolean {
  const lower = new Map(Object.entries(tags).map(([k, v]) => [k.toLowerCase(), v]));
  return selectors.every((s) => lower.has(s.key.toLowerCase()) && (s.value === undefined || lower.get(s.key.toLowerCase()) === s.value));
}

function tag(vm: ArmVm, key: string): string | undefined {
  return Object.entries(vm.tags).find(([k]) => k.toLowerCase() === key)?.[1];
}

/** One node per VM; validation (names, CIDRs, overlaps) happens afterwards, for every source alike. */
export function vmToNode(vm: ArmVm, nicsById: Map<string, ArmNic>): RawNode {
  const primary = vm.nicIds.map((id) => nicsById.get(id.toLowerCase())).find((nic) => nic !== undefined);
  const addresses = primary?.addresses ?? [];
  const internalIPs = [...addresses.filter((a) => !a.includes(":")), ...addresses.filter((a) => a.includes(":"))];
  const podCIDRs = (tag(vm, POD_CIDR_TAG) ?? "").split(",").map((c) => c.trim()).filter(Boolean);
  return {
    name: tag(vm, NODE_NAME_TAG) ?? vm.name.toLowerCase(),
    internalIPs,
    podCIDRs,
    labels: { "podroutes.io/vm-id": vm.id, ...(primary ? { "podroutes.io/nic-id": primary.id } : {}) },
  };
}

/** Reads the VMs and the subscription's NICs; `arm` is injectable for tests. */
export async function readAzureNodes(arm: ArmApi, resourceGroup: string, selectors: TagSelector[], source: string): Promise<RawInventory> {
  let vms: ArmVm[];
  let nics: ArmNic[];
  try {
    [vms, nics] = await Promise.all([arm.listVirtualMachines(resourceGroup), arm.listNetworkInterfaces()]);
  } catch (error) {
    throw new Error(`azure nodes: cannot list the VMs of resource group ${resourceGroup} and their network interfaces: ${armErrorText(error)}`, { cause: error });
  }
  const nicsById = new Map(nics.map((nic) => [nic.id.toLowerCase(), nic]));
  const nodes = vms
    .filter((vm) => vm.provisioningState !== "Deleting" && matchesTags(vm.tags, selectors))
    .map((vm) => vmToNode(vm, nicsById))
    .sort((a, b) => (a.name ?? "").localeCompare(b.name ?? ""));
  return { nodes, source };
}

const tagOption: OptionSpec<TagSelector> = {
  flags: "--azure-tag <tag...>",
  description: `azure nodes: VM tag KEY[=VALUE] every node carries (repeatable; default ${CLUSTER_TAG}=<cluster>)`,
  parse: parseTagSelector,
};

export const azureSource: NodeSourceFactory = {
  name: "azure",
  description: `Azure VMs of --resource-group selected by --azure-tag (primary NIC's private IPs, ${POD_CIDR_TAG} tag)`,
  options: [subscriptionOption, resourceGroupOption, armEndpointOption, credentialOption, tokenFileOption, caFileOption, tagOption],
  async read(options) {
    const given = readOptionList(tagOption, options);
    const cluster = options.cluster || "kubernetes";
    const selectors = given.length ? given : [{ key: CLUSTER_TAG, value: cluster }];
    const resourceGroup = readOption(resourceGroupOption, options)!;
    const arm = await createArm(armSettingsFrom(options));
    try {
      return await readAzureNodes(arm, resourceGroup, selectors, `azure:${resourceGroup} ${selectors.map((s) => (s.value === undefined ? s.key : `${s.key}=${s.value}`)).join(" ")}`);
    } finally {
      arm.close();
    }
  },
};
