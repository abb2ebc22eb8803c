/**
 * `--target openstack`: reads and checks the target's flags and the login settings (clouds.yaml or the
 * OS_* variables), then builds the client and the OpenStackTarget. Everything wrong with the flags or the
 * credentials' shape fails here, before any call.
 */
import { readOption, readOptions, requireOption, wholeNumber, type OptionSpec, type ResolvedOptions } from "../../options.js";
import { maxInFlightOption } from "../each-change.js";
import type { TargetFactory } from "../registry.js";
import { cloudConfigFrom, createOpenStackApi, readConfigFiles, type OpenStackApi } from "./client.js";
import { DEFAULT_ROUTE_LIMIT, OpenStackTarget } from "./target.js";

export const osCloudOption: OptionSpec<string> = {
  flags: "--os-cloud <name>",
  description: "openstack: the clouds.yaml entry to log in with (default OS_CLOUD; without either, the OS_* variables)",
  env: "OS_CLOUD",
};
const routerOption: OptionSpec<string> = {
  flags: "--router <name-or-id>",
  description: "openstack: the Neutron router whose extra routes carry the pod routes",
  required: "the Neutron router the cluster's subnets are attached to (as `openstack router list` names it)",
};
const routeLimitOption: OptionSpec<number> = {
  flags: "--route-limit <n>",
  description: `openstack: routes the router may hold in all (Neutron's max_routes: ${DEFAULT_ROUTE_LIMIT} by default)`,
  default: String(DEFAULT_ROUTE_LIMIT),
  parse: wholeNumber(1, 100_000),
};
const wholeListOption: OptionSpec<boolean> = {
  flags: "--whole-list",
  description: "openstack: write the router's whole route list (guarded by its revision) even where add/remove_extraroutes exist",
};
const CLUSTER_CIDR_NEEDED = "Neutron's extra routes carry no tags, so podroutes only touches routes inside the cluster CIDR (e.g. --cluster-cidr 10.200.0.0/16)";

/**
 * Clients by login settings: `--nodes openstack` and `--target openstack` of one command share one, and so
 * one login (a Keystone round trip) and one token.
 */
const clients = new Map<string, { api: OpenStackApi; signal: AbortSignal | undefined; calls: unknown }>();

/** The client for a run's options: clouds.yaml or the OS_* variables, as the openstack CLI reads them. */
export function openstackApiFrom(options: ResolvedOptions): OpenStackApi {
  const cloud = readOption(osCloudOption, options);
  const config = cloudConfigFrom({ env: options.env, ...(cloud ? { cloud, ...readConfigFiles(options.env) } : {}) });
  const key = JSON.stringify(config);
  const known = clients.get(key);
  if (known && known.signal === options.signal && known.calls === options.calls && !options.signal?.aborted) return known.api;
  const api = createOpenStackApi({ config, ...(options.signal ? { signal: options.signal } : {}), ...(options.calls ? { calls: options.calls } : {}) });
  if (clients.size >= 16) clients.clear();
  clients.set(key, { api, signal: options.signal, calls: options.calls });
  return api;
}

export const openstackTarget: TargetFactory = {
  name: "openstack",
  description: "extra routes of a Neutron router (atomic add/remove_extraroutes, else the whole list under its revision), node ports' allowed address pairs",
  options: [osCloudOption, routerOption, routeLimitOption, wholeListOption, maxInFlightOption],
  defaultNodes: "openstack",
  // Without an inventory, servers with metadata kubernetes.io/cluster/<cluster> are the cluster's nodes, as for --nodes openstack.
  marksSuffice: true,
  needsClusterCIDR: CLUSTER_CIDR_NEEDED,
  async create(options) {
    readOptions(openstackTarget.options, options); // every bad flag at once
    const clusterCIDR = requireOption<string>("--target openstack", options, "clusterCIDR", "--cluster-cidr", CLUSTER_CIDR_NEEDED);
    return new OpenStackTarget(openstackApiFrom(options), {
      cluster: options.cluster || "kubernetes",
      clusterCIDR,
      router: readOption(routerOption, options)!,
      routeLimit: readOption(routeLimitOption, options)!,
      wholeList: readOption(wholeListOption, options) === true,
      maxInFlight: readOption(maxInFlightOption, options)!,
      ...(options.initialInFlight !== undefined ? { initialInFlight: options.initialInFlight } : {}),
    });
  },
};
