import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { MultiMap } from "./multimap.js";

describe("MultiMap", () => {
  it("holds a lone value, several values in the order added, and lets a key go with its last value", () => {
    const map = new MultiMap<string, { id: number }>();
    const [a, b, c] = [{ id: 1 }, { id: 2 }, { id: 3 }];
    assert.deepEqual([...map.get("k")], []);
    map.add("k", a);
    map.add("k", a);
    assert.deepEqual([...map.get("k")], [a]);
    map.add("k", b);
    map.add("k", c);
    assert.deepEqual([...map.get("k")], [a, b, c]);
    map.delete("k", b);
    assert.deepEqual([...map.get("k")], [a, c]);
    map.delete("k", a);
    assert.deepEqual([...map.get("k")], [c]);
    map.delete("k", a);
    assert.deepEqual([...map.get("k")], [c]);
    map.delete("k", c);
    assert.equal(map.has("k"), false);
    assert.equal(map.size, 0);
  });

  it("after any adds and deletes holds what a Map of Sets holds, in the same order", () => {
    const operation = fc.record({ add: fc.boolean(), key: fc.integer({ min: 0, max: 3 }), value: fc.integer({ min: 0, max: 4 }) });
    fc.assert(
      fc.property(fc.array(operation, { maxLength: 60 }), (operations) => {
        const values = Array.from({ length: 5 }, (_, id) => ({ id }));
        const map = new MultiMap<number, { id: number }>();
        const model = new Map<number, Set<{ id: number }>>();
        for (const { add, key, value } of operations) {
          const set = model.get(key) ?? new Set();
          if (add) {
            map.add(key, values[value]!);
            model.set(key, set.add(values[value]!));
          } else {
            map.delete(key, values[value]!);
            set.delete(values[value]!);
            if (set.size) model.set(key, set);
            else model.delete(key);
          }
        }
        assert.equal(map.size, model.size);
        assert.deepEqual(new Map([...map.entries()].map(([key, held]) => [key, [...held]])), new Map([...model].map(([key, set]) => [key, [...set]])));
        assert.deepEqual([...map.values()], [...model.values()].flatMap((set) => [...set]));
      }),
    );
  });
});
