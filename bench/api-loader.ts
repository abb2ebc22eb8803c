/**
 * A client of a lab's API server that runs inside the lab's namespace (lab addresses are never reached
 * from the root namespace): `ip netns exec NS node dist/bench/api-loader.js URL CA_FILE TOKEN [PARALLEL]`.
 * Reads requests as JSON lines on stdin (`{"id", "method", "path", "body", "contentType"}`), sends up to
 * PARALLEL at once over keep-alive connections, and answers each with a JSON line `{"id", "status",
 * "error"}` on stdout, in the order they finish.
 */
import { readFileSync } from "node:fs";
import { Agent, request } from "node:https";
import { createInterface } from "node:readline";

const [url, caFile, token, parallelText] = process.argv.slice(2);
if (!url || !caFile || !token) throw new Error("usage: api-loader URL CA_FILE TOKEN [PARALLEL]");
const agent = new Agent({ keepAlive: true, maxSockets: Number(parallelText ?? 16), ca: readFileSync(caFile) });
const server = new URL(url);

interface Job {
  id: number;
  method: string;
  path: string;
  body?: unknown;
  contentType?: string;
}

function send(job: Job): Promise<{ status: number; error?: string }> {
  const body = job.body === undefined ? undefined : Buffer.from(JSON.stringify(job.body));
  return new Promise((resolve) => {
    const req = request(
      { agent, host: server.hostname, port: server.port, path: job.path, method: job.method, headers: { Authorization: `Bearer ${token}`, Accept: "application/json", ...(body ? { "Content-Type": job.contentType ?? "application/json", "Content-Length": body.length } : {}) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => {
          const status = res.statusCode ?? 0;
          resolve(status >= 200 && status < 300 ? { status } : { status, error: Buffer.concat(chunks).toString().slice(0, 300) });
        });
      },
    );
    req.on("error", (error) => resolve({ status: 0, error: error.message }));
    req.end(body);
  });
}

// Requests go out as they arrive; the agent's maxSockets bounds how many are on the wire at once.
createInterface({ input: process.stdin, crlfDelay: Infinity }).on("line", (line) => {
  if (!line.trim()) return;
  const job = JSON.parse(line) as Job;
  void send(job).then((answer) => process.stdout.write(`${JSON.stringify({ id: job.id, ...answer })}\n`));
});
