/**
 * The Linux host-route target on one table ("self", the node podroutes runs on) over a given IpRunner:
 * what tests use to put a recording, racing or failing transport under the real target.
 */
import { HostRoutesTarget } from "../src/targets/linux/host-routes.js";
import type { IpRunner } from "../src/targets/linux/runner.js";

export function selfTarget(runner: IpRunner, options: { warn?: (message: string) => void } = {}): HostRoutesTarget {
  return new HostRoutesTarget({
    name: "local",
    proto: 150,
    warn: options.warn ?? (() => {}),
    tables: async () => [{ id: "self", scope: "host", node: "self" }],
    connect: async () => runner,
  });
}
