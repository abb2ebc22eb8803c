/**
 * `--target ssh` runs the shared target conformance suite: the real factory, real OpenSSH servers on the
 * workers of a vultr-seed lab (`lab up --ssh`), every connection made from the lab's jumpbox namespace
 * (never from the root namespace). A test process cannot enter a namespace, so this file runs itself
 * again inside the jumpbox (`ip netns exec`, a test run of its own: NODE_TEST_CONTEXT unset), where the
 * suite runs; outside, it only builds the lab, waits and tears it down. Needs root.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { validateInventory } from "../src/inventory.js";
import { labDown, loadLab } from "../src/lab/lab.js";
import { labSsh } from "../src/lab/sshd.js";
import { run } from "../src/process.js";
import { sshTarget } from "../src/targets/ssh/factory.js";
import { runCli } from "../testkit/cli.js";
import { runConformance } from "../testkit/conformance.js";
import { needsRoot } from "../testkit/root.js";

const INSIDE = "PODROUTES_SSH_CONFORMANCE_LAB";

async function ip(args: string[]): Promise<string> {
  const result = await run("ip", args);
  assert.equal(result.code, 0, `ip ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

const labName = process.env[INSIDE];
if (labName) {
  // Inside the jumpbox: the workers are reached over the lab's VPC, as an operator's machine would.
  const state = (await loadLab(labName))!;
  const ssh = labSsh(state)!;
  const netnsOf = (node: string) => state.workers.find((w) => w.name === node)!.netns;
  const foreign: [string, string][] = [];
  const reset = async () => {
    for (const worker of state.workers) {
      await ip(["-n", worker.netns, "nexthop", "flush"]); // also drops the routes using them
      await run("ip", ["-n", worker.netns, "route", "flush", "proto", "150"]);
    }
    for (const [netns, destination] of foreign.splice(0)) await run("ip", ["-n", netns, "route", "del", destination]);
  };
  runConformance({
    name: "ssh (every worker's table over OpenSSH, from the jumpbox)",
    async setup() {
      await reset();
      const target = await sshTarget.create({
        cluster: "kubernetes",
        parallel: 4,
        env: process.env,
        warn: () => {},
        interactive: false,
        proto: "150",
        sshKey: ssh.clientKey,
        knownHosts: ssh.knownHosts,
      });
      return {
        target,
        inventory: validateInventory({
          source: labName,
          nodes: state.workers.map((w) => ({ name: w.name, internalIPs: [w.internalIP], podCIDRs: [w.podCIDR] })),
        }),
        spareNextHop: "10.240.0.99",
        addForeignRoute: async (table, destination, nextHop) => {
          await ip(["-n", netnsOf(table), "route", "add", destination, "via", nextHop]);
          foreign.push([netnsOf(table), destination]);
        },
        hasRoute: async (table, destination) => JSON.parse((await ip(["-n", netnsOf(table), "-json", "route", "show", destination])) || "[]").length > 0,
        teardown: reset,
      };
    },
  });
} else {
  describe("ssh target conformance, run from a lab's jumpbox", { ...needsRoot(), timeout: 180_000 }, () => {
    it("passes the shared suite", async () => {
      const lab = `sshc${process.pid % 100000}`;
      try {
        const up = await runCli(["lab", "up", "--ssh", "--lab", lab, "--topology", "vultr-seed"]);
        assert.equal(up.code, 0, up.stderr);
        const state = (await loadLab(lab))!;
        const inner = await run("ip", ["netns", "exec", state.jumpboxNetns, "env", "-u", "NODE_TEST_CONTEXT", `${INSIDE}=${lab}`, "SSH_AUTH_SOCK=", process.execPath, "--enable-source-maps", "--test", "--test-reporter=spec", fileURLToPath(import.meta.url)]);
        assert.equal(inner.code, 0, `${inner.stdout}\n${inner.stderr}`);
        assert.match(inner.stdout, /target conformance: ssh/);
        assert.doesNotMatch(inner.stdout, /# SKIP|skipped [1-9]/);
      } finally {
        await labDown(lab);
      }
    });
  });
}
