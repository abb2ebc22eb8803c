/** `--nodes lab`: the nodes of the running local lab. */
import { labOption } from "../lab/options.js";
import { readOption } from "../options.js";
import type { NodeSourceFactory } from "./registry.js";

export const labSource: NodeSourceFactory = {
  name: "lab",
  description: "the nodes of the running local lab (`podroutes lab up`)",
  options: [labOption],
  givesClusterCIDR: true,
  read: async (options) => {
    // The lab's code is loaded only when the lab is the node source.
    const { labInventory, requireLab } = await import("../lab/lab.js");
    return labInventory(await requireLab(readOption(labOption, options)));
  },
};
