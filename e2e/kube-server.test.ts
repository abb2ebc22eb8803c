/**
 * Fidelity of the Kubernetes API test server, checked by independent real clients: kubectl v1.32 (get,
 * watch, patch of the status subresource with each patch type, selectors, paging, leases, RBAC refusals)
 * and @kubernetes/client-node 1.4.0 (list, watch, leases with optimistic concurrency); and the server as
 * its own process with its admin socket, as the agent's lab test will run it. Everything on 127.0.0.1;
 * kubectl gets a kubeconfig and a HOME in a temp dir, never ~/.kube.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request as httpsRequest } from "node:https";
import { fileURLToPath } from "node:url";
import { after, before, beforeEach, describe, it } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { KubeApiError, KubeClient } from "../src/kube/client.js";
import { discoverConnection } from "../src/kube/kubeconfig.js";
import { run } from "../src/process.js";
import { adminCall } from "../testkit/kube-server-admin.js";
import { applyPatch } from "../testkit/kube-patch.js";
import { kubeconfigYaml, startKubeServer, type KubeApiServer, type KubeObject } from "../testkit/kube-server.js";

const node = (index: number, labels: Record<string, string> = {}): KubeObject => ({
  metadata: { name: `worker-${index}`, labels },
  spec: { podCIDR: `10.200.${index}.0/24`, podCIDRs: [`10.200.${index}.0/24`] },
  status: {
    addresses: [{ type: "InternalIP", address: `10.240.0.${20 + index}` }, { type: "Hostname", address: `worker-${index}` }],
    conditions: [{ type: "Ready", status: "True", reason: "KubeletReady" }, { type: "NetworkUnavailable", status: "True", reason: "NoRouteCreated" }],
  },
});

let dir: string;
let server: KubeApiServer;
let kubeconfig: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "podroutes-kubeserver-"));
  server = await startKubeServer();
  kubeconfig = await server.writeKubeconfig(join(dir, "kubeconfig"));
});
after(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => {
  for (const object of server.objects("nodes")) server.remove("nodes", object.metadata.name);
  for (const index of [0, 1, 2]) server.put("nodes", node(index, { zone: index === 2 ? "b" : "a" }));
  server.clearRequests();
});

const kubectlEnv = () => ({ PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, KUBECONFIG: kubeconfig });

async function kubectl(args: string[], config = kubeconfig): Promise<{ code: number; stdout: string; stderr: string }> {
  return run("env", ["-i", ...Object.entries({ ...kubectlEnv(), KUBECONFIG: config }).map(([k, v]) => `${k}=${v}`), "kubectl", "--kubeconfig", config, ...args]);
}

async function kubectlOk(args: string[]): Promise<string> {
  const result = await kubectl(args);
  assert.equal(result.code, 0, `kubectl ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

/** Lines a process prints, as they come. */
function lines(child: ChildProcess): { seen: string[]; waitFor(pattern: RegExp): Promise<string> } {
  const seen: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  let buffer = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    buffer += chunk.toString();
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      seen.push(line);
      for (const waiter of [...waiters]) if (waiter.pattern.test(line)) waiters.splice(waiters.indexOf(waiter), 1) && waiter.resolve(line);
    }
  });
  return {
    seen,
    waitFor: (pattern) =>
      new Promise((resolve, reject) => {
        const found = seen.find((line) => pattern.test(line));
        if (found) return resolve(found);
        const timer = setTimeout(() => reject(new Error(`no line matching ${pattern} within 20 s; saw: ${seen.join(" | ")}`)), 20_000);
        waiters.push({ pattern, resolve: (line) => (clearTimeout(timer), resolve(line)) });
      }),
  };
}

