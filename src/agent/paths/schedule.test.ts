import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock } from "../../../testkit/fake-clock.js";
import { cycleMs, PathSchedule, type PathPeer } from "./schedule.js";

const peer = (i: number, hop = "a"): PathPeer => ({ name: `node-${String(i).padStart(4, "0")}`, target: `10.${200 + (i >> 8)}.${i & 255}.1`, key: `10.x/${i} via ${hop}` });

/** Runs ticks every `tickMs` for `forMs`, every probe answered at once unless `fails(name)`; returns the names probed in order with their time. */
async function drive(schedule: PathSchedule, clock: FakeClock, tickMs: number, forMs: number, fails: (name: string) => boolean = () => false) {
  const probed: { name: string; at: number }[] = [];
  const transitions: ReturnType<PathSchedule["done"]>[] = [];
  const end = clock.now() + forMs;
  while (clock.now() < end) {
    const next = schedule.next(clock.now());
    if (next) {
      probed.push({ name: next.name, at: clock.now() });
      const t = schedule.done(next, fails(next.name) ? { error: "no reply in 1000 ms" } : { rttMs: 1 }, clock.now());
      if (t) transitions.push(t);
    }
    await clock.advance(tickMs);
  }
  return { probed, transitions };
}

describe("PathSchedule", () => {
  it("at 5,000 Nodes and 2 probes/s, every ordered pair is probed at least once an hour, and a new peer at the next tick", async () => {
    const clock = new FakeClock();
    const schedule = new PathSchedule({ minIntervalMs: 30_000, failuresToUnreachable: 3 });
    const peers = Array.from({ length: 4999 }, (_, i) => peer(i));
    schedule.setPeers(peers, clock.now());
    const { probed } = await drive(schedule, clock, 500, 3_600_000);
    const times = new Map<string, number[]>();
    for (const p of probed) times.set(p.name, [...(times.get(p.name) ?? []), p.at]);
    assert.equal(times.size, 4999, "every peer probed within the hour");
    // Between two probes of one peer: one cycle, 4,999 ticks of 500 ms, never more than an hour.
    let longestGap = 0;
    for (const list of times.values()) for (let i = 1; i < list.length; i++) longestGap = Math.max(longestGap, list[i]! - list[i - 1]!);
    assert.equal(longestGap, 4999 * 500);
    assert.ok(longestGap < 3_600_000);
    assert.equal(cycleMs(4999, 2, 30_000), 2_499_500);
    // A new Node and a changed next hop: the next two ticks, ahead of the round robin.
    schedule.setPeers([...peers.slice(1).map((p, i) => (i === 100 ? { ...p, key: `${p.key} moved` } : p)), peer(5000)], clock.now());
    const after = await drive(schedule, clock, 500, 1000);
    assert.deepEqual(after.probed.map((p) => p.name).sort(), [peers[101]!.name, peer(5000).name].sort());
    assert.equal(schedule.size, 4999, "node-0000, no longer listed, is forgotten; node-5000 added");
    assert.ok(!schedule.statuses().some((s) => s.name === "node-0000"));
  });

  it("a small cluster: round robin no more often than the minimum interval", async () => {
    const clock = new FakeClock();
    const schedule = new PathSchedule({ minIntervalMs: 30_000, failuresToUnreachable: 3 });
    schedule.setPeers([peer(1), peer(2), peer(3)], clock.now());
    const { probed } = await drive(schedule, clock, 500, 60_000);
    assert.deepEqual(
      probed.map((p) => [p.name, p.at]),
      [
        ["node-0001", 0],
        ["node-0002", 500],
        ["node-0003", 1000],
        ["node-0001", 30_000],
        ["node-0002", 30_500],
        ["node-0003", 31_000],
      ],
    );
  });

  it("unreachable after 3 failures in a row (retried first), reachable at the first reply; unknown → reachable is no news", async () => {
    const clock = new FakeClock();
    const schedule = new PathSchedule({ minIntervalMs: 30_000, failuresToUnreachable: 3 });
    schedule.setPeers([peer(1), peer(2)], clock.now());
    let broken = new Set(["node-0002"]);
    const first = await drive(schedule, clock, 500, 2500, (name) => broken.has(name));
    // node-0002's retries come at once, before node-0001 would be due again.
    assert.deepEqual(first.probed.map((p) => p.name), ["node-0001", "node-0002", "node-0002", "node-0002"]);
    assert.deepEqual(first.transitions, [{ name: "node-0002", target: peer(2).target, to: "unreachable", error: "no reply in 1000 ms" }]);
    assert.deepEqual(schedule.counts(), { unknown: 0, reachable: 1, unreachable: 1 });
    assert.equal(schedule.statuses().find((s) => s.name === "node-0002")!.failures, 3);
    broken = new Set();
    const second = await drive(schedule, clock, 500, 31_000, (name) => broken.has(name));
    assert.deepEqual(second.transitions, [{ name: "node-0002", target: peer(2).target, to: "reachable" }]);
    assert.deepEqual(schedule.counts(), { unknown: 0, reachable: 2, unreachable: 0 });
  });

  it("a single lost reply is retried and makes no transition", async () => {
    const clock = new FakeClock();
    const schedule = new PathSchedule({ minIntervalMs: 30_000, failuresToUnreachable: 3 });
    schedule.setPeers([peer(1)], clock.now());
    let lose = 1;
    const { probed, transitions } = await drive(schedule, clock, 500, 1000, () => lose-- > 0);
    assert.equal(probed.length, 2);
    assert.deepEqual(transitions, []);
    assert.deepEqual(schedule.counts(), { unknown: 0, reachable: 1, unreachable: 0 });
  });

  it("a result for a path that changed while the probe was out counts for nothing; a peer in flight is not probed twice", () => {
    const schedule = new PathSchedule({ minIntervalMs: 30_000, failuresToUnreachable: 1 });
    schedule.setPeers([peer(1)], 0);
    const sent = schedule.next(0)!;
    assert.equal(schedule.next(10), undefined, "in flight");
    schedule.setPeers([peer(1, "b")], 20);
    assert.equal(schedule.done(sent, { error: "no reply" }, 30), undefined);
    assert.deepEqual(schedule.counts(), { unknown: 1, reachable: 0, unreachable: 0 });
    assert.equal(schedule.next(40)?.key, peer(1, "b").key, "the changed path is probed at once");
  });

  it("refuses a failure threshold below 1", () => {
    assert.throws(() => new PathSchedule({ minIntervalMs: 1, failuresToUnreachable: 0 }), /at least 1/);
  });
});
