/**
 * The Compute Engine API's batch format (https://cloud.google.com/compute/docs/api/how-tos/batch): several
 * calls in one HTTP request to `/batch/compute/v1`, `multipart/mixed` with one `application/http` part per
 * call (its method, the URL's path and query, its JSON body), answered by one `multipart/mixed` response
 * whose part `Content-ID: <response-ID>` answers the call of part `ID`, each with its own status and body.
 * The API takes at most 1,000 calls in a batch and counts each inner call against the project's quota as if
 * it had been sent alone. Pure: encoding and decoding only (no library does this format for Node outside
 * Google's generated clients, which podroutes does not use: it is a few lines either way).
 */

/** The most calls the API takes in one batch request (its documented limit). */
export const MAX_BATCH_CALLS = 1000;

/** One call inside a batch: `path` is the URL's path and query (the API refuses whole URLs there). */
export interface BatchPart {
  id: string;
  method: string;
  path: string;
  /** JSON text, for calls that carry a body. */
  body?: string;
}

/** A part's answer: the inner call's HTTP status and body text. */
export interface PartAnswer {
  status: number;
  text: string;
}

/** The batch request's body for `boundary` (which must not occur in any part: a random one does not). */
export function encodeBatch(parts: BatchPart[], boundary: string): string {
  let out = "";
  for (const part of parts) {
    out += `--${boundary}\r\nContent-Type: application/http\r\nContent-ID: <${part.id}>\r\n\r\n${part.method} ${part.path} HTTP/1.1\r\n`;
    out += part.body === undefined ? "\r\n" : `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(part.body)}\r\n\r\n${part.body}`;
    out += "\r\n";
  }
  return `${out}--${boundary}--\r\n`;
}

/** The boundary a `multipart/mixed` content type names, if any. */
export function multipartBoundary(contentType: string): string | undefined {
  if (!/^\s*multipart\/mixed\b/i.test(contentType)) return undefined;
  return contentType.match(/boundary=(?:"([^"]+)"|([^\s;]+))/i)?.slice(1).find((b) => b !== undefined);
}

/** Splits `text` at its first blank line: the head's lines, and the rest. */
function headAndRest(text: string): [string[], string] {
  const blank = /\r?\n\r?\n/.exec(text);
  if (!blank) return [text.split(/\r?\n/), ""];
  return [text.slice(0, blank.index).split(/\r?\n/), text.slice(blank.index + blank[0].length)];
}

/**
 * The answers of a batch response by the ID of the part they answer (`<response-ID>` → `ID`). Parts
 * that are not an HTTP answer, or carry no Content-ID, are left out: their calls have no answer.
 */
export function decodeBatch(contentType: string, text: string): Map<string, PartAnswer> {
  const answers = new Map<string, PartAnswer>();
  const boundary = multipartBoundary(contentType);
  if (!boundary) return answers;
  const delimiter = new RegExp(`(?:^|\\r?\\n)--${boundary.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`);
  for (const segment of text.split(delimiter).slice(1)) {
    if (segment.startsWith("--")) break; // the closing delimiter
    const [outer, inner] = headAndRest(segment.replace(/^[ \t]*\r?\n/, ""));
    const contentId = outer.map((line) => /^content-id:\s*<?([^>]*)>?\s*$/i.exec(line)?.[1]).find((id) => id !== undefined);
    const [head, body] = headAndRest(inner);
    const status = /^HTTP\/\d(?:\.\d)?\s+(\d{3})\b/.exec(head[0] ?? "")?.[1];
    if (contentId === undefined || status === undefined) continue;
    answers.set(contentId.replace(/^response-/, ""), { status: Number(status), text: body.replace(/\r?\n$/, "") });
  }
  return answers;
}
