/**
 * `--target azure`: reads and checks the target's flags, then builds the ARM client (the Azure SDKs are
 * imported only here, lazily) and the AzureTarget. Everything wrong with the flags fails here, before any call.
 */
import { readOption, readOptionList, readOptions, requireOption, wholeNumber, type OptionSpec } from "../../options.js";
import { maxInFlightOption } from "../each-change.js";
import type { TargetFactory } from "../registry.js";
import { armEndpointOption, armSettingsFrom, caFileOption, createArm, credentialOption, resourceGroupOption, subscriptionOption, tokenFileOption } from "./arm.js";
import { AZURE_ROUTE_LIMIT, AzureTarget } from "./target.js";

const routeTableOption: OptionSpec<string> = {
  flags: "--route-table <name...>",
  description: "azure: route tables of --resource-group to write (repeatable)",
  required: "the route table (associated with the nodes' subnet) that gets the pod routes",
  parse: (text) => {
    if (!/^[a-zA-Z0-9]([\w.-]{0,78}[\w])?$/.test(text)) throw new Error("not a route table name (1-80 letters, digits, _ . -; starting with a letter or digit)");
    return text;
  },
};
const routeLimitOption: OptionSpec<number> = {
  flags: "--route-limit <n>",
  description: `azure: routes a route table may hold (Azure's limit: ${AZURE_ROUTE_LIMIT})`,
  default: String(AZURE_ROUTE_LIMIT),
  // Azure does not raise the limit of 400 routes per table: a higher one could only fail at ARM.
  parse: wholeNumber(1, AZURE_ROUTE_LIMIT),
};
const CLUSTER_CIDR_NEEDED = "Azure routes carry no tags, so podroutes only touches routes inside the cluster CIDR (e.g. --cluster-cidr 10.200.0.0/16)";

export const azureTarget: TargetFactory = {
  name: "azure",
  description: "Azure route tables through Resource Manager (one PUT of the whole table per change set, If-Match on its ETag)",
  options: [subscriptionOption, resourceGroupOption, routeTableOption, armEndpointOption, credentialOption, tokenFileOption, caFileOption, routeLimitOption, maxInFlightOption],
  defaultNodes: "azure",
  needsClusterCIDR: CLUSTER_CIDR_NEEDED,
  async create(options) {
    readOptions(azureTarget.options, options); // every bad flag at once
    const clusterCIDR = requireOption<string>("--target azure", options, "clusterCIDR", "--cluster-cidr", CLUSTER_CIDR_NEEDED);
    const settings = {
      cluster: options.cluster || "kubernetes",
      clusterCIDR,
      resourceGroup: readOption(resourceGroupOption, options)!,
      routeTables: [...new Set(readOptionList(routeTableOption, options))],
      routeLimit: readOption(routeLimitOption, options)!,
      maxInFlight: readOption(maxInFlightOption, options)!,
    };
    return new AzureTarget(await createArm(armSettingsFrom(options)), settings);
  },
};
