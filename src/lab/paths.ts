/**
 * Real packets between the lab's pods: every pod pings every other pod, and a traceroute checks that the
 * packet crossed exactly the destination node's worker. A wrong next hop can still deliver (another
 * worker forwards it), so reachability alone would pass a broken table; the hop list does not.
 */
import pLimit from "p-limit";
import type { Check, Progress } from "../targets/target.js";
import { run } from "../process.js";
import type { LabState, LabWorker } from "./lab.js";

/** Hop addresses of a numeric, one-probe-per-hop traceroute; `*` for a hop that did not answer. */
export function parseTraceroute(output: string): string[] {
  const hops: string[] = [];
  for (const line of output.split("\n")) {
    const match = /^\s*(\d+)\s+(\S+)/.exec(line);
    if (match) hops.push(match[2]!);
  }
  return hops;
}

/**
 * The path a packet from `from`'s pod to `to`'s pod must take: its own gateway (the worker's bridge),
 * the VPC's router when the routes are a cloud's (`via`, the router the workers send cluster traffic
 * to), the destination worker's internal IP (the route's next hop), the pod.
 */
export function expectedPath(from: LabWorker, to: LabWorker, via?: string): string[] {
  return [from.podGateway, ...(via ? [via] : []), to.internalIP, to.podIP!];
}

export interface PodPathOptions {
  progress?: Progress;
  parallel?: number;
  /** The address of a VPC router every packet crosses (the lab emulating a cloud's route table). */
  via?: string;
}

export async function checkPodPaths(state: LabState, options: PodPathOptions = {}): Promise<Check[]> {
  const pairs = state.workers.flatMap((from) => state.workers.filter((to) => to !== from).map((to) => ({ from, to })));
  const limit = pLimit(options.parallel ?? 4);
  let done = 0;
  return Promise.all(
    pairs.map(({ from, to }) =>
      limit(async (): Promise<Check> => {
        const label = `pod ${from.name} (${from.podIP}) → pod ${to.name} (${to.podIP})`;
        try {
          // Both run inside the source pod's namespace: lab traffic never leaves from the root namespace.
          // Three probes, one reply is enough: on a loaded machine a single probe is sometimes late.
          const ping = await run("ip", ["netns", "exec", from.podNetns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", to.podIP!]);
          if (ping.code !== 0) {
            // A wrong next hop behind a router loops the packet between the router and that worker until
            // its TTL runs out: a finding of its own, not a missing route.
            const loop = ping.stdout.split("\n").find((l) => /Time to live exceeded/.test(l))?.trim();
            if (loop) return { table: from.name, ok: false, message: `${label}: loops, wrong next hop? (${loop})` };
            const why = /Unreachable|unreachable/.exec(ping.stdout) ? ping.stdout.split("\n").find((l) => /nreachable/.test(l))?.trim() : "no reply";
            return { table: from.name, ok: false, message: `${label}: unreachable (${why ?? ping.stderr.trim()})` };
          }
          const hops = await traceHops(from, to);
          const expected = expectedPath(from, to, options.via);
          if (hops.join(" ") !== expected.join(" ")) {
            return {
              table: from.name,
              ok: false,
              message: `${label}: reached, but over ${hops.join(" → ")} instead of ${expected.join(" → ")} (wrong next hop on ${from.name}?)`,
            };
          }
          return { table: from.name, ok: true, message: `${label}: ok via ${options.via ? `${options.via} → ` : ""}${to.internalIP}` };
        } finally {
          options.progress?.({ table: from.name, done: ++done, total: pairs.length, message: "packets" });
        }
      }),
    ),
  );
}

/**
 * The hops of one traceroute, tried again (up to 3 times) while a hop did not answer: a lost probe says
 * nothing about the path, while an answer from the wrong worker is a finding and is returned at once.
 */
async function traceHops(from: LabWorker, to: LabWorker): Promise<string[]> {
  let hops: string[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const trace = await run("ip", ["netns", "exec", from.podNetns, "traceroute", "-n", "-q", "1", "-w", "1", "-m", "6", to.podIP!]);
    hops = parseTraceroute(trace.stdout);
    if (!hops.includes("*")) break;
  }
  return hops;
}
