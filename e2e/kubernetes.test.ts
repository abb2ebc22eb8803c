/**
 * `--nodes kubernetes` end to end through the built CLI, as a user runs it: Node objects from the
 * Kubernetes API test server become GCP routes (against the local Compute Engine server, a target that
 * runs without root), found through --kubeconfig or KUBECONFIG, narrowed by --selector. Bad kubeconfigs,
 * contexts and selectors exit 3 naming the flag; an API error exits 1 and never reads as "no nodes".
 * Everything on 127.0.0.1 with explicit credentials, metadata probing off.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, beforeEach, describe, it } from "node:test";
import { inClusterEnv } from "../testkit/agent-lab.js";
import { jsonOf, runCli } from "../testkit/cli.js";
import { startGceServer, type GceServer } from "../testkit/gce-server.js";
import { startKubeServer, type KubeApiServer, type KubeObject } from "../testkit/kube-server.js";

const NETWORK = "kubernetes-the-hard-way";

const node = (index: number, options: { zone?: string; podCIDR?: string | null } = {}): KubeObject => ({
  metadata: { name: `worker-${index}`, labels: { zone: options.zone ?? "a" } },
  spec: options.podCIDR === null ? {} : { podCIDR: options.podCIDR ?? `10.200.${index}.0/24` },
  status: { addresses: [{ type: "InternalIP", address: `10.240.0.${20 + index}` }, { type: "Hostname", address: `worker-${index}` }] },
});

let dir: string;
let kube: KubeApiServer;
let gce: GceServer;
let kubeconfig: string;
let tokenFile: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "podroutes-kubernetes-e2e-"));
  kube = await startKubeServer();
  gce = await startGceServer();
  kubeconfig = await kube.writeKubeconfig(join(dir, "kubeconfig"), { context: "hard-way" });
  tokenFile = join(dir, "gcp-token");
  await writeFile(tokenFile, "test-token\n");
});
after(async () => {
  await kube?.close();
  await gce?.stop();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => {
  gce.reset();
  for (const object of kube.objects("nodes")) kube.remove("nodes", object.metadata.name);
  for (const index of [0, 1, 2]) kube.put("nodes", node(index, { zone: index === 2 ? "b" : "a" }));
});

const env = (extra: Record<string, string> = {}) => ({
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: dir,
  GCE_METADATA_HOST: "127.0.0.1:9",
  METADATA_SERVER_DETECTION: "none",
  CLOUDSDK_CORE_PROJECT: gce.project,
  CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: gce.endpoint,
  CLOUDSDK_AUTH_ACCESS_TOKEN_FILE: tokenFile,
  ...extra,
});
const gcpArgs = ["--target", "gcp", "--network", NETWORK, "--cluster-cidr", "10.200.0.0/16"];

interface PlanJson {
  summary: Record<string, number>;
  tables: { changes: { action: string; destination: string; next_hop: string; node: string }[] }[];
}
const creates = (plan: PlanJson) => plan.tables.flatMap((t) => t.changes.map((c) => `${c.action} ${c.destination} via ${c.next_hop} (${c.node})`)).sort();

describe("--nodes kubernetes through the CLI", () => {
  it("plans and applies GCP routes from the Node objects; a second plan has no changes", async () => {
    const planned = await runCli(["plan", "--nodes", "kubernetes", "--kubeconfig", kubeconfig, ...gcpArgs, "-o", "json"], { env: env() });
    assert.equal(planned.code, 0, planned.stderr);
    assert.deepEqual(creates(jsonOf<PlanJson>(planned)), [
      "create 10.200.0.0/24 via 10.240.0.20 (worker-0)",
      "create 10.200.1.0/24 via 10.240.0.21 (worker-1)",
      "create 10.200.2.0/24 via 10.240.0.22 (worker-2)",
    ]);
    const applied = await runCli(["apply", "--yes", "--nodes", "kubernetes", "--kubeconfig", kubeconfig, ...gcpArgs], { env: env() });
    assert.equal(applied.code, 0, applied.stderr + applied.stdout);
    assert.deepEqual([...gce.routes.values()].map((r) => `${r.destRange} ${r.nextHopIp}`).sort(), ["10.200.0.0/24 10.240.0.20", "10.200.1.0/24 10.240.0.21", "10.200.2.0/24 10.240.0.22"]);
    const again = await runCli(["plan", "--detailed-exitcode", "--nodes", "kubernetes", "--kubeconfig", kubeconfig, ...gcpArgs], { env: env() });
    assert.equal(again.code, 0, again.stderr + again.stdout);
    const lists = kube.requests.filter((r) => r.verb === "list");
    assert.ok(lists.every((r) => r.query.limit === "500"), "lists are paged");
  });

  it("finds the kubeconfig through KUBECONFIG; --selector narrows the nodes; a node without a pod CIDR is noted and routed to by no one", async () => {
    kube.put("nodes", node(3, { podCIDR: null }));
    const planned = await runCli(["plan", "--nodes", "kubernetes", "--selector", "zone=a", ...gcpArgs, "-o", "json"], { env: env({ KUBECONFIG: kubeconfig }) });
    assert.equal(planned.code, 0, planned.stderr);
    assert.deepEqual(creates(jsonOf<PlanJson>(planned)), ["create 10.200.0.0/24 via 10.240.0.20 (worker-0)", "create 10.200.1.0/24 via 10.240.0.21 (worker-1)"]);
    assert.match(planned.stderr, /node worker-3 has no pod CIDR yet/);
    assert.ok(kube.requests.some((r) => r.verb === "list" && r.query.labelSelector === "zone=a"));
  });

  it("in a pod: the service account's token, CA and KUBERNETES_SERVICE_HOST when no kubeconfig exists", async () => {
    const inPod = await inClusterEnv(join(dir, "serviceaccount"), kube, "pod-token");
    kube.setToken("pod-token", { user: "system:serviceaccount:kube-system:podroutes", rules: [{ verbs: ["list"], resources: ["nodes"] }] });
    const planned = await runCli(["plan", "--nodes", "kubernetes", ...gcpArgs, "-o", "json"], {
      env: env(inPod),
    });
    assert.equal(planned.code, 0, planned.stderr);
    assert.equal(creates(jsonOf<PlanJson>(planned)).length, 3);
    assert.ok(kube.requests.some((r) => r.token === "pod-token" && r.verb === "list" && r.code === 200));
  });

  it("bad input exits 3 naming the flag, and changes nothing", async () => {
    const broken = join(dir, "broken.yaml");
    await writeFile(broken, "clusters: [\n");
    const cases: [string[], RegExp][] = [
      [["--kubeconfig", broken], /kubeconfig .*broken\.yaml:\d+: not YAML/],
      [["--kubeconfig", join(dir, "absent.yaml")], /--kubeconfig .*absent\.yaml: no such file/],
      [["--kubeconfig", kubeconfig, "--context", "nope"], /--context nope: no such context in .*kubeconfig \(known: hard-way\)/],
      [["--kubeconfig", kubeconfig, "--selector", "zone in (a"], /--selector "zone in \(a": label selector .*unbalanced parentheses/],
    ];
    for (const [flags, message] of cases) {
      const result = await runCli(["apply", "--yes", "--nodes", "kubernetes", ...flags, ...gcpArgs], { env: env() });
      assert.equal(result.code, 3, `${flags.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, message);
    }
    kube.update("nodes", "worker-1", (n) => (n.spec = { podCIDR: "10.200.1.1/24" }));
    const badNode = await runCli(["apply", "--yes", "--nodes", "kubernetes", "--kubeconfig", kubeconfig, ...gcpArgs], { env: env() });
    assert.equal(badNode.code, 3, badNode.stderr);
    assert.match(badNode.stderr, /node worker-1: "10\.200\.1\.1\/24": pod CIDR: .*host bits/);
    assert.equal(gce.routes.size, 0);
  });

  it("an API error exits 1 with the API's words and never reads as 'no nodes': nothing is deleted", async () => {
    const applied = await runCli(["apply", "--yes", "--nodes", "kubernetes", "--kubeconfig", kubeconfig, ...gcpArgs], { env: env() });
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal(gce.routes.size, 3);
    kube.failNext(1, 500);
    const failed = await runCli(["apply", "--yes", "--nodes", "kubernetes", "--kubeconfig", kubeconfig, ...gcpArgs], { env: env() });
    assert.equal(failed.code, 1, failed.stderr);
    assert.match(failed.stderr, /kubernetes nodes: cannot list Nodes \(https:\/\/127\.0\.0\.1:\d+, context hard-way .*\): GET \/api\/v1\/nodes: 500 Internal error occurred/);
    kube.setToken("no-list", { user: "nobody", rules: [{ verbs: ["get"], resources: ["nodes"] }] });
    const forbidden = await runCli(["apply", "--yes", "--nodes", "kubernetes", "--kubeconfig", await kube.writeKubeconfig(join(dir, "no-list"), { token: "no-list" }), ...gcpArgs], { env: env() });
    assert.equal(forbidden.code, 1, forbidden.stderr);
    assert.match(forbidden.stderr, /User "nobody" cannot list resource "nodes"/);
    assert.equal(gce.routes.size, 3, "the routes are all still there");
  });
});
