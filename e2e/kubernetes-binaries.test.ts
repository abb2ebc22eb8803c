/**
 * The real control plane's build, without building it: the cache key follows the pins, the operator is
 * told which module the proxy did not serve, and the version flags name the pinned release.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { buildFailure, cacheDir, goModuleDir, pinnedRelease, versionLdflags } from "../src/lab/kubernetes/binaries.js";

describe("the real Kubernetes programs' build", () => {
  it("pins one release, whose staging modules are all replaced by that release's v0.x", () => {
    const release = pinnedRelease();
    assert.match(release, /^v1\.\d+\.\d+$/);
    const goMod = readFileSync(join(goModuleDir(), "go.mod"), "utf8");
    const replaces = [...goMod.matchAll(/^\s*(k8s\.io\/\S+) => (k8s\.io\/\S+) (v\S+)$/gm)];
    assert.ok(replaces.length >= 30, `${replaces.length} replaces`);
    for (const [, from, to, version] of replaces) {
      assert.equal(from, to);
      assert.equal(version, `v0.${release.slice(3)}`, `${from} at the release's staging version`);
    }
  });

  it("keys the cache by the pins: another cache root or release is another directory", () => {
    const saved = process.env.PODROUTES_CACHE_DIR;
    try {
      process.env.PODROUTES_CACHE_DIR = "/nonexistent/cache";
      const dir = cacheDir();
      assert.ok(dir.startsWith(`/nonexistent/cache/kubernetes/${pinnedRelease()}-`), dir);
      assert.equal(cacheDir(), dir, "the same pins, the same directory");
    } finally {
      if (saved === undefined) delete process.env.PODROUTES_CACHE_DIR;
      else process.env.PODROUTES_CACHE_DIR = saved;
    }
  });

  it("sets the version the servers report", () => {
    const flags = versionLdflags("v1.37.2").join(" ");
    assert.match(flags, /-X k8s\.io\/component-base\/version\.gitVersion=v1\.37\.2/);
    assert.match(flags, /gitMajor=1 .*gitMinor=37/);
  });

  it("names the module the proxy would not serve", () => {
    const message = buildFailure([
      "go: downloading k8s.io/api v0.37.2",
      "go: k8s.io/kubernetes@v1.37.2 requires k8s.io/api@v0.37.2: reading https://proxy.example/k8s.io/api/@v/v0.37.2.mod: 404 Not Found",
    ]);
    assert.match(message, /did not serve k8s\.io\/api@v0\.37\.2:/);
    assert.match(buildFailure(["./etcd/main.go:9:2: undefined: etcdmain.Main"]), /failed:\n\.\/etcd\/main\.go:9:2/);
  });
});
