/**
 * The client against the Kubernetes API test server over TLS: bearer tokens from a file that rotates
 * (a 401 re-reads it), a real exec credential plugin (run once, again after a 401), client certificates,
 * typed errors carrying the Status, and TLS verification.
 */
import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { kubeconfigYaml, startKubeServer, type KubeApiServer } from "../../testkit/kube-server.js";
import { KubeApiError, KubeClient } from "./client.js";
import { discoverConnection } from "./kubeconfig.js";

let dir: string;
let server: KubeApiServer;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "podroutes-kubeclient-"));
  server = await startKubeServer({ nodes: [{ metadata: { name: "worker-0" } }] });
});
after(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

/** A client from a kubeconfig with this user entry; `cluster` replaces the CA line (none: the system's CAs). */
async function clientFor(user: string, cluster?: string): Promise<KubeClient> {
  const path = join(dir, `kubeconfig-${Math.random().toString(36).slice(2)}`);
  await writeFile(path, kubeconfigYaml({ server: server.url, ...(cluster === undefined ? { caFile: server.caFile } : { cluster }), user }));
  return new KubeClient(await discoverConnection({ kubeconfig: path }));
}

describe("Kubernetes client", () => {
  it("a rotated token file: the 401 makes it re-read the file and send the request once more", async () => {
    const tokenFile = join(dir, "token");
    await writeFile(tokenFile, "old-token\n");
    server.setToken("old-token", { user: "sa", rules: "*" });
    const client = await clientFor(`    tokenFile: ${tokenFile}\n`);
    assert.equal((await client.request<{ items: unknown[] }>("GET", "/api/v1/nodes")).items.length, 1);
    server.revokeToken("old-token");
    server.setToken("new-token", { user: "sa", rules: "*" });
    await writeFile(tokenFile, "new-token\n");
    server.clearRequests();
    assert.equal((await client.request<{ items: unknown[] }>("GET", "/api/v1/nodes")).items.length, 1);
    assert.deepEqual(server.requests.map((r) => [r.token, r.code]), [["old-token", 401], ["new-token", 200]]);
    client.close();
  });

  it("an exec plugin: run once while its credential is valid, run again after a 401", async () => {
    const counter = join(dir, "plugin-runs");
    const plugin = join(dir, "plugin.sh");
    await writeFile(counter, "");
    // The plugin prints a token numbered by its run, valid for an hour, and logs what it was given.
    await writeFile(
      plugin,
      `#!/bin/sh\necho "$KUBERNETES_EXEC_INFO $1 $PLUGIN_VAR" >> ${counter}\nn=$(wc -l < ${counter})\nprintf '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"exec-%s","expirationTimestamp":"%s"}}' "$n" "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"\n`,
    );
    await chmod(plugin, 0o755);
    server.setToken("exec-1", { user: "exec", rules: "*" });
    const client = await clientFor(`    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: ${plugin}\n      args: [--flag]\n      env: [{name: PLUGIN_VAR, value: set}]\n      interactiveMode: Never\n`);
    await client.request("GET", "/api/v1/nodes");
    await client.request("GET", "/api/v1/nodes/worker-0");
    let runs = (await readFile(counter, "utf8")).trim().split("\n");
    assert.equal(runs.length, 1, "cached until expirationTimestamp");
    assert.match(runs[0]!, /"kind":"ExecCredential".* --flag set$/);
    server.revokeToken("exec-1");
    server.setToken("exec-2", { user: "exec", rules: "*" });
    await client.request("GET", "/api/v1/nodes");
    runs = (await readFile(counter, "utf8")).trim().split("\n");
    assert.equal(runs.length, 2, "a 401 runs the plugin again");
    client.close();
  });

  it("a client certificate authenticates as its CN", async () => {
    const certificate = await server.issueClientCertificate("system:node:worker-0");
    const client = await clientFor(`    client-certificate: ${certificate.certFile}\n    client-key: ${certificate.keyFile}\n`);
    server.clearRequests();
    await client.request("GET", "/api/v1/nodes/worker-0");
    assert.equal(server.requests[0]!.user, "system:node:worker-0");
    client.close();
  });

  it("errors carry the HTTP code, the Status reason and message, and a failure word", async () => {
    server.setToken("reader", { user: "reader", rules: [{ verbs: ["get"], resources: ["nodes"] }] });
    const client = await clientFor("    token: reader\n");
    await assert.rejects(client.request("GET", "/api/v1/nodes"), (e: unknown) => {
      assert.ok(e instanceof KubeApiError);
      assert.equal(e.code, 403);
      assert.equal(e.reason, "Forbidden");
      assert.equal(e.failure, "forbidden");
      assert.equal(e.kind, "target");
      assert.match(e.message, /User "reader" cannot list resource "nodes"/);
      assert.equal(e.status?.details?.kind, "nodes");
      return true;
    });
    await assert.rejects(client.request("GET", "/api/v1/nodes/absent"), (e: unknown) => e instanceof KubeApiError && e.code === 404 && e.failure === "not-found");
    const nobody = await clientFor("    token: unknown\n");
    await assert.rejects(nobody.request("GET", "/api/v1/nodes"), (e: unknown) => e instanceof KubeApiError && e.code === 401 && e.failure === "unauthorized");
    client.close();
    nobody.close();
  });

  it("checks the server certificate against the CA; insecure-skip-tls-verify skips it", async () => {
    const untrusting = await clientFor("    token: admin-token\n", "");
    await assert.rejects(untrusting.request("GET", "/api/v1/nodes"), (e: unknown) => e instanceof KubeApiError && e.failure === "network" && e.code === undefined);
    const insecure = await clientFor("    token: admin-token\n", "    insecure-skip-tls-verify: true\n");
    await insecure.request("GET", "/api/v1/nodes");
    untrusting.close();
    insecure.close();
  });
});
