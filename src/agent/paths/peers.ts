/**
 * The paths to probe, read from the Nodes the agent watches: for this node and every peer with an IPv4
 * pod CIDR (peers also with an IPv4 InternalIP, the next hop), the address `offset` into it (1 by default: the bridge gateway, the first address, as
 * Kubernetes the Hard Way's bridge config has it), and what the path depends on (pod CIDR, next hop). Pure.
 */
import type { KubeNode } from "../../kube/nodes.js";
import { parseCidr } from "../../model.js";
import type { PathPeer } from "./schedule.js";

/** `offset` addresses into an IPv4 pod CIDR (`10.200.1.0/24`, 1 → `10.200.1.1`), or undefined when it is not one or too small. */
export function addressInPodCidr(text: string, offset: number): string | undefined {
  const parsed = parseCidr(text);
  if (!parsed.ok || parsed.cidr.family !== 4) return undefined;
  const size = 2 ** (32 - parsed.cidr.prefixLength);
  if (offset < 0 || offset >= size) return undefined;
  const value = (parsed.cidr.network + offset) >>> 0;
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join(".");
}

function ipv4PodCidr(node: KubeNode): string | undefined {
  const spec = node.spec;
  const all = Array.isArray(spec?.podCIDRs) ? spec!.podCIDRs : typeof spec?.podCIDR === "string" ? [spec.podCIDR] : [];
  return all.find((text) => typeof text === "string" && /^\d+\.\d+\.\d+\.\d+\//.test(text));
}

function internalIPv4(node: KubeNode): string | undefined {
  const addresses = Array.isArray(node.status?.addresses) ? node.status!.addresses! : [];
  return addresses.find((a) => a?.type === "InternalIP" && typeof a.address === "string" && /^\d+\.\d+\.\d+\.\d+$/.test(a.address))?.address;
}

/** This node's probe address (undefined while its Node or pod CIDR is not known) and its peers'. */
export function pathPeers(nodes: Iterable<KubeNode>, self: string | undefined, offset: number): { own?: string; peers: PathPeer[] } {
  let own: string | undefined;
  const peers: PathPeer[] = [];
  for (const node of nodes) {
    const name = node.metadata?.name;
    const podCidr = ipv4PodCidr(node);
    if (typeof name !== "string" || podCidr === undefined) continue;
    const target = addressInPodCidr(podCidr, offset);
    if (target === undefined) continue;
    if (name === self) {
      own = target;
      continue;
    }
    // No next hop, no route to it (the agents leave such a Node out): nothing to probe.
    const nextHop = internalIPv4(node);
    if (nextHop !== undefined) peers.push({ name, target, key: `${podCidr} via ${nextHop}` });
  }
  return { ...(own !== undefined ? { own } : {}), peers };
}
