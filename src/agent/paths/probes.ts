/**
 * The agent's path probes (issue 23): schedule.ts says which peer is next, prober.ts sends and answers
 * the datagrams, and this file runs them at the rate bound and reports: metrics with no label per peer
 * (peers by state, probes by result, a round-trip histogram), the unreachable peers on `/debug/paths`
 * and in the log, an Event on this node's own Node when paths turn unreachable and when they recover
 * (transitions of a few seconds gathered into one Event each way, and no more than one Event of a reason a
 * minute: later transitions wait and go into the next), and, if asked, in readiness. Events are created,
 * never patched: the agent's RBAC grants `create events` only (kube/events.ts' EventRecorder patches
 * counts, which would need `patch events` on every node).
 */
import { messageOf } from "../../apply/engine.js";
import type { Clock } from "../../controller/leader.js";
import { nodeEvent, type NodeRef } from "../../kube/events.js";
import type { KubeNode } from "../../kube/nodes.js";
import type { Logger } from "../../observe/log.js";
import type { Registry } from "../../observe/metrics.js";
import { AGENT_COMPONENT } from "../node-status.js";
import { pathPeers } from "./peers.js";
import { PathProber, type ProbeResult } from "./prober.js";
import { cycleMs, PathSchedule, type PathPeer, type Transition } from "./schedule.js";

export const PATHS_UNREACHABLE_REASON = "PodroutesPathsUnreachable";
export const PATHS_RECOVERED_REASON = "PodroutesPathsRecovered";
/** Peers named in one log line or Event message; the rest are counted (the full list is on /debug/paths). */
const NAMED = 20;
/** Events of one reason no closer together than this. */
const EVENT_SPACING_MS = 60_000;
/** How often the peers are read again from the store when no Node event said so (a backstop). */
const PEERS_REFRESH_MS = 30_000;

/**
 * What flags do not set: a reply within 1 s (a pod-to-pod round trip in one cluster is well under
 * 10 ms); 3 probes in a row without one before a path is unreachable (with the retries probed first,
 * a broken path is reported about 3 s after its first failed probe); transitions within 2 s in one Event.
 */
export const PATH_PROBE_DEFAULTS = { timeoutMs: 1000, failuresToUnreachable: 3, eventDelayMs: 2000 } as const;

export interface PathProbeOptions {
  /** Probes a second at most (the issue's bound: 2). */
  ratePerSecond: number;
  /** No peer probed again sooner than this (round robin). */
  minIntervalMs: number;
  /** A probe without a reply after this long failed. */
  timeoutMs: number;
  /** Failed probes in a row before a path is unreachable. */
  failuresToUnreachable: number;
  /** The UDP port every agent answers on. */
  port: number;
  /** Which address of a pod CIDR is probed and bound (1: the bridge gateway). */
  addressOffset: number;
  /** Transitions within this long of the first go into one Event. */
  eventDelayMs: number;
}

export interface PathProbeDeps {
  nodes: () => Iterable<KubeNode>;
  /** The node this host is, once known. */
  self: () => string | undefined;
  /** Creates an Event (core/v1) in the API; throws when the API refuses. */
  postEvent: (event: object) => Promise<void>;
  registry: Registry;
  log: Logger;
  clock: Clock;
}

export class PathProbes {
  readonly schedule: PathSchedule;
  private prober: PathProber | undefined;
  private own: string | undefined;
  private self: string | undefined;
  private peersDirty = true;
  private peersReadAt = -Infinity;
  private bindFailedAt = -Infinity;
  private cancelTick: (() => void) | undefined;
  private cancelFlush: (() => void) | undefined;
  private pendingTransitions: Transition[] = [];
  private lastEventAt = -Infinity;
  private stopped = false;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly metrics;

