/**
 * `--target gcp`: reads and checks the target's flags, then builds the Compute client (google-auth-library
 * is imported only when no token file is given) and the GcpTarget. Bad flags fail here, before any call.
 */
import { readOption, readOptions, wholeNumber, type OptionSpec } from "../../options.js";
import { maxInFlightOption } from "../each-change.js";
import type { TargetFactory } from "../registry.js";
import { accessTokenFileOption, computeEndpointOption, computeSettingsFrom, createCompute, projectOption } from "./compute.js";
import { GcpTarget, type NextHopKind } from "./target.js";

const networkOption: OptionSpec<string> = {
  flags: "--network <name>",
  description: "gcp: VPC network the routes belong to",
  required: "the VPC network the routes belong to (e.g. kubernetes-the-hard-way)",
  parse: (text) => {
    if (!/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(text)) throw new Error("not a network name");
    return text;
  },
};
const nextHopOption: OptionSpec<NextHopKind> = {
  flags: "--next-hop <kind>",
  description: "gcp: route to the node's internal IP (ip) or its instance (instance)",
  default: "ip",
  choices: ["ip", "instance"],
};
const priorityOption: OptionSpec<number> = { flags: "--priority <n>", description: "gcp: route priority (0-65535; lower wins)", default: "1000", parse: wholeNumber(0, 65535) };

export const gcpTarget: TargetFactory = {
  name: "gcp",
  description: "VPC routes of a GCP network through the Compute Engine API (as `gcloud compute routes create`)",
  options: [projectOption, networkOption, computeEndpointOption, accessTokenFileOption, nextHopOption, priorityOption, maxInFlightOption],
  defaultNodes: "gcp",
  marksSuffice: true,
  async create(options) {
    readOptions(gcpTarget.options, options); // every bad flag at once
    const settings = {
      cluster: options.cluster || "kubernetes",
      network: readOption(networkOption, options)!,
      nextHop: readOption(nextHopOption, options)!,
      priority: readOption(priorityOption, options)!,
      maxInFlight: readOption(maxInFlightOption, options)!,
      ...(options.clusterCIDR ? { clusterCIDR: options.clusterCIDR } : {}),
    };
    return new GcpTarget(await createCompute(computeSettingsFrom(options)), settings);
  },
};
