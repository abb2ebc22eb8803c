/**
 * SSH fan-out: podroutes `apply --target ssh` on 3 and 20 lab workers (a full mesh: each worker gets
 * the route of every other) against the Vultr seed's way, one sequential
 * `ssh -o StrictHostKeyChecking=no root@worker 'ip route add ...; ip route add ...'` per worker with the
 * real OpenSSH client. Both run inside the lab's jumpbox namespace against real sshd servers
 * (`lab up --ssh`); both are timed as whole commands (process start included). Prints medians and the
 * ratio, and counts the SSH logins podroutes made per worker (the target: one).
 */
import { performance } from "node:perf_hooks";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { labDown, labUp, type LabState } from "../src/lab/lab.js";
import { labSshUp, type LabSsh } from "../src/lab/sshd.js";
import { run as runCommand } from "../src/process.js";
import { median } from "./stats.js";

const BIN = fileURLToPath(new URL("../../bin/podroutes.js", import.meta.url));
const RUNS = 3;

async function must(command: string, args: string[]): Promise<string> {
  const result = await runCommand(command, args);
  if (result.code !== 0) throw new Error(`${command} ${args.join(" ")}: exit ${result.code}: ${result.stderr || result.stdout}`);
  return result.stdout;
}

async function timed(body: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await body();
  return performance.now() - start;
}

/** Removes every pod route (the seed's have proto boot, podroutes' proto 150) so each run starts clean. */
async function clean(state: LabState): Promise<void> {
  for (const worker of state.workers) {
    await runCommand("ip", ["-n", worker.netns, "nexthop", "flush"]);
    const script = state.workers.filter((w) => w !== worker).map((w) => `route del ${w.podCIDR}\n`).join("");
    await runCommand("ip", ["-n", worker.netns, "-force", "-batch", "-"], script);
  }
}

async function logins(ssh: LabSsh, worker: string): Promise<number> {
  const log = await readFile(join(ssh.dir, worker, "sshd.log"), "utf8");
  return log.split("\n").filter((line) => line.startsWith("Accepted publickey")).length;
}

async function benchSize(workers: number): Promise<void> {
  const name = `sshb${workers}`;
  await labDown(name);
  const { state } = await labUp({ name, topology: "gcp-seed", workers });
  try {
    const ssh = await labSshUp(state);
    const podroutes = () =>
      must("ip", ["netns", "exec", state.jumpboxNetns, "env", "SSH_AUTH_SOCK=", process.execPath, BIN, "apply", "--yes", "--nodes", "lab", "--lab", name, "--target", "ssh", "--ssh-key", ssh.clientKey, "--known-hosts", ssh.knownHosts, "--parallel", "20"]);
    const seed = async () => {
      for (const worker of state.workers) {
        const command = state.workers
          .filter((w) => w !== worker)
          .map((w) => `ip route add ${w.podCIDR} via ${w.internalIP}`)
          .join(";");
        await must("ip", ["netns", "exec", state.jumpboxNetns, "ssh", "-i", ssh.clientKey, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", `root@${worker.internalIP}`, "-C", command]);
      }
    };
    const podroutesTimes: number[] = [];
    const seedTimes: number[] = [];
    let loginsPerWorker: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      await clean(state);
      const before = await Promise.all(state.workers.map((w) => logins(ssh, w.name)));
      podroutesTimes.push(await timed(podroutes));
      const after = await Promise.all(state.workers.map((w) => logins(ssh, w.name)));
      loginsPerWorker = after.map((n, j) => n - before[j]!);
      await clean(state);
      seedTimes.push(await timed(seed));
    }
    await clean(state);
    await podroutes();
    const noop = await timed(podroutes);
    const p = median(podroutesTimes);
    const s = median(seedTimes);
    const routes = workers * (workers - 1);
    console.log(
      `${String(workers).padStart(2)} workers, ${routes} routes: podroutes apply ${p.toFixed(0)} ms | seed's sequential ssh ${s.toFixed(0)} ms | ` +
        `${(s / p).toFixed(1)}x faster | SSH logins per worker in one apply: ${[...new Set(loginsPerWorker)].join("/")} | ` +
        `re-run with nothing to change: ${noop.toFixed(0)} ms`,
    );
  } finally {
    await labDown(name);
  }
}

export async function run(): Promise<void> {
  console.log(`medians of ${RUNS} runs; both from the lab's jumpbox namespace, real sshd on every worker`);
  for (const workers of [3, 20]) await benchSize(workers);
}
