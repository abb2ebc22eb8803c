import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { durationSeconds } from "./factories.js";

describe("--lock-timeout durations (terraform's -lock-timeout syntax)", () => {
  const rows: [string, number | RegExp][] = [
    ["0", 0],
    ["30s", 30],
    ["5m", 300],
    ["1m30s", 90],
    ["1h", 3600],
    ["500ms", 0.5],
    ["1.5s", 1.5],
    ["soon", /must be a duration/],
    ["-1s", /must be a duration/],
    ["30", /must be a duration/],
    ["", /must be a duration/],
  ];
  for (const [text, expected] of rows) {
    it(`${JSON.stringify(text)} → ${expected}`, () => {
      if (typeof expected === "number") assert.equal(durationSeconds(text), expected);
      else assert.throws(() => durationSeconds(text), expected);
    });
  }
});
