/**
 * The reflector's state machine against the Kubernetes API test server: paging, bookmarks, re-watch
 * from the last version after a clean close or a timeout, relist on 410 (HTTP answer, ERROR event,
 * expired continue token), reconnect with backoff after drops, 500s and short watches, the idle timer,
 * and the rule that an API error never reads as "no nodes". Backoff is shortened (10 ms doubling) and
 * jitter off; every wait below is for an event, with a generous safety limit, never a timed assertion.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { startKubeServer, type KubeApiServer, type KubeServerOptions, type RecordedRequest } from "../../testkit/kube-server.js";
import { errorFromStatus, KubeClient } from "./client.js";
import { discoverConnection } from "./kubeconfig.js";
import { Backoff, continueTokenIn, DEFAULT_BACKOFF, listAll, Reflector, type ReflectorEvent, type ReflectorOptions } from "./reflector.js";
import type { KubeNode } from "./nodes.js";

const node = (name: string, labels: Record<string, string> = {}): KubeNode => ({
  metadata: { name, labels },
  spec: { podCIDR: `10.200.${Number(name.split("-")[1] ?? 0)}.0/24` },
  status: { addresses: [{ type: "InternalIP", address: `10.240.0.${20 + Number(name.split("-")[1] ?? 0)}` }] },
});

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "podroutes-reflector-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Harness {
  server: KubeApiServer;
  reflector: Reflector<KubeNode>;
  events: ReflectorEvent<KubeNode>[];
  /** Resolves with the first event from now on (or already seen since `mark`) that satisfies `predicate`. */
  next(predicate: (event: ReflectorEvent<KubeNode>) => boolean, what: string): Promise<ReflectorEvent<KubeNode>>;
  watchRequests(): RecordedRequest[];
  listRequests(): RecordedRequest[];
  stop(): Promise<void>;
}

const running: Harness[] = [];
afterEach(async () => {
  for (const harness of running.splice(0)) await harness.stop();
});

