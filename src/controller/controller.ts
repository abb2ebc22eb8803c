/**
 * `podroutes controller`: the control-plane process (a Deployment of two replicas) that keeps a cloud's
 * VPC routes (or every host's, over SSH) in step with the cluster's Nodes, the job of Kubernetes' cloud
 * route controller. It wires:
 *
 *   Lease      leader.ts: one replica leads; the others stand by, polling the Lease
 *   term       while leading: a target built for this term (its calls cancelled when the term ends),
 *              a reflector listing then watching Nodes (kube/reflector.ts), the resync timer
 *        └──→ the agent's loop (agent/loop.ts): one reconcile at a time, triggers coalesced, none before
 *             the first complete list, failed reconciles retried with backoff
 *               └──→ reconciler.ts: plan + apply of the shared engine, conditions and Events
 *   observe/   /healthz /livez /readyz /metrics, JSON or text logs
 *
 * Losing the lease ends the term at once (in-flight calls aborted, nothing more written) and the process
 * exits to restart clean; SIGTERM ends the term the same way, then releases the Lease so a standby takes
 * over without waiting it out.
 */
import { performance } from "node:perf_hooks";
import { messageOf } from "../apply/engine.js";
import { kindOf } from "../errors.js";
import { createKubeClient, type KubeClient } from "../kube/client.js";
import { EventRecorder } from "../kube/events.js";
import { discoverConnection } from "../kube/kubeconfig.js";
import type { KubeNode } from "../kube/nodes.js";
import { Reflector } from "../kube/reflector.js";
import { serveHealth, type HealthServer } from "../observe/health.js";
import type { Logger } from "../observe/log.js";
import type { ResolvedOptions } from "../options.js";
import type { TargetFactory } from "../targets/registry.js";
import type { Target } from "../targets/target.js";
import { ReconcileLoop } from "../agent/loop.js";
import { routingChanged } from "../agent/reconciler.js";
import { LeaderElector, realClock, type Clock, type ElectionSettings } from "./leader.js";
import { countError } from "../observe/metrics.js";
import { controllerMetrics, countCalls, type ControllerMetrics } from "./metrics.js";
import { RouteReconciler } from "./reconciler.js";

export const CONTROLLER_COMPONENT = "podroutes-controller";
/**
 * A Node event waits for the rest of its burst (Nodes join, and a watch delivers, many at once): until
 * no other came for NODE_EVENT_QUIET_MS, at most NODE_EVENT_DELAY_MS after the first. One reconcile for
 * the burst instead of one for its first events and another for the rest, which would wait for the first
 * one's writes; and no longer than the burst lasts.
 */
export const NODE_EVENT_DELAY_MS = 100;
export const NODE_EVENT_QUIET_MS = 15;

export interface ControllerOptions {
  target: TargetFactory;
  /** The target's checked flag values with the common options (cluster, cluster CIDR, parallel, env, warn). */
  targetOptions: ResolvedOptions;
  kubeconfig?: string;
  context?: string;
  election: ElectionSettings;
  resyncMs: number;
  listen: { host: string; port: number };
  log: Logger;
  env: NodeJS.ProcessEnv;
  /** Time for the election (tests pass a fake one). */
  electionClock?: Clock;
  /** Schedules resyncs (tests pass a fake clock to reach the next resync without waiting for it). */
  resyncClock?: Pick<Clock, "after">;
  /** Repeats of an Event within this are counted and written with the next one after it (default 1 minute). */
  eventRepeatIntervalMs?: number;
}

export interface RunningController {
  metrics: ControllerMetrics;
  health: HealthServer;
  elector: LeaderElector;
  client: KubeClient;
  /** Resolves when this replica lost the lease (the process should exit and restart), with why. */
  lost: Promise<string>;
  /** The current term's reconcile loop (tests wait on it); undefined while standing by. */
  readonly term: { loop: ReconcileLoop; reconciler: RouteReconciler } | undefined;
  /** Ends the term (cancelling in-flight work), releases the Lease, closes everything. */
  stop(): Promise<void>;
}

interface Term {
  loop: ReconcileLoop;
  reconciler: RouteReconciler;
  end(): Promise<void>;
}