describe("the Kubernetes API test server, as kubectl sees it", () => {
  it("get nodes -o json: kubectl's List of the server's Nodes, after the discovery kubectl needs", async () => {
    const list = JSON.parse(await kubectlOk(["get", "nodes", "-o", "json"]));
    assert.equal(list.kind, "List");
    assert.deepEqual(list.items.map((n: KubeObject) => n.metadata.name), ["worker-0", "worker-1", "worker-2"]);
    assert.equal(list.items[0].kind, "Node");
    assert.ok(server.requests.some((r) => r.path === "/api/v1" && r.code === 200));
    assert.ok(server.requests.some((r) => r.path === "/api/v1/nodes" && r.query.limit === "500" && r.code === 200));
    const one = JSON.parse(await kubectlOk(["get", "node", "worker-1", "-o", "json"]));
    assert.equal(one.spec.podCIDR, "10.200.1.0/24");
    const missing = await kubectl(["get", "node", "nope"]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /nodes "nope" not found/);
  });

  it("label selectors (-l) and paging (--chunk-size) as the API server does them", async () => {
    const names = async (args: string[]) => (await kubectlOk(["get", "nodes", "-o", "name", ...args])).trim().split("\n").filter(Boolean);
    assert.deepEqual(await names(["-l", "zone=a"]), ["node/worker-0", "node/worker-1"]);
    assert.deepEqual(await names(["-l", "zone notin (a)"]), ["node/worker-2"]);
    assert.deepEqual(await names(["-l", "!zone"]), []);
    server.clearRequests();
    assert.deepEqual(await names(["--chunk-size", "2"]), ["node/worker-0", "node/worker-1", "node/worker-2"]);
    const pages = server.requests.filter((r) => r.path === "/api/v1/nodes");
    assert.deepEqual(pages.map((r) => [r.query.limit, r.query.continue !== undefined]), [["2", false], ["2", true]]);
  });

  it("get nodes --watch prints a change made while it watches", async () => {
    const child = spawn("kubectl", ["--kubeconfig", kubeconfig, "get", "nodes", "--watch", "--no-headers", "-o", "custom-columns=NAME:.metadata.name,ZONE:.metadata.labels.zone"], { env: kubectlEnv(), stdio: ["ignore", "pipe", "pipe"] });
    try {
      const out = lines(child);
      await out.waitFor(/^worker-2\s+b$/);
      // Changed after kubectl's list: seen through its watch (from the list's version, so even a watch
      // that starts after the change replays it).
      server.update("nodes", "worker-1", (n) => (n.metadata.labels!.zone = "c"));
      await out.waitFor(/^worker-1\s+c$/);
      const watch = server.requests.find((r) => r.query.watch !== undefined);
      assert.ok(watch?.query.resourceVersion, "kubectl watches from the list's version");
    } finally {
      child.kill("SIGTERM");
    }
  });

  it("patch node --subresource=status: strategic merge merges conditions by type, merge replaces the list, json patches", async () => {
    await kubectlOk(["patch", "node", "worker-0", "--subresource=status", "--type=strategic", "-p", JSON.stringify({ status: { conditions: [{ type: "NetworkUnavailable", status: "False", reason: "PodroutesAgentReady" }] } })]);
    const conditions = (name: string) => (server.object("nodes", name)!.status as { conditions: { type: string; status: string; reason: string }[] }).conditions.map((c) => `${c.type}=${c.status}/${c.reason}`);
    assert.deepEqual(conditions("worker-0"), ["Ready=True/KubeletReady", "NetworkUnavailable=False/PodroutesAgentReady"]);
    const patch = server.requests.find((r) => r.method === "PATCH")!;
    assert.deepEqual([patch.path, patch.verb, patch.resource], ["/api/v1/nodes/worker-0/status", "patch", "nodes/status"]);

    await kubectlOk(["patch", "node", "worker-1", "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { conditions: [{ type: "NetworkUnavailable", status: "False", reason: "X" }] } })]);
    assert.deepEqual(conditions("worker-1"), ["NetworkUnavailable=False/X"]);

    await kubectlOk(["patch", "node", "worker-2", "--subresource=status", "--type=json", "-p", JSON.stringify([{ op: "replace", path: "/status/conditions/0/status", value: "False" }])]);
    assert.deepEqual(conditions("worker-2"), ["Ready=False/KubeletReady", "NetworkUnavailable=True/NoRouteCreated"]);

    // The status subresource changes status only; the main resource never changes status.
    await kubectlOk(["patch", "node", "worker-2", "--subresource=status", "--type=merge", "-p", JSON.stringify({ metadata: { labels: { zone: "z" } } })]);
    assert.equal(server.object("nodes", "worker-2")!.metadata.labels!.zone, "b");
    await kubectlOk(["patch", "node", "worker-2", "--type=merge", "-p", JSON.stringify({ metadata: { labels: { zone: "z" } }, status: { conditions: [] } })]);
    assert.equal(server.object("nodes", "worker-2")!.metadata.labels!.zone, "z");
    assert.equal(conditions("worker-2").length, 2);
  });

  it("leases: create and get, with kubectl (its OpenAPI validation off: the server has no OpenAPI documents)", async () => {
    const lease = { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: "podroutes-controller", namespace: "kube-system" }, spec: { holderIdentity: "a", leaseDurationSeconds: 15 } };
    const file = join(dir, "lease.json");
    await writeFile(file, JSON.stringify(lease));
    // The server publishes no OpenAPI documents, so kubectl's schema validation is off.
    await kubectlOk(["create", "--validate=false", "-f", file]);
    const got = JSON.parse(await kubectlOk(["get", "lease", "podroutes-controller", "-n", "kube-system", "-o", "json"]));
    assert.equal(got.spec.holderIdentity, "a");
    const again = await kubectl(["create", "--validate=false", "-f", file]);
    assert.match(again.stderr, /leases\.coordination\.k8s\.io "podroutes-controller" already exists/);
  });

  it("a token without the verb gets a real 403 Status, which kubectl prints", async () => {
    server.setToken("node-reader", { user: "system:serviceaccount:kube-system:podroutes", rules: [{ verbs: ["get", "list", "watch"], resources: ["nodes"] }, { verbs: ["get"], resources: ["nodes/status"] }] });
    const limited = await server.writeKubeconfig(join(dir, "limited"), { token: "node-reader" });
    assert.equal((await kubectl(["get", "nodes"], limited)).code, 0);
    const refused = await kubectl(["patch", "node", "worker-0", "--subresource=status", "--type=merge", "-p", '{"status":{}}'], limited);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /nodes "worker-0" is forbidden: User "system:serviceaccount:kube-system:podroutes" cannot patch resource "nodes\/status" in API group "" at the cluster scope/);
  });
});

