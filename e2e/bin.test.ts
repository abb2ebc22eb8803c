/**
 * bin/podroutes.js runs the bundle (dist/podroutes.mjs, made by `npm run build`) only when it is at
 * least as new as the modules it was bundled from: after a bare `tsc -p .` the bundle is stale and the
 * fresh modules of dist/src run instead, so no test and no user ever runs code older than the build.
 * Tried on a copy of bin/podroutes.js beside stand-in builds that say which one ran.
 */
import assert from "node:assert/strict";
import { copyFile, mkdir, mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { run } from "../src/process.js";
import { BIN } from "../testkit/cli.js";

describe("bin/podroutes.js picks the build to run", () => {
  let dir: string;
  const bundle = () => join(dir, "dist", "podroutes.mjs");
  const modules = () => join(dir, "dist", "src", "cli", "main.js");
  const standIn = (name: string) => `export async function main(argv) { process.stdout.write(${JSON.stringify(name)} + " " + argv.join(" ")); return 0; }\n`;
  const ranWith = async () => {
    const result = await run(process.execPath, [join(dir, "bin", "podroutes.js"), "plan", "--help"]);
    assert.equal(result.code, 0, result.stderr);
    return result.stdout;
  };
  const age = (path: string, secondsAgo: number) => utimes(path, new Date(Date.now() - secondsAgo * 1000), new Date(Date.now() - secondsAgo * 1000));

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-bin-"));
    await mkdir(join(dir, "bin"));
    await mkdir(join(dir, "dist", "src", "cli"), { recursive: true });
    await copyFile(BIN, join(dir, "bin", "podroutes.js"));
    await writeFile(modules(), standIn("modules"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("runs the modules when there is no bundle", async () => {
    assert.equal(await ranWith(), "modules plan --help");
  });

  it("runs the bundle when it was made after the modules (npm run build)", async () => {
    await writeFile(bundle(), standIn("bundle"));
    await age(modules(), 60);
    assert.equal(await ranWith(), "bundle plan --help");
  });

  it("runs the modules when they were compiled after the bundle (a bare tsc -p .)", async () => {
    await age(bundle(), 120);
    assert.equal(await ranWith(), "modules plan --help");
  });
});
