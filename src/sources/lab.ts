/** `--nodes lab`: the nodes of the running local lab. */
import { requireLab, labInventory, labOption } from "../lab/lab.js";
import { readOption } from "../options.js";
import type { NodeSourceFactory } from "./registry.js";

export const labSource: NodeSourceFactory = {
  name: "lab",
  description: "the nodes of the running local lab (`podroutes lab up`)",
  options: [labOption],
  givesClusterCIDR: true,
  read: async (options) => labInventory(await requireLab(readOption(labOption, options))),
};