  constructor(
    private readonly options: PathProbeOptions,
    private readonly deps: PathProbeDeps,
  ) {
    if (!(options.ratePerSecond > 0)) throw new Error(`the probe rate must be above 0, not ${options.ratePerSecond}`);
    this.schedule = new PathSchedule({ minIntervalMs: options.minIntervalMs, failuresToUnreachable: options.failuresToUnreachable });
    const { registry } = deps;
    this.metrics = {
      peers: registry.gauge("podroutes_path_peers", "peers whose pod CIDR this node probes, by the path's state (unknown: not probed yet, reachable, unreachable); the unreachable ones are listed on /debug/paths"),
      probes: registry.counter("podroutes_path_probes_total", "path probes sent, by result (reply, no_reply, send_failed)"),
      rtt: registry.histogram("podroutes_path_rtt_seconds", "round-trip time of answered path probes, pod CIDR to pod CIDR", [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]),
      transitions: registry.counter("podroutes_path_transitions_total", "paths that turned unreachable or reachable again, by to"),
      cycle: registry.gauge("podroutes_path_cycle_seconds", "how long probing every peer once takes at the rate bound: the longest a broken path goes unseen"),
    };
    registry.collected("podroutes_path_requests_answered_total", "path probes from peers this agent answered", "counter", () => this.prober?.answered ?? 0);
    this.updateGauges();
  }

  /** The Nodes changed: read the peers again at the next tick (a new Node or next hop is probed first). */
  nodesChanged(): void {
    this.peersDirty = true;
  }

  start(): void {
    this.tick();
  }

  private tick(): void {
    if (this.stopped) return;
    this.cancelTick = this.deps.clock.after(1000 / this.options.ratePerSecond, () => this.tick());
    void this.turn().catch((error: unknown) => this.deps.log.error("path probe failed unexpectedly", { error: messageOf(error) }));
  }

  private async turn(): Promise<void> {
    const now = this.deps.clock.now();
    this.readPeers(now);
    if (!(await this.ensureBound(now))) return;
    const peer = this.schedule.next(now);
    if (!peer) return;
    const probing = this.prober!.probe(peer.target).then((result) => this.finished(peer, result));
    this.inFlight.add(probing);
    void probing.finally(() => this.inFlight.delete(probing));
  }

  private readPeers(now: number): void {
    const self = this.deps.self();
    if (!this.peersDirty && self === this.self && now - this.peersReadAt < PEERS_REFRESH_MS) return;
    this.peersDirty = false;
    this.peersReadAt = now;
    this.self = self;
    if (self === undefined) return;
    const { own, peers } = pathPeers(this.deps.nodes(), self, this.options.addressOffset);
    if (own !== this.own) {
      // Our own pod CIDR moved: the socket is bound to an address no longer ours.
      void this.prober?.close();
      this.prober = undefined;
      this.own = own;
      this.bindFailedAt = -Infinity;
    }
    this.schedule.setPeers(peers, now);
    this.metrics.cycle.set(cycleMs(peers.length, this.options.ratePerSecond, this.options.minIntervalMs) / 1000);
    this.updateGauges();
  }

  /** Bound to this node's pod-CIDR address, trying again every 10 s while it is missing (no bridge yet). */
  private async ensureBound(now: number): Promise<boolean> {
    if (this.prober?.bound) return true;
    if (this.own === undefined || now - this.bindFailedAt < 10_000) return false;
    const prober = (this.prober ??= new PathProber({ address: this.own, port: this.options.port, timeoutMs: this.options.timeoutMs }));
    try {
      await prober.bind();
      this.deps.log.info("path probes: answering and probing", { address: this.own, port: this.options.port, peers: this.schedule.size });
      return true;
    } catch (error) {
      this.bindFailedAt = now;
      this.deps.log.warn("path probes: cannot bind this node's pod-CIDR address yet (no CNI bridge?); trying again in 10 s", { address: this.own, port: this.options.port, error: messageOf(error) });
      return false;
    }
  }

  private finished(peer: PathPeer, result: ProbeResult): void {
    // Probes cut short by stop() say nothing about the path.
    if (this.stopped) return;
    if ("rttMs" in result) {
      this.metrics.probes.inc({ result: "reply" });
      this.metrics.rtt.observe(result.rttMs / 1000);
    } else {
      this.metrics.probes.inc({ result: result.error.startsWith("send failed") ? "send_failed" : "no_reply" });
    }
    const transition = this.schedule.done(peer, result, this.deps.clock.now());
    this.updateGauges();
    if (!transition) return;
    this.metrics.transitions.inc({ to: transition.to });
    this.pendingTransitions.push(transition);
    const now = this.deps.clock.now();
    const at = Math.max(now + this.options.eventDelayMs, this.lastEventAt + EVENT_SPACING_MS);
    this.cancelFlush ??= this.deps.clock.after(at - now, () => void this.flush());
  }

