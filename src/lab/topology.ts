/**
 * The lab's clusters as plain data: the seeds' two clusters and a generated one of N workers. Pure, so
 * the addresses the lab builds are the ones the seeds print, and tests can check them without root.
 */
import { UsageError } from "../errors.js";

export interface LabWorkerSpec {
  /** Node name and hostname (`worker-0`). */
  name: string;
  internalIP: string;
  podCIDR: string;
  /** The bridge address the CNI plugin gives the worker: the pods' gateway. */
  podGateway: string;
}

export interface LabTopology {
  topology: string;
  cluster: string;
  clusterCIDR: string;
  /** The VPC subnet every worker and the jumpbox sit on. */
  vpcPrefixLength: number;
  jumpboxIP: string;
  /** The control plane's address (the seed's controller-0), where tests run an API server. */
  controllerIP: string;
  workers: LabWorkerSpec[];
}

export const TOPOLOGIES = ["gcp-seed", "vultr-seed"] as const;

/** Workers the lab builds at most: the VPC is one /24, and each worker costs a handful of namespaces. */
export const MAX_LAB_WORKERS = 200;

/**
 * `gcp-seed`: seed 000's cluster, workers 10.240.0.20-22. `vultr-seed`: seed 002's, workers
 * 10.240.0.6-8. `workers` (with gcp-seed addressing) gives N workers from 10.240.0.20 upwards.
 */
export function labTopology(topology: string, workers?: number): LabTopology {
  if (topology !== "gcp-seed" && topology !== "vultr-seed") {
    throw new Error(`lab: unknown topology ${JSON.stringify(topology)} (known: ${TOPOLOGIES.join(", ")})`);
  }
  const count = workers ?? 3;
  if (!Number.isInteger(count) || count < 1 || count > MAX_LAB_WORKERS) {
    throw new UsageError(`--workers ${JSON.stringify(String(workers))}: must be a whole number from 1 to ${MAX_LAB_WORKERS}`, { flag: "--workers" });
  }
  const firstHost = topology === "vultr-seed" ? 6 : 20;
  if (firstHost + count > 250) throw new Error(`lab: ${topology} addressing fits at most ${250 - firstHost} workers`);
  return {
    topology,
    cluster: "kubernetes-the-hard-way",
    clusterCIDR: "10.200.0.0/16",
    vpcPrefixLength: 24,
    jumpboxIP: "10.240.0.2",
    // Seed 000's controller-0; the Vultr seed's workers start at .6, its controllers below them.
    controllerIP: topology === "vultr-seed" ? "10.240.0.3" : "10.240.0.10",
    workers: Array.from({ length: count }, (_, i) => ({
      name: `worker-${i}`,
      internalIP: `10.240.0.${firstHost + i}`,
      podCIDR: `10.200.${i}.0/24`,
      podGateway: `10.200.${i}.1`,
    })),
  };
}

/** The bridge CNI config of one worker, as Kubernetes the Hard Way's `10-bridge.conf`. */
export function bridgeCniConfig(worker: LabWorkerSpec, ipamDataDir: string): object {
  return {
    cniVersion: "1.0.0",
    name: "bridge",
    type: "bridge",
    bridge: "cni0",
    isGateway: true,
    // KTHW masquerades; the lab does not, so a pod's packets arrive with the pod's own source address
    // and verify can see which worker forwarded them.
    ipMasq: false,
    ipam: {
      type: "host-local",
      ranges: [[{ subnet: worker.podCIDR, gateway: worker.podGateway }]],
      routes: [{ dst: "0.0.0.0/0" }],
      // Keep IPAM state with the lab's state, not in the host's /var/lib/cni.
      dataDir: ipamDataDir,
    },
  };
}
