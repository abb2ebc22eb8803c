/**
 * The `local` target (this host's table, or that of the namespace podroutes runs in) and the flags every
 * host-route target shares. The lab (targets/lab) and SSH (targets/ssh) targets are the same
 * HostRoutesTarget with other transports; nothing here loads lab code, so the agent and `--target local`
 * do not either.
 */
import { hostname, networkInterfaces } from "node:os";
import { UsageError } from "../../errors.js";
import { readOption, wholeNumber, type OptionSpec, type ResolvedOptions } from "../../options.js";
import type { TargetFactory } from "../registry.js";
import { TargetError } from "../target.js";
import { HostRoutesTarget, nodeOfAddresses } from "./host-routes.js";
import { DEFAULT_PROTO } from "./iproute.js";
import { lockAhead, localRunner, type LockedAhead } from "./runner.js";

/** Shared by every host-route target (local, lab, ssh). */
export const protoOption: OptionSpec<number> = {
  flags: "--proto <number>",
  description: "route protocol number that marks podroutes' routes (5-255)",
  default: String(DEFAULT_PROTO),
  // 0-4 are the kernel's own (unspec, redirect, kernel, boot, static): never podroutes'.
  parse: wholeNumber(5, 255),
};

export function protoOf(options: ResolvedOptions): number {
  return readOption(protoOption, options)!;
}

/**
 * A duration as terraform's -lock-timeout takes it (Go's syntax: `30s`, `5m`, `1m30s`, `500ms`, `0`),
 * in seconds. Hand-written: five lines, and no library spells durations this way.
 */
export function durationSeconds(text: string): number {
  if (text === "0") return 0;
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(text)) throw new Error("must be a duration such as 30s, 5m or 1m30s (0: do not wait)");
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600 } as Record<string, number>;
  let total = 0;
  for (const [, amount, , name] of text.matchAll(/(\d+(\.\d+)?)(ms|s|m|h)/g)) total += Number(amount) * unit[name!]!;
  return total;
}

/** Shared by every host-route target: how long to wait for another podroutes run's lock on a table. */
export const lockTimeoutOption: OptionSpec<number> = {
  flags: "--lock-timeout <duration>",
  description: "how long to wait for another podroutes run writing the same host (30s, 5m, 0: fail at once)",
  default: "5m",
  parse: durationSeconds,
};

/** What every host-route target takes from the flags: the mark, the lock's patience, where to say it waits. */
export function hostRouteSettings(options: ResolvedOptions): { proto: number; lockTimeout: number; warn: (message: string) => void } {
  return { proto: protoOf(options), lockTimeout: readOption(lockTimeoutOption, options)!, warn: options.warn };
}

export const localTarget: TargetFactory = {
  name: "local",
  description: "this host's routing table (inside a network namespace: that namespace)",
  options: [protoOption, lockTimeoutOption, { flags: "--node <name>", description: "which node this host is (default: found from its addresses)" }],
  marksSuffice: true,
  // This host's lock and table are the same whatever the inventory says.
  lockAhead: (options) => lockAhead(undefined, options.signal),
  async create(options) {
    const runner = localRunner(undefined, options.lockedAhead as LockedAhead | undefined);
    return new HostRoutesTarget({
      name: "local",
      ...hostRouteSettings(options),
      connect: async () => runner,
      async tables(inventory) {
        let node = options.node as string | undefined;
        // `list` and `delete` without --nodes: this host's table, whose routes the protocol number tells.
        if (inventory.nodes.length === 0) return [{ id: node ?? hostname(), scope: "host" }];
        if (node !== undefined && !inventory.nodes.some((n) => n.name === node)) {
          throw new UsageError(`--node ${node} is not in the inventory (${inventory.nodes.map((n) => n.name).join(", ")})`, { flag: "--node" });
        }
        if (node === undefined) {
          // The addresses of the network namespace this process runs in, which is where `ip` writes: no
          // `ip` process, and not the whole table, which the plan reads anyway.
          const addresses = Object.values(networkInterfaces()).flatMap((nics) => (nics ?? []).map((nic) => nic.address));
          node = nodeOfAddresses(inventory, addresses);
          if (!node) {
            throw new TargetError(
              "local",
              `none of this host's addresses (${addresses.join(", ") || "none"}) is a node's internal IP in ${inventory.source}; say which node this is with --node NAME`,
            );
          }
        }
        return [{ id: node, scope: "host", node }];
      },
    });
  },
};
