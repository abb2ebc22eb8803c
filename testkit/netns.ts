/**
 * A node of its own for a test or a benchmark: a network namespace with `eth0` (a veth; `dummy` links do
 * not exist on this kernel) holding the node's address, where podroutes runs with `--target local` as on
 * a real node; with a wide prefix (`10.240.0.1/16`) a whole range of next hops is on-link, a flat VPC.
 * Made again from nothing if it exists. Nothing is created in or changed of the root namespace; `remove`
 * deletes the namespace and its lock files, and tests call it in `after`/`finally` even when they fail.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { lockPath, removeLockFiles } from "../src/targets/linux/runner.js";
import { run } from "../src/process.js";

export interface NodeNamespace {
  name: string;
  /** `ip -n NAME ARGS`, failing the test on error. */
  ip(args: string[]): Promise<string>;
  /** `ip -n NAME -N -json ARGS`, parsed. */
  ipJson(args: string[]): Promise<any[]>;
  /** This namespace's podroutes lock file, as every podroutes run in it computes it. */
  lockFile: string;
  remove(): Promise<void>;
}

/** Creates namespace `name` with eth0 at `address` (`10.240.0.20/16`) and, optionally, an IPv6 one. */
export async function nodeNamespace(name: string, address: string, address6?: string): Promise<NodeNamespace> {
  // A killed run of the same pid may have left it: ours by name.
  await removeFlatNamespace(name);
  const created = await run("ip", ["netns", "add", name]);
  assert.equal(created.code, 0, created.stderr);
  const ip = async (args: string[]) => {
    const result = await run("ip", ["-n", name, ...args]);
    assert.equal(result.code, 0, `ip ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  const lockFile = await lockPath(name);
  const namespace: NodeNamespace = {
    name,
    ip,
    ipJson: async (args) => JSON.parse((await ip(["-N", "-json", ...args])) || "[]"),
    lockFile,
    remove: () => removeFlatNamespace(name),
  };
  try {
    await ip(["link", "set", "lo", "up"]);
    await ip(["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
    await ip(["addr", "add", address, "dev", "eth0"]);
    if (address6) await ip(["addr", "add", address6, "dev", "eth0", "nodad"]);
    await ip(["link", "set", "eth0", "up"]);
    await ip(["link", "set", "peer0", "up"]);
  } catch (error) {
    await namespace.remove();
    throw error;
  }
  return namespace;
}

/** The same namespace for benchmarks, which delete it by name with `removeFlatNamespace`. */
export async function flatNamespace(name: string, addressWithPrefix: string): Promise<void> {
  await nodeNamespace(name, addressWithPrefix);
}

/** Deletes a benchmark's namespace and its podroutes lock files, so a later namespace with the same inode inherits no owner record. */
export async function removeFlatNamespace(name: string): Promise<void> {
  await removeLockFiles(name);
  await run("ip", ["netns", "del", name]);
}

/** Another holder of a podroutes lock: its PID (written in the lock file as podroutes does) and how to let go. */
export interface LockHolder {
  pid: number;
  release(): void;
}

/**
 * Takes a lock file as another podroutes run would hold it: `flock -x FILE cat`, which holds it until
 * its stdin closes (`release`); resolves once `cat` runs, so the lock is held. `says` goes in the file.
 */
export async function holdLock(file: string, says: (pid: number) => string): Promise<LockHolder> {
  const holder = spawn("flock", ["-x", file, "cat"], { stdio: ["pipe", "pipe", "ignore"] });
  let released = false;
  const release = () => {
    if (!released) holder.stdin!.end();
    released = true;
  };
  await new Promise<void>((resolve, reject) => {
    holder.stdout!.once("data", () => resolve());
    holder.once("exit", () => reject(new Error(`flock ${file} exited`)));
    holder.stdin!.write("locked\n");
  });
  await writeFile(file, says(holder.pid!));
  return { pid: holder.pid!, release };
}

let namespacesMade = 0;

/**
 * A fresh node namespace for one test (`prefix`, this process's pid and a counter: unique among the
 * engineers' test runs on one machine), with eth0 at `address`, removed whatever happens.
 */
export async function withNodeNamespace(prefix: string, address: string, body: (ns: NodeNamespace) => Promise<void>): Promise<void> {
  const ns = await nodeNamespace(`${prefix}${process.pid % 100000}n${namespacesMade++}`, address);
  try {
    await body(ns);
  } finally {
    await ns.remove();
  }
}
