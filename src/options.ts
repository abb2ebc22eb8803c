/**
 * How targets and node sources declare their own command-line options, so the CLI can offer them
 * without knowing any target: the flag, its help line, its default and environment variables, and how
 * its value is checked. Checking is declared here once and run twice: by the CLI for every flag of the
 * chosen target and source before anything is read or built, and by the factory as it reads the value
 * (so a factory called directly, as tests do, is no less strict). Pure: no I/O.
 */
import { Option } from "commander";
import { UsageError } from "./errors.js";

export interface OptionSpec<T = unknown> {
  /** Commander syntax: `--project <id>`, `--accept-new`, `--route-table <id...>` (repeatable). */
  flags: string;
  description: string;
  default?: string | boolean | string[];
  /** Environment variables read, in order, when the flag is absent (as gcloud and the AWS CLI do). */
  env?: string | string[];
  /** The only values the flag takes. */
  choices?: readonly string[];
  /**
   * Turns the flag's text (each value of a repeatable flag) into the value the target uses; throws an
   * Error saying what is wrong with it (`must be a whole number from 5 to 255`).
   */
  parse?: (text: string) => T;
  /** Set when the flag must be given: what it is, for the error (`the VPC network the routes belong to`). */
  required?: string;
}

/** Options every target and source receives, besides its own (camelCased flag names). */
export interface CommonOptions {
  cluster: string;
  clusterCIDR?: string;
  /** Upper bound on tables (hosts) worked on at once. */
  parallel: number;
  env: NodeJS.ProcessEnv;
  /** Warnings for the operator (stderr; kept out of -o json). */
  warn: (message: string) => void;
  /** True when progress may be drawn (a TTY, not -o json). */
  interactive: boolean;
  /**
   * Cancels every call of the target built with these options: a long-running controller builds one
   * target per leadership term, and losing the lease aborts whatever that target still has in flight.
   */
  signal?: AbortSignal;
  /** Told of each API call the target makes, for metrics (calls by method and result, in flight, throttled). */
  calls?: CallObserver;
  /**
   * Where an API target's adaptive limit of operations in flight starts (default: its slow start from
   * INITIAL_IN_FLIGHT); never above --max-in-flight. The controller starts at the ceiling, as Kubernetes'
   * route controller runs its 200 at once: a join of 1,000 nodes is then 5 rounds of operations, not 9.
   */
  initialInFlight?: number;
}

/** What a target reports of its API calls: `started` returns the function that records the call's result. */
export interface CallObserver {
  /** `method` names the call as its API does (`routes.insert`, `CreateRoute`, `ip-batch`). */
  started(method: string): (result: string) => void;
  /** The API answered a call with a throttling error (it is retried). */
  throttled(): void;
}

export type ResolvedOptions = CommonOptions & Record<string, unknown>;

/** The flags' values (camelCased names) and the environment: what checks that span several flags see. */
export type FlagValues = { env: NodeJS.ProcessEnv } & Record<string, unknown>;

/** `--ssh-user` → `sshUser`: where commander keeps the flag's value. */
export function optionKey(spec: Pick<OptionSpec, "flags">): string {
  return new Option(spec.flags).attributeName();
}

/** `--ssh-user`. */
export function longFlag(spec: Pick<OptionSpec, "flags">): string {
  return new Option(spec.flags).long!;
}

function envNames(spec: OptionSpec): string[] {
  return spec.env === undefined ? [] : ([] as string[]).concat(spec.env);
}

function absent(value: unknown): boolean {
  return value === undefined || value === "" || (Array.isArray(value) && value.length === 0);
}

/**
 * The value of a declared option: the flag, else its environment variables, else its default; checked
 * against its choices and parsed. Values that are not text are taken as already parsed. Throws a
 * UsageError naming the flag; undefined when the flag is optional and absent.
 */
