/**
 * Aggregated Node Events against the Kubernetes API test server, with a token allowed only Events
 * create and patch in `default` (the controller's grant): a repeat is a count patch of the same Event,
 * repeats within the interval are only counted and written with the next one after it, and an Event
 * that expired meanwhile is created again with the count so far.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { kubeconfigYaml, startKubeServer, type KubeApiServer } from "../../testkit/kube-server.js";
import { KubeClient } from "./client.js";
import { EventRecorder } from "./events.js";
import { discoverConnection } from "./kubeconfig.js";

describe("EventRecorder", () => {
  let server: KubeApiServer;
  let client: KubeClient;
  let dir: string;
  before(async () => {
    server = await startKubeServer({ tokens: { events: { user: "recorder", rules: [{ verbs: ["create", "patch"], resources: ["events"], namespaces: ["default"] }] } } });
    dir = await mkdtemp(join(tmpdir(), "podroutes-events-"));
    await writeFile(join(dir, "kubeconfig"), kubeconfigYaml({ server: server.url, caFile: server.caFile, token: "events" }));
    client = new KubeClient(await discoverConnection({ kubeconfig: join(dir, "kubeconfig") }));
  });
  after(async () => {
    client.close();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("one Event per node and reason; repeats patch its count, at most once per interval; an expired Event starts again with the count so far", async () => {
    let now = 0;
    const recorder = new EventRecorder(client, { component: "podroutes-controller", instance: "replica-a" }, { repeatIntervalMs: 60_000, monotonic: () => now, now: () => new Date(Date.UTC(2026, 0, 1) + now) });
    const node = { name: "worker-1", uid: "uid-1" };
    assert.equal(await recorder.record(node, "RouteLimitExceeded", "rtb-1 is full"), "created");
    const stored = () => server.objects("events") as unknown as { metadata: { name: string }; count: number; message: string; reason: string; lastTimestamp: string; involvedObject: { name: string; uid: string }; source: { component: string; host: string } }[];
    assert.equal(stored().length, 1);
    assert.deepEqual([stored()[0]!.count, stored()[0]!.involvedObject, stored()[0]!.source], [1, { apiVersion: "v1", kind: "Node", name: "worker-1", uid: "uid-1" }, { component: "podroutes-controller", host: "replica-a" }]);

    server.clearRequests();
    now = 1_000;
    assert.equal(await recorder.record(node, "RouteLimitExceeded", "rtb-1 is full"), "counted");
    now = 2_000;
    assert.equal(await recorder.record(node, "RouteLimitExceeded", "rtb-1 is full"), "counted");
    assert.equal(server.requests.length, 0, "repeats within the interval cost no request");
    now = 61_000;
    assert.equal(await recorder.record(node, "RouteLimitExceeded", "rtb-1 is still full"), "patched");
    assert.deepEqual([stored().length, stored()[0]!.count, stored()[0]!.message, stored()[0]!.lastTimestamp], [1, 4, "rtb-1 is still full", "2026-01-01T00:01:01Z"]);
    assert.deepEqual(server.requests.map((r) => `${r.method} ${r.code}`), ["PATCH 200"]);

    // Another reason on the same node is another Event.
    assert.equal(await recorder.record(node, "ForeignRouteConflict", "someone's route"), "created");
    assert.equal(stored().length, 2);

    // Events expire (an hour): the next repeat creates a new one carrying the count.
    server.remove("events", stored().find((e) => e.reason === "RouteLimitExceeded")!.metadata.name, "default");
    now = 200_000;
    assert.equal(await recorder.record(node, "RouteLimitExceeded", "rtb-1 is full"), "created");
    assert.equal(stored().find((e) => e.reason === "RouteLimitExceeded")!.count, 5);
    assert.deepEqual(server.requests.filter((r) => r.code === 403), [], "create and patch in default are all it needs");
  });
});
