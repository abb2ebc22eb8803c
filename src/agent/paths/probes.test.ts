/**
 * PathProbes with real UDP sockets on loopback addresses (127.0.N.1 stand for the pod CIDRs' gateways:
 * every 127/8 address is local on Linux, so no root and no lab address), a fake clock for the ticks, and
 * the Events it asks for recorded.
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { FakeClock } from "../../../testkit/fake-clock.js";
import type { KubeNode } from "../../kube/nodes.js";
import type { Logger } from "../../observe/log.js";
import { Registry } from "../../observe/metrics.js";
import { PathProbes, PATHS_RECOVERED_REASON, PATHS_UNREACHABLE_REASON } from "./probes.js";
import { PathProber, probeDatagram, readProbeDatagram } from "./prober.js";

const PORT = 20_000 + (process.pid % 20_000);
const node = (name: string, n: number): KubeNode => ({ metadata: { name, uid: `uid-${name}` }, spec: { podCIDRs: [`127.0.${n}.0/24`] }, status: { addresses: [{ type: "InternalIP", address: `127.1.${n}.1` }] } });
const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function agent(self: string, nodes: () => KubeNode[], clock: FakeClock) {
  const events: { node: string; reason: string; message: string; type?: string }[] = [];
  const registry = new Registry();
  const probes = new PathProbes(
    { ratePerSecond: 2, minIntervalMs: 5000, timeoutMs: 100, failuresToUnreachable: 3, port: PORT, addressOffset: 1, eventDelayMs: 2000 },
    { nodes, self: () => self, postEvent: async (event: any) => void events.push({ node: event.involvedObject.name, reason: event.reason, message: event.message, type: event.type }), registry, log: quiet, clock },
  );
  return { probes, events, registry };
}

/** Ticks the fake clock in 500 ms steps, letting real datagrams and timeouts happen between, until `done` (at most `steps`). */
async function until(clock: FakeClock, done: () => boolean, steps = 200): Promise<boolean> {
  for (let i = 0; i < steps && !done(); i++) {
    await clock.advance(500);
    await sleep(30);
  }
  return done();
}

describe("probe datagrams", () => {
  it("a request and a reply read back; anything else is not one", () => {
    assert.deepEqual(readProbeDatagram(probeDatagram("request", 7)), { type: "request", id: 7 });
    assert.deepEqual(readProbeDatagram(probeDatagram("reply", 0xffffffff)), { type: "reply", id: 0xffffffff });
    assert.equal(readProbeDatagram(Buffer.from("PRPB")), undefined);
    assert.equal(readProbeDatagram(Buffer.alloc(12)), undefined);
  });
});

describe("PathProbes on loopback", () => {
  const stops: (() => Promise<void>)[] = [];
  after(async () => {
    for (const stop of stops) await stop();
  });

  it("probes answered both ways; a peer with no agent turns unreachable (one Event, on the own Node, listed on /debug/paths, counted), and recovers", async () => {
    const clock = new FakeClock();
    const nodes = [node("a", 1), node("b", 2), node("c", 3)];
    const a = agent("a", () => nodes, clock);
    const b = agent("b", () => nodes, clock);
    stops.push(() => a.probes.stop(), () => b.probes.stop());
    a.probes.start();
    b.probes.start();
    assert.ok(await until(clock, () => a.probes.schedule.counts().unreachable === 1 && a.probes.schedule.counts().reachable === 1), JSON.stringify(a.probes.debug()));
    assert.ok(await until(clock, () => a.events.length === 1 && b.events.length === 1));
    assert.equal(a.events[0]!.node, "a");
    assert.equal(a.events[0]!.reason, PATHS_UNREACHABLE_REASON);
    assert.equal(a.events[0]!.type, "Warning");
    assert.match(a.events[0]!.message, /c \(127\.0\.3\.1: no reply in 100 ms\); 1 of 2 peers unreachable/);
    const debug = a.probes.debug() as { counts: object; unreachable: { name: string; address: string }[] };
    assert.deepEqual(debug.counts, { unknown: 0, reachable: 1, unreachable: 1 });
    assert.deepEqual(debug.unreachable.map((u) => [u.name, u.address]), [["c", "127.0.3.1"]]);
    const text = a.registry.text();
    assert.match(text, /^podroutes_path_peers\{state="unreachable"\} 1$/m);
    assert.match(text, /^podroutes_path_peers\{state="reachable"\} 1$/m);
    assert.match(text, /^podroutes_path_requests_answered_total [1-9]/m, "b's probes answered by a");
    assert.match(text, /^podroutes_path_rtt_seconds_count [1-9]/m);
    assert.doesNotMatch(text, /peer="|node="/, "no label per peer");
    assert.deepEqual(a.probes.readiness().ok, false);

    // c's agent starts: a and b see the path recover, one Normal Event each.
    const c = agent("c", () => nodes, clock);
    stops.push(() => c.probes.stop());
    c.probes.start();
    assert.ok(await until(clock, () => a.events.length === 2 && b.events.length === 2), JSON.stringify(a.probes.debug()));
    assert.equal(a.events[1]!.reason, PATHS_RECOVERED_REASON);
    assert.equal(a.events[1]!.type, "Normal");
    assert.deepEqual(a.probes.schedule.counts(), { unknown: 0, reachable: 2, unreachable: 0 });
    assert.equal(c.events.length, 0, "c never saw a path broken");
    assert.deepEqual(a.probes.readiness().ok, true);
  });

  it("a reply from an address other than the one probed proves nothing", async () => {
    const answering = new PathProber({ address: "127.0.9.1", port: PORT, timeoutMs: 200 });
    const asking = new PathProber({ address: "127.0.8.1", port: PORT, timeoutMs: 200 });
    stops.push(() => answering.close(), () => asking.close());
    await answering.bind();
    await asking.bind();
    assert.ok("rttMs" in (await asking.probe("127.0.9.1")));
    // 127.0.9.2 is local too, but nothing listens there: no reply.
    assert.deepEqual(await asking.probe("127.0.9.2"), { error: "no reply in 200 ms" });
    assert.equal(answering.answered, 1);
  });
});
