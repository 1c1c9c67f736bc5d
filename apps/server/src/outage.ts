import { errorFields, type Logger } from './logger.ts';

/**
 * The state of one dependency (the database, the identity provider) as the requests see it,
 * logged on each change only: an outage is one error line with its cause when it starts and
 * one line with how many requests it failed when it ends, not one line per failed request.
 */
export class DependencyState {
  readonly #logger: Logger;
  readonly #name: string;
  #downSince: number | undefined;
  #failures = 0;

  constructor(logger: Logger, name: string) {
    this.#logger = logger;
    this.#name = name;
  }

  get up(): boolean {
    return this.#downSince === undefined;
  }

  /** A request failed because the dependency did not answer; `where` says what was tried. */
  failed(where: string, error: unknown): void {
    this.#failures += 1;
    if (this.#downSince !== undefined) return;
    this.#downSince = performance.now();
    this.#failures = 1;
    // errorFields gives the driver's message and code: hosts and ports, never credentials.
    this.#logger.error(`${this.#name} unavailable`, { where, ...causeFields(error) });
  }

  /** Something reached the dependency and got an answer. */
  succeeded(): void {
    if (this.#downSince === undefined) return;
    this.#logger.warn(`${this.#name} available again`, {
      down_ms: Math.round(performance.now() - this.#downSince),
      failed_requests: this.#failures,
    });
    this.#downSince = undefined;
    this.#failures = 0;
  }
}

/** The message, code and cause of a driver's error, without its stack (one line that says why). */
function causeFields(error: unknown): Record<string, unknown> {
  const { stack: _stack, ...fields } = errorFields(error);
  const code = (error as { code?: unknown } | null)?.code;
  const cause = (error as { cause?: unknown } | null)?.cause;
  return {
    ...fields,
    ...(typeof code === 'string' ? { code } : {}),
    ...(cause instanceof Error ? { cause: cause.message } : {}),
  };
}

/** Settles like `promise`, or rejects with a timeout error after `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
