/**
 * Runs work one call at a time per key, in arrival order; a waiting call holds nothing but its
 * place. For the refreshes of one grant: the database serializes them anyway (the grant's row
 * lock), but a call waiting there holds a pool connection, and one refresh may wait seconds for
 * the upstream, so a burst of refreshes of one grant would take every connection of the pool.
 */
export class OneAtATime {
  readonly #tails = new Map<string, Promise<void>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    const result = previous.then(work);
    const tail = result.then(
      () => {},
      () => {},
    );
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }

  /** Keys with work running or waiting (tests, metrics). */
  get size(): number {
    return this.#tails.size;
  }
}
