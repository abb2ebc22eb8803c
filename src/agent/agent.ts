/**
 * `podroutes agent`: the per-node process (a DaemonSet pod, hostNetwork, NET_ADMIN) that keeps this
 * host's kernel table converged to every other node's pod CIDRs. It wires:
 *
 *   Nodes      kube/reflector.ts lists then watches Nodes into a store (client-go's reflector semantics)
 *   kernel     kernel-monitor.ts reports route, nexthop, link and address changes
 *   timer      a full resync every --resync, a backstop
 *        └──→ loop.ts: one reconcile at a time, triggers coalesced, none before the first complete list
 *               └──→ reconciler.ts: plan + apply of the shared engine on a HostRoutesTarget (`--target local`'s);
 *                    a changed Node alone: its destinations through host-table.ts; a resync: one read, a compare
 *                      └──→ the Node's NetworkUnavailable condition, an Event on a quarantined Node
 *   observe/   /livez /healthz /readyz /metrics, JSON or text logs
 *
 * When the API server is unreachable the store keeps its last complete state, so routes stay and drift
 * is still repaired. Stopping leaves the routes in place (pods keep working across agent upgrades),
 * unless cleanup was asked for.
 */
import { hostname } from "node:os";
import { performance } from "node:perf_hooks";
import { apply, messageOf, plan } from "../apply/engine.js";
import { kindOf } from "../errors.js";
import { realClock } from "../controller/leader.js";
import { createKubeClient, type KubeClient } from "../kube/client.js";
import { discoverConnection } from "../kube/kubeconfig.js";
import { routingView, type KubeNode } from "../kube/nodes.js";
import { Reflector } from "../kube/reflector.js";
import { serveHealth, type HealthServer } from "../observe/health.js";
import type { Logger } from "../observe/log.js";
import { HostRoutesTarget } from "../targets/linux/host-routes.js";
import type { HostState } from "../targets/linux/iproute.js";
import { localRunner } from "../targets/linux/runner.js";
import type { TableRef } from "../targets/target.js";
import { HostTable } from "./host-table.js";
import { driftReason } from "./kernel-events.js";
import { KernelMonitor } from "./kernel-monitor.js";
import { ReconcileLoop } from "./loop.js";
import { countError } from "../observe/metrics.js";
import { releaseHeap } from "./memory.js";
import { agentMetrics, type AgentMetrics } from "./metrics.js";
import { networkReadyPatch, NODE_EVENTS_NAMESPACE, quarantineEvent } from "./node-status.js";
import { PathProbes, type PathProbeOptions } from "./paths/probes.js";
import { Reconciler, routingChanged, type SyncOutcome } from "./reconciler.js";
import { startRouteSetPublisher } from "./route-set-publisher.js";
import { RouteSetSource, type NodeSource } from "./route-set-source.js";
import { DEFAULT_ROUTE_SET_FALLBACK_AFTER_MS, fallbackOptions, RouteSetWithFallback } from "./route-set-fallback.js";

/** Kernel events wait this long for the rest of their burst (a link flap prints dozens of lines). */
export const KERNEL_EVENT_DELAY_MS = 50;
/** A reconcile running longer than this means the loop is wedged: /livez fails and kubelet restarts us. */
export const WEDGED_AFTER_MS = 120_000;

export interface AgentOptions {
  kubeconfig?: string;
  context?: string;
  /** `--node`, else NODE_NAME; undefined: found from this host's addresses. */
  node?: string;
  resyncMs: number;
  listen: { host: string; port: number };
  proto: number;
  setNodeCondition: boolean;
  cleanupOnExit: boolean;
  /**
   * Where Nodes are read: `nodes` (a watch of every Node) or `route-set` (the shards a publisher writes,
   * kube/route-set.ts; this Node itself is still watched alone, for its condition).
   */
  nodesFrom: "nodes" | "route-set";
  /** Compete to publish the route set (with `nodesFrom: "nodes"`). */
  publishRouteSet: boolean;
  /** Where the route set and its Lease live. */
  routeSetNamespace: string;
  /** With `nodesFrom: "route-set"`: watch every Node once the route set's Lease has not changed for this long. */
  routeSetFallbackAfterMs?: number;
  /** Path probes to every peer's pod CIDR (paths/); undefined: off. `readiness`: /readyz fails while a path is unreachable. */
  pathProbes?: PathProbeOptions & { readiness: boolean };
  log: Logger;
  env: NodeJS.ProcessEnv;
}

