/**
 * Leader election on a `coordination.k8s.io/v1` Lease, after client-go's tools/leaderelection, so two
 * replicas of `podroutes controller` never both write routes:
 *
 * - try to acquire or renew every retry period (with jitter while waiting to acquire); an update is a PUT
 *   carrying the resourceVersion last read, so of two replicas racing, one gets 409 Conflict;
 * - a lease held by another counts as expired only `leaseDurationSeconds` after THIS replica last saw its
 *   record change (client-go's observedTime), never by its `renewTime`: the replicas' clocks may disagree;
 * - a takeover increments `leaseTransitions`; a renewal keeps `acquireTime` and the count;
 * - the leader stops being one `renewDeadline` after it SENT the last renewal that succeeded: a fence
 *   fixed by its own monotonic clock. Every other replica waits at least `leaseDuration` from a moment
 *   after that send (it can only see the record once written), so with renewDeadline < leaseDuration the
 *   old leader has stopped before anyone else may start. Losing is final for this elector: the process
 *   exits and restarts clean, as kube-controller-manager does;
 * - on a clean shutdown the leader releases the lease (empty holder, 1 s duration), so a successor need
 *   not wait out the lease.
 *
 * The decision of one attempt is a pure function (`decide`); the elector adds the API calls, the clock
 * (injected, so tests run on a fake one) and the leadership AbortSignal that cancels in-flight work.
 */
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { performance } from "node:perf_hooks";
import { KubeApiError, type KubeClient } from "../kube/client.js";

/** client-go's defaults (kube-controller-manager's --leader-elect-* flags). */
export const DEFAULT_LEASE_DURATION_MS = 15_000;
export const DEFAULT_RENEW_DEADLINE_MS = 10_000;
export const DEFAULT_RETRY_PERIOD_MS = 2_000;
/** client-go's JitterFactor: waiting to acquire sleeps retryPeriod × (1 + up to 1.2). */
const JITTER = 1.2;

/** A Lease's spec: the election record. */
export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  /** MicroTime text, `2026-01-01T00:00:00.000000Z`. */
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; resourceVersion?: string; [key: string]: unknown };
  spec?: LeaseSpec;
}

export interface ElectionSettings {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
}

/** What an elector remembers of the record it last saw, and when (its own monotonic clock). */
export interface Observation {
  record: LeaseSpec;
  /** Monotonic milliseconds when the record was last seen to change (or was written by us). */
  at: number;
}

export type Decision =
  /** No Lease yet: create it, holding it. */
  | { action: "create"; spec: LeaseSpec }
  /** Write this record (a renewal, or a takeover when `takeover`). */
  | { action: "update"; spec: LeaseSpec; takeover: boolean }
  /** Another replica holds a lease that has not expired by our observation. */
  | { action: "wait"; holder: string; expiresInMs: number };

/** Kubernetes' MicroTime: RFC 3339 with microseconds. */
export function microTime(date: Date): string {
  return date.toISOString().replace(/Z$/, "000Z");
}

/** The fields of a record that make it "the same record" (client-go compares the raw record). */
export function recordKey(spec: LeaseSpec | undefined): string {
  const s = spec ?? {};
  return JSON.stringify([s.holderIdentity ?? "", s.leaseDurationSeconds ?? 0, s.acquireTime ?? "", s.renewTime ?? "", s.leaseTransitions ?? 0]);
}

/**
 * One attempt's decision (client-go's tryAcquireOrRenew), given the Lease as read now (undefined: none
 * exists) and what this replica observed before. Pure. `observed` is the observation to keep afterwards
 * when the record changed; the caller stores it.
 */