describe("the Kubernetes API test server, as @kubernetes/client-node 1.4.0 sees it", () => {
  const config = () => {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kubeconfig);
    return kc;
  };

  it("lists nodes, pages with limit/continue, and watches a change", async () => {
    const kc = config();
    const api = kc.makeApiClient(k8s.CoreV1Api);
    const list = await api.listNode();
    assert.deepEqual(list.items.map((n) => n.metadata?.name), ["worker-0", "worker-1", "worker-2"]);
    assert.deepEqual(list.items[0]!.spec?.podCIDRs, ["10.200.0.0/24"]);
    const page = await api.listNode({ limit: 2 });
    assert.equal(page.items.length, 2);
    const rest = await api.listNode({ limit: 2, _continue: page.metadata!._continue! });
    assert.deepEqual(rest.items.map((n) => n.metadata?.name), ["worker-2"]);

    const seen: string[] = [];
    let resolveSeen: () => void;
    const gotChange = new Promise<void>((resolve) => (resolveSeen = resolve));
    const controller = await new k8s.Watch(kc).watch(
      "/api/v1/nodes",
      { resourceVersion: list.metadata!.resourceVersion!, allowWatchBookmarks: true },
      (type: string, object: k8s.V1Node) => {
        seen.push(`${type} ${object.metadata?.name ?? ""}`);
        if (type === "DELETED") resolveSeen();
      },
      () => undefined,
    );
    try {
      server.put("nodes", node(3));
      server.update("nodes", "worker-3", (n) => (n.metadata.labels = { zone: "d" }));
      server.remove("nodes", "worker-0");
      await gotChange;
      assert.deepEqual(seen, ["ADDED worker-3", "MODIFIED worker-3", "DELETED worker-0"]);
    } finally {
      controller.abort();
    }
  });

  it("leases: create, read, replace, and a stale resourceVersion is 409 Conflict", async () => {
    const api = config().makeApiClient(k8s.CoordinationV1Api);
    const created = await api.createNamespacedLease({ namespace: "default", body: { metadata: { name: `lease-${process.pid}` }, spec: { holderIdentity: "one" } } });
    const read = await api.readNamespacedLease({ name: created.metadata!.name!, namespace: "default" });
    assert.equal(read.spec?.holderIdentity, "one");
    const replaced = await api.replaceNamespacedLease({ name: read.metadata!.name!, namespace: "default", body: { ...read, spec: { holderIdentity: "two" } } });
    assert.notEqual(replaced.metadata!.resourceVersion, read.metadata!.resourceVersion);
    await assert.rejects(api.replaceNamespacedLease({ name: read.metadata!.name!, namespace: "default", body: { ...read, spec: { holderIdentity: "three" } } }), (e: unknown) => (e as { code?: number }).code === 409);
    assert.equal(server.object("leases", read.metadata!.name!, "default")!.spec && (server.object("leases", read.metadata!.name!, "default")!.spec as { holderIdentity: string }).holderIdentity, "two");
  });
});

