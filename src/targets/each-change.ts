/**
 * The write loop of API targets that make one call per change (GCP, AWS): each change becomes a
 * ChangeResult (never an exception) and progress is reported as each one finishes. Lives once so every
 * such target reports partial failure, and paces itself, the same way.
 *
 * Pacing: how many changes are in flight adapts to the API, as TCP's congestion control does (and the
 * cloud SDKs' "adaptive" retry modes, and what users of large clusters ask of Kubernetes' route
 * controller, kubernetes #26119 #38618). Real route operations take seconds each, so the number in
 * flight is what makes a large cluster fast; a fixed number is either slow or a burst of throttling.
 * - start at INITIAL_IN_FLIGHT (podroutes' former fixed default);
 * - slow start: +1 per success (doubling every round trip) until the API first pushes back;
 * - then additive increase: +1 per window of as many successes as the limit;
 * - multiplicative decrease: halve on a throttling answer (429, rateLimitExceeded,
 *   RequestLimitExceeded), which the client reports from its retry hook while it retries the call; at
 *   most once per window, since the calls already in flight were sent under the old limit;
 * - never above `--max-in-flight`, never below 1.
 */
import pLimit, { type LimitFunction } from "p-limit";
import { wholeNumber, type OptionSpec } from "../options.js";
import type { Change, ChangeResult, Progress } from "./target.js";

/** Where the adaptive limit starts. */
export const INITIAL_IN_FLIGHT = 10;
/**
 * The default ceiling: as many route operations as Kubernetes' route controller keeps in flight (200).
 * An API that cannot take that many says so with throttling answers, and the limit comes down.
 */
export const DEFAULT_MAX_IN_FLIGHT = 200;

/** `--max-in-flight`, shared by the API targets. */
export const maxInFlightOption: OptionSpec<number> = {
  flags: "--max-in-flight <n>",
  description: `API operations in flight at most: apply starts at ${INITIAL_IN_FLIGHT}, the controller at this ceiling; grows while the API accepts and halves when it throttles (1-1000)`,
  default: String(DEFAULT_MAX_IN_FLIGHT),
  parse: wholeNumber(1, 1000),
};

/** The additive-increase, multiplicative-decrease limit on calls in flight, shared by every write of a target. */
export class AdaptiveConcurrency {
  private readonly queue: LimitFunction;
  private limit: number;
  /** Below it the limit grows by one per success (slow start); it is set at each cut. */
  private threshold: number;
  private successes = 0;
  private windowSuccesses = 0;
  /** No further cut before this many successes: the throttles of calls sent under the old limit. */
  private nextCutAfter = 0;
  /** What happened, for tests and benchmarks: throttles seen, cuts made, the highest limit reached. */
  readonly stats = { throttles: 0, cuts: 0, peak: 0 };

  constructor(
    readonly max: number,
    initial = INITIAL_IN_FLIGHT,
  ) {
    this.limit = Math.max(1, Math.min(initial, max));
    this.threshold = max;
    this.stats.peak = this.limit;
    this.queue = pLimit(this.limit);
  }

  /** The current limit. */
  get current(): number {
    return this.limit;
  }

  /** Runs `task` when a slot is free. */
  run<T>(task: () => Promise<T>): Promise<T> {
    return this.queue(task);
  }

  /** A call went through without being throttled. */
  succeeded(): void {
    this.successes++;
    if (this.limit < this.threshold) this.setLimit(this.limit + 1);
    else if (++this.windowSuccesses >= this.limit) {
      this.windowSuccesses = 0;
      this.setLimit(this.limit + 1);
    }
  }

  /** The API answered a call with a throttling error (the client retries the call itself). */
  throttled(): void {
    this.stats.throttles++;
    if (this.successes < this.nextCutAfter) return;
    this.stats.cuts++;
    this.threshold = Math.max(1, Math.floor(this.limit / 2));
    this.windowSuccesses = 0;
    this.setLimit(this.threshold);
    this.nextCutAfter = this.successes + this.limit;
  }

  private setLimit(limit: number): void {
    this.limit = Math.max(1, Math.min(limit, this.max));
    this.stats.peak = Math.max(this.stats.peak, this.limit);
    this.queue.concurrency = this.limit;
  }
}

export async function writeEachChange(
  changes: Change[],
  options: { table: string; concurrency: AdaptiveConcurrency; progress: Progress; errorText: (error: unknown) => string; onResult?: (result: ChangeResult) => void },
  /** Carries out one change; returns why it was not attempted, or throws the API's error. */
  writeOne: (change: Change) => Promise<string | undefined>,
): Promise<ChangeResult[]> {
  let done = 0;
  const attempt = async (change: Change): Promise<ChangeResult> => {
    try {
      const error = await writeOne(change);
      if (error !== undefined) return { change, ok: false, error };
      options.concurrency.succeeded();
      return { change, ok: true };
    } catch (error) {
      return { change, ok: false, error: options.errorText(error) };
    }
  };
  return Promise.all(
    changes.map((change) =>
      options.concurrency.run(async (): Promise<ChangeResult> => {
        const result = await attempt(change);
        options.onResult?.(result);
        options.progress({ table: options.table, done: ++done, total: changes.length });
        return result;
      }),
    ),
  );
}
