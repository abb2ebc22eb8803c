/**
 * A map from a key to a set of values that keeps a key's lone value as itself, not in a Set of one.
 * Indexes of nodes hold one value per key almost always (one node per name, per internal IP, per pod
 * range), and at 5,000 nodes a Set per key was about 150 bytes each, several per node, in a process
 * whose memory is a goal (issue 9). Libraries' multimaps (mnemonist's) always box values in an array
 * or a Set, which is the cost this avoids. Values must not themselves be Sets. Pure.
 */
export class MultiMap<K, V> {
  private readonly map = new Map<K, V | Set<V>>();

  /** Adds `value` under `key` (a value already there is not added twice). */
  add(key: K, value: V): void {
    const held = this.map.get(key);
    if (held === undefined) this.map.set(key, value);
    else if (held instanceof Set) held.add(value);
    else if (held !== value) this.map.set(key, new Set([held, value]));
  }

  /** Removes `value` from `key`; the key goes when its last value does. */
  delete(key: K, value: V): void {
    const held = this.map.get(key);
    if (held === undefined) return;
    if (!(held instanceof Set)) {
      if (held === value) this.map.delete(key);
      return;
    }
    held.delete(value);
    if (held.size === 1) this.map.set(key, held.values().next().value as V);
  }

  /** The values under `key`, in the order they were added; none when it has none. */
  get(key: K): Iterable<V> {
    return valuesOf(this.map.get(key));
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  /** Keys with at least one value. */
  get size(): number {
    return this.map.size;
  }

  /** Every key with its values. */
  *entries(): Generator<[K, Iterable<V>]> {
    for (const [key, held] of this.map) yield [key, valuesOf(held)];
  }

  /** Every value under every key, a value under two keys twice. */
  *values(): Generator<V> {
    for (const held of this.map.values()) yield* valuesOf(held);
  }
}

const none: readonly never[] = [];

function valuesOf<V>(held: V | Set<V> | undefined): Iterable<V> {
  if (held === undefined) return none;
  return held instanceof Set ? held : [held];
}
