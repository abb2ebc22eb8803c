/**
 * Which peer's path to probe next, decided without I/O (the prober sends, the reporter tells): every
 * peer's pod CIDR is probed again at least every cycle, and a path that just changed sooner.
 *
 *   changed first  a new peer, or one whose pod CIDR or next hop (its InternalIP) changed, and a peer whose
 *                  last probe failed while it was reachable (a retry before calling it unreachable), are
 *                  probed at the next tick, before anyone else: a changed path is known within seconds.
 *   round robin    otherwise the peer probed longest ago, once `minIntervalMs` has passed since its last
 *                  probe (small clusters are not probed many times a second for nothing).
 *
 * One probe per tick, a tick every 1 / rate seconds: at 5,000 Nodes (4,999 peers) and 2 probes/s a
 * full cycle takes 4,999 / 2 = 2,500 s, about 42 minutes, so every ordered pair is checked at least once an
 * hour with room for retries and changed paths (`cycleMs` says what a cluster's cycle is).
 * A path is unreachable after `failuresToUnreachable` probes in a row got no reply (one lost datagram
 * is not a broken path), reachable again at the first reply.
 */

export interface PathPeer {
  /** The peer's Node name. */
  name: string;
  /** The address probed: an address of the peer's pod CIDR (by default its bridge gateway). */
  target: string;
  /** What the path depends on (pod CIDR and next hop): a change makes it a changed path. */
  key: string;
}

export type PathState = "unknown" | "reachable" | "unreachable";

export interface PeerStatus {
  name: string;
  target: string;
  state: PathState;
  /** Probes in a row without a reply. */
  failures: number;
  /** Monotonic ms of the last probe sent, -Infinity before the first. */
  lastProbeAt: number;
  /** Monotonic ms when the state last changed. */
  since: number;
  /** Why the last probe failed (`no reply in 1000 ms`, `sendto EINVAL`). */
  lastError?: string;
  lastRttMs?: number;
}

/** A path that turned unreachable or recovered with a probe's result. */
export interface Transition {
  name: string;
  target: string;
  to: "unreachable" | "reachable";
  error?: string;
}

export interface PathScheduleOptions {
  /** No peer is probed again (round robin) sooner than this after its last probe. */
  minIntervalMs: number;
  /** Probes in a row without a reply before a path is unreachable. */
  failuresToUnreachable: number;
}

interface Entry extends PeerStatus {
  key: string;
  /** Probe at the next tick, before the round robin. */
  urgent: boolean;
  inFlight: boolean;
}

export class PathSchedule {
  private readonly peers = new Map<string, Entry>();

  constructor(private readonly options: PathScheduleOptions) {
    if (!(options.failuresToUnreachable >= 1)) throw new Error(`failuresToUnreachable must be at least 1, not ${options.failuresToUnreachable}`);
  }

  /**
   * The peers as the Nodes now say: new ones and those whose key changed are probed first (a changed path's
   * old verdict no longer holds, so it starts unknown); peers no longer listed are forgotten, with
   * their verdicts.
   */
  setPeers(peers: readonly PathPeer[], now: number): void {
    const seen = new Set<string>();
    for (const peer of peers) {
      seen.add(peer.name);
      const entry = this.peers.get(peer.name);
      if (entry && entry.key === peer.key && entry.target === peer.target) continue;
      // A changed path keeps no failures: its old ones were of another path. Its state is kept until a
      // probe says otherwise, so a recovered or a broken path is still reported as a transition.
      this.peers.set(peer.name, {
        name: peer.name,
        target: peer.target,
        key: peer.key,
        state: entry?.state ?? "unknown",
        failures: 0,
        lastProbeAt: -Infinity,
        since: entry?.since ?? now,
        urgent: true,
        inFlight: false,
      });
    }
    for (const name of this.peers.keys()) if (!seen.has(name)) this.peers.delete(name);
  }

  /** The peer to probe at this tick, marked in flight until `done`; undefined when none is due. */
  next(now: number): PathPeer | undefined {
    let best: Entry | undefined;
    for (const entry of this.peers.values()) {
      if (entry.inFlight) continue;
      if (!entry.urgent && now - entry.lastProbeAt < this.options.minIntervalMs) continue;
      if (!best || before(entry, best)) best = entry;
    }
    if (!best) return undefined;
    best.inFlight = true;
    best.urgent = false;
    best.lastProbeAt = now;
    return { name: best.name, target: best.target, key: best.key };
  }

  /**
   * A probe's result: `rttMs` when a reply came, else `error`. Ignored when the peer's path changed
   * since it was sent (its key is no longer `probed.key`). Returns the transition it made, if any.
   */
  done(probed: PathPeer, result: { rttMs: number } | { error: string }, now: number): Transition | undefined {
    const entry = this.peers.get(probed.name);
    if (!entry || entry.key !== probed.key || entry.target !== probed.target) return undefined;
    entry.inFlight = false;
    if ("rttMs" in result) {
      entry.failures = 0;
      entry.lastRttMs = result.rttMs;
      delete entry.lastError;
      return this.moveTo(entry, "reachable", now);
    }
    entry.failures++;
    entry.lastError = result.error;
    if (entry.failures >= this.options.failuresToUnreachable) return this.moveTo(entry, "unreachable", now);
    // Not yet unreachable: try again soon, before a verdict.
    entry.urgent = true;
    return undefined;
  }

  private moveTo(entry: Entry, state: "reachable" | "unreachable", now: number): Transition | undefined {
    if (entry.state === state) return undefined;
    const was = entry.state;
    entry.state = state;
    entry.since = now;
    // From unknown to reachable is no news; from unknown to unreachable is.
    if (was === "unknown" && state === "reachable") return undefined;
    return { name: entry.name, target: entry.target, to: state, ...(entry.lastError !== undefined ? { error: entry.lastError } : {}) };
  }

  /** Peers by state. */
  counts(): Record<PathState, number> {
    const counts: Record<PathState, number> = { unknown: 0, reachable: 0, unreachable: 0 };
    for (const entry of this.peers.values()) counts[entry.state]++;
    return counts;
  }

  /** Every peer's status, by name. */
  statuses(): PeerStatus[] {
    return [...this.peers.values()]
      .map(({ key: _key, urgent: _urgent, inFlight: _inFlight, ...status }) => status)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  get size(): number {
    return this.peers.size;
  }
}

/** Urgent first, then the one probed longest ago, then by name (a stable order). */
function before(a: Entry, b: Entry): boolean {
  if (a.urgent !== b.urgent) return a.urgent;
  if (a.lastProbeAt !== b.lastProbeAt) return a.lastProbeAt < b.lastProbeAt;
  return a.name < b.name;
}

/** How long a full round robin takes: every peer at `ratePerSecond`, or `minIntervalMs`, whichever is longer. */
export function cycleMs(peers: number, ratePerSecond: number, minIntervalMs: number): number {
  return Math.max(minIntervalMs, (peers / ratePerSecond) * 1000);
}
