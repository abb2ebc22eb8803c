/**
 * Watches the kernel for route and nexthop changes in network namespaces while `body` runs, with
 * `ip monitor`: how tests and benchmarks prove a no-op apply writes nothing. The kernel's own routes
 * (`proto kernel`, e.g. IPv6 link-local routes settling after DAD) are not counted as writes.
 */
import { spawn } from "node:child_process";

const SETTLE_MS = 200;

export async function watchKernelWrites<T>(netnses: string[], body: () => Promise<T>): Promise<{ result: T; writes: string[] }> {
  const monitors = netnses.map((netns) => {
    const child = spawn("ip", ["-n", netns, "monitor", "route", "nexthop"], { stdio: ["ignore", "pipe", "ignore"] });
    let seen = "";
    child.stdout.on("data", (data: Buffer) => (seen += data.toString()));
    return { netns, child, seen: () => seen };
  });
  try {
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    const result = await body();
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    const writes = monitors.flatMap((m) => m.seen().split("\n").filter((line) => line && !/proto kernel/.test(line)).map((line) => `${m.netns}: ${line}`));
    return { result, writes };
  } finally {
    for (const monitor of monitors) monitor.child.kill();
  }
}
