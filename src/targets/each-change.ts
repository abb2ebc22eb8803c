/**
 * The write loop of API targets that make one call per change (GCP, AWS): changes run with a bounded
 * number in flight, each becomes a ChangeResult (never an exception), and progress is reported as each
 * one finishes. Lives once so every such target reports partial failure the same way.
 */
import pLimit from "p-limit";
import type { Change, ChangeResult, Progress } from "./target.js";

export async function writeEachChange(
  changes: Change[],
  options: { table: string; inFlight: number; progress: Progress; errorText: (error: unknown) => string },
  /** Carries out one change; returns why it was not attempted, or throws the API's error. */
  writeOne: (change: Change) => Promise<string | undefined>,
): Promise<ChangeResult[]> {
  const limit = pLimit(Math.max(1, options.inFlight));
  let done = 0;
  return Promise.all(
    changes.map((change) =>
      limit(async (): Promise<ChangeResult> => {
        try {
          const error = await writeOne(change);
          return error === undefined ? { change, ok: true } : { change, ok: false, error };
        } catch (error) {
          return { change, ok: false, error: options.errorText(error) };
        } finally {
          options.progress({ table: options.table, done: ++done, total: changes.length });
        }
      }),
    ),
  );
}
