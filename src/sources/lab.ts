/** `--nodes lab`: the nodes of the running local lab. */
import { requireLab, labInventory, DEFAULT_LAB } from "../lab/lab.js";
import type { NodeSourceFactory } from "./registry.js";

export const labSource: NodeSourceFactory = {
  name: "lab",
  description: "the nodes of the running local lab (`podroutes lab up`)",
  options: [{ flags: "--lab <name>", description: "which local lab", default: DEFAULT_LAB }],
  read: async (options) => labInventory(await requireLab(String(options.lab ?? DEFAULT_LAB))),
};
