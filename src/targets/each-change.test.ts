/** The adaptive in-flight limit of the API write loops: slow start, additive increase, halving on throttles. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AdaptiveConcurrency, writeEachChange } from "./each-change.js";
import type { Change } from "./target.js";

/** A task that finishes when the test says so, and the number of tasks running. */
function gate() {
  let running = 0;
  let peak = 0;
  const pending: (() => void)[] = [];
  return {
    task: () => async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise<void>((resolve) => pending.push(resolve));
      running--;
    },
    /** Lets the `count` oldest running tasks finish, one by one, each time letting queued tasks start. */
    async release(count: number) {
      for (let i = 0; i <= count; i++) {
        if (i > 0) pending.shift()?.();
        await new Promise((resolve) => setImmediate(resolve));
      }
    },
    async releaseAll() {
      while (pending.length) await this.release(1);
    },
    get running() {
      return running;
    },
    get peak() {
      return peak;
    },
  };
}

describe("adaptive concurrency", () => {
  it("starts at 10, grows by one per success until the first throttle (doubling each round), never past the ceiling", () => {
    const limit = new AdaptiveConcurrency(25);
    assert.equal(limit.current, 10);
    for (let i = 0; i < 10; i++) limit.succeeded();
    assert.equal(limit.current, 20);
    for (let i = 0; i < 10; i++) limit.succeeded();
    assert.equal(limit.current, 25);
    assert.equal(new AdaptiveConcurrency(4).current, 4);
  });

  it("halves on a throttle, ignores the throttles of calls sent before the cut, then grows by one per window", () => {
    const limit = new AdaptiveConcurrency(200);
    for (let i = 0; i < 30; i++) limit.succeeded();
    assert.equal(limit.current, 40);
    limit.throttled();
    assert.equal(limit.current, 20);
    limit.throttled(); // sent under the old limit of 40: no second cut
    assert.equal(limit.current, 20);
    for (let i = 0; i < 19; i++) limit.succeeded();
    assert.equal(limit.current, 20, "no growth before a whole window of successes");
    limit.succeeded();
    assert.equal(limit.current, 21);
    limit.throttled(); // a window has passed since the cut: this one counts
    assert.equal(limit.current, 10);
    assert.deepEqual(limit.stats, { throttles: 3, cuts: 2, peak: 40 });
  });

  it("never goes below one", () => {
    const limit = new AdaptiveConcurrency(200, 1);
    limit.throttled();
    assert.equal(limit.current, 1);
  });

  it("runs no more tasks at once than the current limit, and starts more as the limit grows", async () => {
    const limit = new AdaptiveConcurrency(200, 2);
    const tasks = gate();
    const all = Promise.all(Array.from({ length: 12 }, () => limit.run(tasks.task())));
    await tasks.release(0);
    assert.equal(tasks.running, 2);
    limit.succeeded();
    limit.succeeded();
    await tasks.release(0);
    assert.equal(tasks.running, 4);
    limit.throttled();
    await tasks.release(3);
    assert.equal(tasks.running, 2, "after the cut, finished tasks are not replaced until below the new limit");
    await tasks.releaseAll();
    await all;
    assert.equal(tasks.peak, 4);
  });
});

describe("writeEachChange", () => {
  const change = (n: number): Change => ({ action: "delete", current: { destination: `10.200.${n}.0/24`, owned: true } });

  it("gives every change a result, counts only carried-out changes as successes, and shares one limit between tables", async () => {
    const limit = new AdaptiveConcurrency(200, 10);
    const options = { concurrency: limit, progress: () => {}, errorText: (error: unknown) => String(error) };
    const [a, b] = await Promise.all([
      writeEachChange([change(0), change(1), change(2)], { ...options, table: "a" }, async () => undefined),
      writeEachChange([change(3), change(4)], { ...options, table: "b" }, async (c) => {
        if (c.action === "delete" && c.current.destination === "10.200.3.0/24") return "not attempted";
        throw new Error("403 forbidden");
      }),
    ]);
    assert.deepEqual(a!.map((r) => r.ok), [true, true, true]);
    assert.deepEqual(b!.map((r) => [r.ok, r.error]), [[false, "not attempted"], [false, "Error: 403 forbidden"]]);
    assert.equal(limit.current, 13, "three successes in slow start");
  });
});
