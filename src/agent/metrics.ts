/**
 * The agent's metrics, by name, as `/metrics` shows them. Errors are counted by kind (src/errors.ts:
 * usage, input, target, busy, or unexpected), the same words the CLI turns into exit codes.
 */
import { Registry } from "../observe/metrics.js";

export type SyncResult = "unchanged" | "changed" | "failed";

export function agentMetrics() {
  const registry = new Registry();
  return {
    registry,
    nodes: registry.gauge("podroutes_nodes", "Node objects in the agent's store (the last complete list plus watch events)"),
    desiredRoutes: registry.gauge("podroutes_desired_routes", "routes this host should hold: every other served node's pod CIDRs"),
    ownedRoutes: registry.gauge("podroutes_owned_routes", "routes on this host that carry podroutes' protocol number, after the last reconcile"),
    conflicts: registry.gauge("podroutes_conflicting_routes", "pod CIDR destinations held by a route podroutes does not own (reported, never overwritten)"),
    unroutable: registry.gauge("podroutes_unroutable_routes", "routes to other nodes' pod CIDRs this host cannot hold (a next hop on none of its networks, an IPv6 one on an IPv4-only host, a pod CIDR over one of its networks): left out and reported, the rest served"),
    quarantined: registry.gauge("podroutes_quarantined_nodes", "Nodes left out of routing because their object is malformed (bad or overlapping pod CIDR, no InternalIP of its family)"),
    syncs: registry.counter("podroutes_syncs_total", "reconciles by result: unchanged (nothing written), changed, failed"),
    syncDuration: registry.histogram("podroutes_sync_duration_seconds", "time of one reconcile: read the kernel table, plan, write the diff", [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
    kernelWrites: registry.counter("podroutes_kernel_writes_total", "route changes written to the kernel, by action (create, replace, delete)"),
    driftRepairs: registry.counter("podroutes_drift_repairs_total", "route changes written while the Nodes had not changed: repairs of a table changed under the agent"),
    errors: registry.counter("podroutes_errors_total", "errors by kind (usage, input, target, busy, unexpected)"),
    lastSuccess: registry.gauge("podroutes_last_successful_sync_timestamp_seconds", "Unix time of the last reconcile that converged"),
    ready: registry.gauge("podroutes_ready", "1 once the first full sync is done"),
    kernelEvents: registry.counter("podroutes_kernel_events_total", "kernel route, nexthop, link and address events seen, by whether they called for a reconcile (drift=true)"),
  };
}

export type AgentMetrics = ReturnType<typeof agentMetrics>;
