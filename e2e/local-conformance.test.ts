/**
 * `--target local` runs the shared target conformance suite as a user runs it: the real factory, in
 * the process's own network namespace, finding which node it is from its addresses. A test process
 * cannot enter a namespace, so this file runs itself again inside a node namespace it creates
 * (`ip netns exec`, a test run of its own: NODE_TEST_CONTEXT unset), where the suite runs; outside, it
 * only creates, waits and removes. Needs root.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { describe, it } from "node:test";
import { validateInventory } from "../src/inventory.js";
import { localTarget } from "../src/targets/linux/factories.js";
import { run } from "../src/process.js";
import { runConformance } from "../testkit/conformance.js";
import { nodeNamespace } from "../testkit/netns.js";
import { needsRoot } from "../testkit/root.js";

const INSIDE = "PODROUTES_LOCAL_CONFORMANCE_INSIDE";

async function ip(args: string[]): Promise<string> {
  const result = await run("ip", args);
  assert.equal(result.code, 0, `ip ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

if (process.env[INSIDE]) {
  // Inside the node namespace: this process's own table is the one `local` writes.
  const foreign: string[] = [];
  const reset = async () => {
    await ip(["nexthop", "flush"]); // also drops the routes using them
    await run("ip", ["route", "flush", "proto", "150"]);
    for (const destination of foreign.splice(0)) await run("ip", ["route", "del", destination]);
  };
  runConformance({
    name: "local (this host's own routing table, in a node's network namespace)",
    async setup() {
      await reset();
      const target = await localTarget.create({ cluster: "kubernetes", parallel: 4, env: process.env, warn: () => {}, interactive: false, proto: "150" });
      return {
        target,
        // This host is 10.240.0.20, the last node: the suite moves, removes and shadows the first three.
        inventory: validateInventory({
          source: "seed",
          nodes: [1, 2, 3, 0].map((i) => ({ name: `worker-${i}`, internalIPs: [`10.240.0.2${i}`], podCIDRs: [`10.200.${i}.0/24`] })),
        }),
        spareNextHop: "10.240.0.99",
        addForeignRoute: async (_table, destination, nextHop) => {
          await ip(["route", "add", destination, "via", nextHop]);
          foreign.push(destination);
        },
        hasRoute: async (_table, destination) => JSON.parse((await ip(["-json", "route", "show", destination])) || "[]").length > 0,
        teardown: reset,
      };
    },
  });
} else {
  describe("local target conformance, run inside a node namespace", { ...needsRoot(), timeout: 120_000 }, () => {
    it("passes the shared suite", async () => {
      const ns = await nodeNamespace(`prlconf${process.pid % 100000}`, "10.240.0.20/24");
      try {
        const inner = await run("ip", ["netns", "exec", ns.name, "env", "-u", "NODE_TEST_CONTEXT", `${INSIDE}=1`, process.execPath, "--enable-source-maps", "--test", "--test-reporter=spec", fileURLToPath(import.meta.url)]);
        assert.equal(inner.code, 0, `${inner.stdout}\n${inner.stderr}`);
        assert.match(inner.stdout, /target conformance: local/);
        assert.doesNotMatch(inner.stdout, /# SKIP|skipped [1-9]/);
      } finally {
        await ns.remove();
      }
    });
  });
}
