/**
 * Runs work one call at a time per key, in arrival order; a waiting call holds nothing but its
 * place. For the refreshes of one grant: the grant's row lock decides between replicas, but a
 * call waiting there holds a pool connection, and a refresh may wait seconds for the upstream
 * between its transactions; in line here, one client's parallel refreshes call the upstream once.
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
