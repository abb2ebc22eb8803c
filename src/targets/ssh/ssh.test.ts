/**
 * The SSH target's pure parts: known_hosts decisions, the words allowed into remote commands, flag
 * parsing, the persistence unit's text, and cancelling remote commands. No network, no root.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { EventEmitter } from "node:events";
import { classifyConnectError, execRemote, lockOverSsh, parseEndpoint, remoteCommand, remoteScript, checkPermission, SshError, type SshSettings } from "./connection.js";
import { checkHostKey, fingerprint, hostToken, keyTypeOf, knownHostLine, parseKnownHosts } from "./known-hosts.js";
import { BOOT_COMMAND, execStartOf, INSTALL_SCRIPT, REMOVE_SCRIPT, renderBatch, STATUS_SCRIPT, UNIT_TEXT } from "./persist.js";

/** A public key blob of `type` (random key bytes: only the framing matters here). */
function blob(type: string, seed = randomBytes(32)): Buffer {
  const name = Buffer.from(type);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(name.length);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(seed.length);
  return Buffer.concat([head, name, len, seed]);
}

describe("known_hosts", () => {
  const ed = blob("ssh-ed25519");
  const other = blob("ssh-ed25519");
  const rsa = blob("ssh-rsa");

  it("finds a known key, a changed key, an unknown host and a revoked key", () => {
    const text = `# comment\n10.240.0.6 ${keyTypeOf(ed)} ${ed.toString("base64")}\n@revoked * ssh-rsa ${rsa.toString("base64")}\n`;
    const entries = parseKnownHosts(text);
    assert.deepEqual(checkHostKey(entries, "10.240.0.6", ed), { status: "known", line: 2 });
    const changed = checkHostKey(entries, "10.240.0.6", other);
    assert.equal(changed.status, "changed");
    assert.equal(changed.status === "changed" && changed.knownFingerprint, fingerprint(ed));
    assert.deepEqual(checkHostKey(entries, "10.240.0.7", other), { status: "unknown", otherTypes: [] });
    assert.equal(checkHostKey(entries, "10.240.0.9", rsa).status, "revoked");
  });

  it("matches [host]:port, comma lists, negation, wildcards and hashed names", () => {
    const salt = randomBytes(20);
    const hashed = `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update("[node.example]:2222").digest("base64")}`;
    const entries = parseKnownHosts(
      [`${hashed} ssh-ed25519 ${ed.toString("base64")}`, `a.example,b.example ssh-ed25519 ${ed.toString("base64")}`, `*.lab,!bad.lab ssh-ed25519 ${ed.toString("base64")}`].join("\n"),
    );
    assert.equal(hostToken("node.example", 2222), "[node.example]:2222");
    assert.equal(checkHostKey(entries, "[node.example]:2222", ed).status, "known");
    assert.equal(checkHostKey(entries, "node.example", ed).status, "unknown", "port 22 is another host for known_hosts");
    assert.equal(checkHostKey(entries, "b.example", ed).status, "known");
    assert.equal(checkHostKey(entries, "w1.lab", ed).status, "known");
    assert.equal(checkHostKey(entries, "bad.lab", ed).status, "unknown");
  });

  it("reports other key types of a known host instead of treating it as new", () => {
    const entries = parseKnownHosts(`10.0.0.1 ssh-rsa ${rsa.toString("base64")}\n`);
    assert.deepEqual(checkHostKey(entries, "10.0.0.1", ed), { status: "unknown", otherTypes: ["ssh-rsa"] });
  });

  it("prints fingerprints as ssh-keygen does and records lines ssh reads back", () => {
    const dir = mkdtempSync(join(tmpdir(), "podroutes-kh-"));
    try {
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "k")]);
      const [type, base64] = readFileSync(join(dir, "k.pub"), "utf8").split(" ");
      const key = Buffer.from(base64!, "base64");
      assert.equal(keyTypeOf(key), type);
      const expected = execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", join(dir, "k.pub")], { encoding: "utf8" }).split(" ")[1];
      assert.equal(fingerprint(key), expected);
      assert.equal(knownHostLine("[10.0.0.1]:2222", key), `[10.0.0.1]:2222 ${type} ${base64}\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("remote commands", () => {
  it("joins validated words, with sudo -n when asked", () => {
    assert.equal(remoteCommand("ip", ["-N", "-json", "-force", "-batch", "-"], false), "ip -N -json -force -batch -");
    assert.equal(remoteCommand("ip", ["route", "del", "10.200.1.0/24", "proto", "150"], true), "sudo -n ip route del 10.200.1.0/24 proto 150");
  });

  it("refuses any word a shell would interpret", () => {
    for (const word of ["10.200.0.0/24;reboot", "$(id)", "`id`", "a b", "x|y", "'", '"', "a&b", "a>b", "\n", ""]) {
      assert.throws(() => remoteCommand("ip", ["route", word], false), /refusing to send/, word);
    }
    fc.assert(
      fc.property(fc.string(), (word) => {
        let accepted = false;
        try {
          remoteCommand("ip", [word], false);
          accepted = true;
        } catch {
          // refused
        }
        return !accepted || /^[A-Za-z0-9_.:/=+-]+$/.test(word);
      }),
    );
  });

  it("sends only fixed scripts, single-quoted", () => {
    for (const script of [STATUS_SCRIPT, INSTALL_SCRIPT, REMOVE_SCRIPT]) assert.match(remoteScript(script, true), /^sudo -n sh -c '[^']*'$/);
    assert.throws(() => remoteScript("echo 'x'", false), /single quotes/);
  });

  it("parses --jump and refuses odd hosts", () => {
    assert.deepEqual(parseEndpoint("root@10.240.0.2", { user: "x", port: 22 }), { user: "root", host: "10.240.0.2", port: 22 });
    assert.deepEqual(parseEndpoint("jump.example:2222", { user: "admin", port: 22 }), { user: "admin", host: "jump.example", port: 2222 });
    assert.throws(() => parseEndpoint("root@-oProxyCommand=x", { user: "x", port: 22 }), /--jump/);
    assert.throws(() => parseEndpoint("a b", { user: "x", port: 22 }), /--jump/);
  });

  it("classifies connection failures and permission errors", () => {
    assert.equal(classifyConnectError(Object.assign(new Error("All configured authentication methods failed"), { level: "client-authentication" })), "auth");
    assert.equal(classifyConnectError(Object.assign(new Error("connect ECONNREFUSED"), { level: "client-socket", code: "ECONNREFUSED" })), "unreachable");
    assert.equal(classifyConnectError(new Error("Timed out while waiting for handshake")), "unreachable");
    assert.throws(
      () => checkPermission({ code: 2, stdout: "", stderr: "RTNETLINK answers: Operation not permitted\nCommand failed -:1\n" }, "worker-0", "podroutes", false),
      (error: SshError) => error.failure === "permission" && /--sudo/.test(error.message) && /worker-0/.test(error.message),
    );
    assert.throws(
      () => checkPermission({ code: 1, stdout: "", stderr: "sudo: a password is required\n" }, "worker-0", "podroutes", true),
      (error: SshError) => error.failure === "permission" && /passwordless sudo/.test(error.message),
    );
    assert.doesNotThrow(() => checkPermission({ code: 1, stdout: "", stderr: "Error: Nexthop has invalid gateway.\nCommand failed -:1\n" }, "w", "root", false));
  });
});

describe("persistence unit", () => {
  it("runs ip -batch on the route file after network-online", () => {
    assert.deepEqual(execStartOf(UNIT_TEXT), BOOT_COMMAND);
    assert.match(UNIT_TEXT, /^After=network-online\.target$/m);
    assert.match(UNIT_TEXT, /^Type=oneshot$/m);
    assert.match(UNIT_TEXT, /^WantedBy=multi-user\.target$/m);
    assert.doesNotMatch(UNIT_TEXT, /[$`]/, "the unit goes through an unquoted heredoc");
  });

  it("renders sorted, idempotent route lines, and nothing for no routes", () => {
    const text = renderBatch(
      [
        { destination: "10.200.10.0/24", nextHop: "10.240.0.16" },
        { destination: "10.200.2.0/24", nextHop: "10.240.0.8" },
      ],
      { proto: 150, node: "worker-0", cluster: "k" },
    );
    assert.deepEqual(text.split("\n").filter((l) => !l.startsWith("#") && l), [
      "route replace 10.200.2.0/24 via 10.240.0.8 proto 150",
      "route replace 10.200.10.0/24 via 10.240.0.16 proto 150",
    ]);
    assert.equal(renderBatch([], { proto: 150, node: "w", cluster: "k" }), "");
  });
});

