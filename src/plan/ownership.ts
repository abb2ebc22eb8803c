/**
 * The one guard on what podroutes may remove, as the route controller's isResponsibleForRoute: a route
 * is podroutes' business only if the target marked it as owned AND, when a cluster CIDR is known, its
 * destination lies inside that CIDR. A mislabelled route elsewhere is left alone.
 */
import { cidrContains, parseCidr } from "../model.js";

export function isResponsibleForRoute(destination: string, clusterCIDR: string | undefined): boolean {
  if (clusterCIDR === undefined) return true;
  const cluster = parseCidr(clusterCIDR);
  const route = parseCidr(destination);
  return cluster.ok && route.ok && cidrContains(cluster.cidr, route.cidr);
}