describe("the Kubernetes API test server, as podroutes' own client sees it", () => {
  it("nodes: PUT with a stale resourceVersion is 409 Conflict; events: create, strategic-merge patch, list", async () => {
    const client = new KubeClient(await discoverConnection({ kubeconfig }));
    try {
      const current = await client.request<KubeObject>("GET", "/api/v1/nodes/worker-0");
      const updated = await client.request<KubeObject>("PUT", "/api/v1/nodes/worker-0", { body: { ...current, metadata: { ...current.metadata, labels: { zone: "q" } } } });
      assert.equal(updated.metadata.labels?.zone, "q");
      await assert.rejects(client.request("PUT", "/api/v1/nodes/worker-0", { body: current }), (e: unknown) => e instanceof KubeApiError && e.code === 409 && e.reason === "Conflict" && /the object has been modified/.test(e.message));

      const event = { metadata: { name: `worker-0.${process.pid}`, namespace: "default" }, involvedObject: { kind: "Node", name: "worker-0" }, reason: "PodCIDRRejected", message: "overlaps", count: 1, type: "Warning" };
      const created = await client.request<KubeObject & { count: number }>("POST", "/api/v1/namespaces/default/events", { body: event });
      assert.equal(created.count, 1);
      const patched = await client.request<KubeObject & { count: number; message: string }>("PATCH", `/api/v1/namespaces/default/events/${event.metadata.name}`, { body: { count: 2, message: "still overlaps" }, contentType: "application/strategic-merge-patch+json" });
      assert.deepEqual([patched.count, patched.message], [2, "still overlaps"]);
      const events = await client.request<{ kind: string; items: KubeObject[] }>("GET", "/api/v1/namespaces/default/events");
      assert.equal(events.kind, "EventList");
      assert.ok(events.items.some((e) => e.metadata.name === event.metadata.name));
    } finally {
      client.close();
    }
  });

  it("paging over the sorted keys: Nodes added, changed and removed between pages, selectors, remainingItemCount", async () => {
    const client = new KubeClient(await discoverConnection({ kubeconfig }));
    type Page = { metadata: { continue?: string; remainingItemCount?: number; resourceVersion: string }; items: KubeObject[] };
    const page = (query: Record<string, string | number | undefined>) => client.request<Page>("GET", "/api/v1/nodes", { query });
    const names = (p: Page) => p.items.map((item) => item.metadata.name);
    try {
      for (const index of [3, 4, 5]) server.put("nodes", node(index, { zone: "a" }));
      const first = await page({ limit: 2 });
      assert.deepEqual(names(first), ["worker-0", "worker-1"]);
      assert.equal(first.metadata.remainingItemCount, 4);
      // Between pages: a key after the token (seen), one before it (not), one removed, one changed. This
      // server reads later pages from the store as it is then, after the token's key: it keeps no MVCC
      // snapshot, where a real API server's later pages show the first page's revision.
      server.put("nodes", node(10));
      server.put("nodes", node(90));
      server.remove("nodes", "worker-3");
      server.update("nodes", "worker-2", (object) => void (object.metadata.labels = { zone: "c" }));
      server.put("nodes", { ...node(0), metadata: { name: "worker-00" } });
      const second = await page({ limit: 2, continue: first.metadata.continue });
      assert.deepEqual(names(second), ["worker-10", "worker-2"]);
      assert.equal(second.items[1]!.metadata.labels?.zone, "c");
      assert.equal(second.metadata.remainingItemCount, 3);
      const third = await page({ limit: 2, continue: second.metadata.continue });
      assert.deepEqual(names(third), ["worker-4", "worker-5"]);
      assert.equal(third.metadata.remainingItemCount, 1);
      const last = await page({ limit: 2, continue: third.metadata.continue });
      assert.deepEqual(names(last), ["worker-90"]);
      assert.equal(last.metadata.continue, undefined);
      assert.equal(last.metadata.remainingItemCount, undefined);
      // A selector counts and pages over its matches only.
      const zoneA = await page({ limit: 2, labelSelector: "zone=a" });
      assert.deepEqual(names(zoneA), ["worker-0", "worker-1"]);
      assert.equal(zoneA.metadata.remainingItemCount, 2);
      assert.deepEqual(names(await page({ limit: 5, labelSelector: "zone=a", continue: zoneA.metadata.continue })), ["worker-4", "worker-5"]);
      // Everything at once is the whole store, in key order, after each key that comes or goes.
      assert.deepEqual(names(await page({})), ["worker-0", "worker-00", "worker-1", "worker-10", "worker-2", "worker-4", "worker-5", "worker-90"]);
      server.remove("nodes", "worker-10");
      assert.deepEqual(names(await page({})), ["worker-0", "worker-00", "worker-1", "worker-2", "worker-4", "worker-5", "worker-90"]);
      server.put("nodes", node(11));
      assert.deepEqual(names(await page({})), ["worker-0", "worker-00", "worker-1", "worker-11", "worker-2", "worker-4", "worker-5", "worker-90"]);
      // A limit that is not a positive number lists everything, as before the sorted keys (not a 500).
      for (const limit of ["abc", 0, -1]) assert.deepEqual([names(await page({ limit })).length, (await page({ limit })).metadata.continue], [8, undefined]);
    } finally {
      client.close();
    }
  });

  it("slow answers (a fault) make a request time out with a `timeout` failure; the next one, unslowed, works", async () => {
    const client = new KubeClient(await discoverConnection({ kubeconfig }), { requestTimeoutMs: 200 });
    try {
      server.slow(1000);
      await assert.rejects(client.request("GET", "/api/v1/nodes"), (e: unknown) => e instanceof KubeApiError && e.failure === "timeout");
      server.slow(0);
      assert.equal((await client.request<{ items: unknown[] }>("GET", "/api/v1/nodes")).items.length, 3);
    } finally {
      server.slow(0);
      client.close();
    }
  });
});

