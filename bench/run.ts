/**
 * `npm run bench`: every benchmark, one after the other (they measure wall time, so never in parallel).
 * Each prints its figures and the ratio against the seeds' way of doing the same work.
 * `npm run bench -- NAME` runs only the named ones; `--option VALUE` pairs are theirs to read.
 */
const benches: Record<string, () => Promise<unknown>> = {
  linux: async () => (await import("./linux.js")).run(),
  aws: async () => (await import("./aws.js")).run(),
  hetzner: async () => (await import("./hetzner.js")).run(),
  gcp: async () => (await import("./gcp.js")).run(),
  openstack: async () => (await import("./openstack.js")).run(),
  azure: async () => (await import("./azure.js")).run(),
  ssh: async () => (await import("./ssh.js")).run(),
  agent: async () => (await import("./agent.js")).run(),
  "agent-real": async () => (await import("./agent-real.js")).run(),
  controller: async () => (await import("./controller.js")).run(),
  "controller-scale": async () => (await import("./controller-scale.js")).run(),
  inventory: async () => (await import("./inventory.js")).run(),
  peers: async () => (await import("./peers.js")).run(),
  "peers-controller": async () => (await import("./peers-controller.js")).run(),
  fanout: async () => (await import("./fanout.js")).run(),
  "fanout-peers": async () => (await import("./fanout-peers.js")).run(),
};

// Bench names: the arguments that are neither an option (`--json`) nor an option's value (the benches read those).
const wanted = process.argv.slice(2).filter((arg, i, args) => !arg.startsWith("--") && !args[i - 1]?.startsWith("--"));
for (const [name, run] of Object.entries(benches)) {
  if (wanted.length && !wanted.includes(name)) continue;
  console.log(`\n=== bench: ${name} ===`);
  await run();
}
