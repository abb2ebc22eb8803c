/**
 * The controller's metrics, by name, as `/metrics` shows them (the agent's registry and exposition).
 * API calls are counted by API (`target`: the cloud or SSH; `kubernetes`), method and result, as the
 * target's and the Kubernetes client's call observers report them; in flight is what started and has
 * not finished.
 */
import { Registry } from "../observe/metrics.js";
import type { CallObserver } from "../options.js";

export function controllerMetrics() {
  const registry = new Registry();
  return {
    registry,
    leader: registry.gauge("podroutes_leader", "1 while this replica holds the Lease and may write routes, else 0"),
    leaderTransitions: registry.counter("podroutes_leader_transitions_total", "times this replica became the leader"),
    leaseTransitions: registry.gauge("podroutes_lease_transitions", "the Lease's leaseTransitions as this replica last saw it (takeovers between replicas)"),
    nodes: registry.gauge("podroutes_nodes", "Node objects in the leader's store"),
    quarantined: registry.gauge("podroutes_quarantined_nodes", "Nodes left out of routing because their object is malformed (bad or overlapping pod CIDR, no InternalIP of its family)"),
    desiredRoutes: registry.gauge("podroutes_desired_routes", "routes each table should hold, by table"),
    ownedRoutes: registry.gauge("podroutes_owned_routes", "routes podroutes owns in each table after the last reconcile, by table"),
    conflicts: registry.gauge("podroutes_conflicting_routes", "pod CIDR destinations held by a route podroutes does not own (reported, never overwritten)"),
    unavailable: registry.gauge("podroutes_nodes_network_unavailable", "nodes whose routes are not in every table (NetworkUnavailable=True)"),
    syncs: registry.counter("podroutes_syncs_total", "reconciles by result: unchanged (nothing written), changed, failed (a change or a table failed; tried again)"),
    syncDuration: registry.histogram("podroutes_sync_duration_seconds", "time of one reconcile: read every table, plan, write the diff, report", [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]),
    routeChanges: registry.counter("podroutes_route_changes_total", "route changes carried out, by action (create, replace, delete) and result (ok, failed, refused)"),
    apiCalls: registry.counter("podroutes_api_calls_total", "API calls by api (target, kubernetes), method and result (ok, or the HTTP status, error code or failure)"),
    throttled: registry.counter("podroutes_throttled_calls_total", "API calls answered with a throttling error (then retried), by api"),
    inFlight: registry.gauge("podroutes_api_calls_in_flight", "API calls started and not yet answered, by api"),
    conditionPatches: registry.counter("podroutes_node_condition_patches_total", "NetworkUnavailable patches, by status written"),
    events: registry.counter("podroutes_events_total", "Node Events, by reason and what was written (created, patched: a repeat's count, counted: within the repeat interval)"),
    errors: registry.counter("podroutes_errors_total", "errors by kind (usage, input, target, busy, unexpected)"),
    ready: registry.gauge("podroutes_ready", "1 once this replica has its answer from the API (a standby), or has reconciled once (the leader)"),
  };
}

export type ControllerMetrics = ReturnType<typeof controllerMetrics>;

/** A CallObserver that counts into the metrics under `api`. */
export function countCalls(metrics: ControllerMetrics, api: "target" | "kubernetes"): CallObserver {
  let inFlight = 0;
  return {
    started(method) {
      metrics.inFlight.set(++inFlight, { api });
      let done = false;
      return (result) => {
        if (done) return;
        done = true;
        metrics.inFlight.set(--inFlight, { api });
        metrics.apiCalls.inc({ api, method, result });
      };
    },
    throttled() {
      metrics.throttled.inc({ api });
    },
  };
}

