/**
 * The targets podroutes knows, by name: one line each. A factory declares its options, its natural node
 * source and what it needs, and a constructor; heavy SDKs are imported inside `create`, so `--help` and
 * other targets do not pay for them. The CLI builds its flags, help and defaults from these declarations
 * alone: a new target needs no change to the CLI.
 */
import type { FlagValues, OptionSpec, ResolvedOptions } from "../options.js";
import type { TakenAhead, Target } from "./target.js";
import { labTarget } from "./lab/factory.js";
import { localTarget } from "./linux/factories.js";
import { awsTarget } from "./aws/factory.js";
import { sshTarget } from "./ssh/factory.js";
import { gcpTarget } from "./gcp/factory.js";
import { azureTarget } from "./azure/factory.js";
import { hetznerTarget } from "./hetzner/factory.js";
import { openstackTarget } from "./openstack/factory.js";

export interface TargetFactory {
  name: string;
  /** One line for `--help`. */
  description: string;
  options: OptionSpec[];
  /**
   * The node source `plan`, `apply` and `verify` read when --nodes is not given: where this target's
   * nodes naturally come from (`lab` for the lab, the cloud's instances for a cloud). Unset: --nodes is
   * required (a host reached over SSH, this host: only the operator knows the cluster).
   */
  defaultNodes?: string;
  /**
   * `list` and `delete` need no inventory: the target finds its tables and tells its routes by its own
   * mark (GCP's description marker, the Linux protocol number, AWS's cluster tag on the instances).
   */
  marksSuffice?: boolean;
  /** Set when the target cannot work without a cluster CIDR: why, for the error that asks for it. */
  needsClusterCIDR?: string;
  /** Checks that span several flags (pure; throws UsageError), run before anything is read or built. */
  check?(flags: FlagValues): void;
  /**
   * For a run nobody reviews (`apply --yes`), where the table to write does not depend on the inventory
   * (`local`: this host): takes its lock and starts reading it before the inventory is read, so the read
   * runs while the inventory is parsed and checked. `create` gets it as `options.lockedAhead`; whoever
   * called this releases it (a no-op once the target took it over).
   */
  lockAhead?(options: ResolvedOptions): TakenAhead;
  create(options: ResolvedOptions): Promise<Target>;
}

export const targets: TargetFactory[] = [labTarget, localTarget, awsTarget, sshTarget, gcpTarget, azureTarget, hetznerTarget, openstackTarget];

export function targetFactory(name: string): TargetFactory | undefined {
  return targets.find((factory) => factory.name === name);
}
