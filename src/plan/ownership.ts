/**
 * The one guard on what podroutes may remove, as the route controller's isResponsibleForRoute: a route
 * is podroutes' business only if the target marked it as owned AND, when a cluster CIDR is known, its
 * destination lies inside that CIDR. A mislabelled route elsewhere is left alone.
 */
import { cidrContains, clusterRanges, parseCidr } from "../model.js";

/**
 * The guard for one cluster: whether a route on `destination` is podroutes' business. `clusterCIDR` is
 * the inventory's validated text, one range per family (comma-separated), parsed once per guard.
 */
export function responsibleFor(clusterCIDR: string | undefined): (destination: string) => boolean {
  if (clusterCIDR === undefined) return () => true;
  const ranges = clusterRanges(clusterCIDR);
  return (destination) => {
    const route = parseCidr(destination);
    return route.ok && ranges.some((cluster) => cidrContains(cluster, route.cidr));
  };
}