describe("the test server's patches", () => {
  /** Frozen all the way down: a patch that changed the stored object in place would throw (strict mode). */
  const deepFreeze = <T>(value: T): T => {
    if (typeof value === "object" && value !== null) for (const inner of Object.values(value)) deepFreeze(inner);
    return Object.freeze(value);
  };
  const stored = () =>
    deepFreeze({
      metadata: { name: "worker-0", labels: { zone: "a" } },
      status: { addresses: [{ type: "InternalIP", address: "10.240.0.20" }], conditions: [{ type: "Ready", status: "True" }, { type: "NetworkUnavailable", status: "True", reason: "NoRouteCreated" }] },
    });
  const mergeKeys = { "status.conditions": "type", "status.addresses": "type" };

  it("strategic merge: merges conditions by type, keeps the rest, never changes the stored object", () => {
    const target = stored();
    const patched = applyPatch("strategic", target, { status: { conditions: [{ type: "NetworkUnavailable", status: "False", reason: "RouteCreated" }, { type: "Extra", status: "True" }] } }, mergeKeys) as typeof target;
    assert.deepEqual(patched.status.conditions, [{ type: "Ready", status: "True" }, { type: "NetworkUnavailable", status: "False", reason: "RouteCreated" }, { type: "Extra", status: "True" }]);
    assert.deepEqual(patched.status.addresses, target.status.addresses);
    assert.deepEqual(target, stored());
    const deleted = applyPatch("strategic", target, { metadata: { labels: { zone: null } }, status: { conditions: [{ type: "Ready", $patch: "delete" }] } }, mergeKeys) as typeof target;
    assert.deepEqual([deleted.metadata.labels, deleted.status.conditions.map((c) => c.type)], [{}, ["NetworkUnavailable"]]);
    assert.deepEqual(target, stored());
  });

  it("merge patch: replaces lists, null deletes, never changes the stored object", () => {
    const target = stored();
    const patched = applyPatch("merge", target, { metadata: { labels: { zone: null, tier: "x" } }, status: { conditions: [{ type: "Ready", status: "False" }] } }) as typeof target;
    assert.deepEqual([patched.metadata.labels, patched.status.conditions], [{ tier: "x" }, [{ type: "Ready", status: "False" }]]);
    assert.deepEqual(target, stored());
  });
});

