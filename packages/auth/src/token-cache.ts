/**
 * Remembers verified tokens so a client's second request costs a map lookup instead of a
 * signature verification. Keyed by the exact token string: a JWT cannot change without
 * changing its string, so a hit is the same token that was verified. Bounded (least recently
 * used entries leave first) and time-limited: an entry is never returned at or after its
 * expiry, which the caller sets no later than the token's `exp`.
 */
export class VerifiedTokenCache<T> {
  readonly #entries = new Map<string, { value: T; expiresAt: number }>();
  readonly #maxEntries: number;
  readonly #now: () => number;

  constructor(options: { maxEntries: number; now?: () => number }) {
    if (!Number.isInteger(options.maxEntries) || options.maxEntries < 1) {
      throw new Error('VerifiedTokenCache needs maxEntries of at least 1.');
    }
    this.#maxEntries = options.maxEntries;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(token: string): T | undefined {
    const entry = this.#entries.get(token);
    if (entry === undefined) return undefined;
    this.#entries.delete(token);
    if (entry.expiresAt <= this.#now()) return undefined;
    // Re-inserting moves the entry to the end of the Map's order: the LRU position.
    this.#entries.set(token, entry);
    return entry.value;
  }

  /** Stores a value until `expiresAt` (epoch milliseconds); values already expired are not stored. */
  set(token: string, value: T, expiresAt: number): void {
    if (!(expiresAt > this.#now())) return;
    this.#entries.delete(token);
    this.#entries.set(token, { value, expiresAt });
    if (this.#entries.size > this.#maxEntries) {
      // The Map's first key is the least recently used one.
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
  }

  clear(): void {
    this.#entries.clear();
  }
}