  private updateGauges(): void {
    const counts = this.schedule.counts();
    for (const state of ["unknown", "reachable", "unreachable"] as const) this.metrics.peers.set(counts[state], { state });
  }

  /** The transitions of the last few seconds: one log line and one Event each way. */
  private async flush(): Promise<void> {
    this.cancelFlush = undefined;
    this.lastEventAt = this.deps.clock.now();
    const transitions = this.pendingTransitions;
    this.pendingTransitions = [];
    const node = this.ownNodeRef();
    const unreachableNow = this.schedule.statuses().filter((s) => s.state === "unreachable");
    const broke = transitions.filter((t) => t.to === "unreachable" && unreachableNow.some((s) => s.name === t.name));
    const recovered = transitions.filter((t) => t.to === "reachable" && !unreachableNow.some((s) => s.name === t.name));
    const from = `from ${this.self}'s pod CIDR (${this.own})`;
    if (broke.length) {
      const message = `paths ${from} unreachable: ${named(broke.map((t) => `${t.name} (${t.target}: ${t.error ?? "no reply"})`))}; ${unreachableNow.length} of ${this.schedule.size} peers unreachable in all (GET /debug/paths lists them)`;
      this.deps.log.warn("path probes: peers unreachable", { node: this.self, peers: broke.slice(0, NAMED).map((t) => t.name), newly: broke.length, unreachable: unreachableNow.length, of: this.schedule.size });
      await this.event(node, PATHS_UNREACHABLE_REASON, message, "Warning");
    }
    if (recovered.length) {
      const message = `paths ${from} reachable again: ${named(recovered.map((t) => `${t.name} (${t.target})`))}; ${unreachableNow.length} of ${this.schedule.size} peers unreachable now`;
      this.deps.log.info("path probes: peers reachable again", { node: this.self, peers: recovered.slice(0, NAMED).map((t) => t.name), recovered: recovered.length, unreachable: unreachableNow.length, of: this.schedule.size });
      await this.event(node, PATHS_RECOVERED_REASON, message, "Normal");
    }
  }

  private async event(node: NodeRef | undefined, reason: string, message: string, type: "Warning" | "Normal"): Promise<void> {
    if (!node) return;
    try {
      await this.deps.postEvent(nodeEvent(node, { reason, message, type }, { component: AGENT_COMPONENT, instance: node.name }, this.deps.clock.wallNow()));
    } catch (error) {
      this.deps.log.warn("path probes: could not post the Event", { node: node.name, reason, error: messageOf(error) });
    }
  }

  private ownNodeRef(): NodeRef | undefined {
    if (this.self === undefined) return undefined;
    for (const node of this.deps.nodes()) if (node.metadata?.name === this.self) return { name: this.self, ...(typeof node.metadata.uid === "string" ? { uid: node.metadata.uid } : {}) };
    return { name: this.self };
  }

  /** What /debug/paths shows: the counts, and every unreachable peer with why and since when. */
  debug(): object {
    const now = this.deps.clock.now();
    const statuses = this.schedule.statuses();
    return {
      node: this.self ?? null,
      address: this.own ?? null,
      port: this.options.port,
      bound: this.prober?.bound ?? false,
      peers: statuses.length,
      counts: this.schedule.counts(),
      cycleSeconds: cycleMs(statuses.length, this.options.ratePerSecond, this.options.minIntervalMs) / 1000,
      unreachable: statuses
        .filter((s) => s.state === "unreachable")
        .map((s) => ({ name: s.name, address: s.target, failures: s.failures, error: s.lastError ?? null, forSeconds: Math.round((now - s.since) / 1000) })),
    };
  }

  /** `--path-probe-readiness`: ready only with no unreachable peer. */
  readiness(): { ok: boolean; detail: string } {
    const { unreachable } = this.schedule.counts();
    return unreachable === 0 ? { ok: true, detail: "every probed path reachable" } : { ok: false, detail: `${unreachable} of ${this.schedule.size} paths to peers' pod CIDRs unreachable (see /debug/paths)` };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.cancelTick?.();
    this.cancelFlush?.();
    await this.prober?.close();
    await Promise.all([...this.inFlight]);
  }
}

function named(items: string[]): string {
  return items.length <= NAMED ? items.join(", ") : `${items.slice(0, NAMED).join(", ")} and ${items.length - NAMED} more`;
}
