/**
 * Simulated agents' watches, run inside the lab's namespace: `ip netns exec NS node
 * dist/bench/watch-counter.js URL CA_FILE TOKEN COUNT json|protobuf PATH`. Opens COUNT watches of PATH
 * (a list path: `watch=1` and `allowWatchBookmarks=true` are added), each on its own TLS connection, as
 * COUNT agents would, and counts what the API server sends each: bytes on the wire (the body, as
 * decoded from HTTP chunking) and watch events. A line "report" on stdin prints
 * `{"bytes": [...], "events": [...], "last": [...], "open": N}` (totals since start and the Date.now() of
 * the last event, one entry per watch) on stdout.
 * JSON watch events are one per line; protobuf ones are frames of a 4-byte big-endian length.
 */
import { readFileSync } from "node:fs";
import { Agent, request } from "node:https";
import { createInterface } from "node:readline";

const [url, caFile, token, countText, encoding, path] = process.argv.slice(2);
if (!url || !caFile || !token || !countText || !path || (encoding !== "json" && encoding !== "protobuf")) {
  throw new Error("usage: watch-counter URL CA_FILE TOKEN COUNT json|protobuf PATH");
}
const server = new URL(url);
const ca = readFileSync(caFile);
const accept = encoding === "json" ? "application/json" : "application/vnd.kubernetes.protobuf;stream=watch";
const count = Number(countText);
const bytes = new Array<number>(count).fill(0);
const events = new Array<number>(count).fill(0);
/** Date.now() of each watch's last event (0: none yet). */
const last = new Array<number>(count).fill(0);
let open = 0;

function watch(i: number): void {
  const separator = path!.includes("?") ? "&" : "?";
  const req = request(
    {
      agent: new Agent({ keepAlive: false, ca, maxSockets: 1 }),
      host: server.hostname,
      port: server.port,
      path: `${path}${separator}watch=1&allowWatchBookmarks=true&timeoutSeconds=3600`,
      headers: { Authorization: `Bearer ${token}`, Accept: accept },
    },
    (res) => {
      if (res.statusCode !== 200) {
        process.stderr.write(`watch ${i}: HTTP ${res.statusCode}\n`);
        res.resume();
        return;
      }
      open++;
      let pending: Buffer = Buffer.alloc(0);
      res.on("data", (chunk: Buffer) => {
        bytes[i]! += chunk.length;
        if (encoding === "json") {
          for (let at = chunk.indexOf(10); at >= 0; at = chunk.indexOf(10, at + 1)) {
            events[i]!++;
            last[i] = Date.now();
          }
          return;
        }
        pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
        while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
          pending = pending.subarray(4 + pending.readUInt32BE(0));
          events[i]!++;
          last[i] = Date.now();
        }
      });
      res.on("end", () => open--);
    },
  );
  req.on("error", (error) => process.stderr.write(`watch ${i}: ${error.message}\n`));
  req.end();
}

for (let i = 0; i < count; i++) watch(i);
createInterface({ input: process.stdin, crlfDelay: Infinity }).on("line", (line) => {
  if (line.trim() === "report") process.stdout.write(`${JSON.stringify({ bytes, events, last, open })}\n`);
});
