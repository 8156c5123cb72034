import { createHash } from 'node:crypto';

/**
 * A seeded random number generator for templates. The same seed always
 * gives the same numbers, so a repeated task prints the same pages.
 * Algorithm: mulberry32 over a 32-bit state taken from a SHA-256 of the seed.
 */
export class SeededRandom {
  private state: number;

  constructor(seed: string) {
    this.state = createHash('sha256').update(seed).digest().readUInt32LE(0);
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) | 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  }

  /** A whole number from `min` to `max`, both included. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** `count` distinct whole numbers from `min` to `max`, in random order. */
  sample(min: number, max: number, count: number): number[] {
    const span = max - min + 1;
    if (count > span) {
      throw new RangeError(
        `cannot pick ${count} distinct numbers from ${min} to ${max}`,
      );
    }
    const picked = new Set<number>();
    while (picked.size < count) picked.add(this.int(min, max));
    return [...picked];
  }

  /** A shuffled copy of a list. */
  shuffle<T>(items: readonly T[]): T[] {
    const copy = [...items];
    for (let i = copy.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
    }
    return copy;
  }

  /** One item of a list. */
  choice<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)] as T;
  }
}
