/**
 * The one guard on what podroutes may remove, as the route controller's isResponsibleForRoute: a route
 * is podroutes' business only if the target marked it as owned AND, when a cluster CIDR is known, its
 * destination lies inside that CIDR. A mislabelled route elsewhere is left alone.
 */
import { cidrContains, clusterRanges, parseCidr } from "../model.js";

/** `clusterCIDR` is the inventory's validated text, one range per family (comma-separated). */
export function isResponsibleForRoute(destination: string, clusterCIDR: string | undefined): boolean {
  if (clusterCIDR === undefined) return true;
  const route = parseCidr(destination);
  return route.ok && clusterRanges(clusterCIDR).some((cluster) => cidrContains(cluster, route.cidr));
}
