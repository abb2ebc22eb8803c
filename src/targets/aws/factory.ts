/**
 * `--target aws`: reads and checks the target's flags, then builds the EC2 client (the SDK is imported
 * only here, lazily) and the AwsTarget. Everything wrong with the flags fails here, before any call.
 */
import { readOption, readOptionList, readOptions, requireOption, wholeNumber, type OptionSpec } from "../../options.js";
import { maxInFlightOption } from "../each-change.js";
import type { TargetFactory } from "../registry.js";
import { createEc2, endpointOption, regionOption, settingsFrom } from "./ec2.js";
import { AwsTarget, clusterTagKey, DEFAULT_ROUTE_LIMIT, MAX_ROUTE_LIMIT, type NextHopKind } from "./target.js";

const routeTableOption: OptionSpec<string> = {
  flags: "--route-table <id...>",
  description: `aws: route tables to write (repeatable; default: every table tagged ${clusterTagKey("<cluster>")})`,
  parse: (text) => {
    if (!/^rtb-[0-9a-f]{8,17}$/.test(text)) throw new Error("not a route table id (rtb-...)");
    return text;
  },
};
const nextHopOption: OptionSpec<NextHopKind> = {
  flags: "--next-hop <kind>",
  description: "aws: route to the node's network interface (eni) or instance (instance)",
  default: "eni",
  choices: ["eni", "instance"],
};
const routeLimitOption: OptionSpec<number> = {
  flags: "--route-limit <n>",
  description: `aws: routes of each family a route table may hold, local and propagated ones aside (AWS's quota: ${DEFAULT_ROUTE_LIMIT} by default, at most ${MAX_ROUTE_LIMIT})`,
  default: String(DEFAULT_ROUTE_LIMIT),
  // AWS raises its routes-per-table quota to 1,000 at most: a higher limit could only fail at EC2.
  parse: wholeNumber(1, MAX_ROUTE_LIMIT),
};
const CLUSTER_CIDR_NEEDED = "AWS routes carry no tags, so podroutes only touches routes inside the cluster CIDR (e.g. --cluster-cidr 10.200.0.0/16)";

export const awsTarget: TargetFactory = {
  name: "aws",
  description: "VPC route tables through the EC2 API (routes to each node's network interface or instance)",
  options: [regionOption, endpointOption, routeTableOption, nextHopOption, routeLimitOption, maxInFlightOption],
  defaultNodes: "aws",
  // Without an inventory, instances tagged kubernetes.io/cluster/<cluster> are the cluster's nodes, as for --nodes aws.
  marksSuffice: true,
  needsClusterCIDR: CLUSTER_CIDR_NEEDED,
  async create(options) {
    readOptions(awsTarget.options, options); // every bad flag at once
    const clusterCIDR = requireOption<string>("--target aws", options, "clusterCIDR", "--cluster-cidr", CLUSTER_CIDR_NEEDED);
    const routeTables = readOptionList(routeTableOption, options);
    const settings = settingsFrom(options);
    const target = {
      cluster: options.cluster || "kubernetes",
      clusterCIDR,
      routeTables: [...new Set(routeTables)],
      nextHop: readOption(nextHopOption, options)!,
      routeLimit: readOption(routeLimitOption, options)!,
      parallel: readOption(maxInFlightOption, options)!,
      ...(options.initialInFlight !== undefined ? { initialInFlight: options.initialInFlight } : {}),
    };
    return new AwsTarget(await createEc2(settings), target);
  },
};
