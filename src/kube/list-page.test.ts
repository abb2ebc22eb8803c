import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { parseListPage } from "./list-page.js";

/** Strings made of the pieces that could fool a cut: the item separator, quotes, escapes, brackets. */
const tricky = fc.array(fc.constantFrom('},{"metadata":', '"items":[', "\\", '"', "]", "}", "{", ",", ":", "a", " ", "é", "\n"), { maxLength: 6 }).map((parts) => parts.join(""));
const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: "small" }, tricky, fc.integer(), fc.boolean(), fc.constant(null), tie("object"), tie("array")),
  object: fc.dictionary(fc.oneof(fc.constantFrom("metadata", "items", "spec"), tricky), tie("value"), { maxKeys: 3 }),
  array: fc.array(tie("value"), { maxLength: 3 }),
})).value;
/** An item as the API server writes it, `metadata` first; its parts may hold lists of objects whose first key is `metadata` too. */
const item = fc.record({ metadata: fc.record({ name: tricky, labels: fc.dictionary(tricky, tricky, { maxKeys: 2 }) }), spec: value, status: fc.array(fc.record({ metadata: value, x: value }), { maxLength: 2 }) });
const list = fc.record({ kind: fc.constant("NodeList"), apiVersion: fc.constant("v1"), metadata: fc.record({ resourceVersion: fc.nat().map(String), continue: fc.option(tricky, { nil: undefined }) }), items: fc.array(item, { maxLength: 5 }) });

describe("parseListPage", () => {
  it("is JSON.parse of the list, with each item transformed, or undefined (never anything else)", () => {
    fc.assert(
      fc.property(list, fc.boolean(), (body, pretty) => {
        const text = pretty ? JSON.stringify(body, null, 1) : JSON.stringify(body);
        const seen: unknown[] = [];
        const page = parseListPage<unknown>(text, (object) => (seen.push(object), { kept: object }));
        if (page === undefined) return;
        const whole = JSON.parse(text) as { items: unknown[] };
        assert.deepEqual(page, { ...whole, items: whole.items.map((object) => ({ kept: object })) });
        assert.deepEqual(seen, whole.items);
      }),
      { numRuns: 2000 },
    );
  });

  it("takes the fast path for lists as API servers write them: compact, `metadata` first, items last", () => {
    fc.assert(
      fc.property(list.filter((body) => body.items.length > 0), (body) => {
        // Nested lists whose objects start with `metadata` may send a page to JSON.parse whole; Nodes have none.
        const flat = { ...body, items: body.items.map((one) => ({ metadata: one.metadata, spec: { podCIDR: one.metadata.name }, status: { addresses: [{ type: "InternalIP", address: one.metadata.name }] } })) };
        assert.ok(parseListPage(JSON.stringify(flat), (object) => object), "parsed item by item");
      }),
    );
  });

  it("a list of Nodes: each item transformed as it is parsed, kind and metadata kept", () => {
    const text = JSON.stringify({ kind: "NodeList", apiVersion: "v1", metadata: { resourceVersion: "7", continue: "abc" }, items: [{ metadata: { name: "a" }, spec: { podCIDR: "10.200.0.0/24" } }, { metadata: { name: "b" }, status: { addresses: [{ type: "InternalIP", address: "10.240.0.2" }] } }] });
    const page = parseListPage<{ metadata: { name: string } }>(text, (node) => ({ metadata: { name: node.metadata.name.toUpperCase() } }));
    assert.deepEqual(page, { kind: "NodeList", apiVersion: "v1", metadata: { resourceVersion: "7", continue: "abc" }, items: [{ metadata: { name: "A" } }, { metadata: { name: "B" } }] });
  });

  it("undefined for what it cannot cut safely: no items, pretty-printed, items not last, a cut inside an item, bad JSON", () => {
    const keep = (object: unknown) => object;
    assert.equal(parseListPage('{"kind":"NodeList","metadata":{},"items":[]}', keep), undefined);
    assert.equal(parseListPage('{"kind":"NodeList","items": [{"metadata":{}}]}', keep), undefined);
    assert.equal(parseListPage('{"items":[{"metadata":{}}],"metadata":{"resourceVersion":"1"}}', keep), undefined);
    assert.equal(parseListPage('{"metadata":{},"items":[{"metadata":{"x":[{"a":1},{"metadata":2}]}}]}', keep), undefined);
    assert.equal(parseListPage('{"metadata":{},"items":[{"metadata":{}},{"metadata":}]}', keep), undefined);
    assert.equal(parseListPage('{"metadata":{"a":"\\"items":[{"metadata":1}]}', keep), undefined);
  });
});
