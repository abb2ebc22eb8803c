/**
 * The Hetzner Cloud client against the local test server (no root, no real cloud): reads with
 * pagination, route actions followed to success or error, a busy network (conflict, locked) waited out,
 * the rate limit honoured both when the API refuses and before it has to, and which errors are final.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { UsageError } from "../../errors.js";
import { eventually } from "../../../testkit/controller.js";
import { startHetznerServer, type HetznerNetwork, type HetznerServerApi, type HetznerServerOptions } from "../../../testkit/hetzner-server.js";
import { callName, nextFirstPollMs, createHetznerApi, HetznerActionError, HetznerActionTimeoutError, HetznerApiError, HetznerNetworkError, refillDelayMs, type HetznerApi, type HetznerSettings } from "./api.js";

let server: HetznerServerApi;
let network: HetznerNetwork;

async function setup(options: HetznerServerOptions = {}, settings: HetznerSettings = {}): Promise<HetznerApi> {
  server = await startHetznerServer(options);
  network = server.addNetwork({ name: "k8s", ipRange: "10.0.0.0/16" });
  return createHetznerApi({ token: server.token, endpoint: server.endpoint, pollIntervalMs: 10, minBackoffMs: 10, maxBackoffMs: 40, env: {}, ...settings });
}

const route = (i: number, gateway = "10.0.0.2") => ({ destination: `10.244.${i}.0/24`, gateway });
const posts = () => server.requests.filter((r) => r.method === "POST");

afterEach(() => server?.stop());

describe("hetzner api: reads", () => {
  it("finds a network by name and by id, with its routes; undefined when there is none", async () => {
    const api = await setup();
    network.routes.push(route(0));
    const byName = await api.findNetwork("k8s");
    assert.equal(byName?.id, network.id);
    assert.deepEqual(byName?.routes, [route(0)]);
    assert.deepEqual(byName?.subnets, [{ type: "cloud", ipRange: "10.0.0.0/16", networkZone: "eu-central", gateway: "10.0.0.1" }]);
    assert.deepEqual(await api.findNetwork(String(network.id)), byName);
    assert.equal(await api.findNetwork("other"), undefined);
    assert.equal(await api.findNetwork("999"), undefined);
  });

  it("reads whole lists, 50 a page: 60 networks, 120 servers by label", async () => {
    const api = await setup();
    for (let i = 1; i < 60; i++) server.addNetwork({ name: `net-${i}`, ipRange: `10.${i}.0.0/16` });
    assert.equal((await api.listNetworks()).length, 60);
    assert.deepEqual(server.requests.filter((r) => r.path === "/v1/networks").map((r) => `${r.query.get("page")}/${r.query.get("per_page")}`), ["1/50", "2/50"]);
    for (let i = 0; i < 120; i++) server.addServer({ name: `s-${i}`, labels: { pool: i % 2 ? "odd" : "even" }, privateNet: i < 100 ? [{ network: network.id, ip: `10.0.1.${i + 10}` }] : [] });
    const even = await api.serversOnNetwork(network.id, "pool=even");
    assert.equal(even.length, 50, "the 60 even servers, less the 10 not on the network");
    assert.deepEqual(even[0], { server: { id: server.servers[0]!.id, name: "s-0", status: "running", labels: { pool: "even" }, privateNet: [{ network: network.id, ip: "10.0.1.10", aliasIps: [] }] }, ip: "10.0.1.10" });
    assert.deepEqual(server.requests.filter((r) => r.path === "/v1/servers").map((r) => [r.query.get("page"), r.query.get("label_selector")]), [["1", "pool=even"], ["2", "pool=even"]]);
  });

  it("a server error on a read is retried; a wrong token is final", async () => {
    const api = await setup();
    server.injectError({ code: "service_error", count: 2, when: (c) => c.path === "/networks" });
    assert.equal((await api.listNetworks()).length, 1);
    assert.equal(api.calls.retries, 2);
    const wrong = createHetznerApi({ token: "nope", endpoint: server.endpoint, env: {}, minBackoffMs: 10 });
    await assert.rejects(wrong.listNetworks(), (e: unknown) => e instanceof HetznerApiError && e.code === "unauthorized" && e.status === 401);
    assert.equal(server.requests.filter((r) => r.token === "nope").length, 1);
  });

  it("needs a token: a UsageError naming HCLOUD_TOKEN; token and endpoint come from HCLOUD_TOKEN and HCLOUD_ENDPOINT", async () => {
    await setup();
    assert.throws(() => createHetznerApi({ env: {} }), (e: unknown) => e instanceof UsageError && /HCLOUD_TOKEN/.test(e.message));
    assert.throws(() => createHetznerApi({ env: { HCLOUD_TOKEN: "t", HCLOUD_ENDPOINT: "ftp://x" } }), /HCLOUD_ENDPOINT/);
    const fromEnv = createHetznerApi({ env: { HCLOUD_TOKEN: server.token, HCLOUD_ENDPOINT: `${server.endpoint}/` } });
    assert.equal((await fromEnv.findNetwork("k8s"))?.id, network.id);
  });
});

describe("hetzner api: route actions", () => {
  it("adds and deletes a route, each action polled to success; the route changes only then", async () => {
    const api = await setup({ actionDelayMs: "manual" });
    const adding = api.addRoute(network.id, route(1));
    await eventually("the action is polled", () => server.requests.some((r) => r.path.startsWith("/v1/actions/")));
    assert.deepEqual(network.routes, []);
    server.finishActions();
    const action = await adding;
    assert.equal(action.status, "success");
    assert.equal(action.command, "add_route");
    assert.deepEqual((await api.getNetwork(network.id)).routes, [route(1)]);
    const deleting = api.deleteRoute(network.id, route(1));
    await eventually("the delete runs", () => server.runningAction(network.id)?.command === "delete_route");
    server.finishActions();
    assert.equal(await deleting, true);
    assert.deepEqual(network.routes, []);
    assert.equal(await api.deleteRoute(network.id, route(1)), false, "not_found: no such route");
    assert.ok(api.calls.polls >= 2);
  });

  it("an action that ends in error is a HetznerActionError with the API's code; the network is unchanged", async () => {
    const api = await setup();
    server.failNextAction({ command: "add_route", code: "network_unavailable", message: "route could not be installed" });
    await assert.rejects(api.addRoute(network.id, route(1)), (e: unknown) => e instanceof HetznerActionError && e.action.error?.code === "network_unavailable" && /route could not be installed/.test(e.message));
    assert.deepEqual(network.routes, []);
    assert.equal(posts().length, 1, "a failed action is not repeated by the client");
  });

  for (const busyError of ["conflict", "locked"] as const) {
    it(`a busy network (${busyError}) is waited out: the second write is retried until the first action ends`, async () => {
      const api = await setup({ actionDelayMs: "manual", busyError });
      const first = api.addRoute(network.id, route(1));
      await eventually("the first action runs", () => server.runningAction(network.id) !== undefined);
      const second = api.addRoute(network.id, route(2, "10.0.0.3"));
      await eventually(`the second is refused with ${busyError} at least twice`, () => server.requests.filter((r) => r.error === busyError).length >= 2);
      server.finishActions();
      await first;
      await eventually("the second write runs", () => server.runningAction(network.id) !== undefined);
      server.finishActions();
      assert.equal((await second).status, "success");
      assert.deepEqual(network.routes, [route(1), route(2, "10.0.0.3")]);
      assert.deepEqual(posts().at(-1)?.status, 201);
    });
  }

  it("a network busy past the action deadline: the busy error, nothing written", async () => {
    const api = await setup({ actionDelayMs: "manual", busyError: "locked" }, { actionTimeoutMs: 300 });
    server.addNetwork({ name: "x", ipRange: "10.9.0.0/16" });
    const first = api.addRoute(network.id, route(1)).catch((e: unknown) => e);
    await eventually("the first action runs", () => server.runningAction(network.id) !== undefined);
    await assert.rejects(api.addRoute(network.id, route(2)), (e: unknown) => e instanceof HetznerApiError && e.code === "locked" && e.status === 423);
    assert.ok(server.requests.filter((r) => r.error === "locked").length >= 2, "retried before giving up");
    server.finishActions();
    assert.deepEqual(network.routes, [route(1)]);
    await first;
  });

  it("refusals that retrying cannot fix are final: invalid_input, resource_limit_exceeded, a server error on a write", async () => {
    const api = await setup({ routeLimit: 1 });
    await assert.rejects(api.addRoute(network.id, route(1, "10.9.0.1")), (e: unknown) => e instanceof HetznerApiError && e.code === "invalid_input" && /invalid gateway/.test(e.message));
    await api.addRoute(network.id, route(1));
    await assert.rejects(api.addRoute(network.id, route(2)), (e: unknown) => e instanceof HetznerApiError && e.code === "resource_limit_exceeded" && e.status === 403);
    server.injectError({ code: "service_error", when: (c) => c.method === "POST" });
    await assert.rejects(api.deleteRoute(network.id, route(1)), (e: unknown) => e instanceof HetznerApiError && e.code === "service_error");
    assert.deepEqual(posts().map((r) => r.error ?? r.status), ["invalid_input", 201, "resource_limit_exceeded", "service_error"], "each write sent once");
  });
});

describe("hetzner api: lost answers, deadlines, cancellation", () => {
  it("a read whose connection drops is retried; a write's is final whether or not it was done", async () => {
    const api = await setup();
    server.dropConnection({ when: (c) => c.method === "GET" });
    assert.equal((await api.findNetwork("k8s"))?.id, network.id);
    assert.equal(api.calls.retries, 1);
    server.dropConnection({ when: (c) => c.method === "POST" });
    await assert.rejects(api.addRoute(network.id, route(1)), HetznerNetworkError);
    assert.deepEqual(network.routes, [], "dropped before the work: nothing done");
    server.dropConnection({ when: (c) => c.method === "POST", afterWork: true });
    await assert.rejects(api.addRoute(network.id, route(2)), HetznerNetworkError);
    await eventually("the lost write's action ends", () => server.runningAction(network.id) === undefined);
    assert.deepEqual((await api.getNetwork(network.id)).routes, [route(2)], "dropped after the work: done; only a read tells");
    assert.equal(posts().length, 2, "no write repeated");
  });

  it("an action still running at the deadline is a HetznerActionTimeoutError; it may still succeed", async () => {
    const api = await setup({ actionDelayMs: "manual" }, { actionTimeoutMs: 150 });
    await assert.rejects(api.addRoute(network.id, route(1)), (e: unknown) => e instanceof HetznerActionTimeoutError && e.action.status === "running");
    server.finishActions();
    assert.deepEqual((await api.getNetwork(network.id)).routes, [route(1)]);
  });

  it("an abort ends the waits (a busy network, a running action) and refuses new calls", async () => {
    const controller = new AbortController();
    const api = await setup({ actionDelayMs: "manual" }, { signal: controller.signal });
    const first = api.addRoute(network.id, route(1)).catch((e: unknown) => e);
    await eventually("the first action runs", () => server.runningAction(network.id) !== undefined);
    const second = api.addRoute(network.id, route(2)).catch((e: unknown) => e);
    await eventually("the second is refused", () => server.requests.some((r) => r.error === "conflict"));
    controller.abort();
    assert.equal(((await second) as Error).name, "AbortError");
    assert.equal(((await first) as Error).name, "AbortError");
    const sent = server.requests.length;
    await assert.rejects(api.listNetworks(), { name: "AbortError" });
    assert.equal(server.requests.length, sent, "an aborted client sends nothing");
    server.finishActions();
    assert.deepEqual(network.routes, [route(1)], "the first action was under way: the API finishes it");
  });
});

describe("hetzner api: the rate limit", () => {
  it("rate_limit_exceeded is retried after the refill the RateLimit-* headers tell, and reported as throttling", async () => {
    let throttled = 0;
    const api = await setup({}, { calls: { started: () => () => {}, throttled: () => throttled++ } });
    server.injectError({ code: "rate_limit_exceeded", resetInSeconds: 1 });
    assert.equal((await api.findNetwork("k8s"))?.id, network.id);
    assert.deepEqual(server.requests.map((r) => r.error ?? r.status), ["rate_limit_exceeded", 200]);
    assert.equal(throttled, 1);
    assert.equal(api.calls.retries, 1);
  });

  it("a client told RateLimit-Remaining: 0 waits for the refill before its next call, and meets no 429", async () => {
    const api = await setup({ rateLimit: { limit: 2, refillPerSecond: 10 } });
    for (let i = 0; i < 6; i++) assert.equal((await api.findNetwork("k8s"))?.id, network.id);
    assert.deepEqual(server.requests.filter((r) => r.status === 429).length, 0, "paced by the headers, never refused");
    // the budget is real: the same calls sent without waiting are refused
    const unpaced = await Promise.all([1, 2, 3, 4].map(() => fetch(`${server.endpoint}/networks`, { headers: { Authorization: `Bearer ${server.token}` } }).then((r) => r.status)));
    assert.ok(unpaced.includes(429), `unpaced calls answered ${unpaced}`);
    assert.equal(api.rateLimit?.limit, 2);
  });

  it("refillDelayMs: the budget refills evenly until RateLimit-Reset", () => {
    assert.equal(refillDelayMs({ limit: 3600, remaining: 0, resetAt: 3_600_000 }, 0), 1000);
    assert.equal(refillDelayMs({ limit: 10, remaining: 5, resetAt: 10_000 }, 5_000), 1000);
    assert.equal(refillDelayMs({ limit: 10, remaining: 10, resetAt: 0 }, 5_000), 0);
  });
});

describe("hetzner api: the first poll of an action", () => {
  it("nextFirstPollMs: grows by a quarter interval toward how long an action was seen running, shrinks by an interval when it had ended, never below the interval", () => {
    assert.equal(nextFirstPollMs(500, 500, 1700), 625, "seen running at 1.7 s: a quarter interval more");
    assert.equal(nextFirstPollMs(1500, 500, 1550), 1550, "no further than it was seen running");
    assert.equal(nextFirstPollMs(1500, 500, undefined), 1000, "ended at the first poll: an interval less");
    assert.equal(nextFirstPollMs(600, 500, undefined), 500, "never below the interval");
    assert.equal(nextFirstPollMs(500, 500, 200), 500, "never shrinks on an action seen running");
  });

  it("an action seen running for a while makes the next action's first poll wait longer", async () => {
    const api = await setup({ actionDelayMs: "manual" }, { pollIntervalMs: 40 });
    const pollsOf = (id: number) => server.requests.filter((r) => r.path === `/v1/actions/${id}`);
    const postAt = () => writes().at(-1)!.at;
    const writes = () => server.requests.filter((r) => r.method === "POST");
    const first = api.addRoute(network.id, route(1));
    await eventually("four polls of a running action", () => server.runningAction(network.id) !== undefined && pollsOf(server.runningAction(network.id)!.id).length >= 4);
    server.finishActions();
    await first;
    // Seen running for at least 3 intervals: the next first poll waits 40 + 10 ms, no sooner.
    const second = api.addRoute(network.id, route(2));
    await eventually("the second action runs", () => server.runningAction(network.id) !== undefined);
    const secondId = server.runningAction(network.id)!.id;
    const secondPost = postAt();
    server.finishActions();
    await second;
    assert.ok(pollsOf(secondId)[0]!.at - secondPost >= 49, `first poll ${pollsOf(secondId)[0]!.at - secondPost} ms after the add`);
  });

  it("a fixed firstPollMs is kept", async () => {
    const api = await setup({ actionDelayMs: 0 }, { pollIntervalMs: 10, firstPollMs: 60 });
    for (const i of [1, 2]) await api.addRoute(network.id, route(i));
    const [a, b] = server.requests.filter((r) => r.method === "POST");
    for (const post of [a!, b!]) {
      const poll = server.requests.find((r) => r.path.startsWith("/v1/actions/") && r.at >= post.at)!;
      assert.ok(poll.at - post.at >= 59, `${poll.at - post.at} ms`);
    }
  });
});

it("callName names calls as the API does", () => {
  assert.equal(callName("GET", "/networks?name=k8s"), "networks.list");
  assert.equal(callName("GET", "/networks/12"), "networks.get");
  assert.equal(callName("POST", "/networks/12/actions/add_route"), "networks.add_route");
  assert.equal(callName("POST", "/networks/12/actions/delete_route"), "networks.delete_route");
  assert.equal(callName("GET", "/actions/5"), "actions.get");
  assert.equal(callName("GET", "/servers?page=2"), "servers.list");
});
