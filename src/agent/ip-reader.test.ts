import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { IpReader } from "./ip-reader.js";

/**
 * A stand-in `ip` on PATH: its first run answers the first command with an error on stderr (the reader
 * gives up on it and ends it), ignores the SIGTERM, and prints a stale answer 200 ms later; every later
 * run answers each command at once.
 */
const FAKE_IP = `#!/bin/bash
marker="$(dirname "$0")/first-run-done"
if [ ! -e "$marker" ]; then
  touch "$marker"
  trap '' TERM
  read -r command
  echo "ip: something went wrong" >&2
  sleep 0.2
  echo '["stale"]'
  exit 0
fi
while read -r command; do echo '["fresh"]'; done
`;

describe("IpReader", () => {
  let dir: string;
  let savedPath: string | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "podroutes-ipreader-"));
    await writeFile(join(dir, "ip"), FAKE_IP);
    await chmod(join(dir, "ip"), 0o755);
    savedPath = process.env.PATH;
    process.env.PATH = `${dir}:${savedPath ?? "/usr/bin:/bin"}`;
  });
  after(async () => {
    process.env.PATH = savedPath;
    await rm(dir, { recursive: true, force: true });
  });

  it("a process it gave up on cannot answer the next read, even when it prints after the next one started", async () => {
    const reader = new IpReader();
    try {
      await assert.rejects(reader.read(["route show table all"]), /something went wrong/);
      const lines = await reader.read(["route show table all exact 10.0.0.0/24"]);
      assert.deepEqual(lines.map((line) => line.toString()), ['["fresh"]']);
      // The stale process's line comes after the answer above: wait it out, then read once more.
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.deepEqual((await reader.read(["route show table all"])).map((line) => line.toString()), ['["fresh"]']);
      assert.equal(reader.starts, 2);
    } finally {
      await reader.close();
    }
  });
});
