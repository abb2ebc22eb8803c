/**
 * Error kinds as types. Every error podroutes raises on purpose says what kind of failure it is; the CLI
 * turns a kind into an exit code in one place (`cli/exit-codes.ts`), a long-running process into a metric
 * label. Nothing matches error messages by prefix.
 *
 *   usage   a bad flag value or a missing required flag: nothing was changed (exit 3)
 *   input   bad input data (a node file, a Node object): nothing was changed (exit 3)
 *   target  a target failed as a whole: unreachable, auth, a table that cannot be read (exit 1)
 *   busy    another podroutes run holds the lock on a table and did not let go in time (exit 1)
 */
export type ErrorKind = "usage" | "input" | "target" | "busy";

export abstract class PodroutesError extends Error {
  abstract readonly kind: ErrorKind;
}

/** A flag is missing or its value is wrong. The message names the flag and the value. */
export class UsageError extends PodroutesError {
  readonly kind = "usage" as const;
  constructor(
    message: string,
    options?: { flag?: string; cause?: unknown },
  ) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = "UsageError";
    this.flag = options?.flag;
  }
  /** The flag at fault, `--proto`. */
  readonly flag: string | undefined;
}

/**
 * Another podroutes run holds the lock on a table (a network namespace) and did not let go within
 * --lock-timeout. Nothing was changed on that table.
 */
export class BusyError extends PodroutesError {
  readonly kind = "busy" as const;
  constructor(message: string) {
    super(message);
    this.name = "BusyError";
  }
}

/** The kind of any thrown value: ours say it; anything else is an unexpected failure of a target or of podroutes. */
export function kindOf(error: unknown): ErrorKind | "unexpected" {
  return error instanceof PodroutesError ? error.kind : "unexpected";
}
