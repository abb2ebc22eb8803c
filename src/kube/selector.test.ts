import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { matchesSelector, parseSelector, SelectorError } from "./selector.js";

describe("label selectors", () => {
  const labels = { zone: "a", role: "worker", "node.kubernetes.io/instance-type": "m5" };
  const matches = (selector: string) => matchesSelector(parseSelector(selector), labels);

  it("matches =, ==, !=, in, notin, exists and !key like the API server", () => {
    const rows: [string, boolean][] = [
      ["", true],
      ["zone=a", true],
      ["zone==a", true],
      ["zone=b", false],
      ["zone!=b", true],
      ["missing!=b", true],
      ["zone in (a, b)", true],
      ["zone in (b,c)", false],
      ["zone notin (b,c)", true],
      ["missing notin (b)", true],
      ["missing in (b)", false],
      ["role", true],
      ["missing", false],
      ["!missing", true],
      ["!zone", false],
      ["node.kubernetes.io/instance-type=m5,zone in (a),!spot", true],
      ["zone=a,role=gpu", false],
      ["zone=", false],
    ];
    for (const [selector, expected] of rows) assert.equal(matches(selector), expected, selector);
  });

  it("rejects what the API server rejects, naming the selector", () => {
    for (const bad of ["zone in (a", "zone=a,", "-bad=x", "zone=a b", "zone>1", "a=(b)", "a in (b,c d)"]) {
      assert.throws(() => parseSelector(bad), (e: unknown) => e instanceof SelectorError && e.message.includes(JSON.stringify(bad)), bad);
    }
  });
});
