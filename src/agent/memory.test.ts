import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { releaseHeap } from "./memory.js";

describe("releaseHeap", () => {
  it("collects the garbage of a burst at once (full collections, without --expose-gc)", () => {
    let burst: { index: number; text: string }[] | undefined = Array.from({ length: 400_000 }, (_, index) => ({ index, text: `node-${index}` }));
    const held = process.memoryUsage().heapUsed;
    assert.ok(burst.length > 0);
    burst = undefined;
    releaseHeap();
    const after = process.memoryUsage().heapUsed;
    assert.ok(after < held - 20e6, `heap used ${Math.round(held / 1e6)} MB → ${Math.round(after / 1e6)} MB`);
    releaseHeap(); // again: the collector is made once and stays usable
  });
});
