/**
 * `--target gcp`: reads and checks the target's flags, then builds the Compute client (google-auth-library
 * is imported only when no token file is given) and the GcpTarget. Bad flags fail here, before any call.
 */
import { usageErrors } from "../../errors.js";
import { clusterRanges } from "../../model.js";
import type { TargetFactory } from "../registry.js";
import { accessTokenFileOption, computeEndpointOption, computeSettingsFrom, createCompute, networkOption, projectOption } from "./compute.js";
import { GcpTarget, type NextHopKind } from "./target.js";

export const gcpTarget: TargetFactory = {
  name: "gcp",
  description: "VPC routes of a GCP network through the Compute Engine API (as `gcloud compute routes create`)",
  options: [
    projectOption,
    computeEndpointOption,
    accessTokenFileOption,
    networkOption,
    { flags: "--next-hop <kind>", description: "gcp: route to the node's internal IP (ip) or its instance (instance)", default: "ip" },
    { flags: "--priority <n>", description: "gcp: route priority (0-65535; lower wins)", default: "1000" },
    { flags: "--max-in-flight <n>", description: "gcp: API operations in flight at once (default: --parallel)" },
  ],
  async create(options) {
    const problems: { flag: string; message: string }[] = [];
    const network = options.network as string | undefined;
    if (!network) problems.push({ flag: "--network", message: "--network is required (the VPC network, e.g. kubernetes-the-hard-way)" });
    else if (!/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(network)) problems.push({ flag: "--network", message: `--network ${JSON.stringify(network)}: not a network name` });
    // `--next-hop` is one option shared with aws, whose default is `eni`: for GCP the interface's IP is `ip`.
    const nextHop = options.nextHop === undefined || options.nextHop === "eni" ? "ip" : String(options.nextHop);
    if (nextHop !== "ip" && nextHop !== "instance") problems.push({ flag: "--next-hop", message: `--next-hop ${JSON.stringify(nextHop)}: must be ip or instance` });
    const priorityText = String(options.priority ?? "1000");
    const priority = Number(priorityText);
    if (!/^\d+$/.test(priorityText) || priority > 65535) problems.push({ flag: "--priority", message: `--priority ${JSON.stringify(priorityText)}: must be a whole number from 0 to 65535` });
    const inFlightText = String(options.maxInFlight ?? options.parallel ?? 16);
    const maxInFlight = Number(inFlightText);
    if (!/^\d+$/.test(inFlightText) || maxInFlight < 1 || maxInFlight > 1000) {
      problems.push({ flag: "--max-in-flight", message: `--max-in-flight ${JSON.stringify(inFlightText)}: must be a whole number from 1 to 1000` });
    }
    if (options.clusterCIDR) {
      try {
        clusterRanges(options.clusterCIDR);
      } catch (error) {
        problems.push({ flag: "--cluster-cidr", message: `--cluster-cidr ${JSON.stringify(options.clusterCIDR)}: ${(error as Error).message}` });
      }
    }
    if (problems.length) throw usageErrors("gcp", problems);
    const compute = await createCompute(computeSettingsFrom("gcp", options));
    return new GcpTarget(compute, {
      cluster: options.cluster || "kubernetes",
      network: network!,
      nextHop: nextHop as NextHopKind,
      priority,
      maxInFlight,
      ...(options.clusterCIDR ? { clusterCIDR: options.clusterCIDR } : {}),
    });
  },
};
