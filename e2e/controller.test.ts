/**
 * `podroutes controller --target gcp` as its users run it: replicas are separate processes of the built
 * CLI, against the Kubernetes API test server (each replica its own token, holding exactly
 * deploy/controller/rbac.yaml's permissions) and the local Compute Engine server (each replica its own
 * access token, so the server's request log tells who wrote what). Covered: one writer among two
 * replicas, a killed leader's successor converging without creating any route twice, SIGTERM releasing
 * the Lease, a replica cut off from the API server stopping before its lease could expire, and
 * convergence under injected faults and throttling with no 409 storm. Everything on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { nodeObject, startLogged, type Started } from "../testkit/agent-lab.js";
import { BIN, runCli } from "../testkit/cli.js";
import { controllerKubeconfig, eventually, FAST_ELECTION, LEASE, networkCondition } from "../testkit/controller.js";
import { seededRandom, startGceServer, type GceRequest, type GceServer } from "../testkit/gce-server.js";
import { startKubeServer, type KubeApiServer } from "../testkit/kube-server.js";
import type { LeaseSpec } from "../src/controller/leader.js";

const NETWORK = "kubernetes-the-hard-way";
const worker = (i: number) => nodeObject(`worker-${i}`, `10.240.${Math.floor(i / 200)}.${20 + (i % 200)}`, `10.200.${i}.0/24`);
const seconds = (ms: number) => `${ms}ms`;

describe("podroutes controller replicas (processes, gcp)", () => {
  let kube: KubeApiServer;
  let gce: GceServer;
  let dir: string;
  const replicas: Started[] = [];
  let replicaCount = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-controller-e2e-"));
    kube = await startKubeServer({ tokens: {} });
    gce = await startGceServer();
  });
  after(async () => {
    for (const replica of replicas) await replica.stop();
    await kube.close();
    await gce.stop();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    for (const replica of replicas.splice(0)) await replica.stop();
    for (const resource of ["nodes", "events", "leases"] as const) for (const o of kube.objects(resource)) kube.remove(resource, o.metadata.name, o.metadata.namespace);
    kube.clearRequests();
    kube.failRandomly(0);
    for (const name of ["a", "b"]) kube.partition(`token-${name}`, false);
    gce.reset();
    gce.latencyMs = 20;
  });

  /** Starts replica `name` of the built CLI: its own Kubernetes token and GCP access token. */
  async function replica(name: string, extra: string[] = []): Promise<Started> {
    const kubeconfig = await controllerKubeconfig(kube, dir, `token-${name}`);
    const tokenFile = join(dir, `gcp-token-${name}`);
    await writeFile(tokenFile, `gcp-${name}\n`);
    const argv = [
      process.execPath,
      "--enable-source-maps",
      BIN,
      "controller",
      "--target=gcp",
      `--project=${gce.project}`,
      `--network=${NETWORK}`,
      `--compute-endpoint=${gce.endpoint}`,
      `--access-token-file=${tokenFile}`,
      "--cluster-cidr=10.200.0.0/16",
      `--kubeconfig=${kubeconfig}`,
      `--identity=${name}`,
      `--lease-duration=${seconds(FAST_ELECTION.leaseDurationMs)}`,
      `--renew-deadline=${seconds(FAST_ELECTION.renewDeadlineMs)}`,
      `--retry-period=${seconds(FAST_ELECTION.retryPeriodMs)}`,
      "--resync=10m",
      "--listen=127.0.0.1:0",
      "--log-format=json",
      ...extra,
    ];
    const env = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, GCE_METADATA_HOST: "127.0.0.1:9", METADATA_SERVER_DETECTION: "none" };
    const started = startLogged(argv, join(dir, `${name}-${replicaCount++}.log`), `controller ${name}`, env);
    replicas.push(started);
    return started;
  }

  const lease = () => kube.object("leases", LEASE.name, LEASE.namespace)?.spec as LeaseSpec | undefined;
  const by = (name: string) => (r: GceRequest) => r.token === `gcp-${name}`;
  const isWrite = (r: GceRequest) => (r.method === "POST" && r.path.endsWith("/global/routes")) || (r.method === "DELETE" && r.path.includes("/global/routes/"));
  const routed = (count: number) => () => [...gce.routes.values()].filter((r) => r.description?.startsWith("managed by podroutes")).length === count;
  const allFalse = (count: number) => () => Array.from({ length: count }, (_, i) => networkCondition(kube, `worker-${i}`)?.state).every((s) => s === "False/RouteCreated");
  const logOf = (replica: Started) => () => `\n--- ${replica.what} ---\n${replica.log()}`;
  /** GET a replica's health or metrics endpoint (it listens on 127.0.0.1, port from its start log line). */
  const endpoint = async (replica: Started, path: string) => {
    const started = replica.log().split("\n").find((line) => line.includes('"controller started"'));
    const listen = started ? (JSON.parse(started) as { listen: string }).listen : undefined;
    if (!listen) throw new Error(`no listen address in the log${logOf(replica)()}`);
    const response = await fetch(`http://${listen}${path}`);
    return { status: response.status, body: await response.text() };
  };

  it("two replicas: exactly one reads and writes the network; the leader killed, the other takes over within the lease duration, converges, and creates no route twice", async () => {
    for (let i = 0; i < 3; i++) kube.put("nodes", worker(i));
    const a = await replica("a");
    const b = await replica("b");
    await eventually("a leader", () => !!lease()?.holderIdentity);
    await eventually("3 routes", routed(3));
    await eventually("conditions False", allFalse(3));
    const leaderName = lease()!.holderIdentity!;
    const [leader, standby] = leaderName === "a" ? [a, b] : [b, a];
    const standbyName = leaderName === "a" ? "b" : "a";
    kube.put("nodes", worker(3));
    await eventually("4 routes", routed(4));
    assert.equal(gce.requestLog.filter(by(standbyName)).length, 0, `the standby never called the Compute API${logOf(standby)()}`);
    const standbyCalls = kube.requests.filter((r) => r.token === `token-${standbyName}`);
    assert.deepEqual([...new Set(standbyCalls.map((r) => r.resource))], ["leases"], "the standby only polls the Lease: no Node watch, no condition, no Event");
    assert.deepEqual(standbyCalls.filter((r) => r.method !== "GET" && r.method !== "POST").map((r) => `${r.method} ${r.code}`), [], "and never updates it while it is held");
    assert.ok(gce.requestLog.filter(by(leaderName)).filter(isWrite).length >= 4);
    assert.deepEqual(lease()!.leaseTransitions, 0);
    assert.match((await endpoint(leader, "/metrics")).body, /^podroutes_leader 1$/m);
    assert.match((await endpoint(standby, "/metrics")).body, /^podroutes_leader 0$/m);
    await eventually("the standby is ready (it has its answer about the Lease)", async () => (await endpoint(standby, "/readyz")).status === 200);
    assert.match((await endpoint(leader, "/metrics")).body, /^podroutes_api_calls_total\{api="target",method="routes.insert",result="ok"\} 4$/m);

    // SIGKILL: no release. The standby waits the lease out, counted from when it last saw a renewal.
    leader.child.kill("SIGKILL");
    const killedAt = Date.now();
    await leader.exited;
    kube.put("nodes", worker(4));
    await eventually(`the standby leads${logOf(standby)()}`, () => lease()?.holderIdentity === standbyName, 20_000);
    const takeover = Date.now() - killedAt;
    // Expiry by observation: at most a lease duration after the kill, plus one retry period with jitter to notice.
    assert.ok(takeover < FAST_ELECTION.leaseDurationMs * 2, `took over ${takeover} ms after the kill (lease ${FAST_ELECTION.leaseDurationMs} ms)`);
    assert.equal(lease()!.leaseTransitions, 1, "a takeover counts one transition");
    await eventually("5 routes", routed(5));
    await eventually("conditions False", allFalse(5));

    const inserts = gce.requestLog.filter((r) => r.method === "POST" && r.path.endsWith("/global/routes"));
    assert.equal(inserts.length, 5, "each route inserted once, by whichever replica led");
    assert.deepEqual(inserts.map((r) => r.status), [200, 200, 200, 200, 200]);
    assert.equal(gce.requestLog.filter(by(leaderName)).filter((r) => r.at > killedAt).length, 0);
    console.log(`# takeover after SIGKILL of the leader: ${takeover} ms (lease ${FAST_ELECTION.leaseDurationMs} ms, retry ${FAST_ELECTION.retryPeriodMs} ms)`);
  });

  it("SIGTERM: the leader cancels its work, releases the Lease and exits 0; the standby takes over at once", async () => {
    for (let i = 0; i < 2; i++) kube.put("nodes", worker(i));
    const a = await replica("a");
    await eventually("a leads", () => lease()?.holderIdentity === "a");
    const b = await replica("b");
    await eventually("2 routes", routed(2));
    await eventually("b stands by", () => b.log().includes("standing by"));
    const stoppedAt = Date.now();
    assert.equal(await a.stop(), 0, a.log());
    const released = kube.requests.filter((r) => r.token === "token-a" && r.method === "PUT").at(-1)!;
    assert.equal(released.code, 200);
    await eventually(`b leads${logOf(b)()}`, () => lease()?.holderIdentity === "b");
    const takeover = Date.now() - stoppedAt;
    assert.ok(takeover < FAST_ELECTION.leaseDurationMs, `after a release the standby need not wait the lease out (${takeover} ms)`);
    assert.match(a.log(), /released the lease/);
    kube.put("nodes", worker(2));
    await eventually("b routes the new node", routed(3));
  });

  it("a replica cut off from the API server stops writing before its lease can expire, exits 1, and the other finishes the job", async () => {
    // Operations longer than the renew deadline, few at a time: the partition finds the leader mid-job.
    gce.latencyMs = 1_500;
    kube.put("nodes", worker(0));
    const a = await replica("a", ["--max-in-flight=3"]);
    await eventually("a leads", () => lease()?.holderIdentity === "a");
    const b = await replica("b", ["--max-in-flight=3"]);
    await eventually("1 route", routed(1));
    await eventually("b stands by", () => b.log().includes("standing by"));
    for (let i = 1; i < 12; i++) kube.put("nodes", worker(i));
    await eventually("a is writing", () => gce.requestLog.filter(by("a")).filter(isWrite).length >= 3);
    assert.equal((await endpoint(a, "/healthz")).status, 200);
    kube.partition("token-a");
    // /healthz fails while the leader cannot renew (before it stops), so kubelet would restart it too.
    await eventually("a's /healthz fails", async () => (await endpoint(a, "/healthz").catch(() => ({ status: 0, body: "" }))).status === 503);
    const exit = await a.exited;
    assert.equal(exit, 1, `a lost the lease and exits to restart clean${logOf(a)()}`);
    assert.match(a.log(), /lost the lease/);
    await eventually("b leads", () => lease()?.holderIdentity === "b", 20_000);
    await eventually(`12 routes${logOf(b)()}`, routed(12), 60_000);
    await eventually("conditions False", allFalse(12), 30_000);

    const lastRenewal = Math.max(...kube.requests.filter((r) => r.token === "token-a" && r.method === "PUT" && r.code === 200).map((r) => r.at));
    const aLast = Math.max(...gce.requestLog.filter(by("a")).map((r) => r.at));
    const bWrites = gce.requestLog.filter(by("b")).filter(isWrite);
    assert.ok(bWrites.length > 0, "b had work left to finish");
    const bFirstWrite = Math.min(...bWrites.map((r) => r.at));
    // a's fence is renewDeadline after it SENT its last good renewal (which arrived at lastRenewal, so no
    // later than that); every other replica waits a lease duration from a later moment.
    assert.ok(aLast <= lastRenewal + FAST_ELECTION.renewDeadlineMs, `a's last Compute call ${aLast - lastRenewal} ms after its last renewal (renew deadline ${FAST_ELECTION.renewDeadlineMs} ms)`);
    assert.ok(aLast < bFirstWrite, `no overlap: a's last call ${bFirstWrite - aLast} ms before b's first write`);
    const inserts = gce.requestLog.filter((r) => r.method === "POST" && r.path.endsWith("/global/routes") && r.status === 200);
    assert.equal(new Set(inserts.map((r) => r.path)).size <= inserts.length, true);
    assert.equal(inserts.length, 12, "every route inserted once: b found a's inserts (done, or still RUNNING) instead of inserting them again");
    console.log(`# partition: a's last Compute call ${aLast - lastRenewal} ms after its last renewal arrived (renew deadline ${FAST_ELECTION.renewDeadlineMs} ms); b's first write ${bFirstWrite - aLast} ms after it`);
  });

  it("with 20% injected faults (Compute and Kubernetes APIs) and throttling, every route converges, conditions end False, writes ≤ 1.1 × the changes (no 409 storm)", async () => {
    const nodes = 40;
    for (let i = 0; i < nodes; i++) kube.put("nodes", worker(i));
    gce.faultRate = 0.2;
    gce.timeoutHoldMs = 300;
    gce.throttleAbove = 8;
    gce.latencyMs = 50;
    gce.setRandom(seededRandom(10));
    kube.failRandomly(0.2, seededRandom(11));
    const a = await replica("a");
    await eventually(`${nodes} routes${logOf(a)()}`, routed(nodes), 90_000);
    await eventually(`conditions False${logOf(a)()}`, allFalse(nodes), 60_000);
    kube.failRandomly(0);
    gce.faultRate = 0;
    const writes = gce.requestLog.filter(isWrite);
    // Executed by the API: carried out (2xx) or answered about the route (409/404), whether or not the answer
    // then got lost. Not executed: injected 429/503, refusals by the concurrent operations quota (403), and
    // retries carrying the requestId of a write already received (the API answers its operation, does nothing).
    const executed = writes.filter((r) => [200, 404, 409].includes(r.outcome ?? 0) && !r.replayed);
    const conflicts = writes.filter((r) => r.outcome === 409).length;
    const lostAnswers = writes.filter((r) => r.fault === "timeout").length;
    const replayed = writes.filter((r) => r.replayed).length;
    const stats = { changes: nodes, attempts: writes.length, executed: executed.length, conflicts, lostAnswers, replayed, faulted: writes.filter((r) => r.status === 429 || r.status === 503).length, throttled: gce.stats.throttled };
    console.log(`# faults: ${JSON.stringify(stats)}`);
    assert.ok(executed.length <= nodes * 1.1, `write calls the API executed: ${JSON.stringify(stats)}`);
    assert.equal(executed.filter((r) => r.outcome === 200).length, gce.stats.inserts + gce.stats.deletes, "the server carried out exactly those");
    assert.ok(conflicts + replayed <= lostAnswers, `a 409 or a replay only after a lost answer: ${JSON.stringify(stats)}`);
  });
});

