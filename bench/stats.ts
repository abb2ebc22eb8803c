/** Order statistics for the benchmarks' figures. */

/** The item at the middle of `items` ordered by `by` (the upper one of an even count). */
export function medianBy<T>(items: readonly T[], by: (item: T) => number): T {
  return [...items].sort((a, b) => by(a) - by(b))[Math.floor(items.length / 2)]!;
}

export function median(values: readonly number[]): number {
  return medianBy(values, (value) => value);
}

/** The nearest-rank percentile: the smallest value with at least p % of the values at or below it. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}
