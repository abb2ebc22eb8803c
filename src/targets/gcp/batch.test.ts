/** Unit tests of the Compute batch format: what podroutes sends, and reading an answer shaped as Google's documentation shows it. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { decodeBatch, encodeBatch, multipartBoundary } from "./batch.js";

describe("gcp batch format", () => {
  it("encodes one application/http part per call, with its Content-ID, path and JSON body", () => {
    const body = encodeBatch(
      [
        { id: "0", method: "POST", path: "/compute/v1/projects/p/global/routes?requestId=r0", body: '{"name":"a"}' },
        { id: "1", method: "DELETE", path: "/compute/v1/projects/p/global/routes/b?requestId=r1" },
      ],
      "xyz",
    );
    assert.equal(
      body,
      "--xyz\r\nContent-Type: application/http\r\nContent-ID: <0>\r\n\r\nPOST /compute/v1/projects/p/global/routes?requestId=r0 HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n" +
        '{"name":"a"}\r\n' +
        "--xyz\r\nContent-Type: application/http\r\nContent-ID: <1>\r\n\r\nDELETE /compute/v1/projects/p/global/routes/b?requestId=r1 HTTP/1.1\r\n\r\n\r\n" +
        "--xyz--\r\n",
    );
  });

  it("reads each part's status and body by the ID it answers, in any order; a part without Content-ID or status line is left out", () => {
    const text = [
      "--batch_abc",
      "Content-Type: application/http",
      "Content-ID: <response-1>",
      "",
      "HTTP/1.1 409 Conflict",
      "Content-Type: application/json; charset=UTF-8",
      "",
      '{"error":{"code":409,"message":"already exists","errors":[{"reason":"alreadyExists"}]}}',
      "--batch_abc",
      "Content-Type: application/http",
      "Content-ID: <response-0>",
      "",
      "HTTP/1.1 200 OK",
      "Content-Type: application/json; charset=UTF-8",
      "",
      '{"name":"operation-1","status":"RUNNING"}',
      "--batch_abc",
      "Content-Type: application/http",
      "",
      "HTTP/1.1 200 OK",
      "",
      "{}",
      "--batch_abc--",
      "",
    ].join("\r\n");
    const answers = decodeBatch('multipart/mixed; boundary="batch_abc"', text);
    assert.deepEqual([...answers.entries()].sort(), [
      ["0", { status: 200, text: '{"name":"operation-1","status":"RUNNING"}' }],
      ["1", { status: 409, text: '{"error":{"code":409,"message":"already exists","errors":[{"reason":"alreadyExists"}]}}' }],
    ]);
  });

  it("takes the boundary only from a multipart/mixed content type", () => {
    assert.equal(multipartBoundary("multipart/mixed; boundary=batch_x"), "batch_x");
    assert.equal(multipartBoundary('multipart/mixed; charset=utf-8; boundary="b y"'), "b y");
    assert.equal(multipartBoundary("application/json"), undefined);
    assert.equal(decodeBatch("application/json", '{"error":{}}').size, 0);
  });
});
