/**
 * What the kubelets of a lab would do for its Nodes, and nothing more: register each worker's Node (its
 * InternalIP and Hostname addresses, a Ready condition, no pod CIDR: kube-controller-manager gives it),
 * renew its Lease in kube-node-lease every 10 s and post its Ready status every 5 minutes, as the kubelet
 * does by default (nodeLeaseDurationSeconds 40, renew interval a quarter of it, nodeStatusReportFrequency
 * 5m). One process serves every worker of the lab (`podroutes lab kubelets`, started by `lab up
 * --kubernetes`): a kubelet per worker would cost a Node.js runtime each for the same requests.
 */
import type { KubeClient } from "../../kube/client.js";
import { KubeApiError } from "../../kube/client.js";

export interface KubeletNode {
  name: string;
  internalIP: string;
}

export const LEASE_NAMESPACE = "kube-node-lease";
export const LEASE_DURATION_SECONDS = 40;
export const LEASE_RENEW_MS = (LEASE_DURATION_SECONDS * 1000) / 4;
export const STATUS_REPORT_MS = 5 * 60_000;

const seconds = (now: Date) => now.toISOString().replace(/\.\d+Z$/, "Z");
/** Leases carry MicroTime: six digits of fraction. */
const microTime = (now: Date) => now.toISOString().replace(/\.(\d+)Z$/, (_, ms: string) => `.${ms.padEnd(6, "0")}Z`);

function readyCondition(now: Date) {
  return { type: "Ready", status: "True", reason: "KubeletReady", message: "kubelet is posting ready status", lastHeartbeatTime: seconds(now), lastTransitionTime: seconds(now) };
}

/** The Node a kubelet registers: addresses and conditions in status, no pod CIDR. Pure. */
export function kubeletNodeObject(node: KubeletNode, now = new Date()): object {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: node.name,
      labels: { "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64" },
      // The kubelet registers every Node with this one (attach/detach by the controller, its default), so
      // no real Node comes without annotations: flannel's subnet manager writes into the map unchecked
      // and panics on a Node that has none.
      annotations: { "volumes.kubernetes.io/controller-managed-attach-detach": "true" },
    },
    status: {
      addresses: [
        { type: "InternalIP", address: node.internalIP },
        { type: "Hostname", address: node.name },
      ],
      conditions: [readyCondition(now)],
    },
  };
}

/** The Node's Lease as the kubelet keeps it, owned by the Node (deleted with it). Pure. */
export function nodeLeaseObject(node: { name: string; uid?: string }, now = new Date()): object {
  return {
    apiVersion: "coordination.k8s.io/v1",
    kind: "Lease",
    metadata: {
      name: node.name,
      namespace: LEASE_NAMESPACE,
      ...(node.uid ? { ownerReferences: [{ apiVersion: "v1", kind: "Node", name: node.name, uid: node.uid }] } : {}),
    },
    spec: { holderIdentity: node.name, leaseDurationSeconds: LEASE_DURATION_SECONDS, renewTime: microTime(now) },
  };
}

const NODES = "/api/v1/nodes";
const leasePath = (name: string) => `/apis/coordination.k8s.io/v1/namespaces/${LEASE_NAMESPACE}/leases/${encodeURIComponent(name)}`;

const notFound = (error: unknown) => error instanceof KubeApiError && error.code === 404;
const exists = (error: unknown) => error instanceof KubeApiError && error.code === 409;

/**
 * Registers the Node (kept if it exists, as a restarted kubelet finds it) and waits until the node IPAM
 * controller gave it a pod CIDR, which it returns.
 */
export async function registerNode(client: KubeClient, node: KubeletNode, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<string> {
  try {
    await client.request("POST", NODES, { body: kubeletNodeObject(node) });
  } catch (error) {
    if (!exists(error)) throw error;
  }
  const deadline = performance.now() + (options.timeoutMs ?? 30_000);
  for (;;) {
    const stored = await client.request<{ spec?: { podCIDR?: string } }>("GET", `${NODES}/${encodeURIComponent(node.name)}`, { ...(options.signal ? { signal: options.signal } : {}) });
    if (stored.spec?.podCIDR) return stored.spec.podCIDR;
    if (performance.now() > deadline) throw new Error(`kube-controller-manager gave Node ${node.name} no pod CIDR within ${Math.round((options.timeoutMs ?? 30_000) / 1000)} s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Renews the Node's Lease, creating it (owned by the Node) when it is missing. */
export async function renewLease(client: KubeClient, name: string, now = new Date()): Promise<void> {
  try {
    await client.request("PATCH", leasePath(name), {
      body: { spec: { holderIdentity: name, leaseDurationSeconds: LEASE_DURATION_SECONDS, renewTime: microTime(now) } },
      contentType: "application/merge-patch+json",
    });
  } catch (error) {
    if (!notFound(error)) throw error;
    const node = await client.request<{ metadata: { uid: string } }>("GET", `${NODES}/${encodeURIComponent(name)}`).catch((e) => (notFound(e) ? undefined : Promise.reject(e)));
    // The Node is gone (deleted by hand): no Lease for it, as its kubelet would re-register first.
    if (!node) return;
    await client.request("POST", `/apis/coordination.k8s.io/v1/namespaces/${LEASE_NAMESPACE}/leases`, { body: nodeLeaseObject({ name, uid: node.metadata.uid }, now) });
  }
}

/** Posts the Node's Ready status (the kubelet's status report); a deleted Node is left deleted. */
export async function reportStatus(client: KubeClient, name: string, now = new Date()): Promise<void> {
  try {
    await client.request("PATCH", `${NODES}/${encodeURIComponent(name)}/status`, {
      body: { status: { conditions: [{ ...readyCondition(now), lastTransitionTime: undefined }] } },
      contentType: "application/strategic-merge-patch+json",
    });
  } catch (error) {
    if (!notFound(error)) throw error;
  }
}

/**
 * Keeps every Node's Lease and status fresh until `signal` aborts. A failed round (the API server
 * restarting) is logged and tried again at the next tick; it never ends the loop.
 */
export async function runHeartbeats(client: KubeClient, names: () => string[], options: { signal: AbortSignal; log: (line: string) => void }): Promise<void> {
  let lastStatus = 0;
  while (!options.signal.aborted) {
    const now = new Date();
    const statusDue = Date.now() - lastStatus >= STATUS_REPORT_MS;
    const results = await Promise.allSettled(names().flatMap((name) => [renewLease(client, name, now), ...(statusDue ? [reportStatus(client, name, now)] : [])]));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed.length) options.log(`heartbeat: ${failed.length} of ${results.length} requests failed: ${String((failed[0]!.reason as Error)?.message ?? failed[0]!.reason)}`);
    else if (statusDue) lastStatus = Date.now();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, LEASE_RENEW_MS);
      options.signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
    });
  }
}