export function decide(
  lease: Lease | undefined,
  previous: Observation | undefined,
  context: { identity: string; leaseDurationMs: number; now: number; wallNow: Date },
): { decision: Decision; observed: Observation | undefined } {
  const time = microTime(context.wallNow);
  const mine: LeaseSpec = { holderIdentity: context.identity, leaseDurationSeconds: Math.ceil(context.leaseDurationMs / 1000), acquireTime: time, renewTime: time, leaseTransitions: 0 };
  if (!lease) return { decision: { action: "create", spec: mine }, observed: previous };
  const record = lease.spec ?? {};
  // The record changed since we last looked: its expiry counts from now, by our clock.
  const observed = previous && recordKey(previous.record) === recordKey(record) ? previous : { record, at: context.now };
  const holder = record.holderIdentity ?? "";
  const leader = holder === context.identity;
  const expiresAt = observed.at + (record.leaseDurationSeconds ?? 0) * 1000;
  if (holder !== "" && !leader && expiresAt > context.now) {
    return { decision: { action: "wait", holder, expiresInMs: expiresAt - context.now }, observed };
  }
  const transitions = record.leaseTransitions ?? 0;
  const spec: LeaseSpec = leader
    ? { ...mine, acquireTime: record.acquireTime ?? time, leaseTransitions: transitions }
    : { ...mine, leaseTransitions: transitions + 1 };
  return { decision: { action: "update", spec, takeover: !leader }, observed };
}

/** The record a leader writes when it lets go on shutdown (client-go's release). */
export function releasedSpec(record: LeaseSpec, wallNow: Date): LeaseSpec {
  const time = microTime(wallNow);
  return { holderIdentity: "", leaseDurationSeconds: 1, acquireTime: time, renewTime: time, leaseTransitions: record.leaseTransitions ?? 0 };
}

/** `POD_NAME` (the downward API in a Deployment), else the hostname with a random suffix, as client-go advises. */
export function defaultIdentity(env: NodeJS.ProcessEnv): string {
  return env.POD_NAME || `${hostname()}_${randomBytes(4).toString("hex")}`;
}

/** Time as the elector sees it; tests pass a fake one. */
export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Wall-clock time, written into the record (informational: nobody's expiry depends on it). */
  wallNow(): Date;
  /** Resolves after `ms`, or rejects when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  /** Calls `fn` after `ms`; returns the function that cancels it. */
  after(ms: number, fn: () => void): () => void;
}

