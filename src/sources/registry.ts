/**
 * Where nodes come from. `--nodes NAME` picks a source listed here (one line each); anything else is
 * a file path, or `-` for stdin, read by the file source.
 */
import type { RawInventory } from "../inventory.js";
import type { FlagValues, OptionSpec, ResolvedOptions } from "../options.js";
import { labSource } from "./lab.js";
import { awsSource } from "./aws.js";
import { gcpSource } from "./gcp.js";
import { vultrSource } from "./vultr.js";
import { hetznerSource } from "./hetzner.js";
import { azureSource } from "./azure.js";
import { kubernetesSource } from "./kubernetes.js";
import { openstackSource } from "./openstack.js";

export interface NodeSourceFactory {
  name: string;
  /** One line for `--help`. */
  description: string;
  options: OptionSpec[];
  /** The source's inventory carries the cluster CIDR (the lab's does; cloud instances do not). */
  givesClusterCIDR?: boolean;
  /** Checks that span several flags or the environment (pure; throws UsageError), run before any read. */
  check?(flags: FlagValues): void;
  /** Reads the nodes; validation happens afterwards, for every source alike. */
  read(options: ResolvedOptions): Promise<RawInventory>;
}

export const nodeSources: NodeSourceFactory[] = [labSource, awsSource, vultrSource, gcpSource, azureSource, hetznerSource, openstackSource, kubernetesSource];

export function nodeSource(name: string): NodeSourceFactory | undefined {
  return nodeSources.find((source) => source.name === name);
}
