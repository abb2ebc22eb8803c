/**
 * The Hetzner Cloud test server checked by the real hcloud CLI (Debian's hcloud-cli, built on hcloud-go
 * 1.35): what hcloud lists and describes is the server's state, its add-route and remove-route wait on
 * the action to `success` and change the network only then, a busy network's `conflict` is retried by
 * hcloud while `locked` is surfaced, failed actions, rate limits, the route limit and bad gateways come
 * out as hcloud's own errors, and lists page at hcloud's 50 a page. Everything on 127.0.0.1 with a test
 * token, never a real cloud.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, it } from "node:test";
import { eventually } from "../testkit/controller.js";
import { hcloud, type Hcloud } from "../testkit/hcloud.js";
import { matchesLabels, parseLabelSelector, startHetznerServer, type HetznerNetwork, type HetznerServerApi } from "../testkit/hetzner-server.js";
import { createHetznerApi } from "../src/targets/hetzner/api.js";

let server: HetznerServerApi;
let cli: Hcloud;
let network: HetznerNetwork;

async function start(options: Parameters<typeof startHetznerServer>[0] = {}): Promise<void> {
  server = await startHetznerServer(options);
  cli = hcloud(server);
  network = server.addNetwork({ name: "k8s", ipRange: "10.0.0.0/16", labels: { cluster: "a" } });
  server.addServer({ name: "node-1", labels: { cluster: "a", role: "worker" }, privateNet: [{ network: network.id, ip: "10.0.0.2" }] });
  server.addServer({ name: "node-2", labels: { cluster: "a", role: "control-plane" }, privateNet: [{ network: network.id, ip: "10.0.0.3" }] });
}

afterEach(async () => {
  cli?.dispose();
  await server?.stop();
});

describe("hcloud against the Hetzner test server: reads", () => {
  beforeEach(() => start());

  it("network list and describe (by name and by id) show the server's networks, subnets and servers", async () => {
    const list = await cli.json<HetznerNetwork[]>(["network", "list"]);
    assert.deepEqual(
      list.map((n) => [n.id, n.name, n.ip_range, n.servers, n.labels]),
      [[network.id, "k8s", "10.0.0.0/16", network.servers, { cluster: "a" }]],
    );
    assert.deepEqual(list[0]!.subnets, [{ type: "cloud", ip_range: "10.0.0.0/16", network_zone: "eu-central", gateway: "10.0.0.1" }]);
    // describe -o json prints the API's body as the API sent it
    const byName = await cli.json<HetznerNetwork>(["network", "describe", "k8s"]);
    const byId = await cli.json<HetznerNetwork>(["network", "describe", String(network.id)]);
    assert.deepEqual(byName, JSON.parse(JSON.stringify(network)));
    assert.deepEqual(byId, byName);
    assert.ok(server.requests.some((r) => r.path === "/v1/networks" && r.query.get("name") === "k8s"), "a name is looked up with ?name=");
    assert.ok(server.requests.some((r) => r.path === `/v1/networks/${network.id}`), "an id is read with GET /networks/{id}");
  });

  it("server list -l selects by label and shows each server's private_net (network id, ip)", async () => {
    const workers = await cli.json<{ name: string; private_net: { network: number; ip: string }[] }[]>(["server", "list", "-l", "role=worker"]);
    assert.deepEqual(
      workers.map((s) => [s.name, s.private_net.map((p) => [p.network, p.ip])]),
      [["node-1", [[network.id, "10.0.0.2"]]]],
    );
    const notWorkers = await cli.json<{ name: string }[]>(["server", "list", "-l", "cluster=a,role!=worker"]);
    assert.deepEqual(notWorkers.map((s) => s.name), ["node-2"]);
    const bad = await cli.run(["server", "list", "-l", "role in (a"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /\(invalid_input\)/);
  });

  it("pages at 50: 60 networks and 70 of 120 servers by label come whole, over two pages each", async () => {
    for (let i = 1; i < 60; i++) server.addNetwork({ name: `net-${String(i).padStart(2, "0")}`, ipRange: `10.${i}.0.0/16` });
    for (let i = 0; i < 120; i++) server.addServer({ name: `s-${i}`, labels: { pool: i < 70 ? "big" : "small" } });
    const networks = await cli.json<HetznerNetwork[]>(["network", "list"]);
    assert.equal(networks.length, 60);
    assert.deepEqual(networks.map((n) => n.id), [...server.networks.map((n) => n.id)].sort((a, b) => a - b));
    const pages = server.requests.filter((r) => r.path === "/v1/networks").map((r) => [r.query.get("page"), r.query.get("per_page")]);
    assert.deepEqual(pages, [["1", "50"], ["2", "50"]]);
    assert.ok(server.requests.filter((r) => r.path === "/v1/networks").every((r) => r.query.get("sort") === "id:asc"), "hcloud lists sort=id:asc unless told otherwise");
    const big = await cli.json<{ name: string }[]>(["server", "list", "-l", "pool=big"]);
    assert.equal(big.length, 70);
    assert.deepEqual(server.requests.filter((r) => r.path === "/v1/servers").map((r) => r.query.get("page")), ["1", "2"]);
  });

  it("a wrong token is hcloud's unauthorized error", async () => {
    const other = hcloud({ endpoint: server.endpoint, token: "not-the-token" });
    try {
      const result = await other.run(["network", "list"]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /unable to authenticate \(unauthorized\)/);
    } finally {
      other.dispose();
    }
  });
});

describe("hcloud against the Hetzner test server: route actions", () => {
  it("add-route waits on the action and the route appears only at success; remove-route likewise", async () => {
    await start({ actionDelayMs: "manual" });
    const adding = cli.run(["network", "add-route", "k8s", "--destination", "10.244.1.0/24", "--gateway", "10.0.0.2"]);
    await eventually("the add_route action runs", () => server.runningAction(network.id) !== undefined);
    const action = server.runningAction(network.id)!;
    assert.equal(action.command, "add_route");
    assert.deepEqual(network.routes, [], "no route while the action runs");
    // hcloud 1.30 waits with hcloud-go's WatchOverallProgress: the list endpoint, GET /actions?id=N
    await eventually("hcloud polls the action", () => server.requests.some((r) => r.path === "/v1/actions" && r.query.getAll("id").includes(String(action.id))));
    server.finishActions();
    const added = await adding;
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, new RegExp(`Route added to network ${network.id}`));
    const described = await cli.json<HetznerNetwork>(["network", "describe", "k8s"]);
    assert.deepEqual(described.routes, [{ destination: "10.244.1.0/24", gateway: "10.0.0.2" }]);

    const removing = cli.run(["network", "remove-route", "k8s", "--destination", "10.244.1.0/24", "--gateway", "10.0.0.2"]);
    await eventually("the delete_route action runs", () => server.runningAction(network.id)?.command === "delete_route");
    assert.equal(network.routes.length, 1, "the route stays while its delete runs");
    server.finishActions();
    const removed = await removing;
    assert.equal(removed.code, 0, removed.stderr);
    assert.deepEqual((await cli.json<HetznerNetwork>(["network", "describe", "k8s"])).routes, []);
  });

  it("conflict (one action per network) is retried by hcloud until the running action ends", async () => {
    await start({ actionDelayMs: "manual", busyError: "conflict" });
    const first = cli.run(["network", "add-route", "k8s", "--destination", "10.244.1.0/24", "--gateway", "10.0.0.2"]);
    await eventually("the first action runs", () => server.runningAction(network.id) !== undefined);
    const second = cli.run(["network", "add-route", "k8s", "--destination", "10.244.2.0/24", "--gateway", "10.0.0.3"]);
    await eventually("the second write is refused with conflict", () => server.requests.some((r) => r.error === "conflict"));
    server.finishActions();
    await eventually("the second write is retried and runs", () => server.runningAction(network.id) !== undefined);
    server.finishActions();
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const writes = server.requests.filter((r) => r.method === "POST").map((r) => [(r.body as { destination: string }).destination, r.status]);
    assert.deepEqual(writes.filter(([d]) => d === "10.244.1.0/24"), [["10.244.1.0/24", 201]]);
    const second_ = writes.filter(([d]) => d === "10.244.2.0/24");
    assert.ok(second_.length >= 2 && second_.slice(0, -1).every(([, s]) => s === 409) && second_.at(-1)![1] === 201, JSON.stringify(second_));
    assert.deepEqual(network.routes.map((r) => r.destination).sort(), ["10.244.1.0/24", "10.244.2.0/24"]);
  });

  it("locked is surfaced by hcloud (hcloud-go 1.35 retries conflict only), the network unchanged", async () => {
    await start({ actionDelayMs: "manual", busyError: "locked" });
    const first = cli.run(["network", "add-route", "k8s", "--destination", "10.244.1.0/24", "--gateway", "10.0.0.2"]);
    await eventually("the first action runs", () => server.runningAction(network.id) !== undefined);
    const second = await cli.run(["network", "add-route", "k8s", "--destination", "10.244.2.0/24", "--gateway", "10.0.0.3"]);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /\(locked\)/);
    assert.equal(server.requests.filter((r) => r.error === "locked").length, 1, "not retried");
    server.finishActions();
    assert.equal((await first).code, 0);
    assert.deepEqual(network.routes, [{ destination: "10.244.1.0/24", gateway: "10.0.0.2" }]);
  });

  it("an action that ends in error fails add-route with the action's message and adds nothing", async () => {
    await start();
    server.failNextAction({ command: "add_route", code: "action_failed", message: "route could not be installed" });
    const result = await cli.run(["network", "add-route", "k8s", "--destination", "10.244.1.0/24", "--gateway", "10.0.0.2"]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /action \d+ failed: route could not be installed \(action_failed\)/);
    assert.deepEqual(network.routes, []);
  });

  it("the API's refusals come out as hcloud's errors: invalid gateway, route limit, not found, rate limit", async () => {
    await start({ routeLimit: 3 });
    const outside = await cli.run(["network", "add-route", "k8s", "--destination", "10.244.1.0/24", "--gateway", "10.9.0.0"]);
    assert.match(outside.stderr, /invalid gateway \(invalid_input\)/);
    assert.match((await cli.run(["network", "add-route", "k8s", "--destination", "10.244.1.0/24", "--gateway", "10.0.0.1"])).stderr, /invalid gateway/, "the network's first IP");
    assert.match((await cli.run(["network", "add-route", "k8s", "--destination", "10.0.5.0/24", "--gateway", "10.0.0.2"])).stderr, /overlaps with a subnet of the network \(invalid_input\)/);
    for (const i of [1, 2, 3]) assert.equal((await cli.run(["network", "add-route", "k8s", "--destination", `10.244.${i}.0/24`, "--gateway", "10.0.0.2"])).code, 0);
    const full = await cli.run(["network", "add-route", "k8s", "--destination", "10.244.4.0/24", "--gateway", "10.0.0.2"]);
    assert.equal(full.code, 1);
    assert.match(full.stderr, /\(resource_limit_exceeded\)/);
    const missing = await cli.run(["network", "remove-route", "k8s", "--destination", "10.244.9.0/24", "--gateway", "10.0.0.2"]);
    assert.match(missing.stderr, /route not found \(not_found\)/);
    server.injectError({ code: "rate_limit_exceeded", message: "limit of 3600 requests per hour reached", resetInSeconds: 30 });
    const limited = await cli.run(["network", "list"]);
    assert.equal(limited.code, 1);
    assert.match(limited.stderr, /limit of 3600 requests per hour reached \(rate_limit_exceeded\)/);
    assert.equal(network.routes.length, 3);
  });

  it("the server's own budget runs out as hcloud calls it: 429 with RateLimit-Remaining 0 and a Reset ahead", async () => {
    await start({ rateLimit: { limit: 2, refillPerSecond: 0.001 } });
    assert.equal((await cli.run(["network", "list"])).code, 0);
    assert.equal((await cli.run(["server", "list"])).code, 0);
    const third = await cli.run(["network", "list"]);
    assert.equal(third.code, 1);
    assert.match(third.stderr, /limit of 2 requests per hour reached \(rate_limit_exceeded\)/);
  });
});

describe("podroutes' Hetzner client and hcloud read and write the same routes", () => {
  it("a route the client writes reads back in hcloud exactly as one hcloud writes, and each removes the other's", async () => {
    await start();
    const api = createHetznerApi({ token: server.token, endpoint: server.endpoint, pollIntervalMs: 10, env: {} });
    await api.addRoute(network.id, { destination: "10.244.1.0/24", gateway: "10.0.0.2" });
    const added = await cli.run(["network", "add-route", "k8s", "--destination", "10.244.2.0/24", "--gateway", "10.0.0.3"]);
    assert.equal(added.code, 0, added.stderr);
    const [ours, theirs] = server.requests.filter((r) => r.method === "POST").map((r) => r.body);
    assert.deepEqual(Object.keys(ours as object).sort(), Object.keys(theirs as object).sort(), "the same request body");
    assert.deepEqual((await cli.json<HetznerNetwork>(["network", "describe", "k8s"])).routes, [
      { destination: "10.244.1.0/24", gateway: "10.0.0.2" },
      { destination: "10.244.2.0/24", gateway: "10.0.0.3" },
    ]);
    assert.deepEqual((await api.getNetwork(network.id)).routes, (await cli.json<HetznerNetwork[]>(["network", "list"]))[0]!.routes);
    assert.equal(await api.deleteRoute(network.id, { destination: "10.244.2.0/24", gateway: "10.0.0.3" }), true);
    const removed = await cli.run(["network", "remove-route", "k8s", "--destination", "10.244.1.0/24", "--gateway", "10.0.0.2"]);
    assert.equal(removed.code, 0, removed.stderr);
    assert.deepEqual((await cli.json<HetznerNetwork>(["network", "describe", "k8s"])).routes, []);
    const workers = await api.serversOnNetwork(network.id, "role=worker");
    const hcloudWorkers = await cli.json<{ id: number; private_net: { network: number; ip: string }[] }[]>(["server", "list", "-l", "role=worker"]);
    assert.deepEqual(workers.map((w) => [w.server.id, w.ip]), hcloudWorkers.map((s) => [s.id, s.private_net.find((p) => p.network === network.id)!.ip]));
  });
});

describe("the test server's action endpoints", () => {
  it("an action reads at /actions/{id}, /actions?id= and /networks/{id}/actions/{id}, and only under its own network", async () => {
    await start({ actionDelayMs: "manual" });
    const other = server.addNetwork({ name: "other", ipRange: "10.1.0.0/16" });
    const get = async (path: string) => {
      const response = await fetch(`${server.endpoint}${path}`, { headers: { Authorization: `Bearer ${server.token}` } });
      return { status: response.status, body: (await response.json()) as { action?: { id: number; status: string }; actions?: { id: number }[]; error?: { code: string } } };
    };
    const post = await fetch(`${server.endpoint}/networks/${network.id}/actions/add_route`, {
      method: "POST",
      headers: { Authorization: `Bearer ${server.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ destination: "10.244.1.0/24", gateway: "10.0.0.2" }),
    });
    assert.equal(post.status, 201);
    const { action } = (await post.json()) as { action: { id: number; status: string; command: string; resources: { id: number; type: string }[] } };
    assert.deepEqual([action.status, action.command, action.resources], ["running", "add_route", [{ id: network.id, type: "network" }]]);
    assert.equal((await get(`/actions/${action.id}`)).body.action?.status, "running");
    assert.equal((await get(`/networks/${network.id}/actions/${action.id}`)).body.action?.id, action.id);
    assert.equal((await get(`/networks/${other.id}/actions/${action.id}`)).body.error?.code, "not_found");
    assert.deepEqual((await get(`/actions?id=${action.id}&status=running`)).body.actions?.map((a) => a.id), [action.id]);
    server.finishActions();
    assert.equal((await get(`/actions/${action.id}`)).body.action?.status, "success");
    assert.deepEqual((await get(`/actions?id=${action.id}&status=running`)).body.actions, []);
  });
});

describe("the test server's label selectors (pure)", () => {
  it("parses =, ==, !=, in, notin, k, !k and ANDs them", () => {
    const labels = { role: "worker", cluster: "a", "kubernetes.io/pool": "p1" };
    const yes = ["role=worker", "role==worker", "role!=control-plane", "missing!=x", "role in (worker, infra)", "role notin (db)", "cluster", "!missing", "cluster=a,kubernetes.io/pool=p1"];
    const no = ["role=infra", "role!=worker", "role in (db)", "role notin (worker)", "missing", "!cluster", "cluster=a,role=db"];
    for (const s of yes) assert.equal(matchesLabels(parseLabelSelector(s), labels), true, s);
    for (const s of no) assert.equal(matchesLabels(parseLabelSelector(s), labels), false, s);
    for (const bad of ["role in (a", "=x", "role=a=b", "ro le=x", ""]) assert.throws(() => parseLabelSelector(bad), /label selector/, bad);
  });
});

describe("hetzner-server-main: the test server as its own process", () => {
  it("serves a seed's networks and servers to hcloud and stops on SIGTERM", async () => {
    const dir = mkdtempSync(join(tmpdir(), "podroutes-hetzner-main-"));
    const seed = join(dir, "seed.json");
    writeFileSync(
      seed,
      JSON.stringify({
        networks: [{ name: "k8s", ipRange: "10.0.0.0/16", routes: [{ destination: "10.244.0.0/24", gateway: "10.0.0.2" }] }],
        servers: [{ name: "node-1", labels: { role: "worker" }, privateNet: [{ network: "k8s", ip: "10.0.0.2" }] }],
      }),
    );
    const child = spawn(process.execPath, [fileURLToPath(new URL("../testkit/hetzner-server-main.js", import.meta.url)), seed], { stdio: ["ignore", "pipe", "inherit"] });
    let own: Hcloud | undefined;
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = "";
        child.stdout!.on("data", (chunk: Buffer) => {
          out += chunk.toString();
          if (out.includes("\n")) resolve(out.split("\n")[0]!);
        });
        child.once("exit", (code) => reject(new Error(`hetzner-server-main exited ${code}`)));
      });
      own = hcloud(JSON.parse(line) as { endpoint: string; token: string });
      const networks = await own.json<HetznerNetwork[]>(["network", "list"]);
      assert.deepEqual(networks[0]!.routes, [{ destination: "10.244.0.0/24", gateway: "10.0.0.2" }]);
      const servers = await own.json<{ private_net: { network: number; ip: string }[] }[]>(["server", "list", "-l", "role=worker"]);
      assert.deepEqual(servers[0]!.private_net.map((p) => [p.network, p.ip]), [[networks[0]!.id, "10.0.0.2"]]);
    } finally {
      own?.dispose();
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
