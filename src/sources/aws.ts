/**
 * `--nodes aws`: the cluster's nodes are EC2 instances, selected by filters (`--aws-filter
 * tag:Role=worker`, repeatable; default: instances tagged `kubernetes.io/cluster/<cluster>`). Each
 * instance's private IP is its internal IP, its `pod-cidr` tag its pod CIDR(s) (comma-separated for
 * dual-stack), its Name tag its node name. Only running or starting instances count: a stopping or
 * terminated instance is a node that is leaving.
 */
import type { Filter, Instance } from "@aws-sdk/client-ec2";
import type { RawInventory, RawNode } from "../inventory.js";
import { readOptionList, type OptionSpec } from "../options.js";
import { createEc2, endpointOption, regionOption, settingsFrom, awsErrorText, type Ec2Api } from "../targets/aws/ec2.js";
import type { NodeSourceFactory } from "./registry.js";

export const POD_CIDR_TAG = "pod-cidr";

/** `tag:Role=worker`, `vpc-id=vpc-1,vpc-2`: the aws CLI's NAME=VALUES with comma-separated values. */
export function parseFilter(text: string): Filter {
  const eq = text.indexOf("=");
  if (eq <= 0 || eq === text.length - 1) throw new Error("must be NAME=VALUE[,VALUE...] (e.g. tag:Role=worker)");
  return { Name: text.slice(0, eq), Values: text.slice(eq + 1).split(",") };
}

function tagOf(instance: Instance, key: string): string | undefined {
  return instance.Tags?.find((tag) => tag.Key === key)?.Value;
}

/** One node per instance; validation (names, CIDRs, overlaps) happens afterwards, for every source alike. */
export function instanceToNode(instance: Instance): RawNode {
  const podCIDRs = (tagOf(instance, POD_CIDR_TAG) ?? "").split(",").map((c) => c.trim()).filter(Boolean);
  const internalIPs = [instance.PrivateIpAddress, instance.Ipv6Address].filter((a): a is string => !!a);
  return {
    name: tagOf(instance, "Name") ?? instance.InstanceId,
    internalIPs,
    podCIDRs,
    ...(instance.PublicIpAddress ? { sshAddress: instance.PublicIpAddress } : {}),
    ...(instance.PrivateDnsName ? { fqdn: instance.PrivateDnsName } : {}),
    labels: {
      ...(instance.InstanceId ? { "podroutes.io/instance-id": instance.InstanceId } : {}),
      ...(instance.Placement?.AvailabilityZone ? { "topology.kubernetes.io/zone": instance.Placement.AvailabilityZone } : {}),
    },
  };
}

/** Reads the instances; `ec2` is injectable for tests. */
export async function readAwsNodes(ec2: Ec2Api, filters: Filter[], source: string): Promise<RawInventory> {
  let instances: Instance[];
  try {
    instances = await ec2.instances([...filters, { Name: "instance-state-name", Values: ["pending", "running"] }]);
  } catch (error) {
    throw new Error(`aws nodes: cannot describe instances: ${awsErrorText(error)}`, { cause: error });
  }
  const nodes = instances.map(instanceToNode).sort((a, b) => (a.name ?? "").localeCompare(b.name ?? ""));
  return { nodes, source };
}

const filterOption: OptionSpec<Filter> = {
  flags: "--aws-filter <filter...>",
  description: "aws nodes: EC2 filter NAME=VALUE[,VALUE] (repeatable; default tag-key=kubernetes.io/cluster/<cluster>)",
  parse: parseFilter,
};

export const awsSource: NodeSourceFactory = {
  name: "aws",
  description: "EC2 instances selected by --aws-filter (private IP, pod-cidr tag, Name tag)",
  options: [regionOption, endpointOption, filterOption],
  async read(options) {
    const given = readOptionList(filterOption, options);
    const cluster = options.cluster || "kubernetes";
    const filters = given.length ? given : [{ Name: "tag-key", Values: [`kubernetes.io/cluster/${cluster}`] }];
    const ec2 = await createEc2(settingsFrom(options));
    try {
      return await readAwsNodes(ec2, filters, `aws:${filters.map((f) => `${f.Name}=${(f.Values ?? []).join(",")}`).join(" ")}`);
    } finally {
      ec2.close();
    }
  },
};
