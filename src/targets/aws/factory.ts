/**
 * `--target aws`: reads and checks the target's flags, then builds the EC2 client (the SDK is imported
 * only here, lazily) and the AwsTarget. Everything wrong with the flags fails here, before any call.
 */
import { clusterRanges } from "../../model.js";
import type { TargetFactory } from "../registry.js";
import { usageErrors } from "../../errors.js";
import { createEc2, endpointOption, regionOption, settingsFrom } from "./ec2.js";
import { AwsTarget, clusterTagKey, DEFAULT_ROUTE_LIMIT, MAX_ROUTE_LIMIT, type NextHopKind } from "./target.js";

const ROUTE_TABLE_ID = /^rtb-[0-9a-f]{8,17}$/;

export const awsTarget: TargetFactory = {
  name: "aws",
  description: "VPC route tables through the EC2 API (routes to each node's network interface or instance)",
  options: [
    regionOption,
    endpointOption,
    {
      flags: "--route-table <id...>",
      description: `aws: route tables to write (repeatable; default: every table tagged ${clusterTagKey("<cluster>")})`,
    },
    { flags: "--next-hop <kind>", description: "aws: route to the node's network interface (eni) or instance (instance)", default: "eni" },
    {
      flags: "--route-limit <n>",
      description: `aws: routes of each family a route table may hold, local and propagated ones aside (AWS's quota: ${DEFAULT_ROUTE_LIMIT} by default, at most ${MAX_ROUTE_LIMIT})`,
      default: String(DEFAULT_ROUTE_LIMIT),
    },
  ],
  async create(options) {
    const problems: { flag: string; message: string }[] = [];
    const clusterCIDR = options.clusterCIDR;
    if (!clusterCIDR) {
      problems.push({
        flag: "--cluster-cidr",
        message:
          "--cluster-cidr is required: AWS routes carry no tags, so podroutes only touches routes inside the cluster CIDR (e.g. --cluster-cidr 10.200.0.0/16)",
      });
    } else {
      try {
        clusterRanges(clusterCIDR);
      } catch (error) {
        problems.push({ flag: "--cluster-cidr", message: `--cluster-cidr ${JSON.stringify(clusterCIDR)}: ${(error as Error).message}` });
      }
    }
    const routeTables = ([] as string[]).concat((options.routeTable as string[] | string | undefined) ?? []);
    for (const id of routeTables) if (!ROUTE_TABLE_ID.test(id)) problems.push({ flag: "--route-table", message: `--route-table ${JSON.stringify(id)}: not a route table id (rtb-...)` });
    const nextHop = String(options.nextHop ?? "eni");
    if (nextHop !== "eni" && nextHop !== "instance") problems.push({ flag: "--next-hop", message: `--next-hop ${JSON.stringify(nextHop)}: must be eni or instance` });
    const limitText = String(options.routeLimit ?? DEFAULT_ROUTE_LIMIT);
    const routeLimit = Number(limitText);
    if (!/^\d+$/.test(limitText) || routeLimit < 1 || routeLimit > MAX_ROUTE_LIMIT) {
      problems.push({
        flag: "--route-limit",
        message: `--route-limit ${JSON.stringify(limitText)}: must be a whole number from 1 to ${MAX_ROUTE_LIMIT}, the most AWS raises its routes-per-table quota to`,
      });
    }
    if (problems.length) throw usageErrors("aws", problems);
    const settings = settingsFrom("aws", options);
    const ec2 = await createEc2(settings);
    return new AwsTarget(ec2, {
      cluster: options.cluster || "kubernetes",
      clusterCIDR: clusterCIDR!,
      routeTables: [...new Set(routeTables)],
      nextHop: nextHop as NextHopKind,
      routeLimit,
      parallel: options.parallel,
    });
  },
};
