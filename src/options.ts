/**
 * How targets and node sources declare their own command-line options, so the CLI can offer them
 * without knowing any target. Options with the same long flag are one option shared by those targets.
 */
export interface OptionSpec {
  /** Commander syntax: `--project <id>`, `--accept-new`, `--route-table <id...>` (repeatable). */
  flags: string;
  description: string;
  default?: string | boolean | string[];
  /** Environment variable read when the flag is absent (as gcloud and the AWS CLI do). */
  env?: string;
}

/** Options every target and source receives, besides its own (camelCased flag names). */
export interface CommonOptions {
  cluster: string;
  clusterCIDR?: string;
  /** Upper bound on concurrent tables (hosts) or API operations. */
  parallel: number;
  env: NodeJS.ProcessEnv;
  /** Warnings for the operator (stderr; kept out of -o json). */
  warn: (message: string) => void;
  /** True when progress may be drawn (a TTY, not -o json). */
  interactive: boolean;
}

export type ResolvedOptions = CommonOptions & Record<string, unknown>;

/** Reads a required option or throws an error that names the flag, as unstorage's drivers do. */
export function requireOption<T>(owner: string, options: Record<string, unknown>, key: string, flag: string): T {
  const value = options[key];
  if (value === undefined || value === "" || (Array.isArray(value) && value.length === 0)) {
    throw new Error(`${owner}: ${flag} is required`);
  }
  return value as T;
}
