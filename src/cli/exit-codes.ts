/**
 * The exit codes the README and docs/commands.md document, and the one place an error's kind becomes one:
 *   0 success / no changes · 1 failure (a change or a check failed, a target unreachable, busy)
 *   2 changes pending (plan --detailed-exitcode) · 3 bad input or usage (nothing was changed)
 */
import { CommanderError } from "commander";
import { kindOf, type ErrorKind } from "../errors.js";

export const EXIT = { ok: 0, failed: 1, changes: 2, badInput: 3 } as const;

const BY_KIND: Record<ErrorKind | "unexpected", number> = {
  usage: EXIT.badInput,
  input: EXIT.badInput,
  target: EXIT.failed,
  busy: EXIT.failed,
  unexpected: EXIT.failed,
};

/**
 * The exit code for a thrown value: by its kind; commander's errors are usage errors (or the help that
 * was asked for); anything else is an unexpected failure.
 */
export function exitCodeOf(error: unknown): number {
  if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : EXIT.badInput;
  return BY_KIND[kindOf(error)];
}

/** Whether a failure of this kind is known to have changed nothing (it was found before any change). */
export function changedNothing(error: unknown): boolean {
  return exitCodeOf(error) === EXIT.badInput;
}
