/**
 * The targets podroutes knows, by name: one line each. A factory declares its options and a
 * constructor; heavy SDKs are imported inside `create`, so `--help` and other targets do not pay for them.
 */
import type { OptionSpec, ResolvedOptions } from "../options.js";
import type { Target } from "./target.js";
import { labTarget, localTarget } from "./linux/factories.js";
import { awsTarget } from "./aws/factory.js";
import { sshTarget } from "./ssh/factory.js";
import { gcpTarget } from "./gcp/factory.js";

export interface TargetFactory {
  name: string;
  /** One line for `--help`. */
  description: string;
  options: OptionSpec[];
  create(options: ResolvedOptions): Promise<Target>;
}

export const targets: TargetFactory[] = [labTarget, localTarget, awsTarget, sshTarget, gcpTarget];

export function targetFactory(name: string): TargetFactory | undefined {
  return targets.find((factory) => factory.name === name);
}