describe("watch semantics", () => {
  /** A raw watch request, read until the server closes it (the queries below ask timeoutSeconds=1). */
  async function watchLines(query: string): Promise<{ status: number; text: string }> {
    const ca = await readFile(server.caFile);
    return new Promise((resolve, reject) => {
      const request = httpsRequest(new URL(`${server.url}/api/v1/nodes?${query}`), { ca, headers: { Authorization: "Bearer admin-token" } }, (response) => {
        let text = "";
        response.on("data", (chunk: Buffer) => (text += chunk.toString()));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, text }));
      });
      request.on("error", reject);
      request.end();
    });
  }

  it("sendInitialEvents: synthetic ADDED, then a BOOKMARK annotated k8s.io/initial-events-end; refused (422) without its preconditions", async () => {
    const { status, text } = await watchLines("watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1");
    assert.equal(status, 200);
    const events = text.trim().split("\n").map((l) => JSON.parse(l) as { type: string; object: KubeObject & { metadata: { annotations?: Record<string, string> } } });
    assert.deepEqual(events.slice(0, 3).map((e) => `${e.type} ${e.object.metadata.name}`), ["ADDED worker-0", "ADDED worker-1", "ADDED worker-2"]);
    assert.equal(events[3]!.type, "BOOKMARK");
    assert.equal(events[3]!.object.metadata.annotations?.["k8s.io/initial-events-end"], "true");
    const refused = await watchLines("watch=true&sendInitialEvents=true&timeoutSeconds=1");
    assert.equal(refused.status, 422);
    assert.equal(JSON.parse(refused.text).kind, "Status");
  });

  it("a list and a watch serve what GET serves: the stored object with its kind and apiVersion set by the server", async () => {
    // Put without kind/apiVersion (or with a wrong kind): the server sets them; the JSON it caches per
    // object must be made after that, or lists and watch events serve the object without them.
    server.put("nodes", { ...node(7), kind: "Wrong" });
    const got = server.object("nodes", "worker-7")!;
    assert.deepEqual([got.kind, got.apiVersion], ["Node", "v1"]);
    const ca = await readFile(server.caFile);
    const listed = await new Promise<string>((resolve, reject) => {
      const request = httpsRequest(new URL(`${server.url}/api/v1/nodes`), { ca, headers: { Authorization: "Bearer admin-token" } }, (response) => {
        let text = "";
        response.on("data", (chunk: Buffer) => (text += chunk.toString()));
        response.on("end", () => resolve(text));
      });
      request.on("error", reject);
      request.end();
    });
    const item = (JSON.parse(listed) as { items: KubeObject[] }).items.find((object) => object.metadata.name === "worker-7")!;
    assert.deepEqual(item, got);
    const { text } = await watchLines("watch=true&resourceVersion=0&timeoutSeconds=1");
    const added = text.trim().split("\n").map((line) => JSON.parse(line) as { object: KubeObject }).find((event) => event.object.metadata.name === "worker-7")!;
    assert.deepEqual(added.object, got);
  });

  it("a too-old version: an ERROR event carrying a 410 Expired Status in a 200 stream", async () => {
    const old = Number(server.resourceVersion);
    server.put("nodes", node(9));
    server.compact();
    const { status, text } = await watchLines(`watch=true&resourceVersion=${old}&timeoutSeconds=1`);
    assert.equal(status, 200);
    const event = JSON.parse(text.trim()) as { type: string; object: { kind: string; code: number; reason: string; status: string } };
    assert.deepEqual([event.type, event.object.kind, event.object.code, event.object.reason, event.object.status], ["ERROR", "Status", 410, "Expired", "Failure"]);
  });

  it("a version newer than the server's (after a rewind), answered as the real kube-apiserver (v1.37) answers it: the watch is a silent 200 until the revision passes it, a list at it a 504 Too large", async () => {
    const own = await startKubeServer({ bookmarkIntervalMs: 50, nodes: [node(0)] });
    try {
      const ca = await readFile(own.caFile);
      const get = (query: string, until?: (text: string) => boolean) =>
        new Promise<{ status: number; text: string }>((resolve, reject) => {
          const request = httpsRequest(new URL(`${own.url}/api/v1/nodes?${query}`), { ca, headers: { Authorization: "Bearer admin-token" } }, (response) => {
            let text = "";
            response.on("data", (chunk: Buffer) => {
              text += chunk.toString();
              if (until?.(text)) request.destroy();
            });
            response.on("close", () => resolve({ status: response.statusCode ?? 0, text }));
          });
          request.on("error", (error) => (until ? undefined : reject(error)));
          request.end();
        });
      for (let i = 1; i <= 5; i++) own.put("nodes", node(i));
      const ahead = Number(own.resourceVersion);
      own.rewind(2);
      const list = await get(`resourceVersion=${ahead}&resourceVersionMatch=NotOlderThan&limit=1`);
      assert.equal(list.status, 504);
      const status = JSON.parse(list.text) as { reason: string; message: string; details: { causes: { reason: string }[]; retryAfterSeconds: number } };
      assert.deepEqual([status.reason, status.details.causes[0]!.reason, status.details.retryAfterSeconds], ["Timeout", "ResourceVersionTooLarge", 1]);
      assert.match(status.message, new RegExp(`^Timeout: Too large resource version: ${ahead}, current: 2$`));
      // A whole watch (1 s, bookmarks asked for every 50 ms) while the server is behind: nothing at all.
      const silent = await get(`watch=true&resourceVersion=${ahead}&allowWatchBookmarks=true&timeoutSeconds=1`);
      assert.deepEqual([silent.status, silent.text], [200, ""]);
      // Once past it, only what came after the version asked for is served.
      const watching = get(`watch=true&resourceVersion=${ahead}&allowWatchBookmarks=true&timeoutSeconds=10`, (text) => text.includes("worker-9"));
      // Opened before or after these writes, the watch gets the same: the history after the rewind is kept.
      while (Number(own.resourceVersion) < ahead) own.put("nodes", node(8));
      own.put("nodes", node(9));
      const events = (await watching).text.trim().split("\n").map((line) => JSON.parse(line) as { type: string; object: KubeObject });
      assert.deepEqual(events.filter((e) => e.type !== "BOOKMARK").map((e) => `${e.type} ${e.object.metadata.name}`), ["ADDED worker-9"]);
      assert.ok(events.every((e) => Number(e.object.metadata.resourceVersion) > ahead));
    } finally {
      await own.close();
    }
  });
});

