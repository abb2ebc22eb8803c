/**
 * A throwaway network namespace for benchmarks: one veth link whose address makes a whole range of next
 * hops on-link (`10.240.0.1/16`: a flat VPC), loopback up. Made again from nothing if it exists.
 */
import { run } from "../src/process.js";

async function ip(args: string[]): Promise<void> {
  const result = await run("ip", args);
  if (result.code !== 0) throw new Error(`ip ${args.join(" ")}: ${result.stderr}`);
}

export async function flatNamespace(netns: string, addressWithPrefix: string): Promise<void> {
  await run("ip", ["netns", "del", netns]);
  await ip(["netns", "add", netns]);
  await ip(["-n", netns, "link", "set", "lo", "up"]);
  await ip(["-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
  await ip(["-n", netns, "addr", "add", addressWithPrefix, "dev", "eth0"]);
  await ip(["-n", netns, "link", "set", "eth0", "up"]);
  await ip(["-n", netns, "link", "set", "peer0", "up"]);
}
