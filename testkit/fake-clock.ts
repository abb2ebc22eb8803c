/**
 * A clock tests move by hand: `advance(ms)` runs every timer and sleep that falls due, in time order,
 * letting the promises they settle run before the next one. Wall time can be skewed against the monotonic
 * time, as two machines' clocks disagree.
 */
import type { Clock } from "../src/controller/leader.js";

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

export class FakeClock implements Clock {
  private time = 0;
  private seq = 0;
  private timers: Timer[] = [];

  constructor(
    /** Wall time at monotonic 0. */
    private readonly wallStart = new Date("2026-01-01T00:00:00Z"),
    /** Added to wall time only: this machine's clock is this far off. */
    readonly wallSkewMs = 0,
  ) {}

  now(): number {
    return this.time;
  }

  wallNow(): Date {
    return new Date(this.wallStart.getTime() + this.time + this.wallSkewMs);
  }

  after(ms: number, fn: () => void): () => void {
    const timer: Timer = { at: this.time + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const cancel = this.after(ms, () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      });
      const onAbort = () => {
        cancel();
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Moves time forward by `ms`, firing what falls due in order. */
  async advance(ms: number): Promise<void> {
    const end = this.time + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.time = Math.max(this.time, due.at);
      due.fn();
      await new Promise((resolve) => setImmediate(resolve));
    }
    this.time = end;
  }
}