describe("podroutes controller: flags through the built CLI", () => {
  it("a missing or bad flag exits 3 naming it, before anything starts; --help shows the chosen target's flags", async () => {
    const missing = await runCli(["controller", "--target", "gcp", "--project", "my-project", "--kubeconfig", "/nonexistent"]);
    assert.equal(missing.code, 3, missing.stderr);
    assert.match(missing.stderr, /--network is required/);
    const election = await runCli(["controller", "--target", "ssh", "--renew-deadline", "20s"]);
    assert.equal(election.code, 3, election.stderr);
    assert.match(election.stderr, /--renew-deadline 20s must be shorter than --lease-duration 15s/);
    const other = await runCli(["controller", "--target", "gcp", "--region", "eu-west-1"]);
    assert.equal(other.code, 3);
    assert.match(other.stderr, /unknown option '--region'.*--target aws/s);
    const help = await runCli(["controller", "--target", "aws", "--help"]);
    assert.equal(help.code, 0);
    for (const flag of ["--kubeconfig", "--lease-namespace", "--lease-name", "--identity", "--resync", "--listen", "--log-format", "--lease-duration", "--renew-deadline", "--retry-period", "--route-limit", "--region"]) assert.ok(help.stdout.includes(flag), `--help lists ${flag}`);
    assert.ok(!help.stdout.includes("--project"), "and not another target's");
  });
});