export interface RunningAgent {
  metrics: AgentMetrics;
  health: HealthServer;
  /** Stops every loop; with cleanupOnExit, deletes the routes and nexthops podroutes owns here. */
  stop(): Promise<void>;
}

/**
 * Nodes per LIST page. client-go's 500 makes a page of kubelet-sized Nodes (about 7 KB each) a 3.5 MB body,
 * held as chunks, as a string and as parsed objects at once: long-lived enough that V8 promotes it and
 * grows its heap, which it never gives back. At 5,000 Nodes, pages of 100 kept the agent's RSS after its
 * first sync about 20 MB lower at the same sync time (issue 9, measured with bench/agent.ts).
 */
export const NODE_LIST_PAGE = 100;

/** memory.ts's collection after the first sync, with what it gave back in the log. */
function giveBackFirstSyncMemory(log: Logger): void {
  const before = process.memoryUsage.rss();
  const started = performance.now();
  try {
    releaseHeap();
  } catch (error) {
    // Only memory is at stake: V8 gives it back later by itself.
    log.warn("could not give the first sync's memory back", { error: messageOf(error) });
    return;
  }
  const mb = (bytes: number) => Math.round(bytes / 1e6);
  log.info("first sync's memory given back", { rssMB: mb(process.memoryUsage.rss()), beforeMB: mb(before), ms: Math.round(performance.now() - started) });
}

