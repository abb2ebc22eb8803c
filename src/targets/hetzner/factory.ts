/**
 * `--target hetzner`: reads and checks the target's flags, then builds the API client and the
 * HetznerTarget. Everything wrong with the flags (and a missing HCLOUD_TOKEN) fails here, before any call.
 */
import { duration, readOption, readOptions, requireOption, type OptionSpec } from "../../options.js";
import type { TargetFactory } from "../registry.js";
import { createHetznerApi } from "./api.js";
import { defaultSelector, hcloudEndpointOption, hetznerNetworkOption, hetznerSettingsFrom, selectorOption } from "./options.js";
import { HetznerTarget } from "./target.js";

/** The target needs the network; `--nodes hetzner` alone may go without. */
const routeNetworkOption: OptionSpec<string> = { ...hetznerNetworkOption, required: "the Hetzner Cloud network the routes belong to (e.g. k8s)" };
/** As hcloud's own --poll-interval: how often a running action is asked whether it ended. */
export const pollIntervalOption: OptionSpec<number> = {
  flags: "--poll-interval <duration>",
  description: "hetzner: how often a running action is polled, as hcloud's --poll-interval",
  default: "500ms",
  parse: duration(10, 60_000),
};
const CLUSTER_CIDR_NEEDED = "Hetzner routes carry no tags, so podroutes only touches routes inside the cluster CIDR (e.g. --cluster-cidr 10.244.0.0/16)";

export const hetznerTarget: TargetFactory = {
  name: "hetzner",
  description: "the routes of a Hetzner Cloud network through the Hetzner Cloud API (as `hcloud network add-route`)",
  options: [routeNetworkOption, hcloudEndpointOption, selectorOption, pollIntervalOption],
  defaultNodes: "hetzner",
  // Without an inventory, the servers the label selector picks are the cluster's nodes, as for --nodes hetzner.
  marksSuffice: true,
  needsClusterCIDR: CLUSTER_CIDR_NEEDED,
  async create(options) {
    readOptions(hetznerTarget.options, options); // every bad flag at once
    const clusterCIDR = requireOption<string>("--target hetzner", options, "clusterCIDR", "--cluster-cidr", CLUSTER_CIDR_NEEDED);
    const cluster = options.cluster || "kubernetes";
    const api = createHetznerApi({ ...hetznerSettingsFrom(options), pollIntervalMs: readOption(pollIntervalOption, options)! });
    return new HetznerTarget(api, {
      cluster,
      clusterCIDR,
      network: readOption(routeNetworkOption, options)!,
      selector: readOption(selectorOption, options) ?? defaultSelector(cluster),
    });
  },
};
