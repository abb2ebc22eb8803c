/** The in-memory reference target passes the same conformance suite as the real ones. */
import { validateInventory } from "../../inventory.js";
import { runConformance } from "../../../testkit/conformance.js";
import { MemoryTarget } from "./memory.js";

for (const scope of ["host", "shared"] as const) {
  runConformance({
    name: `memory (${scope} tables)`,
    async setup() {
      const target = new MemoryTarget(scope);
      return {
        target,
        inventory: validateInventory({
          source: "seed",
          nodes: [0, 1, 2].map((i) => ({ name: `worker-${i}`, internalIPs: [`10.240.0.2${i}`], podCIDRs: [`10.200.${i}.0/24`] })),
        }),
        spareNextHop: "10.240.0.99",
        addForeignRoute: async (table, destination, nextHop) => void target.table(table).set(destination, { destination, nextHop, owned: false }),
        teardown: async () => {},
      };
    },
  });
}