async function harness(
  serverOptions: KubeServerOptions = {},
  reflectorOptions: Partial<ReflectorOptions<KubeNode>> = {},
  arm?: (server: KubeApiServer) => void,
  nodes = ["worker-0", "worker-1", "worker-2"],
): Promise<Harness> {
  const server = await startKubeServer({ nodes: nodes.map((n) => node(n)), ...serverOptions });
  arm?.(server);
  const client = new KubeClient(await discoverConnection({ kubeconfig: await server.writeKubeconfig(join(dir, `kubeconfig-${server.port}`)) }));
  const reflector = new Reflector<KubeNode>({
    client,
    path: "/api/v1/nodes",
    pageSize: 2,
    backoff: { ...DEFAULT_BACKOFF, initialMs: 10, maxMs: 80 },
    random: () => 0,
    ...reflectorOptions,
  });
  const events: ReflectorEvent<KubeNode>[] = [];
  const waiters = new Set<{ predicate: (e: ReflectorEvent<KubeNode>) => boolean; resolve: (e: ReflectorEvent<KubeNode>) => void }>();
  reflector.subscribe((event) => {
    events.push(event);
    for (const waiter of waiters) {
      if (waiter.predicate(event)) {
        waiters.delete(waiter);
        waiter.resolve(event);
      }
    }
  });
  const abort = new AbortController();
  const done = reflector.run(abort.signal);
  const h: Harness = {
    server,
    reflector,
    events,
    next: (predicate, what) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} within 20 s; events: ${events.map((e) => e.type).join(" ")}`)), 20_000);
        waiters.add({ predicate, resolve: (e) => (clearTimeout(timer), resolve(e)) });
      }),
    watchRequests: () => server.requests.filter((r) => r.verb === "watch"),
    listRequests: () => server.requests.filter((r) => r.verb === "list"),
    async stop() {
      abort.abort();
      await done;
      client.close();
      await server.close();
    },
  };
  running.push(h);
  return h;
}

const synced = (e: ReflectorEvent<KubeNode>) => e.type === "synced";
/** Waits until `condition` holds, checking between event-loop turns; fails after 20 s (a safety limit, not a timing assertion). */
async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within 20 s`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
/** Waits until the server has seen `count` watch requests and one is open. */
const watching = (h: Harness, count: number) => until(() => h.watchRequests().length >= count && h.server.openWatches >= 1, `watch #${count}`);

describe("backoff (client-go's 800ms/30s/2m/2.0/1.0)", () => {
  it("doubles from 0.8 s to 30 s (held at 1.6 s for a run of failures' first minute), adds up to the delay again as jitter, and resets after 2 minutes without failure", () => {
    const noJitter = new Backoff(DEFAULT_BACKOFF, () => 0);
    // A run of failures: held at 1.6 s for its first minute (an API server restarting is found within
    // seconds of its return), then doubling on to 30 s.
    const times = [0, 1000, 3000, 10_000, 30_000, 59_000, 61_000, 64_000, 71_000, 84_000, 110_000, 140_000, 170_000];
    assert.deepEqual(times.map((t) => noJitter.next(t)), [800, 1600, 1600, 1600, 1600, 1600, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
    assert.equal(noJitter.next(170_000 + 120_000), 800, "reset after 2 minutes of health");
    const fullJitter = new Backoff(DEFAULT_BACKOFF, () => 1);
    assert.deepEqual([fullJitter.next(0), fullJitter.next(1), fullJitter.next(2)], [1600, 3200, 3200]);
    const clientGo = new Backoff({ ...DEFAULT_BACKOFF, early: undefined }, () => 0);
    assert.deepEqual(Array.from({ length: 8 }, (_, i) => clientGo.next(i * 1000)), [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000], "without the early cap: client-go's sequence");
  });
});

describe("reflector", () => {
  it("lists in pages of `limit`, then watches from the list's version with bookmarks and a 5–10 minute timeout", async () => {
    const h = await harness();
    const event = await h.next(synced, "synced");
    assert.deepEqual(event, { type: "synced", resourceVersion: h.server.resourceVersion, objects: 3 });
    assert.deepEqual([...h.reflector.store.keys()].sort(), ["worker-0", "worker-1", "worker-2"]);
    assert.deepEqual(h.events.filter((e) => e.type === "added").length, 3);
    const lists = h.listRequests();
    assert.deepEqual(lists.map((r) => [r.query.limit, r.query.continue !== undefined]), [["2", false], ["2", true]]);
    await watching(h, 1);
    const watch = h.watchRequests()[0]!;
    assert.equal(watch.query.resourceVersion, event.type === "synced" ? event.resourceVersion : "");
    assert.equal(watch.query.allowWatchBookmarks, "true");
    const timeout = Number(watch.query.timeoutSeconds);
    assert.ok(timeout >= 300 && timeout <= 600, `timeoutSeconds ${timeout}`);
  });

  it("turns watch events into added/modified/deleted and keeps the store in step", async () => {
    const h = await harness();
    await h.next(synced, "synced");
    await watching(h, 1);
    const added = h.next((e) => e.type === "added" && e.object.metadata.name === "worker-3", "added worker-3");
    h.server.put("nodes", node("worker-3"));
    await added;
    const modified = h.next((e) => e.type === "modified", "modified");
    h.server.update("nodes", "worker-0", (n) => ((n.metadata.labels ??= {}).zone = "b"));
    const change = await modified;
    assert.equal(change.type === "modified" && change.object.metadata.labels?.zone, "b");
    assert.equal(change.type === "modified" && change.previous.metadata.labels?.zone, undefined);
    const deleted = h.next((e) => e.type === "deleted", "deleted");
    h.server.remove("nodes", "worker-1");
    await deleted;
    assert.deepEqual([...h.reflector.store.keys()].sort(), ["worker-0", "worker-2", "worker-3"]);
    assert.equal(h.reflector.resourceVersion, h.server.resourceVersion);
  });

  it("a bookmark advances the version; after a clean close it watches again from there, without a relist", async () => {
    const h = await harness();
    await h.next(synced, "synced");
    await watching(h, 1);
    h.server.put("leases", { metadata: { name: "other", namespace: "kube-system" } }); // advances the version, no Node event
    const target = h.server.resourceVersion;
    assert.notEqual(h.reflector.resourceVersion, target);
    h.server.bookmark();
    await until(() => h.reflector.resourceVersion === target, "bookmark version");
    assert.equal(h.reflector.counters.bookmarks, 1);
    h.server.closeWatches();
    await watching(h, 2);
    assert.equal(h.watchRequests()[1]!.query.resourceVersion, target);
    assert.equal(h.reflector.counters.lists, 1);
    assert.equal(h.reflector.counters.watchRestarts, 1);
  });

  it("when the watch times out it watches again from the last event's version", async () => {
    const h = await harness({}, { watchTimeoutSeconds: { min: 1, max: 1 } });
    await h.next(synced, "synced");
    await watching(h, 1);
    h.server.put("nodes", node("worker-5"));
    const version = h.server.resourceVersion;
    await watching(h, 2); // the server closed the first watch after its 1 s timeoutSeconds
    assert.equal(h.watchRequests()[0]!.query.timeoutSeconds, "1");
    assert.equal(h.watchRequests()[1]!.query.resourceVersion, version);
    assert.equal(h.reflector.counters.lists, 1, "no relist after a clean close");
    assert.deepEqual(h.events.filter((e) => e.type === "error"), []);
  });

  it("410 as an ERROR event (a too-old version): relists, and the relist carries what changed meanwhile", async () => {
    const h = await harness();
    await h.next(synced, "synced");
    await watching(h, 1);
    const old = h.reflector.resourceVersion;
    // Changes the reflector will not see live: the watch is stalled while they happen, then history is compacted.
    h.server.stall(true);
    h.server.remove("nodes", "worker-2");
    h.server.put("nodes", node("worker-7"));
    h.server.compact();
    h.server.dropWatches();
    h.server.stall(false);
    const relisted = h.next((e) => e.type === "synced" && e.objects === 3 && !h.reflector.store.has("worker-2"), "relist");
    await relisted;
    assert.ok(h.reflector.counters.relists >= 1);
    assert.ok((h.reflector.counters.errors.expired ?? 0) >= 1, "refused at its start: through the backoff");
    assert.deepEqual([...h.reflector.store.keys()].sort(), ["worker-0", "worker-1", "worker-7"]);
    assert.ok(h.events.some((e) => e.type === "deleted" && e.object.metadata.name === "worker-2"), "the relist's difference is emitted as a delete");
    assert.ok(old !== h.reflector.resourceVersion);
  });

  it("a watch refused as Expired at its start (an API server back from a restart) relists at once; refused again, it waits", async () => {
    let lists = 0;
    const client = {
      request: async () => ({ items: [node("worker-0")], metadata: { resourceVersion: String(++lists) } }),
      // Every watch is refused at once: its version is too old for this server.
      watch: async function* () {
        yield { type: "ERROR", object: { kind: "Status", code: 410, reason: "Expired", message: "too old resource version" } };
      },
    } as unknown as KubeClient;
    const reflector = new Reflector<KubeNode>({ client, path: "/api/v1/nodes", backoff: { initialMs: 5, maxMs: 5, jitter: 0, resetAfterMs: 60_000 } });
    const errors: ReflectorEvent<KubeNode>[] = [];
    reflector.subscribe((event) => event.type === "error" && errors.push(event));
    const stop = new AbortController();
    const running = reflector.run(stop.signal);
    await until(() => errors.length >= 3, "three refusals");
    stop.abort();
    await running;
    assert.deepEqual(errors.slice(0, 3).map((e) => e.type === "error" && e.retryInMs), [0, 5, 5], "the first refusal relists at once, the next ones after the backoff");
    assert.ok(lists >= 3);
  });

  it("410 as the watch's HTTP answer: relists", async () => {
    const h = await harness({ expiredWatchAs: "http" });
    await h.next(synced, "synced");
    await watching(h, 1);
    h.server.put("leases", { metadata: { name: "x", namespace: "default" } });
    h.server.compact();
    h.server.closeWatches();
    const second = await h.next((e) => e.type === "synced", "relist");
    assert.equal(second.type, "synced");
    assert.equal(h.reflector.counters.relists, 1);
    assert.ok(h.server.requests.some((r) => r.verb === "watch" && r.code === 410));
  });

  it("an ERROR 410 event in a stream that had been serving: relists at once, not counted as an error", async () => {
    const h = await harness();
    await h.next(synced, "synced");
    await watching(h, 1);
    const added = h.next((e) => e.type === "added", "added");
    h.server.put("nodes", node("worker-4"));
    await added;
    h.server.expireWatches();
    await h.next(synced, "relist");
    assert.equal(h.reflector.counters.relists, 1);
    assert.equal(h.reflector.counters.errors.expired ?? 0, 0, "an expiry is a relist, not an error");
  });

  it("an API server whose revision went backwards (etcd restored): the watch from the newer version hears nothing, so the version is checked; 'Too large resource version' relists, and what came after the rewind is seen", async () => {
    const h = await harness();
    await h.next(synced, "synced");
    await watching(h, 1);
    // Writes the reflector sees move its version well past where the store will go back to.
    for (let i = 0; i < 5; i++) {
      const seen = h.next((e) => e.type === "modified", "modified");
      h.server.put("nodes", node("worker-1", { round: String(i) }));
      await seen;
    }
    const ours = Number(h.reflector.resourceVersion);
    h.server.rewind(2);
    h.server.remove("nodes", "worker-2");
    assert.ok(Number(h.server.resourceVersion) < ours, `the server (${h.server.resourceVersion}) is behind the reflector (${ours})`);
    const relisted = await h.next((e) => e.type === "synced" && !h.reflector.store.has("worker-2"), "relist after the rewind");
    assert.equal(relisted.type, "synced");
    assert.equal(h.reflector.counters.relists, 1);
    assert.ok((h.reflector.counters.errors["too-large"] ?? 0) >= 1, JSON.stringify(h.reflector.counters.errors));
    const check = h.server.requests.find((r) => r.verb === "list" && r.query.resourceVersion === String(ours));
    assert.equal(check?.code, 504, "the version check at the reflector's version was answered Too large");
    assert.equal(check?.query.resourceVersionMatch, "NotOlderThan");
    // The watch after the relist serves: a Node created now is seen.
    const added = h.next((e) => e.type === "added" && e.object.metadata.name === "worker-9", "worker-9 added");
    h.server.put("nodes", node("worker-9"));
    await added;
  });

  it("504 ResourceVersionTooLarge as the watch's ERROR event or HTTP answer: relists, as client-go does", async () => {
    const tooLarge = { kind: "Status", code: 504, reason: "Timeout", message: "Timeout: Too large resource version: 9, current: 2", details: { causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }], retryAfterSeconds: 1 } };
    assert.equal(errorFromStatus(tooLarge, 504, "WATCH x").failure, "too-large");
    assert.equal(errorFromStatus({ ...tooLarge, details: undefined }, 504, "WATCH x").failure, "too-large", "servers before the cause: by the message");
    assert.equal(errorFromStatus({ kind: "Status", code: 504, reason: "Timeout", message: "request timed out" }, 504, "GET x").failure, "timeout");
    for (const how of ["event", "http"] as const) {
      let lists = 0;
      const client = {
        request: async () => ({ items: [node("worker-0")], metadata: { resourceVersion: String(++lists) } }),
        watch: async function* () {
          if (how === "http") throw errorFromStatus(tooLarge, 504, "WATCH /api/v1/nodes");
          yield { type: "ERROR", object: tooLarge };
        },
      } as unknown as KubeClient;
      const reflector = new Reflector<KubeNode>({ client, path: "/api/v1/nodes", backoff: { initialMs: 5, maxMs: 5, jitter: 0, resetAfterMs: 60_000 } });
      const stop = new AbortController();
      const running = reflector.run(stop.signal);
      await until(() => reflector.counters.relists >= 2, `${how}: relists`);
      stop.abort();
      await running;
      assert.ok((reflector.counters.errors["too-large"] ?? 0) >= 2, how);
    }
  });

  it("a continue token that expired between pages: one full list without paging", async () => {
    const h = await harness({}, {}, (server) => {
      let compacted = false;
      server.onRequest = (r) => {
        if (r.query.continue && !compacted) {
          compacted = true;
          server.put("leases", { metadata: { name: "bump", namespace: "default" } });
          server.compact();
        }
      };
    });
    await h.next(synced, "synced");
    assert.equal(h.reflector.counters.continueExpired, 1);
    const lists = h.listRequests();
    assert.deepEqual(lists.map((r) => [r.query.limit, r.query.continue !== undefined, r.code]), [["2", false, 200], ["2", true, 410], [undefined, false, 200]]);
    assert.equal(h.reflector.store.size, 3);
  });

  it("500s: backs off (doubling), never reports a list it did not get, keeps a synced store, then recovers", async () => {
    let failLists = 0;
    const h = await harness({}, {}, (server) => {
      server.onRequest = (r) => {
        if (r.method === "GET" && r.query.watch === undefined && failLists > 0) {
          failLists--;
          server.failNext(1, 500);
        }
      };
    });
    await h.next(synced, "synced");
    await watching(h, 1);
    const added = h.next((e) => e.type === "added" && e.object.metadata.name === "worker-4", "added");
    h.server.put("nodes", node("worker-4"));
    await added;
    failLists = 3;
    h.server.expireWatches(); // the serving watch expires: a relist at once, which fails three times
    const errors: ReflectorEvent<KubeNode>[] = [];
    while (errors.length < 3) errors.push(await h.next((e) => e.type === "error", "error"));
    for (const error of errors) {
      assert.equal(error.type === "error" && error.error.failure, "server");
      assert.equal(error.type === "error" && error.error.code, 500);
      assert.equal(error.type === "error" && error.phase, "list");
    }
    assert.deepEqual(errors.map((e) => (e.type === "error" ? e.retryInMs : 0)), [10, 20, 40], "doubling (0.8 s in production, 10 ms here)");
    assert.equal(h.reflector.store.size, 4, "a failed list leaves the store as it was");
    assert.ok(!h.events.some((e) => e.type === "deleted"), "a failed list deletes nothing");
    await h.next(synced, "recovery");
    assert.equal(h.reflector.store.size, 4);
    assert.equal(h.reflector.counters.errors.server, 3);
    assert.equal(h.events.filter((e) => e.type === "synced").length, 2);
  });

  it("an API error is never 'no nodes': before the first complete list it stays unsynced with an empty store", async () => {
    let failing = true;
    const h = await harness({}, {}, (server) => {
      server.onRequest = (r) => {
        if (failing && r.method === "GET" && r.query.watch === undefined) server.failNext(1, 403);
      };
    });
    const error = await h.next((e) => e.type === "error", "error");
    assert.equal(error.type === "error" && error.error.code, 403);
    assert.equal(h.reflector.hasSynced, false);
    assert.equal(h.reflector.store.size, 0);
    assert.ok(!h.events.some((e) => e.type === "synced"));
    failing = false;
    await h.next(synced, "recovery");
    assert.equal(h.reflector.store.size, 3);
  });

  it("a dropped connection: an error, then a new watch after the backoff, from the last version", async () => {
    const h = await harness();
    await h.next(synced, "synced");
    await watching(h, 1);
    const version = h.reflector.resourceVersion;
    h.server.dropWatches();
    const error = await h.next((e) => e.type === "error", "error");
    assert.equal(error.type === "error" && error.error.failure, "network");
    assert.equal(error.type === "error" && error.phase, "watch");
    await watching(h, 2);
    assert.equal(h.watchRequests()[1]!.query.resourceVersion, version);
    assert.equal(h.reflector.counters.lists, 1);
  });

  it("a watch that closes at once with nothing is a failure with backoff, not a tight loop", async () => {
    const h = await harness({}, {}, (server) => {
      server.onRequest = (r) => {
        if (r.query.watch) setImmediate(() => server.closeWatches());
      };
    });
    const errors: ReflectorEvent<KubeNode>[] = [];
    while (errors.length < 2) errors.push(await h.next((e) => e.type === "error", "short watch error"));
    assert.deepEqual(errors.map((e) => e.type === "error" && e.error.reason), ["ShortWatch", "ShortWatch"]);
    assert.deepEqual(errors.map((e) => (e.type === "error" ? e.retryInMs : 0)), [10, 20]);
  });

  it("a silent connection (no bytes past the timeout + slack) is abandoned and watched again", async () => {
    const h = await harness({}, { watchTimeoutSeconds: { min: 1, max: 1 }, idleSlackMs: 200 });
    await h.next(synced, "synced");
    await watching(h, 1);
    h.server.stall(true);
    const error = await h.next((e) => e.type === "error", "idle timeout");
    assert.equal(error.type === "error" && error.error.failure, "timeout");
    h.server.stall(false);
    await watching(h, 2);
    assert.equal(h.reflector.counters.errors.timeout, 1);
    assert.equal(h.reflector.counters.lists, 1);
  });
});

describe("listAll", () => {
  it("asks for the next page as soon as a page's text is in, before that page's items are read, and only for the pages there are", async () => {
    const server = await startKubeServer({ nodes: ["worker-0", "worker-1", "worker-2", "worker-3", "worker-4"].map((n) => node(n)) });
    const order: string[] = [];
    const client = new KubeClient(await discoverConnection({ kubeconfig: await server.writeKubeconfig(join(dir, `kubeconfig-${server.port}`)) }), {
      calls: { started: (call) => (order.push(call), () => undefined), throttled: () => undefined },
    });
    try {
      const result = await listAll<KubeNode>(client, "/api/v1/nodes", { pageSize: 2, transform: (n) => (order.push(n.metadata.name!), n) });
      assert.deepEqual(result.items.map((n) => n.metadata.name), ["worker-0", "worker-1", "worker-2", "worker-3", "worker-4"]);
      assert.equal(result.pages, 3);
      // Each page is asked for before the items of the page before it are read (one page ahead, no more).
      assert.deepEqual(order, ["GET nodes", "GET nodes", "worker-0", "worker-1", "GET nodes", "worker-2", "worker-3", "worker-4"]);
      const lists = server.requests.filter((r) => r.verb === "list");
      assert.deepEqual(lists.map((r) => [r.query.limit, r.query.continue !== undefined, r.code]), [["2", false, 200], ["2", true, 200], ["2", true, 200]]);
    } finally {
      client.close();
      await server.close();
    }
  });

  it("reads the continue token only from a list's own metadata ahead of its items", () => {
    const list = (metadata: object, items: object[] = [{ metadata: { name: "a" } }]) => JSON.stringify({ kind: "NodeList", apiVersion: "v1", metadata, items });
    assert.equal(continueTokenIn(list({ resourceVersion: "7", continue: "eyJydiI6N30", remainingItemCount: 3 })), "eyJydiI6N30");
    assert.equal(continueTokenIn(list({ resourceVersion: "7" })), undefined, "the last page");
    // Items first (not how the API server writes a list): the token is left to the parse.
    assert.equal(continueTokenIn(JSON.stringify({ kind: "NodeList", items: [{ metadata: { name: "a" } }], metadata: { continue: "x" } })), undefined);
    // A Node's label named `continue` is not the list's token.
    assert.equal(continueTokenIn(list({ resourceVersion: "7" }, [{ metadata: { name: "a", labels: { continue: "x" } } }])), undefined);
    assert.equal(continueTokenIn(JSON.stringify({ kind: "NodeList", metadata: { continue: "x" }, items: [] }, null, 2)), undefined, "pretty-printed: not peeked");
  });
});