/**
 * An ssh2 client that opens channels whose remote command never finishes (a lock another run holds, a
 * hung host): what an AbortSignal must end.
 */
function hangingClient(): { client: import("ssh2").Client; closed: () => number } {
  let closed = 0;
  const client = {
    exec(_command: string, callback: (error: Error | undefined, stream: import("ssh2").ClientChannel) => void) {
      const stream = Object.assign(new EventEmitter(), {
        stderr: new EventEmitter(),
        end: () => {},
        close: () => {
          closed++;
          queueMicrotask(() => stream.emit("close"));
        },
      });
      queueMicrotask(() => callback(undefined, stream as unknown as import("ssh2").ClientChannel));
    },
  } as unknown as import("ssh2").Client;
  return { client, closed: () => closed };
}

describe("cancelling remote commands (AbortSignal)", { timeout: 20_000 }, () => {
  const target = { node: "worker-0", host: "10.240.0.6", port: 22, user: "root" };
  const settings = { sudo: false } as SshSettings;

  it("a remote command is ended and its call rejects with the signal's reason", async () => {
    const { client, closed } = hangingClient();
    const abort = new AbortController();
    const running = execRemote(client, "ip -V", undefined, "worker-0", { signal: abort.signal });
    await new Promise((resolve) => setImmediate(resolve));
    abort.abort(new Error("leadership lost"));
    await assert.rejects(running, /leadership lost/);
    assert.equal(closed(), 1, "the channel was closed");
  });

  it("a lock still waited for is given up: the channel closes, so the remote shell and its flock end", async () => {
    const { client, closed } = hangingClient();
    const abort = new AbortController();
    const locking = lockOverSsh(client, target, settings, { proto: 150, waiting: () => {}, signal: abort.signal });
    await new Promise((resolve) => setImmediate(resolve));
    abort.abort(new Error("stopped"));
    await assert.rejects(locking, /stopped/);
    assert.equal(closed(), 1);
  });

  it("an already aborted signal starts nothing", async () => {
    const { client, closed } = hangingClient();
    await assert.rejects(execRemote(client, "ip -V", undefined, "worker-0", { signal: AbortSignal.abort(new Error("too late")) }), /too late/);
    assert.equal(closed(), 0);
  });
});