export async function startAgent(options: AgentOptions): Promise<RunningAgent> {
  const { log } = options;
  const connection = await discoverConnection({ ...(options.kubeconfig ? { kubeconfig: options.kubeconfig } : {}), ...(options.context ? { context: options.context } : {}), env: options.env });
  const client = createKubeClient(connection);
  const metrics = agentMetrics();
  // The store keeps what routing and node status read of each Node, not images, managedFields and the rest.
  const everyNode = () => new Reflector<KubeNode>({ client, path: "/api/v1/nodes", transform: routingView, pageSize: NODE_LIST_PAGE });
  const nodeWatch = options.nodesFrom === "nodes" ? everyNode() : undefined;
  const reflector: NodeSource = nodeWatch ?? new RouteSetWithFallback(new RouteSetSource(client, options.routeSetNamespace, (message, fields) => log.warn(message, fields)), {
    client,
    namespace: options.routeSetNamespace,
    nodeWatch: everyNode,
    options: fallbackOptions(options.routeSetFallbackAfterMs ?? DEFAULT_ROUTE_SET_FALLBACK_AFTER_MS),
    now: () => performance.now(),
    log,
  });
  // The own Node, for its condition: in the Node watch, or watched alone (a heartbeat every 5 minutes).
  const ownNode = nodeWatch ?? new Reflector<KubeNode>({ client, path: "/api/v1/nodes", fieldSelector: `metadata.name=${options.node ?? ""}`, transform: routingView });
  metrics.registry.collected("podroutes_watch_restarts_total", "Node watches opened again after one ended", "counter", () => reflector.counters.watchRestarts);
  metrics.registry.collected("podroutes_relists_total", "full lists of Nodes after the first (410 Expired, a resourceVersion newer than the API server's, a failure before a watch could resume)", "counter", () => reflector.counters.relists);

  const runner = localRunner();
  let reconciler: Reconciler | undefined;
  const thisHost: TableRef = { id: "this host", scope: "host" };
  // Reconciles plan for this node's table (it reaches its own pods directly); cleanup needs no node.
  let cleaningUp = false;
  const table = () => (cleaningUp && reconciler!.node === undefined ? thisHost : reconciler!.table());
  // The host's state as last read under the lock: what a per-change write (HostTable) starts from.
  const lastRead = new Map<string, HostState>();
  const target = new HostRoutesTarget({
    name: "local",
    proto: options.proto,
    connect: async () => runner,
    tables: async () => [table()],
    // Waiting for the lock (a `podroutes apply` run by hand) is worth a line in the log.
    warn: (message) => log.warn(message),
    lockedRead: (read, state) => lastRead.set(read.id, state),
  });
  const empty = { cluster: "kubernetes", nodes: [], source: "kubernetes" };
  const hostTable = new HostTable({ proto: options.proto, warn: (message) => log.warn(message) });
  reconciler = new Reconciler({
    target,
    store: { synced: () => reflector.hasSynced, nodes: () => reflector.store.values(), get: (name) => reflector.store.get(name) },
    proto: options.proto,
    host: { table: hostTable, lastState: (table) => lastRead.get(table.id) },
    ...(options.node ? { node: options.node } : {}),
    hostAddresses: async () => (await target.state(thisHost, empty)).addresses,
    metrics,
    log,
  });
  const status = new NodeStatusReporter(client, ownNode, metrics, log, options.setNodeCondition);
  const loop = new ReconcileLoop({
    reconcile: async (reasons) => {
      const wasReady = reconciler!.converged;
      const outcome = await reconciler!.reconcile(reasons);
      // Once ready (after this turn, so /readyz answers first): the first sync's heap given back.
      if (!wasReady && reconciler!.converged) setImmediate(() => giveBackFirstSyncMemory(log));
      const reported = await status.report(outcome);
      return outcome.result !== "failed" && reported;
    },
    canRun: () => reflector.hasSynced,
    onError: (error) => {
      countError(metrics, kindOf(error));
      log.error("reconcile failed unexpectedly", { error: messageOf(error) });
    },
  });

  reflector.subscribe((event) => {
    switch (event.type) {
      case "added":
      case "deleted":
        reconciler!.nodesChanged([event.object.metadata.name]);
        loop.trigger(`node ${event.object.metadata.name} ${event.type}`);
        break;
      case "modified":
        if (routingChanged(event.previous, event.object)) reconciler!.nodesChanged([event.object.metadata.name]);
        // Its own Node when it no longer shows the condition the agent keeps (someone changed it); the
        // kubelet's status updates alone call for nothing.
        else if (!(options.setNodeCondition && event.object.metadata.name === reconciler!.node && networkReadyPatch(event.object, new Date()))) break;
        loop.trigger(`node ${event.object.metadata.name} modified`);
        break;
      case "synced":
        reconciler!.nodesRelisted();
        log.info(reflector instanceof RouteSetWithFallback && reflector.source === "route-set" ? "read the route set whole" : "listed Nodes", { nodes: event.objects, resourceVersion: event.resourceVersion });
        loop.trigger(`complete list of ${event.objects} Nodes`);
        break;
      case "error":
        countError(metrics, kindOf(event.error));
        log.warn("Kubernetes API: routes are kept and repaired from the last known Nodes; trying again", { phase: event.phase, failure: event.error.failure, error: event.error.message, retryInMs: event.retryInMs });
        break;
    }
  });

  if (ownNode !== reflector) {
    // Someone changed this Node's condition: set it again (with the Node watch, its "modified" case does).
    ownNode.subscribe((event) => {
      if (event.type === "modified" && options.setNodeCondition && networkReadyPatch(event.object, new Date())) loop.trigger(`node ${event.object.metadata.name} modified`);
      if (event.type === "synced") loop.trigger("this Node listed");
    });
  }
  const publisher = options.publishRouteSet && nodeWatch
    ? startRouteSetPublisher({ client, namespace: options.routeSetNamespace, identity: options.node ?? hostname(), nodes: nodeWatch, registry: metrics.registry, log })
    : undefined;

  const paths = options.pathProbes && new PathProbes(options.pathProbes, {
    nodes: () => reflector.store.values(),
    self: () => reconciler!.node,
    postEvent: async (event) => void (await client.request("POST", `/api/v1/namespaces/${NODE_EVENTS_NAMESPACE}/events`, { body: event })),
    registry: metrics.registry,
    log,
    clock: realClock,
  });
  // Only what moves a path (a Node added or gone, a pod CIDR or next hop changed), not heartbeats.
  reflector.subscribe((event) => {
    if (event.type === "added" || event.type === "deleted" || event.type === "synced" || (event.type === "modified" && routingChanged(event.previous, event.object))) paths?.nodesChanged();
  });

  const monitor = new KernelMonitor({
    onEvent: (event) => {
      const reason = driftReason(event, reconciler!.desired);
      metrics.kernelEvents.inc({ drift: reason ? "true" : "false" });
      if (!reason) return;
      reconciler!.requireFull();
      loop.trigger(reason, KERNEL_EVENT_DELAY_MS);
    },
    onRestart: (why) => {
      countError(metrics, "unexpected");
      log.warn("kernel monitor restarted: changes while it was down went unseen, reconciling", { why });
      reconciler!.requireFull();
      loop.trigger("kernel monitor restarted");
    },
  });
  metrics.registry.collected("podroutes_kernel_monitor_restarts_total", "times the `ip monitor` process had to be started again", "counter", () => monitor.restarts);

  const health = await serveHealth(options.listen, {
    live: () => {
      const busy = loop.busyFor();
      return busy > WEDGED_AFTER_MS ? { ok: false, detail: `a reconcile has run for ${Math.round(busy / 1000)} s` } : { ok: true, detail: busy ? "reconciling" : "idle" };
    },
    ready: () => {
      if (!reconciler!.converged) return { ok: false, detail: reflector.hasSynced ? "first sync not done yet" : "waiting for a complete list of Nodes" };
      return paths && options.pathProbes!.readiness ? paths.readiness() : { ok: true, detail: "first full sync done" };
    },
    metrics: () => metrics.registry.text(),
    pages: { "/debug/paths": () => paths?.debug() ?? { enabled: false } },
  });
  log.info("agent started", { api: client.server, via: connection.description, node: options.node ?? "(from this host's addresses)", listen: `${health.address.host}:${health.address.port}`, resyncSeconds: options.resyncMs / 1000, proto: options.proto });

  // The monitor first, so nothing that happens after the first read goes unseen.
  monitor.start();
  paths?.start();
  const abort = new AbortController();
  const reflecting = Promise.all([reflector.run(abort.signal), ownNode === reflector ? undefined : ownNode.run(abort.signal)]);
  const resync = setInterval(() => {
    reconciler!.requireCheck();
    loop.trigger("periodic resync");
  }, options.resyncMs);

  return {
    metrics,
    health,
    async stop() {
      clearInterval(resync);
      await paths?.stop();
      await publisher?.stop();
      abort.abort();
      await loop.stop();
      await Promise.all([reflecting, monitor.stop()]);
      cleaningUp = true;
      if (options.cleanupOnExit) await cleanup(target, log);
      else log.info("stopped; routes left in place (pods keep working across agent restarts)");
      await target.close();
      await hostTable.close();
      client.close();
      await health.close();
    },
  };
}

