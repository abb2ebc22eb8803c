/**
 * The reconcile loop's scheduling: one reconcile at a time (single flight), started by triggers (a Node
 * event, a kernel event, the resync timer) and coalesced — every trigger that arrives before a reconcile
 * starts joins it, and any number arriving while one runs cause exactly one more. A trigger may ask for a
 * delay (kernel events wait a few tens of milliseconds, so a link flap's burst of lines is one
 * reconcile); the earliest due time wins. Nothing runs while the gate is shut (before the first complete
 * list of Nodes). A failed reconcile is tried again after a backoff (1 s doubling to 30 s). What a
 * reconcile does is the caller's; this module only decides when.
 */

export interface LoopOptions {
  /** One reconcile; the reasons that triggered it. Resolves true when it converged, false to retry. */
  reconcile(reasons: string[]): Promise<boolean>;
  /** The gate: false keeps triggers pending (no complete list of Nodes yet). */
  canRun(): boolean;
  /** A reconcile threw (a bug or an unexpected failure): it counts as failed. */
  onError?(error: unknown): void;
  retry?: { initialMs: number; maxMs: number };
  now?: () => number;
}

export class ReconcileLoop {
  /** Reconciles started. */
  runs = 0;
  private pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private dueAt = Infinity;
  private current: Promise<void> | undefined;
  private startedAt: number | undefined;
  private stopped = false;
  private retryMs: number;
  private readonly now: () => number;

  constructor(private readonly options: LoopOptions) {
    this.retryMs = options.retry?.initialMs ?? 1000;
    this.now = options.now ?? Date.now;
  }

  /** Asks for a reconcile within `delayMs` (0: as soon as the current one, if any, is done). */
  trigger(reason: string, delayMs = 0): void {
    if (this.stopped) return;
    this.pending.add(reason);
    this.schedule(delayMs);
  }

  private schedule(delayMs: number): void {
    const due = this.now() + delayMs;
    if (this.timer && this.dueAt <= due) return;
    clearTimeout(this.timer);
    this.dueAt = due;
    this.timer = setTimeout(() => this.fire(), delayMs);
  }

  private fire(): void {
    this.timer = undefined;
    this.dueAt = Infinity;
    // Busy: the reasons stay pending and the end of the current run starts the next.
    if (this.stopped || this.current || !this.pending.size || !this.options.canRun()) return;
    const reasons = [...this.pending];
    this.pending.clear();
    this.runs++;
    this.startedAt = this.now();
    this.current = this.runOnce(reasons).finally(() => {
      this.current = undefined;
      this.startedAt = undefined;
      if (this.pending.size && !this.timer) this.schedule(0);
    });
  }

  private async runOnce(reasons: string[]): Promise<void> {
    let ok = false;
    try {
      ok = await this.options.reconcile(reasons);
    } catch (error) {
      this.options.onError?.(error);
    }
    if (ok) {
      this.retryMs = this.options.retry?.initialMs ?? 1000;
    } else if (!this.stopped) {
      this.pending.add("retry after a failed reconcile");
      this.schedule(this.retryMs);
      this.retryMs = Math.min(this.options.retry?.maxMs ?? 30_000, this.retryMs * 2);
    }
  }

  /** How long the reconcile in flight has been running (0 when none is): what liveness looks at. */
  busyFor(): number {
    return this.startedAt === undefined ? 0 : this.now() - this.startedAt;
  }

  /** Resolves once nothing runs and nothing is due now (tests wait for quiet with it). */
  async settled(): Promise<void> {
    for (;;) {
      if (this.current) await this.current;
      else if (this.timer && this.dueAt <= this.now() + 5) await new Promise((resolve) => setTimeout(resolve, Math.max(0, this.dueAt - this.now()) + 1));
      else if (this.pending.size && this.options.canRun() && !this.timer) this.schedule(0);
      else return;
    }
  }

  /** Stops triggering and waits for the reconcile in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
    await this.current;
  }
}
