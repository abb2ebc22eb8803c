import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { firstTime, nodeSupportNotice, nodeSupportNoticeOnce, OLDEST_SUPPORTED_NODE } from "./node-support.js";
import { readFileSync } from "node:fs";

describe("the Node versions podroutes supports", () => {
  it("names an unsupported Node and the oldest supported one, and says nothing on a supported one", () => {
    assert.match(nodeSupportNotice("v20.20.2")!, /Node v20\.20\.2 is past its end of life.*Node 22 or newer/);
    assert.match(nodeSupportNotice("v18.0.0")!, /v18\.0\.0/);
    for (const version of ["v22.0.0", "v24.11.1", "v26.12.1", "v27.0.0-pre"]) assert.equal(nodeSupportNotice(version), undefined, version);
  });

  it("package.json's engines names the same oldest line", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { engines: { node: string } };
    assert.match(pkg.engines.node, new RegExp(`^>=${OLDEST_SUPPORTED_NODE}\\b`));
  });

  it("says it once per user and Node version, even from two processes at once", () => {
    const dir = mkdtempSync(join(tmpdir(), "podroutes-notice-"));
    try {
      assert.ok(nodeSupportNoticeOnce("v20.1.0", dir));
      assert.equal(nodeSupportNoticeOnce("v20.1.0", dir), undefined);
      assert.ok(nodeSupportNoticeOnce("v20.2.0", dir), "another version is said again");
      assert.equal(nodeSupportNoticeOnce("v26.12.1", dir), undefined);
      assert.equal(firstTime(dir, "k"), true);
      assert.equal(firstTime(dir, "k"), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("says it anyway where nothing can be remembered", () => {
    const dir = mkdtempSync(join(tmpdir(), "podroutes-notice-"));
    try {
      writeFileSync(join(dir, "file"), "");
      // A state dir under a file (ENOTDIR) stands for a read-only home: nothing is remembered, so it is said.
      assert.equal(firstTime(join(dir, "file", "notices"), "k"), true);
      assert.equal(firstTime(join(dir, "file", "notices"), "k"), true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("what is tested is what is named", () => {
  it("the image runs the Node line the suite's second run uses", () => {
    const script = readFileSync(new URL("../../../scripts/lts-node.sh", import.meta.url), "utf8");
    const lts = /PODROUTES_LTS_NODE_VERSION:-(\d+)\.\d+\.\d+/.exec(script)?.[1];
    assert.ok(lts, "scripts/lts-node.sh pins a version");
    assert.ok(Number(lts) >= OLDEST_SUPPORTED_NODE);
    const dockerfile = readFileSync(new URL("../../../deploy/Dockerfile", import.meta.url), "utf8");
    const froms = [...dockerfile.matchAll(/^FROM node:(\d+)-/gm)].map((m) => m[1]);
    assert.ok(froms.length >= 1);
    assert.deepEqual([...new Set(froms)], [lts]);
  });
});