export function readOption<T>(spec: OptionSpec<T>, options: { env?: NodeJS.ProcessEnv; [key: string]: unknown }): T | undefined {
  const flag = longFlag(spec);
  let value = options[optionKey(spec)];
  if (absent(value)) value = envNames(spec).map((name) => options.env?.[name]).find((text) => !absent(text));
  if (absent(value)) value = spec.default;
  if (absent(value)) {
    if (spec.required === undefined) return undefined;
    const env = envNames(spec);
    throw new UsageError(`${flag} is required${env.length ? ` (or ${env.join(" or ")})` : ""}: ${spec.required}`, { flag });
  }
  const one = (item: unknown): unknown => {
    if (typeof item !== "string") return item;
    if (spec.choices && !spec.choices.includes(item)) {
      throw new UsageError(`${flag} ${JSON.stringify(item)}: must be one of ${spec.choices.join(", ")}`, { flag });
    }
    if (!spec.parse) return item;
    try {
      return spec.parse(item);
    } catch (error) {
      if (error instanceof UsageError) throw error; // already names the flag
      throw new UsageError(`${flag} ${JSON.stringify(item)}: ${(error as Error).message}`, { flag, cause: error });
    }
  };
  return (Array.isArray(value) ? value.map(one) : one(value)) as T;
}

/**
 * Every declared option read and checked at once: the values to use (parsed, defaults and environment
 * filled in), or one UsageError listing every bad flag.
 */
export function readOptions(specs: OptionSpec[], options: { env?: NodeJS.ProcessEnv; [key: string]: unknown }): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  const problems: UsageError[] = [];
  for (const spec of specs) {
    try {
      const value = readOption(spec, options);
      if (value !== undefined) values[optionKey(spec)] = value;
    } catch (error) {
      if (!(error instanceof UsageError)) throw error;
      problems.push(error);
    }
  }
  if (problems.length === 1) throw problems[0];
  if (problems.length) throw new UsageError(`${problems.length} bad flags:\n${problems.map((p) => `  ${p.message}`).join("\n")}`, { flag: problems[0]!.flag });
  return values;
}

/** The values of a repeatable option (`--route-table <id...>`), checked as readOption does. */
export function readOptionList<T>(spec: OptionSpec<T>, options: { env?: NodeJS.ProcessEnv; [key: string]: unknown }): T[] {
  const value = readOption(spec, options) as T | T[] | undefined;
  return value === undefined ? [] : ([] as T[]).concat(value);
}

/**
 * Reads an option that `owner` (`--target aws`) cannot do without, though the flag may be optional
 * elsewhere, or throws a UsageError that names the flag and says why, as unstorage's drivers do.
 */
export function requireOption<T>(owner: string, options: Record<string, unknown>, key: string, flag: string, why: string): T {
  const value = options[key];
  if (absent(value)) throw new UsageError(`${flag} is required by ${owner}: ${why}`, { flag });
  return value as T;
}

/** A whole number within bounds: `--parallel`, `--priority`, `--proto`. */
export function wholeNumber(min: number, max: number): (text: string) => number {
  return (text) => {
    const value = Number(text);
    if (!/^\d+$/.test(text) || value < min || value > max) throw new Error(`must be a whole number from ${min} to ${max}`);
    return value;
  };
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A duration as Kubernetes and Go spell it (`30s`, `5m`, `1h30m`, `500ms`), in milliseconds, within
 * bounds: `--resync`.
 */
export function duration(minMs: number, maxMs: number): (text: string) => number {
  const spell = (ms: number) => (ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);
  return (text) => {
    if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(text)) throw new Error("must be a duration such as 30s, 10m or 1h30m");
    let total = 0;
    for (const [, amount, , unit] of text.matchAll(/(\d+(\.\d+)?)(ms|s|m|h)/g)) total += Number(amount) * DURATION_UNITS[unit!]!;
    if (total < minMs || total > maxMs) throw new Error(`must be from ${spell(minMs)} to ${spell(maxMs)}`);
    return Math.round(total);
  };
}

/** An http(s) URL: API endpoints. */
export function httpUrl(text: string): string {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (!url || !/^https?:$/.test(url.protocol)) throw new Error("must be an http(s) URL");
  return text;
}