/** `--cleanup-on-exit`: every route and nexthop object podroutes owns on this host, and nothing else. */
async function cleanup(target: HostRoutesTarget, log: Logger): Promise<void> {
  const inventory = { cluster: "kubernetes", nodes: [], source: "kubernetes" };
  const planned = await plan(target, inventory, { parallel: 1, deleteAll: true });
  const report = await apply(target, planned, inventory, { parallel: 1 });
  if (report.ok) log.info("stopped; removed the routes podroutes owned here (--cleanup-on-exit)", { deleted: report.counts.deleted });
  else log.error("stopped; removing podroutes' routes failed in part", { deleted: report.counts.deleted, failed: report.counts.failed, error: report.tables[0]?.error });
}

/**
 * The API side of a reconcile: the own Node's NetworkUnavailable=False once its routes are in place,
 * patched only when the Node shows another status or reason, and an Event on the own Node when it is
 * quarantined. Only the own Node: with every agent reporting every bad Node, 5,000 nodes would post
 * 5,000 Events per bad one (the event floods of flannel #2252).
 */
class NodeStatusReporter {
  /** The Node's resourceVersion when it was last patched: until the watch brings a newer one, no repeat. */
  private patchedAt: string | undefined;

  constructor(
    private readonly client: KubeClient,
    private readonly reflector: { store: ReadonlyMap<string, KubeNode> },
    private readonly metrics: AgentMetrics,
    private readonly log: Logger,
    private readonly setCondition: boolean,
  ) {}

  /** False when a patch failed (the loop tries again). */
  async report(outcome: SyncOutcome): Promise<boolean> {
    for (const node of outcome.newlyQuarantined) {
      if (node.name !== outcome.node) continue;
      try {
        await this.client.request("POST", `/api/v1/namespaces/${NODE_EVENTS_NAMESPACE}/events`, { body: quarantineEvent(node, node.problems, outcome.node, new Date()) });
      } catch (error) {
        countError(this.metrics, kindOf(error));
        this.log.warn("could not post the quarantine Event", { node: node.name, error: messageOf(error) });
      }
    }
    if (!this.setCondition || outcome.result === "failed" || !outcome.nodeServed || outcome.node === undefined) return true;
    const node = this.reflector.store.get(outcome.node);
    if (!node || node.metadata.resourceVersion === this.patchedAt) return true;
    const patch = networkReadyPatch(node, new Date());
    if (!patch) return true;
    try {
      await this.client.request("PATCH", `/api/v1/nodes/${encodeURIComponent(outcome.node)}/status`, { body: patch, contentType: "application/strategic-merge-patch+json" });
      this.patchedAt = node.metadata.resourceVersion;
      this.log.info("node condition set", { node: outcome.node, condition: "NetworkUnavailable=False", reason: "PodroutesAgentReady" });
      return true;
    } catch (error) {
      countError(this.metrics, kindOf(error));
      this.log.warn("could not set the node condition; trying again", { node: outcome.node, error: messageOf(error) });
      return false;
    }
  }
}
