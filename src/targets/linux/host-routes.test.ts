/**
 * The Linux host-route target through the engine, on a host that is a recording fake (no kernel, no
 * root): how many times a run reads the table and where, so that a run nobody reviews reads it once,
 * under the lock, and an approved plan is re-read under the lock before it is written.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { apply, converge, plan } from "../../apply/engine.js";
import { validateInventory } from "../../inventory.js";
import { selfTarget } from "../../../testkit/host-target.js";
import { READ_BATCH, type HostRead } from "./iproute.js";
import type { IpRunner, LockedHost } from "./runner.js";

/** The host 10.240.0.20/16 on eth0, with whatever routes and nexthop objects a test gives it. */
function hostRead(routes: object[] = [], nexthops: object[] = []): HostRead[] {
  const connected = { dst: "10.240.0.0/16", dev: "eth0", protocol: "2", scope: "253", prefsrc: "10.240.0.20" };
  const addresses = [{ ifname: "eth0", addr_info: [{ local: "10.240.0.20" }] }];
  return [{ batch: READ_BATCH, stdout: [[connected, ...routes], nexthops, addresses].map((part) => JSON.stringify(part)).join("\n"), stderr: "" }];
}

interface Recorded {
  /** Reads of the table outside a lock (`IpRunner.read`). */
  reads: number;
  /** Other `ip` commands. */
  ip: number;
  /** Locks taken, each with its one read of the table under it. */
  locks: number;
  writes: string[];
  /** What happened, in order. */
  log: string[];
}

function recordingHost(state: HostRead[]): { runner: IpRunner; recorded: Recorded } {
  const recorded: Recorded = { reads: 0, ip: 0, locks: 0, writes: [], log: [] };
  const runner: IpRunner = {
    where: "the fake host",
    async ip(args) {
      recorded.ip++;
      recorded.log.push(`ip ${args.join(" ")}`);
      return { code: 0, stdout: "", stderr: "" };
    },
    async read() {
      recorded.reads++;
      recorded.log.push("read");
      return state;
    },
    async lock(): Promise<LockedHost> {
      recorded.locks++;
      recorded.log.push("lock+read");
      return {
        state,
        owner: undefined,
        async write(script) {
          recorded.writes.push(script);
          recorded.log.push("write");
          return { code: 0, stdout: "", stderr: "" };
        },
        async release() {
          recorded.log.push("release");
        },
      };
    },
  };
  return { runner, recorded };
}

const inventory = validateInventory({
  source: "test",
  nodes: [
    { name: "self", internalIPs: ["10.240.0.20"], podCIDRs: ["10.200.0.0/24"] },
    { name: "n1", internalIPs: ["10.240.0.21"], podCIDRs: ["10.200.1.0/24"] },
    { name: "n2", internalIPs: ["10.240.0.22"], podCIDRs: ["10.200.2.0/24"] },
  ],
});

describe("how often a run reads a Linux table", () => {
  it("a run nobody reviews (converge) locks, reads the table once under the lock, writes, releases: no other read", async () => {
    const { runner, recorded } = recordingHost(hostRead());
    const target = selfTarget(runner);
    const { plan: planned, report } = await converge(target, inventory, { parallel: 1 });
    assert.deepEqual(recorded.log, ["lock+read", "write", "release"]);
    assert.deepEqual([recorded.reads, recorded.ip, recorded.locks], [0, 0, 1]);
    assert.equal(planned.summary.create, 2);
    assert.ok(report?.ok, JSON.stringify(report));
    assert.equal(report.counts.created, 2);
    assert.match(recorded.writes[0]!, /^route add proto 150 10\.200\.1\.0\/24 nhid \d+$/m);
  });

  it("a run nobody reviews with nothing to change takes the lock, reads once, writes nothing", async () => {
    const owned = [
      { dst: "10.200.1.0/24", gateway: "10.240.0.21", dev: "eth0", protocol: "150", nhid: 7 },
      { dst: "10.200.2.0/24", gateway: "10.240.0.22", dev: "eth0", protocol: "150", nhid: 8 },
    ];
    const nexthops = [
      { id: 7, gateway: "10.240.0.21", dev: "eth0", protocol: "150" },
      { id: 8, gateway: "10.240.0.22", dev: "eth0", protocol: "150" },
    ];
    const { runner, recorded } = recordingHost(hostRead(owned, nexthops));
    const { plan: planned, report } = await converge(selfTarget(runner), inventory, { parallel: 1 });
    assert.deepEqual(recorded.log, ["lock+read", "release"]);
    assert.equal(report, undefined);
    assert.equal(planned.summary.unchanged, 2);
  });

  it("a reviewed plan (plan, then apply) is read unlocked, then read again under the lock and rechecked", async () => {
    const { runner, recorded } = recordingHost(hostRead());
    const target = selfTarget(runner);
    const planned = await plan(target, inventory, { parallel: 1 });
    const report = await apply(target, planned, inventory, { parallel: 1 });
    assert.deepEqual(recorded.log, ["read", "lock+read", "write", "release"]);
    assert.ok(report.ok);
  });
});

describe("what the agent loads", () => {
  it("no lab code: the agent's command and the local target import nothing of src/lab but its flag", () => {
    // dist/src/targets/linux/host-routes.test.js → dist/src
    const src = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
    const loaded = (entry: string) => {
      const seen = new Set<string>();
      const walk = (file: string) => {
        if (seen.has(file)) return;
        seen.add(file);
        for (const match of readFileSync(file, "utf8").matchAll(/^import [^;]*?from "(\.[^"]+)"/gm)) walk(resolve(dirname(file), match[1]!));
      };
      walk(resolve(src, entry));
      return [...seen].map((file) => file.slice(src.length + 1));
    };
    for (const entry of ["cli/agent-command.js", "agent/agent.js", "targets/linux/factories.js"]) {
      const modules = loaded(entry);
      assert.ok(modules.length > 3, `${entry}: ${modules.join(", ")}`);
      assert.deepEqual(modules.filter((file) => file.startsWith("lab/") && file !== "lab/options.js"), [], `${entry} loads lab code`);
    }
  });
});
