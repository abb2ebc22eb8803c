/**
 * Leader election: the decision table (pure), then two electors against the Kubernetes API test server on
 * a fake clock (acquire, renew, expiry by observation and not by renewTime, takeover counting, 409 on a
 * stale write, the fence that ends a leader that cannot renew before anyone else may take over, release),
 * and the run loop on a real clock with short durations.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { FakeClock } from "../../testkit/fake-clock.js";
import { kubeconfigYaml, startKubeServer, type KubeApiServer } from "../../testkit/kube-server.js";
import { KubeClient } from "../kube/client.js";
import { discoverConnection } from "../kube/kubeconfig.js";
import { decide, LeaderElector, LeadershipLost, microTime, type ElectionSettings, type Lease, type Observation } from "./leader.js";

const LEASE = { namespace: "podroutes", name: "podroutes-controller" };
const TIMING = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };
const WALL = new Date("2026-01-01T00:00:00Z");

function lease(spec: Lease["spec"], resourceVersion = "7"): Lease {
  return { metadata: { name: LEASE.name, namespace: LEASE.namespace, resourceVersion }, spec };
}

describe("decide (one attempt of client-go's tryAcquireOrRenew)", () => {
  const context = (now: number, identity = "b") => ({ identity, leaseDurationMs: 15_000, now, wallNow: WALL });

  it("no Lease: create it, holding it, with no transitions", () => {
    const { decision } = decide(undefined, undefined, context(0));
    assert.deepEqual(decision, { action: "create", spec: { holderIdentity: "b", leaseDurationSeconds: 15, acquireTime: microTime(WALL), renewTime: microTime(WALL), leaseTransitions: 0 } });
    assert.equal(microTime(WALL), "2026-01-01T00:00:00.000000Z");
  });

  it("held by another: expiry counts from when THIS replica saw the record change, not from renewTime", () => {
    // renewTime an hour ago (a holder whose clock is behind): still valid, we only just saw it.
    const held = lease({ holderIdentity: "a", leaseDurationSeconds: 15, renewTime: "2025-12-31T23:00:00.000000Z", leaseTransitions: 3 });
    const first = decide(held, undefined, context(100_000));
    assert.deepEqual(first.decision, { action: "wait", holder: "a", expiresInMs: 15_000 });
    // The same record 14.9 s later: still waiting; 15 s later: expired, a takeover counting one more transition.
    assert.equal(decide(held, first.observed, context(114_900)).decision.action, "wait");
    const taken = decide(held, first.observed, context(115_000)).decision;
    assert.equal(taken.action, "update");
    assert.deepEqual(taken.action === "update" && [taken.takeover, taken.spec.holderIdentity, taken.spec.leaseTransitions], [true, "b", 4]);
    // renewTime in the future (a holder whose clock is ahead) does not keep a lease alive either.
    const ahead = lease({ holderIdentity: "a", leaseDurationSeconds: 15, renewTime: "2030-01-01T00:00:00.000000Z" });
    const seen = decide(ahead, undefined, context(0));
    assert.equal(decide(ahead, seen.observed, context(15_000)).decision.action, "update");
  });

  it("a renewed record restarts the wait: the holder is alive", () => {
    const v1 = lease({ holderIdentity: "a", leaseDurationSeconds: 15, renewTime: "2026-01-01T00:00:00.000000Z" });
    const v2 = lease({ holderIdentity: "a", leaseDurationSeconds: 15, renewTime: "2026-01-01T00:00:02.000000Z" }, "8");
    const first = decide(v1, undefined, context(0));
    const second = decide(v2, first.observed, context(14_000));
    assert.deepEqual(second.decision, { action: "wait", holder: "a", expiresInMs: 15_000 });
    assert.equal((second.observed as Observation).at, 14_000);
  });

  it("the holder renews: acquireTime and transitions are kept", () => {
    const mine = lease({ holderIdentity: "b", leaseDurationSeconds: 15, acquireTime: "2025-12-31T00:00:00.000000Z", renewTime: "2025-12-31T00:00:00.000000Z", leaseTransitions: 5 });
    const { decision } = decide(mine, undefined, context(0));
    assert.deepEqual(decision, { action: "update", takeover: false, spec: { holderIdentity: "b", leaseDurationSeconds: 15, acquireTime: "2025-12-31T00:00:00.000000Z", renewTime: microTime(WALL), leaseTransitions: 5 } });
  });

  it("a released lease (no holder) is taken at once", () => {
    const released = lease({ holderIdentity: "", leaseDurationSeconds: 1, leaseTransitions: 2 });
    const { decision } = decide(released, undefined, context(0));
    assert.equal(decision.action === "update" && decision.spec.leaseTransitions, 3);
  });
});

describe("two electors against the API test server (fake clock)", () => {
  let server: KubeApiServer;
  let dir: string;
  const clients: KubeClient[] = [];

  before(async () => {
    server = await startKubeServer({
      tokens: { "token-a": { user: "replica-a", rules: "*" }, "token-b": { user: "replica-b", rules: "*" } },
    });
    dir = await mkdtemp(join(tmpdir(), "podroutes-leader-"));
  });
  after(async () => {
    for (const client of clients) client.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    server.remove("leases", LEASE.name, LEASE.namespace);
    server.clearRequests();
  });

  async function client(token: string): Promise<KubeClient> {
    const path = join(dir, `kubeconfig-${token}`);
    await writeFile(path, kubeconfigYaml({ server: server.url, caFile: server.caFile, token }));
    const made = new KubeClient(await discoverConnection({ kubeconfig: path }));
    clients.push(made);
    return made;
  }

  async function elector(identity: string, clock: FakeClock, log: string[] = []): Promise<LeaderElector> {
    const settings: ElectionSettings = { ...LEASE, identity, ...TIMING };
    return new LeaderElector(await client(`token-${identity}`), settings, {
      onStartedLeading: (_signal, lease) => log.push(`${identity} leads (transitions ${lease.transitions})`),
      onStoppedLeading: (how, why) => log.push(`${identity} ${how}: ${why}`),
    }, clock);
  }

  const stored = () => server.object("leases", LEASE.name, LEASE.namespace)!.spec as Lease["spec"];

  it("one acquires, the other waits out the lease counted from its own observation, then takes over; the old leader stopped before that", async () => {
    const clock = new FakeClock(WALL);
    const log: string[] = [];
    const a = await elector("a", clock, log);
    const b = await elector("b", clock, log);
    let aSignal: AbortSignal | undefined;
    (a as unknown as { events: { onStartedLeading: (s: AbortSignal) => void } }).events.onStartedLeading = (signal) => (aSignal = signal);

    assert.equal(await a.tryAcquireOrRenew(), true);
    assert.equal(await b.tryAcquireOrRenew(), false);
    assert.deepEqual([stored()!.holderIdentity, stored()!.leaseTransitions, stored()!.leaseDurationSeconds], ["a", 0, 15]);
    assert.equal(server.requests.find((r) => r.token === "token-a")?.method, "GET");
    assert.deepEqual(server.requests.filter((r) => r.token === "token-a").map((r) => `${r.method} ${r.code}`), ["GET 404", "POST 201"]);

    // a renews at 2 s: a PUT with the version it wrote; b sees the change and restarts its wait.
    await clock.advance(2_000);
    assert.equal(await a.tryAcquireOrRenew(), true);
    const renewal = server.requests.filter((r) => r.token === "token-a").at(-1)!;
    assert.deepEqual([renewal.method, renewal.code], ["PUT", 200]);
    assert.equal(await b.tryAcquireOrRenew(), false);

    // a falls silent. Its fence is 10 s after it sent that renewal: at 12 s it no longer leads.
    await clock.advance(9_999);
    assert.equal(a.isLeader, true);
    await clock.advance(1);
    assert.equal(a.isLeader, false);
    assert.ok(aSignal?.aborted, "the leadership signal aborts at the fence");
    assert.ok(aSignal?.reason instanceof LeadershipLost);

    // b may take over only 15 s after it saw a's renewal (at 2 s): not at 16.9 s, at 17 s.
    await clock.advance(4_900);
    assert.equal(await b.tryAcquireOrRenew(), false);
    await clock.advance(100);
    assert.equal(await b.tryAcquireOrRenew(), true);
    assert.deepEqual([stored()!.holderIdentity, stored()!.leaseTransitions], ["b", 1]);
    assert.equal(b.transitions, 1);
    // An elector that lost never leads again (its process restarts clean).
    assert.equal(await a.tryAcquireOrRenew(), false);
    assert.ok(log.some((line) => line.startsWith("b leads (transitions 1)")), log.join("\n"));
  });

  it("writes carry the resourceVersion read: of two replicas racing for a free lease, exactly one wins (the other gets 409)", async () => {
    const clock = new FakeClock(WALL);
    server.put("leases", { metadata: { name: LEASE.name, namespace: LEASE.namespace }, spec: { holderIdentity: "", leaseDurationSeconds: 1, leaseTransitions: 4 } });
    const a = await elector("a", clock);
    const b = await elector("b", clock);
    const results = await Promise.all([a.tryAcquireOrRenew(), b.tryAcquireOrRenew()]);
    assert.deepEqual(results.filter(Boolean).length, 1, `exactly one leads: ${results}`);
    const puts = server.requests.filter((r) => r.method === "PUT");
    assert.deepEqual(puts.map((r) => r.code).sort(), [200, 409]);
    assert.equal(stored()!.leaseTransitions, 5);
  });

  it("a leader that cannot reach the API stops at its fence, 5 s before the lease could expire for anyone", async () => {
    const clock = new FakeClock(WALL);
    const a = await elector("a", clock);
    assert.equal(await a.tryAcquireOrRenew(), true);
    server.revokeToken("token-a");
    try {
      for (let t = 2_000; t < 10_000; t += 2_000) {
        await clock.advance(2_000);
        assert.equal(await a.tryAcquireOrRenew(), false, `renewal at ${t} ms fails`);
        assert.equal(a.isLeader, true, `still within the renew deadline at ${t} ms`);
      }
      await clock.advance(2_000);
      assert.equal(a.isLeader, false);
      assert.equal(a.fenceInMs, 0);
    } finally {
      server.setToken("token-a", { user: "replica-a", rules: "*" });
    }
  });

  it("clock skew between replicas does not matter: a holder whose wall clock is an hour behind keeps its lease", async () => {
    const behind = new FakeClock(WALL, -3_600_000);
    const honest = new FakeClock(WALL);
    const a = await elector("a", behind);
    const b = await elector("b", honest);
    assert.equal(await a.tryAcquireOrRenew(), true);
    assert.match(stored()!.renewTime!, /^2025-12-31T23:00:00/);
    for (let i = 0; i < 5; i++) {
      await behind.advance(2_000);
      await honest.advance(2_000);
      assert.equal(await a.tryAcquireOrRenew(), true);
      assert.equal(await b.tryAcquireOrRenew(), false, "b sees the record change and waits");
    }
  });

  it("release on shutdown: empty holder and 1 s, and the other replica takes over at once", async () => {
    const clock = new FakeClock(WALL);
    const a = await elector("a", clock);
    const b = await elector("b", clock);
    assert.equal(await a.tryAcquireOrRenew(), true);
    assert.equal(await b.tryAcquireOrRenew(), false);
    assert.equal(await a.release(), true);
    assert.deepEqual([stored()!.holderIdentity, stored()!.leaseDurationSeconds], ["", 1]);
    assert.equal(a.isLeader, false);
    assert.equal(await b.tryAcquireOrRenew(), true, "no wait for a released lease");
    assert.deepEqual([stored()!.holderIdentity, stored()!.leaseTransitions], ["b", 1]);
  });

  it("release after a renewal that landed but whose answer was lost (cut short by the shutdown): the lease is read again and still released", async () => {
    const clock = new FakeClock(WALL);
    const a = await elector("a", clock);
    const b = await elector("b", clock);
    assert.equal(await a.tryAcquireOrRenew(), true);
    // a's renewal reached the API (a new resourceVersion) but a never saw the answer.
    server.update("leases", LEASE.name, (lease) => void ((lease.spec as Lease["spec"])!.renewTime = new Date(WALL.getTime() + 2_000).toISOString()), LEASE.namespace);
    assert.equal(await a.release(), true);
    assert.deepEqual([stored()!.holderIdentity, stored()!.leaseDurationSeconds], ["", 1]);
    assert.equal(await b.tryAcquireOrRenew(), true, "the standby need not wait the lease out");
  });

  it("a release never takes a lease someone else holds by then", async () => {
    const clock = new FakeClock(WALL);
    const a = await elector("a", clock);
    assert.equal(await a.tryAcquireOrRenew(), true);
    server.update("leases", LEASE.name, (lease) => void ((lease.spec as Lease["spec"])!.holderIdentity = "c"), LEASE.namespace);
    assert.equal(await a.release(), false);
    assert.equal(stored()!.holderIdentity, "c");
  });
});

describe("the run loop (real clock, short durations)", () => {
  it("campaigns, leads, renews; on shutdown releases, and the standby leads well within a lease duration", async () => {
    const server = await startKubeServer({ tokens: { "token-a": { user: "a", rules: "*" }, "token-b": { user: "b", rules: "*" } } });
    const dir = await mkdtemp(join(tmpdir(), "podroutes-leader-run-"));
    const timing = { leaseDurationMs: 3_000, renewDeadlineMs: 2_000, retryPeriodMs: 200 };
    const clients: KubeClient[] = [];
    const stopA = new AbortController();
    const stopB = new AbortController();
    try {
      const make = async (identity: string) => {
        const path = join(dir, `kubeconfig-${identity}`);
        await writeFile(path, kubeconfigYaml({ server: server.url, caFile: server.caFile, token: `token-${identity}` }));
        const made = new KubeClient(await discoverConnection({ kubeconfig: path }));
        clients.push(made);
        const started: number[] = [];
        const elector = new LeaderElector(made, { ...LEASE, identity, ...timing }, { onStartedLeading: () => started.push(Date.now()) });
        return { elector, started };
      };
      const a = await make("a");
      const b = await make("b");
      const runA = a.elector.run(stopA.signal);
      await waitFor(() => a.elector.isLeader);
      const runB = b.elector.run(stopB.signal);
      // Several renewals go by; b never leads meanwhile.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assert.equal(b.elector.isLeader, false);
      assert.ok(a.elector.counters.renewals >= 2, `renewals: ${a.elector.counters.renewals}`);
      const stoppedAt = Date.now();
      stopA.abort();
      assert.equal(await runA, "stopped");
      await waitFor(() => b.elector.isLeader);
      const took = b.started[0]! - stoppedAt;
      assert.ok(took < timing.leaseDurationMs, `the standby took over ${took} ms after the release (lease ${timing.leaseDurationMs} ms)`);
      stopB.abort();
      assert.equal(await runB, "stopped");
    } finally {
      stopA.abort();
      stopB.abort();
      for (const client of clients) client.close();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

async function waitFor(check: () => boolean, limitMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > limitMs) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
