/** `--nodes vultr` against the local Vultr API server: pagination, filters, 401, 429 retries, pod CIDRs. */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { InputError, validateInventory } from "../inventory.js";
import { startVultrServer, vultrInstance, type VultrServer } from "../../testkit/vultr-server.js";
import { instancesToInventory, listVultrInstances, retryAfterMs, vultrSource, VultrError } from "./vultr.js";

const workers = [0, 1, 2, 3, 4].map((i) =>
  vultrInstance({
    label: `worker-${i}`,
    main_ip: `203.0.113.${10 + i}`,
    internal_ip: `10.240.0.${6 + i}`,
    tags: ["kubernetes-the-hard-way", `pod-cidr=10.200.${i}.0/24`],
  }),
);

describe("vultr node source", () => {
  let server: VultrServer;
  let dir: string;
  const warnings: string[] = [];
  const options = (extra: Record<string, unknown> = {}) => ({
    cluster: "",
    parallel: 10,
    interactive: false,
    warn: (m: string) => warnings.push(m),
    env: { VULTR_API_KEY: server.apiKey },
    vultrEndpoint: server.endpoint,
    ...extra,
  });

  before(async () => {
    server = await startVultrServer({
      instances: [...workers, vultrInstance({ label: "controller-0", main_ip: "203.0.113.2", internal_ip: "10.240.0.2", tags: ["kubernetes-the-hard-way"] }), vultrInstance({ label: "other", tags: ["web"] })],
    });
    dir = await mkdtemp(join(tmpdir(), "podroutes-vultr-"));
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("follows cursor pagination to the last page", async () => {
    server.requests.length = 0;
    const instances = await listVultrInstances({ endpoint: server.endpoint, apiKey: server.apiKey, tag: "kubernetes-the-hard-way", perPage: 2 });
    assert.deepEqual(instances.map((i) => i.label), ["worker-0", "worker-1", "worker-2", "worker-3", "worker-4", "controller-0"]);
    assert.equal(server.requests.length, 3);
    assert.deepEqual(server.requests.map((r) => r.query.cursor ?? ""), ["", "bmV4dF9fMg==", "bmV4dF9fNA=="]);
    assert.ok(server.requests.every((r) => r.query.per_page === "2" && r.query.tag === "kubernetes-the-hard-way"));
  });

  it("maps main_ip to the SSH address, internal_ip to the next hop and the pod-cidr tag to the pod CIDR", async () => {
    const raw = await vultrSource.read(options({ vultrLabel: "worker-1" }));
    const inventory = validateInventory(raw);
    assert.deepEqual(inventory.nodes.map((n) => [n.name, n.sshAddress, n.internalIPs, n.podCIDRs]), [["worker-1", "203.0.113.11", ["10.240.0.7"], ["10.200.1.0/24"]]]);
  });

  it("refuses an instance without a pod CIDR, naming it and how to fix it", async () => {
    await assert.rejects(vultrSource.read(options({ vultrTag: "kubernetes-the-hard-way" })), (error: InputError) => {
      assert.ok(error instanceof InputError);
      assert.match(error.message, /controller-0.*no pod CIDR.*pod-cidr=/s);
      return true;
    });
  });

  it("takes pod CIDRs from a nodes file merged by name", async () => {
    const file = join(dir, "pods.txt");
    await writeFile(file, "10.240.0.2 10.200.9.0/24 controller-0\n");
    const raw = await vultrSource.read(options({ vultrTag: "kubernetes-the-hard-way", podCidrs: file }));
    const controller = raw.nodes.find((n) => n.name === "controller-0");
    assert.deepEqual(controller?.podCIDRs, ["10.200.9.0/24"]);
    assert.equal(raw.nodes.length, 6);
  });

  it("says the key was refused on 401, without retrying", async () => {
    server.requests.length = 0;
    await assert.rejects(vultrSource.read({ ...options(), env: { VULTR_API_KEY: "wrong" } }), (error: VultrError) => {
      assert.equal(error.status, 401);
      assert.match(error.message, /vultr: the API refused the key \(401 Invalid API token\.\).*VULTR_API_KEY/);
      return true;
    });
    assert.equal(server.requests.length, 1);
  });

  it("retries 429 with backoff and then succeeds", async () => {
    server.requests.length = 0;
    server.rateLimitNext(2);
    const instances = await listVultrInstances({ endpoint: server.endpoint, apiKey: server.apiKey, label: "worker-0", minRetryDelayMs: 10 });
    assert.deepEqual(instances.map((i) => i.label), ["worker-0"]);
    assert.equal(server.requests.length, 3);
  });

  it("waits at least as long as the API's Retry-After asks before the next request", async () => {
    server.requests.length = 0;
    server.rateLimitNext(1, { retryAfterSeconds: 1 });
    const instances = await listVultrInstances({ endpoint: server.endpoint, apiKey: server.apiKey, label: "worker-0", minRetryDelayMs: 5 });
    assert.deepEqual(instances.map((i) => i.label), ["worker-0"]);
    assert.equal(server.requests.length, 2);
    // A lower bound, not a speed check: the client's own backoff (5 ms) alone would come back far sooner.
    assert.ok(server.requests[1]!.at - server.requests[0]!.at >= 1000, `retried after ${Math.round(server.requests[1]!.at - server.requests[0]!.at)} ms`);
  });

  it("gives up on a request that gets no answer after its time limit, and retries it", { timeout: 20_000 }, async () => {
    server.requests.length = 0;
    server.stallNext(1);
    const instances = await listVultrInstances({ endpoint: server.endpoint, apiKey: server.apiKey, label: "worker-0", requestTimeoutMs: 200, minRetryDelayMs: 5 });
    assert.deepEqual(instances.map((i) => i.label), ["worker-0"]);
    assert.equal(server.requests.length, 2);
    server.stallNext(10);
    await assert.rejects(listVultrInstances({ endpoint: server.endpoint, apiKey: server.apiKey, requestTimeoutMs: 100, retries: 1, minRetryDelayMs: 5 }), /vultr: GET .*\/v2\/instances failed \(no answer within 0\.1 s\)/);
    server.stallNext(0);
  });

  it("leaves out instances that are powered off or run no operating system yet, saying why; keeps locked and booting ones", async () => {
    const warnings: string[] = [];
    const raw = instancesToInventory(
      [
        vultrInstance({ label: "worker-0", internal_ip: "10.240.0.6", tags: ["pod-cidr=10.200.0.0/24"] }),
        vultrInstance({ label: "worker-1", internal_ip: "10.240.0.7", tags: ["pod-cidr=10.200.1.0/24"], power_status: "stopped" }),
        vultrInstance({ label: "worker-2", internal_ip: "10.240.0.8", tags: ["pod-cidr=10.200.2.0/24"], server_status: "none" }),
        vultrInstance({ label: "worker-3", internal_ip: "10.240.0.9", tags: ["pod-cidr=10.200.3.0/24"], server_status: "locked" }),
        vultrInstance({ label: "worker-4", internal_ip: "10.240.0.10", tags: ["pod-cidr=10.200.4.0/24"], server_status: "installingbooting" }),
        vultrInstance({ label: "worker-5", internal_ip: "10.240.0.11", tags: ["pod-cidr=10.200.5.0/24"], status: "suspended" }),
      ],
      { source: "test", warn: (m) => warnings.push(m) },
    );
    assert.deepEqual(raw.nodes.map((n) => n.name), ["worker-0", "worker-3", "worker-4"]);
    assert.deepEqual(warnings.map((w) => w.replace(/ \([0-9a-f-]+\)/, "")), [
      "vultr: instance worker-1 is powered off (power_status stopped): left out",
      "vultr: instance worker-2 has no operating system running (server_status none): left out",
      "vultr: instance worker-5 is suspended, not active: left out",
    ]);
  });

  it("gives up on a lasting 429 with a clear error", async () => {
    server.rateLimitNext(100);
    await assert.rejects(listVultrInstances({ endpoint: server.endpoint, apiKey: server.apiKey, retries: 2, minRetryDelayMs: 5 }), /vultr: rate limited \(429/);
    server.rateLimitNext(0);
  });

  it("needs VULTR_API_KEY", async () => {
    await assert.rejects(vultrSource.read({ ...options(), env: {} }), /VULTR_API_KEY is not set/);
  });
});

describe("Retry-After", () => {
  it("reads delay-seconds and HTTP dates", () => {
    const now = Date.parse("Wed, 21 Oct 2026 07:28:00 GMT");
    assert.equal(retryAfterMs("120", now), 120_000);
    assert.equal(retryAfterMs("Wed, 21 Oct 2026 07:28:30 GMT", now), 30_000);
    assert.equal(retryAfterMs("Wed, 21 Oct 2026 07:27:00 GMT", now), 0);
    assert.equal(retryAfterMs(null, now), undefined);
    assert.equal(retryAfterMs("soon", now), undefined);
  });
});
