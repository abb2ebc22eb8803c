/**
 * `npm run bench`: every benchmark, one after the other (they measure wall time, so never in parallel).
 * Each prints its figures and the ratio against the seeds' way of doing the same work.
 * `npm run bench -- NAME` runs only the named ones.
 */
const benches: Record<string, () => Promise<unknown>> = {
  linux: async () => (await import("./linux.js")).run(),
  aws: async () => (await import("./aws.js")).run(),
  hetzner: async () => (await import("./hetzner.js")).run(),
  gcp: async () => (await import("./gcp.js")).run(),
  ssh: async () => (await import("./ssh.js")).run(),
  agent: async () => (await import("./agent.js")).run(),
  "agent-real": async () => (await import("./agent-real.js")).run(),
  controller: async () => (await import("./controller.js")).run(),
  inventory: async () => (await import("./inventory.js")).run(),
  peers: async () => (await import("./peers.js")).run(),
  fanout: async () => (await import("./fanout.js")).run(),
};

const wanted = process.argv.slice(2);
for (const [name, run] of Object.entries(benches)) {
  if (wanted.length && !wanted.includes(name)) continue;
  console.log(`\n=== bench: ${name} ===`);
  await run();
}
