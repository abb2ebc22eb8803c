import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { UsageError } from "../errors.js";
import { credentialSource, CredentialError, TOKEN_FILE_REFRESH_MS } from "./credentials.js";
import { discoverConnection, SERVICE_ACCOUNT_DIR_ENV, type Connection, type ExecConfig } from "./kubeconfig.js";

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "podroutes-kubeconfig-"));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A kubeconfig with one cluster/user/context per entry: [context, cluster server, token]. */
function kubeconfig(entries: [string, string, string][], current?: string, extra = ""): string {
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    ...entries.map(([name, server]) => `- name: ${name}\n  cluster:\n    server: ${server}`),
    "users:",
    ...entries.map(([name, , token]) => `- name: ${name}\n  user:\n    token: ${token}`),
    "contexts:",
    ...entries.map(([name]) => `- name: ${name}\n  context:\n    cluster: ${name}\n    user: ${name}`),
    ...(current ? [`current-context: ${current}`] : []),
    extra,
  ].join("\n");
}

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await mkdir(join(path, ".."), { recursive: true });
  await writeFile(path, text);
  return path;
}

const usage = (pattern: RegExp, flag?: string) => (e: unknown) => e instanceof UsageError && pattern.test(e.message) && (flag === undefined || e.flag === flag);