export async function startController(options: ControllerOptions): Promise<RunningController> {
  const { log, election } = options;
  const metrics = controllerMetrics();
  metrics.leader.set(0);
  const connection = await discoverConnection({ ...(options.kubeconfig ? { kubeconfig: options.kubeconfig } : {}), ...(options.context ? { context: options.context } : {}), env: options.env });
  const client = createKubeClient(connection, { userAgent: `${CONTROLLER_COMPONENT}/${election.identity}`, calls: countCalls(metrics, "kubernetes") });
  // Build the target once before campaigning: unreadable credentials or keys fail now, not at takeover.
  await (await options.target.create(options.targetOptions)).close?.();

  const events = new EventRecorder(client, { component: CONTROLLER_COMPONENT, instance: election.identity }, options.eventRepeatIntervalMs !== undefined ? { repeatIntervalMs: options.eventRepeatIntervalMs } : {});
  const resyncClock = options.resyncClock ?? realClock;
  const targetCalls = countCalls(metrics, "target");
  let term: Term | undefined;
  let termStarting: Promise<void> | undefined;
  let stopping = false;
  let resolveLost!: (why: string) => void;
  const lost = new Promise<string>((resolve) => (resolveLost = resolve));

  async function startTerm(leadership: AbortSignal): Promise<void> {
    const ended = new AbortController();
    const signal = AbortSignal.any([leadership, ended.signal]);
    let target: Target;
    try {
      // In flight: start at --max-in-flight, as the route controller runs its 200 at once (apply's slow start
      // from 10 would make a 1,000-node join 9 rounds of operations instead of 5); throttling still halves it.
      target = await options.target.create({ ...options.targetOptions, signal, calls: targetCalls, initialInFlight: Number.POSITIVE_INFINITY });
    } catch (error) {
      countError(metrics, kindOf(error));
      log.error("cannot build the target: giving up the lease", { error: messageOf(error) });
      resolveLost(`cannot build the target: ${messageOf(error)}`);
      return;
    }
    const reflector = new Reflector<KubeNode>({ client, path: "/api/v1/nodes" });
    let version = 0;
    const reconciler = new RouteReconciler({
      target,
      store: { synced: () => reflector.hasSynced, nodes: () => reflector.store, version: () => version },
      client,
      events,
      cluster: options.targetOptions.cluster,
      ...(options.targetOptions.clusterCIDR ? { clusterCIDR: options.targetOptions.clusterCIDR } : {}),
      parallel: options.targetOptions.parallel,
      signal,
      metrics,
      log,
    });
    const loop = new ReconcileLoop({
      reconcile: async (reasons) => (await reconciler.reconcile(reasons)).converged,
      canRun: () => reflector.hasSynced && !signal.aborted,
      onError: (error) => {
        if (signal.aborted) return; // the term ended mid-way: nothing to report
        countError(metrics, kindOf(error));
        log.error("reconcile failed", { kind: kindOf(error), error: messageOf(error) });
      },
    });
    const burst = new NodeEventBurst((reasons) => {
      for (const reason of reasons) loop.trigger(reason);
    });
    reflector.subscribe((event) => {
      switch (event.type) {
        case "added":
        case "deleted":
          version++;
          burst.add(`node ${event.object.metadata.name} ${event.type}`);
          break;
        case "modified":
          // Status heartbeats and our own condition patches change nothing routing reads.
          if (!routingChanged(event.previous, event.object)) break;
          version++;
          burst.add(`node ${event.object.metadata.name} modified`);
          break;
        case "synced":
          version++;
          log.info("listed Nodes", { nodes: event.objects, resourceVersion: event.resourceVersion });
          burst.flushNow(); // the list's own events join the reconcile of the complete list
          loop.trigger(`complete list of ${event.objects} Nodes`);
          break;
        case "error":
          countError(metrics, kindOf(event.error));
          log.warn("Kubernetes API: watching Nodes failed; trying again", { phase: event.phase, failure: event.error.failure, error: event.error.message, retryInMs: event.retryInMs });
          break;
      }
    });
    let cancelResync = () => {};
    const scheduleResync = () => {
      cancelResync = resyncClock.after(options.resyncMs, () => {
        loop.trigger("periodic resync");
        scheduleResync();
      });
    };
    scheduleResync();
    const reflecting = reflector.run(signal);
    let ending: Promise<void> | undefined;
    const current: Term = {
      loop,
      reconciler,
      end: () =>
        (ending ??= (async () => {
          ended.abort();
          burst.cancel();
          cancelResync();
          await loop.stop();
          await reflecting;
          await target.close?.();
          metrics.leader.set(0);
          if (term === current) term = undefined;
        })()),
    };
    term = current;
    signal.addEventListener("abort", () => void current.end(), { once: true });
    if (signal.aborted) await current.end();
  }

  const elector = new LeaderElector(
    client,
    election,
    {
      onStartedLeading: (leadership, lease) => {
        metrics.leader.set(1);
        metrics.leaderTransitions.inc();
        log.info("became the leader: reconciling every table against the full list of Nodes", { identity: election.identity, lease: `${election.namespace}/${election.name}`, leaseTransitions: lease.transitions });
        if (stopping) return;
        termStarting = startTerm(leadership);
      },
      onStoppedLeading: (how, why) => {
        metrics.leader.set(0);
        if (how === "lost") {
          log.error("lost the lease: in-flight work cancelled, nothing more is written; exiting to restart clean", { why });
          resolveLost(why);
        } else log.info("released the lease", { why });
      },
      onNewLeader: (holder) => log.info("another replica leads; standing by", { leader: holder }),
      onAttemptFailed: (error, leading) => {
        countError(metrics, kindOf(error));
        (leading ? log.warn : log.debug)("Lease: an attempt failed", { error: messageOf(error), leading });
      },
    },
    options.electionClock ?? realClock,
  );
  metrics.registry.collected("podroutes_lease_attempts_total", "attempts to acquire or renew the Lease", "counter", () => elector.counters.attempts);
  metrics.registry.collected("podroutes_lease_attempt_failures_total", "attempts to acquire or renew the Lease that failed (API errors, conflicts)", "counter", () => elector.counters.failures);

  const { retryPeriodMs, renewDeadlineMs } = election;
  const health = await serveHealth(options.listen, {
    live: () => {
      const left = elector.fenceInMs;
      if (elector.isLeader && left < renewDeadlineMs - 2.5 * retryPeriodMs) return { ok: false, detail: `the leader cannot renew its lease: ${Math.round(left)} ms until it stops writing` };
      return { ok: true, detail: elector.isLeader ? "leading" : "standing by" };
    },
    ready: () => {
      if (elector.holder === undefined) return { ok: false, detail: "no answer from the API about the Lease yet" };
      if (elector.isLeader && !term?.reconciler.reconciled) return { ok: false, detail: "leading; the first reconcile has not finished" };
      return { ok: true, detail: elector.isLeader ? "leading; reconciled" : `standing by (leader: ${elector.holder || "none"})` };
    },
    metrics: () => {
      metrics.leaseTransitions.set(elector.transitions);
      metrics.ready.set(elector.holder !== undefined && (!elector.isLeader || term?.reconciler.reconciled) ? 1 : 0);
      return metrics.registry.text();
    },
  });
  log.info("controller started", {
    identity: election.identity,
    target: options.target.name,
    api: client.server,
    via: connection.description,
    lease: `${election.namespace}/${election.name}`,
    leaseDurationSeconds: election.leaseDurationMs / 1000,
    renewDeadlineSeconds: renewDeadlineMs / 1000,
    retryPeriodSeconds: retryPeriodMs / 1000,
    resyncSeconds: options.resyncMs / 1000,
    listen: `${health.address.host}:${health.address.port}`,
  });

  const stopElection = new AbortController();
  const electing = elector.run(stopElection.signal);
  let stopped: Promise<void> | undefined;
  return {
    metrics,
    health,
    elector,
    client,
    lost,
    get term() {
      return term;
    },
    stop: () =>
      (stopped ??= (async () => {
        stopping = true;
        // Stop writing first, then let go: a successor must not start while this replica still writes.
        await termStarting;
        await term?.end();
        stopElection.abort();
        await electing;
        await health.close();
        client.close();
      })()),
  };
}

/** Node events gathered until their burst is over (NODE_EVENT_QUIET_MS without one, NODE_EVENT_DELAY_MS at most), then handed on together. */
class NodeEventBurst {
  private reasons: string[] = [];
  private firstAt = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly flush: (reasons: string[]) => void) {}

  add(reason: string): void {
    if (!this.reasons.length) this.firstAt = performance.now();
    this.reasons.push(reason);
    clearTimeout(this.timer);
    const wait = Math.min(NODE_EVENT_QUIET_MS, this.firstAt + NODE_EVENT_DELAY_MS - performance.now());
    this.timer = setTimeout(() => this.flushNow(), Math.max(0, wait));
  }

  flushNow(): void {
    clearTimeout(this.timer);
    if (this.reasons.length) this.flush(this.reasons.splice(0));
  }

  cancel(): void {
    clearTimeout(this.timer);
    this.reasons = [];
  }
}
