/**
 * `--target aws`: reads and checks the target's flags, then builds the EC2 client (the SDK is imported
 * only here, lazily) and the AwsTarget. Everything wrong with the flags fails here, before any call.
 */
import { InputError } from "../../inventory.js";
import { clusterRanges } from "../../model.js";
import type { TargetFactory } from "../registry.js";
import { createEc2, endpointOption, regionOption, settingsFrom } from "./ec2.js";
import { AwsTarget, clusterTagKey, type NextHopKind } from "./target.js";

const ROUTE_TABLE_ID = /^rtb-[0-9a-f]{8,17}$/;
/** AWS' default routes-per-table quota. */
export const DEFAULT_ROUTE_LIMIT = 50;

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
    { flags: "--route-limit <n>", description: `aws: routes a route table may hold (AWS default quota ${DEFAULT_ROUTE_LIMIT})`, default: String(DEFAULT_ROUTE_LIMIT) },
  ],
  async create(options) {
    const problems: { value?: string; message: string }[] = [];
    const clusterCIDR = options.clusterCIDR;
    if (!clusterCIDR) {
      problems.push({
        message:
          "--cluster-cidr is required: AWS routes carry no tags, so podroutes only touches routes inside the cluster CIDR (e.g. --cluster-cidr 10.200.0.0/16)",
      });
    } else {
      try {
        clusterRanges(clusterCIDR);
      } catch (error) {
        problems.push({ value: clusterCIDR, message: `--cluster-cidr: ${(error as Error).message}` });
      }
    }
    const routeTables = ([] as string[]).concat((options.routeTable as string[] | string | undefined) ?? []);
    for (const id of routeTables) if (!ROUTE_TABLE_ID.test(id)) problems.push({ value: id, message: "--route-table: not a route table id (rtb-...)" });
    const nextHop = String(options.nextHop ?? "eni");
    if (nextHop !== "eni" && nextHop !== "instance") problems.push({ value: nextHop, message: "--next-hop must be eni or instance" });
    const limitText = String(options.routeLimit ?? DEFAULT_ROUTE_LIMIT);
    const routeLimit = Number(limitText);
    if (!/^\d+$/.test(limitText) || routeLimit < 1 || routeLimit > 10_000) problems.push({ value: limitText, message: "--route-limit must be a whole number from 1 to 10000" });
    if (problems.length) throw new InputError(problems, "aws");
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
