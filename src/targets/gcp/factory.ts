/**
 * `--target gcp`: reads and checks the target's flags, then builds the Compute client (google-auth-library
 * is imported only when no token file is given) and the GcpTarget. Bad flags fail here, before any call.
 */
import { readOption, readOptions, wholeNumber, type OptionSpec } from "../../options.js";
import { maxInFlightOption } from "../each-change.js";
import type { TargetFactory } from "../registry.js";
import { accessTokenFileOption, batchCallsOption, computeEndpointOption, computeSettingsFrom, createCompute, networkOption, projectOption } from "./compute.js";
import { GcpTarget, type NextHopKind } from "./target.js";

/** The target needs the network; `--nodes gcp` alone may go without (see compute.ts). */
const routeNetworkOption: OptionSpec<string> = { ...networkOption, required: "the VPC network the routes belong to (e.g. kubernetes-the-hard-way)" };
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
  options: [projectOption, routeNetworkOption, computeEndpointOption, accessTokenFileOption, nextHopOption, priorityOption, maxInFlightOption, batchCallsOption],
  defaultNodes: "gcp",
  marksSuffice: true,
  async create(options) {
    readOptions(gcpTarget.options, options); // every bad flag at once
    const settings = {
      cluster: options.cluster || "kubernetes",
      network: readOption(routeNetworkOption, options)!,
      nextHop: readOption(nextHopOption, options)!,
      priority: readOption(priorityOption, options)!,
      maxInFlight: readOption(maxInFlightOption, options)!,
      ...(options.initialInFlight !== undefined ? { initialInFlight: options.initialInFlight } : {}),
      ...(options.clusterCIDR ? { clusterCIDR: options.clusterCIDR } : {}),
    };
    return new GcpTarget(await createCompute(computeSettingsFrom(options)), settings);
  },
};