export const realClock: Clock = {
  now: () => performance.now(),
  wallNow: () => new Date(),
  sleep: (ms, signal) => sleep(ms, undefined, { signal }),
  after: (ms, fn) => {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};

export interface ElectorEvents {
  /** This replica became the leader; `signal` aborts when it stops being one (lost, or released). */
  onStartedLeading?(signal: AbortSignal, lease: { transitions: number }): void;
  /** Leadership ended: `lost` (could not renew by the fence, or someone else took it) or `released`. */
  onStoppedLeading?(how: "lost" | "released", why: string): void;
  /** Another replica leads (logged once per holder). */
  onNewLeader?(holder: string): void;
  /** An attempt failed (API error, conflict): for logs and metrics. */
  onAttemptFailed?(error: unknown, leading: boolean): void;
}

function leasePath(namespace: string, name?: string): string {
  const base = `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/leases`;
  return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
}

export class LeaderElector {
  /** The record this replica last saw or wrote, and when. */
  private observed: Observation | undefined;
  /** The Lease as last read or written (its resourceVersion goes into the next PUT). */
  private lease: Lease | undefined;
  private leadership: AbortController | undefined;
  /** Monotonic time past which this replica must not act as leader: the last good renewal's send time + renewDeadline. */
  private fenceAt = -Infinity;
  private cancelFence: (() => void) | undefined;
  private lastHolder: string | undefined;
  /** Attempts made and their results, for metrics. */
  readonly counters = { attempts: 0, failures: 0, acquired: 0, renewals: 0 };

  constructor(
    private readonly client: KubeClient,
    readonly settings: ElectionSettings,
    private readonly events: ElectorEvents = {},
    private readonly clock: Clock = realClock,
    private readonly random: () => number = Math.random,
  ) {
    if (!(settings.renewDeadlineMs < settings.leaseDurationMs)) throw new RangeError("the renew deadline must be shorter than the lease duration");
    if (!(settings.retryPeriodMs < settings.renewDeadlineMs)) throw new RangeError("the retry period must be shorter than the renew deadline");
  }

  /** Whether this replica leads now (its fence has not passed). */
  get isLeader(): boolean {
    return this.leadership !== undefined && !this.leadership.signal.aborted && this.clock.now() < this.fenceAt;
  }

  /** Milliseconds until this leader must stop unless it renews (0 when it does not lead). */
  get fenceInMs(): number {
    return this.isLeader ? this.fenceAt - this.clock.now() : 0;
  }

  /** The holder of the Lease as last seen ("" when free, undefined before the first read). */
  get holder(): string | undefined {
    return this.observed?.record.holderIdentity;
  }

  /** The Lease's leaseTransitions as last seen. */
  get transitions(): number {
    return this.observed?.record.leaseTransitions ?? 0;
  }

  /**
   * One attempt to acquire or renew (client-go's tryAcquireOrRenew): true when this replica holds the
   * lease afterwards. Never throws for API failures (they count as "no").
   */
  async tryAcquireOrRenew(signal?: AbortSignal): Promise<boolean> {
    // Losing (or releasing) is final for an elector: the process restarts clean.
    if (this.leadership?.signal.aborted) return false;
    this.counters.attempts++;
    const sentAt = this.clock.now();
    const timeoutMs = Math.ceil(this.leadership ? Math.max(1, Math.min(this.fenceAt - sentAt, this.settings.renewDeadlineMs)) : this.settings.renewDeadlineMs);
    const request = { timeoutMs, ...(signal ? { signal } : {}) };
    const { identity, leaseDurationMs } = this.settings;
    try {
      // Fast path of a leader: write on top of the version it wrote last; a conflict falls back to reading.
      if (this.leadership && this.lease && this.observed?.record.holderIdentity === identity) {
        const { decision } = decide(this.lease, this.observed, { identity, leaseDurationMs, now: sentAt, wallNow: this.clock.wallNow() });
        if (decision.action === "update") {
          try {
            return this.wrote(await this.put(decision.spec, request), sentAt, false);
          } catch (error) {
            if (!(error instanceof KubeApiError && error.failure === "conflict")) throw error;
          }
        }
      }
      let current: Lease | undefined;
      try {
        current = await this.client.request<Lease>("GET", leasePath(this.settings.namespace, this.settings.name), request);
      } catch (error) {
        if (!(error instanceof KubeApiError && error.failure === "not-found")) throw error;
      }
      const { decision, observed } = decide(current, this.observed, { identity, leaseDurationMs, now: this.clock.now(), wallNow: this.clock.wallNow() });
      this.observed = observed;
      if (current) this.lease = current;
      if (decision.action === "wait") {
        if (decision.holder !== this.lastHolder) this.events.onNewLeader?.(decision.holder);
        this.lastHolder = decision.holder;
        // Someone else holds a valid lease: if we thought we led, we do not.
        if (this.leadership) this.lose(`the Lease is held by ${decision.holder}`);
        return false;
      }
      if (decision.action === "create") {
        const created = await this.client.request<Lease>("POST", leasePath(this.settings.namespace), {
          ...request,
          body: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: this.settings.name, namespace: this.settings.namespace }, spec: decision.spec },
        });
        return this.wrote(created, sentAt, true);
      }
      return this.wrote(await this.put(decision.spec, request), sentAt, decision.takeover);
    } catch (error) {
      this.counters.failures++;
      this.events.onAttemptFailed?.(error, this.leadership !== undefined);
      return false;
    }
  }

  private put(spec: LeaseSpec, request: { timeoutMs: number; signal?: AbortSignal }): Promise<Lease> {
    const lease = this.lease!;
    const body: Lease = { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { ...lease.metadata }, spec };
    return this.client.request<Lease>("PUT", leasePath(this.settings.namespace, this.settings.name), { ...request, body });
  }

  /** A write succeeded: we hold the lease until `sentAt + renewDeadline`. */
  private wrote(lease: Lease, sentAt: number, acquired: boolean): boolean {
    this.lease = lease;
    this.observed = { record: lease.spec ?? {}, at: sentAt };
    this.lastHolder = this.settings.identity;
    this.fenceAt = sentAt + this.settings.renewDeadlineMs;
    if (!this.leadership) {
      this.leadership = new AbortController();
      this.counters.acquired++;
      this.events.onStartedLeading?.(this.leadership.signal, { transitions: lease.spec?.leaseTransitions ?? 0 });
    } else if (!acquired) this.counters.renewals++;
    this.armFence();
    return true;
  }

  /** Aborts the leadership signal at the fence, whatever the renew loop is doing then. */
  private armFence(): void {
    this.cancelFence?.();
    this.cancelFence = this.clock.after(Math.max(0, this.fenceAt - this.clock.now()), () => {
      if (this.clock.now() >= this.fenceAt) this.lose(`no renewal succeeded within the renew deadline (${this.settings.renewDeadlineMs} ms)`);
      else this.armFence();
    });
  }

  private lose(why: string): void {
    const leadership = this.leadership;
    if (!leadership || leadership.signal.aborted) return;
    this.cancelFence?.();
    this.fenceAt = -Infinity;
    leadership.abort(new LeadershipLost(why));
    this.events.onStoppedLeading?.("lost", why);
  }

  /**
   * Campaigns until this replica leads, then renews until the leadership is lost or `signal` aborts.
   * Resolves when leadership ended (`lost`) or on shutdown (`stopped`; the lease is released if held).
   */
  async run(signal: AbortSignal): Promise<"lost" | "stopped"> {
    const { retryPeriodMs } = this.settings;
    try {
      while (!signal.aborted && !(await this.tryAcquireOrRenew(signal))) {
        if (this.leadership?.signal.aborted) return "lost";
        await this.clock.sleep(retryPeriodMs * (1 + this.random() * JITTER), signal);
      }
      const leadership = this.leadership;
      if (leadership) {
        const either = AbortSignal.any([signal, leadership.signal]);
        // Renew each retry period; while renewals fail, try again each period. The fence, not this
        // loop, decides when leadership ends: its timer aborts the leadership signal.
        while (!either.aborted) {
          await this.clock.sleep(retryPeriodMs, either);
          await this.tryAcquireOrRenew(either);
        }
      }
    } catch (error) {
      // A sleep cut short by an abort; anything else is a bug.
      if (!signal.aborted && !this.leadership?.signal.aborted) throw error;
    }
    if (signal.aborted) {
      await this.release();
      return "stopped";
    }
    return "lost";
  }

  /**
   * Lets go of the lease if this replica still holds it (clean shutdown): the leadership signal aborts
   * first, so no write starts after the release. Errors are reported, never thrown.
   */
  async release(): Promise<boolean> {
    const leadership = this.leadership;
    if (!leadership || leadership.signal.aborted || !this.lease) return false;
    const stillLeader = this.isLeader;
    this.cancelFence?.();
    this.fenceAt = -Infinity;
    leadership.abort(new LeadershipReleased());
    if (!stillLeader) return false;
    const request = { timeoutMs: this.settings.renewDeadlineMs };
    try {
      let released: Lease;
      try {
        released = await this.put(releasedSpec(this.lease.spec ?? {}, this.clock.wallNow()), request);
      } catch (error) {
        // A renewal cut short by the shutdown may have landed unseen: a newer version. Read it, and
        // release it only while it still names this replica (never a lease another one took).
        if (!(error instanceof KubeApiError && error.failure === "conflict")) throw error;
        const current = await this.client.request<Lease>("GET", leasePath(this.settings.namespace, this.settings.name), request);
        if (current.spec?.holderIdentity !== this.settings.identity) throw error;
        this.lease = current;
        released = await this.put(releasedSpec(current.spec ?? {}, this.clock.wallNow()), request);
      }
      this.lease = released;
      this.observed = { record: released.spec ?? {}, at: this.clock.now() };
      this.events.onStoppedLeading?.("released", "shutting down");
      return true;
    } catch (error) {
      this.events.onAttemptFailed?.(error, false);
      this.events.onStoppedLeading?.("released", "shutting down (the release failed; the lease expires on its own)");
      return false;
    }
  }
}

/** The leadership signal's reason when the lease could not be kept. */
export class LeadershipLost extends Error {
  constructor(why: string) {
    super(`leadership lost: ${why}`);
    this.name = "LeadershipLost";
  }
}

/** The leadership signal's reason on a clean shutdown. */
export class LeadershipReleased extends Error {
  constructor() {
    super("leadership released: shutting down");
    this.name = "LeadershipReleased";
  }
}