describe("kubeconfig discovery", () => {
  it("looks at --kubeconfig, else KUBECONFIG, else ~/.kube/config, like kubectl", async () => {
    const home = join(dir, "home");
    await file("home/.kube/config", kubeconfig([["home", "https://home.example:6443", "h"]], "home"));
    const envFile = await file("env.yaml", kubeconfig([["env", "https://env.example:6443", "e"]], "env"));
    const flagFile = await file("flag.yaml", kubeconfig([["flag", "https://flag.example:6443", "f"]], "flag"));
    const env = { HOME: home };
    assert.equal((await discoverConnection({ env })).server.host, "home.example:6443");
    assert.equal((await discoverConnection({ env: { ...env, KUBECONFIG: envFile } })).server.host, "env.example:6443");
    assert.equal((await discoverConnection({ env: { ...env, KUBECONFIG: envFile }, kubeconfig: flagFile })).server.host, "flag.example:6443");
    // KUBECONFIG pointing at nothing that exists does not fall back to ~/.kube/config (client-go doesn't either).
    await assert.rejects(discoverConnection({ env: { ...env, KUBECONFIG: join(dir, "missing.yaml") } }), usage(/no Kubernetes configuration/, "--kubeconfig"));
  });

  it("merges a KUBECONFIG list: the first file to name an entry wins, and the first current-context", async () => {
    const first = await file("first.yaml", kubeconfig([["shared", "https://first.example", "t1"]], "shared"));
    const second = await file("second.yaml", kubeconfig([["shared", "https://second.example", "t2"], ["only-second", "https://only.example", "t3"]], "only-second"));
    const KUBECONFIG = [first, join(dir, "absent.yaml"), second].join(":");
    const current = await discoverConnection({ env: { KUBECONFIG, HOME: dir } });
    assert.equal(current.server.host, "first.example");
    assert.equal(current.user.token, "t1");
    assert.match(current.description, /context shared \(.*first\.yaml\)/);
    const other = await discoverConnection({ env: { KUBECONFIG, HOME: dir }, context: "only-second" });
    assert.equal(other.server.host, "only.example");
    assert.equal(other.user.token, "t3");
  });

  it("names the flag, the file and what is known when the context or the file is wrong", async () => {
    const path = await file("ctx.yaml", kubeconfig([["a", "https://a.example", "t"], ["b", "https://b.example", "t"]], "a"));
    await assert.rejects(discoverConnection({ kubeconfig: path, context: "nope" }), usage(/--context nope: no such context in .*ctx\.yaml \(known: a, b\)/, "--context"));
    await assert.rejects(discoverConnection({ kubeconfig: join(dir, "nowhere.yaml") }), usage(/--kubeconfig .*nowhere\.yaml: no such file/, "--kubeconfig"));
    const noCurrent = await file("nocurrent.yaml", kubeconfig([["a", "https://a.example", "t"]]));
    await assert.rejects(discoverConnection({ kubeconfig: noCurrent }), usage(/has no current-context: pass --context \(one of: a\)/, "--context"));
    const broken = await file("broken.yaml", "clusters:\n  - name: a\n   cluster: {\n");
    await assert.rejects(discoverConnection({ kubeconfig: broken }), usage(/broken\.yaml:\d+: not YAML/, "--kubeconfig"));
    const dangling = await file("dangling.yaml", "contexts:\n- name: x\n  context:\n    cluster: gone\ncurrent-context: x\n");
    await assert.rejects(discoverConnection({ kubeconfig: dangling }), usage(/context x: cluster "gone" is not defined/));
    const badExec = await file("exec.yaml", `${kubeconfig([["a", "https://a.example", "t"]], "a")}`.replace("    token: t", "    exec:\n      apiVersion: client.authentication.k8s.io/v1alpha1\n      command: x"));
    await assert.rejects(discoverConnection({ kubeconfig: badExec }), usage(/exec: apiVersion "client\.authentication\.k8s\.io\/v1alpha1" is not supported/));
  });

  it("reads certificate files relative to the kubeconfig that names them, and -data fields as base64", async () => {
    await file("certs/ca.pem", "CA FROM FILE");
    const path = await file(
      "certs/config.yaml",
      "clusters:\n- name: c\n  cluster:\n    server: https://c.example\n    certificate-authority: ca.pem\nusers:\n- name: u\n  user:\n    client-certificate-data: " +
        Buffer.from("CERT").toString("base64") +
        "\n    client-key-data: " +
        Buffer.from("KEY").toString("base64") +
        "\n    tokenFile: token\ncontexts:\n- name: x\n  context: {cluster: c, user: u, namespace: kube-system}\ncurrent-context: x\n",
    );
    const connection = await discoverConnection({ kubeconfig: path });
    assert.equal(connection.ca?.toString(), "CA FROM FILE");
    assert.equal(connection.user.clientCertificate?.toString(), "CERT");
    assert.equal(connection.user.clientKey?.toString(), "KEY");
    assert.equal(connection.user.tokenFile, join(dir, "certs", "token"));
    assert.equal(connection.namespace, "kube-system");
  });

  it("falls back to the in-cluster service account when no kubeconfig exists", async () => {
    const sa = join(dir, "serviceaccount");
    await file("serviceaccount/token", "sa-token\n");
    await file("serviceaccount/ca.crt", "SA CA");
    await file("serviceaccount/namespace", "podroutes");
    const env = { HOME: join(dir, "empty-home"), KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443", [SERVICE_ACCOUNT_DIR_ENV]: sa };
    const connection = await discoverConnection({ env });
    assert.equal(connection.server.toString(), "https://[fd00::1]/");
    assert.equal(connection.ca?.toString(), "SA CA");
    assert.equal(connection.user.tokenFile, join(sa, "token"));
    assert.equal(connection.namespace, "podroutes");
    await assert.rejects(discoverConnection({ env: { ...env, [SERVICE_ACCOUNT_DIR_ENV]: join(dir, "no-sa") } }), usage(/service account token .* cannot be read/));
    await assert.rejects(discoverConnection({ env: { HOME: join(dir, "empty-home") } }), usage(/no Kubernetes configuration: pass --kubeconfig FILE/, "--kubeconfig"));
  });
});

describe("credentials", () => {
  const connection = (user: Connection["user"]): Connection => ({ server: new URL("https://k.example"), insecureSkipTLSVerify: false, user, namespace: "default", description: "test", clusterInfo: { server: "https://k.example" } });

  it("re-reads a token file once a minute and after a 401", async () => {
    const path = await file("rotating-token", "one\n");
    let now = 0;
    const source = credentialSource(connection({ tokenFile: path }), { now: () => now });
    assert.equal((await source.current()).authorization, "Bearer one");
    await writeFile(path, "two\n");
    now = TOKEN_FILE_REFRESH_MS - 1;
    assert.equal((await source.current()).authorization, "Bearer one", "cached within the minute");
    now = TOKEN_FILE_REFRESH_MS;
    assert.equal((await source.current()).authorization, "Bearer two");
    await writeFile(path, "three\n");
    assert.equal(source.invalidate(), true);
    assert.equal((await source.current()).authorization, "Bearer three", "a 401 re-reads at once");
  });

  it("runs an exec plugin once until its expirationTimestamp, again after it or a 401, with KUBERNETES_EXEC_INFO", async () => {
    const exec: ExecConfig = { apiVersion: "client.authentication.k8s.io/v1", command: "plugin", args: ["--x"], env: [{ name: "PLUGIN_VAR", value: "v" }], provideClusterInfo: true };
    let now = Date.parse("2026-01-01T00:00:00Z");
    const runs: NodeJS.ProcessEnv[] = [];
    const source = credentialSource(connection({ exec }), {
      now: () => now,
      env: {},
      runPlugin: async (_exec, env) => {
        runs.push(env);
        return JSON.stringify({ apiVersion: "client.authentication.k8s.io/v1", kind: "ExecCredential", status: { token: `t${runs.length}`, expirationTimestamp: "2026-01-01T01:00:00Z" } });
      },
    });
    const [a, b] = await Promise.all([source.current(), source.current()]);
    assert.equal(a.authorization, "Bearer t1");
    assert.equal(b.authorization, "Bearer t1");
    assert.equal(runs.length, 1, "concurrent requests share one run");
    assert.equal(runs[0]!.PLUGIN_VAR, "v");
    const info = JSON.parse(runs[0]!.KUBERNETES_EXEC_INFO!);
    assert.deepEqual([info.apiVersion, info.kind, info.spec.interactive, info.spec.cluster.server], ["client.authentication.k8s.io/v1", "ExecCredential", false, "https://k.example"]);
    now = Date.parse("2026-01-01T00:59:59Z");
    assert.equal((await source.current()).authorization, "Bearer t1");
    now = Date.parse("2026-01-01T01:00:00Z");
    assert.equal((await source.current()).authorization, "Bearer t2", "expired → run again");
    source.invalidate();
    assert.equal((await source.current()).authorization, "Bearer t3", "401 → run again");
  });

  it("refuses an exec plugin's answer of the wrong apiVersion or without credentials", async () => {
    const exec: ExecConfig = { apiVersion: "client.authentication.k8s.io/v1beta1", command: "plugin", args: [], env: [], provideClusterInfo: false };
    const answer = (text: string) => credentialSource(connection({ exec }), { runPlugin: async () => text }).current();
    await assert.rejects(answer(JSON.stringify({ apiVersion: "client.authentication.k8s.io/v1", kind: "ExecCredential", status: { token: "t" } })), (e: unknown) => e instanceof CredentialError && /answered apiVersion/.test(e.message));
    await assert.rejects(answer(JSON.stringify({ apiVersion: "client.authentication.k8s.io/v1beta1", kind: "ExecCredential", status: {} })), /neither a token nor a client certificate/);
    await assert.rejects(answer("not json"), /not JSON/);
  });
});