describe("the test server as its own process", () => {
  const MAIN = fileURLToPath(new URL("../testkit/kube-server-main.js", import.meta.url));

  it("serves kubectl on its --listen address with --token rules, and obeys its admin socket", async () => {
    const stateDir = await mkdtemp(join(tmpdir(), "podroutes-kubemain-"));
    const nodesFile = join(stateDir, "nodes.json");
    await writeFile(nodesFile, JSON.stringify([node(0)]));
    const child = spawn(process.execPath, [MAIN, "--listen", "127.0.0.1:0", "--state-dir", stateDir, "--token", "admin", "--token", "reader=get,list,watch:nodes", "--nodes", nodesFile], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      const ready = JSON.parse(await lines(child).waitFor(/^\{/)) as { url: string; caFile: string; adminSocket: string; pid: number };
      assert.equal(ready.pid, child.pid);
      assert.deepEqual(JSON.parse(await readFile(join(stateDir, "server.json"), "utf8")), ready);
      const reader = join(stateDir, "reader.kubeconfig");
      await writeFile(reader, kubeconfigYaml({ server: ready.url, caFile: ready.caFile, token: "reader" }));
      await adminCall(ready.adminSocket, "PUT", "/objects/nodes", node(1));
      const listed = await kubectl(["get", "nodes", "-o", "name"], reader);
      assert.equal(listed.stdout.trim(), "node/worker-0\nnode/worker-1");
      const refused = await kubectl(["delete", "node", "worker-0"], reader);
      assert.match(refused.stderr, /cannot delete resource "nodes"/);
      const requests = await adminCall<{ verb?: string; code: number; token?: string }[]>(ready.adminSocket, "GET", "/requests");
      assert.ok(requests.some((r) => r.verb === "delete" && r.code === 403 && r.token === "reader"));
      await adminCall(ready.adminSocket, "POST", "/faults/failNext", { count: 1, code: 500 });
      const failed = await kubectl(["get", "nodes", "-o", "name", "--request-timeout", "5s"], reader);
      assert.notEqual(failed.stdout.trim(), "node/worker-0\nnode/worker-1");
    } finally {
      child.kill("SIGTERM");
      await new Promise((resolve) => (child.exitCode !== null ? resolve(undefined) : child.once("exit", resolve)));
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
