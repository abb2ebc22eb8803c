import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ReconcileLoop } from "./loop.js";

/** A reconcile that records its reasons and waits until released, so a test decides when it ends. */
function recorder(results: boolean[] = []) {
  const runs: string[][] = [];
  let release: (() => void) | undefined;
  let gate = Promise.resolve();
  return {
    runs,
    hold() {
      gate = new Promise((resolve) => (release = resolve));
    },
    release() {
      release?.();
    },
    reconcile: async (reasons: string[]) => {
      runs.push(reasons);
      await gate;
      return results.shift() ?? true;
    },
  };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

describe("reconcile loop", () => {
  it("coalesces a burst of triggers into one reconcile", async () => {
    const r = recorder();
    const loop = new ReconcileLoop({ reconcile: r.reconcile, canRun: () => true });
    for (let i = 0; i < 100; i++) loop.trigger(`node node-${i % 10} modified`);
    await loop.settled();
    assert.equal(r.runs.length, 1);
    assert.equal(r.runs[0]!.length, 10, "each distinct reason once");
    await loop.stop();
  });

  it("runs one reconcile at a time: triggers during a run cause exactly one more", async () => {
    const r = recorder();
    const loop = new ReconcileLoop({ reconcile: r.reconcile, canRun: () => true });
    r.hold();
    loop.trigger("first");
    await tick();
    assert.equal(r.runs.length, 1);
    for (let i = 0; i < 50; i++) loop.trigger(i % 2 ? "kernel event" : "node event", i % 3 ? 0 : 10);
    await tick();
    await tick();
    assert.equal(r.runs.length, 1, "no second reconcile while the first runs");
    r.release();
    await loop.settled();
    assert.equal(r.runs.length, 2);
    assert.deepEqual(r.runs[1]!.sort(), ["kernel event", "node event"]);
    await loop.stop();
  });

  it("plans nothing while the gate is shut (no complete list yet), then once it opens", async () => {
    const r = recorder();
    let listed = false;
    const loop = new ReconcileLoop({ reconcile: r.reconcile, canRun: () => listed });
    loop.trigger("periodic resync");
    loop.trigger("kernel event", 1);
    await tick();
    await loop.settled();
    assert.equal(r.runs.length, 0);
    listed = true;
    loop.trigger("complete list of 3 Nodes");
    await loop.settled();
    assert.equal(r.runs.length, 1);
    assert.deepEqual(r.runs[0]!.sort(), ["complete list of 3 Nodes", "kernel event", "periodic resync"]);
    await loop.stop();
  });

  it("tries a failed reconcile again after a backoff, and a thrown one counts as failed", async () => {
    const r = recorder([false]);
    const errors: unknown[] = [];
    let first = true;
    const loop = new ReconcileLoop({
      reconcile: async (reasons) => {
        if (first) {
          first = false;
          throw new Error("bug");
        }
        return r.reconcile(reasons);
      },
      canRun: () => true,
      onError: (error) => errors.push(error),
      retry: { initialMs: 5, maxMs: 5 },
    });
    loop.trigger("start");
    for (let i = 0; i < 100 && r.runs.length < 2; i++) await tick();
    assert.equal(errors.length, 1);
    assert.deepEqual(r.runs, [["retry after a failed reconcile"], ["retry after a failed reconcile"]]);
    await loop.settled();
    await loop.stop();
  });

  it("reports how long a reconcile has been in flight (liveness), zero when idle", async () => {
    let now = 1000;
    const r = recorder();
    const loop = new ReconcileLoop({ reconcile: r.reconcile, canRun: () => true, now: () => now });
    assert.equal(loop.busyFor(), 0);
    r.hold();
    loop.trigger("x");
    await tick();
    now += 130_000;
    assert.equal(loop.busyFor(), 130_000);
    r.release();
    await loop.settled();
    assert.equal(loop.busyFor(), 0);
    await loop.stop();
  });
});
