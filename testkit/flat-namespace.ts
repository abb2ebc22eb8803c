/**
 * A throwaway network namespace for benchmarks: one veth link whose address makes a whole range of next
 * hops on-link (`10.240.0.1/16`: a flat VPC), loopback up. Made again from nothing if it exists; its
 * podroutes lock files go with it (removeFlatNamespace), so a later namespace that gets the same inode
 * inherits no owner record.
 */
import { run } from "../src/process.js";
import { removeLockFiles } from "../src/targets/linux/runner.js";

/** Deletes a namespace and its podroutes lock files. */
export async function removeFlatNamespace(netns: string): Promise<void> {
  await removeLockFiles(netns);
  await run("ip", ["netns", "del", netns]);
}

async function ip(args: string[]): Promise<void> {
  const result = await run("ip", args);
  if (result.code !== 0) throw new Error(`ip ${args.join(" ")}: ${result.stderr}`);
}

export async function flatNamespace(netns: string, addressWithPrefix: string): Promise<void> {
  await removeFlatNamespace(netns);
  await ip(["netns", "add", netns]);
  await ip(["-n", netns, "link", "set", "lo", "up"]);
  await ip(["-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
  await ip(["-n", netns, "addr", "add", addressWithPrefix, "dev", "eth0"]);
  await ip(["-n", netns, "link", "set", "eth0", "up"]);
  await ip(["-n", netns, "link", "set", "peer0", "up"]);
}
