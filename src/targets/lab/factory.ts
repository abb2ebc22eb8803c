/**
 * The `lab` target: every worker of the local lab (`podroutes lab up`), written through `ip -n` with the
 * Linux host-route target, and verified with real packets between the lab's pods.
 */
import { labOption } from "../../lab/options.js";
import { readOption } from "../../options.js";
import type { TargetFactory } from "../registry.js";
import { hostRouteSettings, lockTimeoutOption, protoOption } from "../linux/factories.js";
import { HostRoutesTarget } from "../linux/host-routes.js";
import { localRunner } from "../linux/runner.js";

export const labTarget: TargetFactory = {
  name: "lab",
  description: "every worker of the local lab (`podroutes lab up`), verified with real packets",
  options: [protoOption, lockTimeoutOption, labOption],
  defaultNodes: "lab",
  async create(options) {
    const settings = hostRouteSettings(options);
    // The lab's code is loaded only when the lab target is used.
    const [{ requireLab }, { checkPodPaths }] = await Promise.all([import("../../lab/lab.js"), import("../../lab/paths.js")]);
    const lab = await requireLab(readOption(labOption, options));
    return new HostRoutesTarget({
      name: "lab",
      ...settings,
      async tables(inventory) {
        const missing = inventory.nodes.filter((node) => !lab.workers.some((w) => w.name === node.name));
        if (missing.length) {
          options.warn(`lab: ${missing.map((n) => n.name).join(", ")} not in lab ${lab.name}: their routes go to the other workers, but no table of theirs is written`);
        }
        return lab.workers.filter((w) => inventory.nodes.some((n) => n.name === w.name)).map((w) => ({ id: w.name, scope: "host" as const, node: w.name }));
      },
      connect: async (table) => localRunner(lab.workers.find((w) => w.name === table.node)!.netns),
      verify: async (_inventory, context) => checkPodPaths(await requireLab(lab.name), { progress: context.progress }),
    });
  },
};
