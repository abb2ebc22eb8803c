/**
 * OpenSSH's known_hosts, read and written the way `ssh` does, so podroutes trusts exactly the hosts the
 * operator's own `ssh` trusts and records new ones in the same file. Pure except for the small store at
 * the end. Handles plain and hashed (`|1|salt|hash`) host names, `[host]:port`, comma lists, `!negation`,
 * `*`/`?` patterns and `@revoked`; `@cert-authority` lines are skipped (podroutes does not check host
 * certificates, so a host known only through a CA counts as unknown).
 */
import { createHash, createHmac } from "node:crypto";
import { appendFile, mkdir, readFile } from "node:fs/promises";
import { dirname } from "node:path";

export interface KnownHostEntry {
  /** Host patterns of the line (plain, `[host]:port`, `|1|salt|hash`, `!negated`). */
  hosts: string[];
  marker?: "@revoked" | "@cert-authority";
  keyType: string;
  key: Buffer;
  /** 1-based line in the file, for messages (`known_hosts:12`). */
  line: number;
}

/** How `ssh` names a host in known_hosts: the bare address on port 22, else `[address]:port`. */
export function hostToken(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

export function parseKnownHosts(text: string): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  text.split("\n").forEach((raw, index) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const fields = line.split(/\s+/);
    let marker: KnownHostEntry["marker"];
    if (fields[0] === "@revoked" || fields[0] === "@cert-authority") marker = fields.shift() as KnownHostEntry["marker"];
    const [hosts, keyType, keyText] = fields;
    if (!hosts || !keyType || !keyText) return;
    const key = Buffer.from(keyText, "base64");
    if (key.length === 0) return;
    entries.push({ hosts: hosts.split(","), ...(marker ? { marker } : {}), keyType, key, line: index + 1 });
  });
  return entries;
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${body}$`, "i");
}

function matchesPattern(pattern: string, token: string): boolean {
  if (pattern.startsWith("|1|")) {
    const [, , salt, hash] = pattern.split("|");
    if (!salt || !hash) return false;
    return createHmac("sha1", Buffer.from(salt, "base64")).update(token).digest("base64") === hash;
  }
  return pattern.includes("*") || pattern.includes("?") ? globToRegExp(pattern).test(token) : pattern.toLowerCase() === token.toLowerCase();
}

/** OpenSSH's rule: a line matches when some pattern matches and no negated pattern does. */
export function entryMatches(entry: KnownHostEntry, token: string): boolean {
  let matched = false;
  for (const pattern of entry.hosts) {
    if (pattern.startsWith("!")) {
      if (matchesPattern(pattern.slice(1), token)) return false;
    } else if (matchesPattern(pattern, token)) {
      matched = true;
    }
  }
  return matched;
}

/** The key type inside an SSH public key blob (its first string): `ssh-ed25519`, `ssh-rsa`, ... */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return "unknown";
  const length = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + length).toString("latin1");
}

/** `SHA256:...` as `ssh-keygen -lf` and `ssh` print it. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

export type HostKeyVerdict =
  | { status: "known"; line: number }
  | { status: "unknown"; otherTypes: string[] }
  | { status: "changed"; line: number; knownFingerprint: string }
  | { status: "revoked"; line: number };

/** What known_hosts says about `blob` offered by `token`. */
export function checkHostKey(entries: KnownHostEntry[], token: string, blob: Buffer): HostKeyVerdict {
  const type = keyTypeOf(blob);
  const forHost = entries.filter((entry) => entryMatches(entry, token));
  const revoked = entries.find((entry) => entry.marker === "@revoked" && entry.key.equals(blob));
  if (revoked) return { status: "revoked", line: revoked.line };
  const plain = forHost.filter((entry) => entry.marker === undefined);
  const same = plain.find((entry) => entry.key.equals(blob));
  if (same) return { status: "known", line: same.line };
  const sameType = plain.find((entry) => entry.keyType === type);
  if (sameType) return { status: "changed", line: sameType.line, knownFingerprint: fingerprint(sameType.key) };
  return { status: "unknown", otherTypes: [...new Set(plain.map((entry) => entry.keyType))] };
}

/** The line `ssh` appends for a newly trusted host. */
export function knownHostLine(token: string, blob: Buffer): string {
  return `${token} ${keyTypeOf(blob)} ${blob.toString("base64")}\n`;
}

/** ssh2's names for the host-key algorithms that produce keys of a known_hosts key type. */
export function hostKeyAlgorithms(keyType: string): string[] {
  return keyType === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [keyType];
}

/** One known_hosts file, read once and appended to (in order) by concurrent connections. */
export class KnownHostsStore {
  private entries: Promise<KnownHostEntry[]> | undefined;
  private writes: Promise<void> = Promise.resolve();

  constructor(readonly file: string) {}

  load(): Promise<KnownHostEntry[]> {
    this.entries ??= readFile(this.file, "utf8").then(parseKnownHosts, (error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return [];
      throw error;
    });
    return this.entries;
  }

  /** Appends a host the operator chose to trust (`--accept-new`), creating the file as `ssh` would. */
  record(token: string, blob: Buffer): Promise<void> {
    const write = this.writes.then(async () => {
      await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
      await appendFile(this.file, knownHostLine(token, blob), { mode: 0o600 });
      const entries = await this.load();
      entries.push({ hosts: [token], keyType: keyTypeOf(blob), key: blob, line: entries.length + 1 });
    });
    this.writes = write.catch(() => {});
    return write;
  }
}
