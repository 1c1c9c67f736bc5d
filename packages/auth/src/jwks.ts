import { readResponseWithin } from '@mcp-auth-stack/mcp-hono';
import {
  type CryptoKey,
  createLocalJWKSet,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWSHeaderParameters,
} from 'jose';
import { AuthUnavailableError } from './auth-provider.ts';

export interface RemoteKeySetOptions {
  /**
   * Least time between two refetches caused by unknown `kid`s (default 30 s). Other fetches
   * (readiness checks, background refreshes) do not count: they must not keep a rotated key out.
   */
  cooldownMs?: number;
  /** Age after which the keys are refreshed in the background while still in use (default 10 min). */
  maxAgeMs?: number;
  /** Time limit of one fetch (default 5 s). */
  timeoutMs?: number;
  /** Largest JWKS document accepted, in bytes (default 256 KiB). */
  maxBytes?: number;
}

/**
 * The identity provider's signing keys (a JWKS at `url`), fetched once and kept.
 *
 * Unlike jose's `createRemoteJWKSet`, which blocks a request on a refetch once its cache is
 * old and fails every request while the JWKS endpoint is down, this one refreshes old keys in
 * the background and keeps verifying with the keys it has when a refresh fails. A token with
 * an unknown `kid` (key rotation) triggers one refetch, unless keys fetched since the token
 * arrived already lack it; further refetches for unknown `kid`s wait for the cool-down, so
 * random `kid`s cannot make the server hammer the identity provider. A refetch that fails is
 * `AuthUnavailableError` (503), not a verdict on the token.
 */
export class RemoteKeySet {
  readonly url: string;
  readonly #cooldownMs: number;
  readonly #maxAgeMs: number;
  readonly #timeoutMs: number;
  readonly #maxBytes: number;
  #keys: ReturnType<typeof createLocalJWKSet> | undefined;
  /** performance.now() when the fetch that brought the current keys began. */
  #fetchedAt = Number.NEGATIVE_INFINITY;
  /** performance.now() when the last fetch, whatever its cause and outcome, began. */
  #attemptedAt = Number.NEGATIVE_INFINITY;
  /** performance.now() when the last failed fetch began (fetches never overlap). */
  #failedAt = Number.NEGATIVE_INFINITY;
  /** performance.now() when the last refetch for an unknown `kid` began: the cool-down counts only these. */
  #unknownKidFetchAt = Number.NEGATIVE_INFINITY;
  #inFlight: Promise<void> | undefined;
  #fetches = 0;

  constructor(url: string | URL, options: RemoteKeySetOptions = {}) {
    this.url = new URL(url).href;
    this.#cooldownMs = options.cooldownMs ?? 30_000;
    this.#maxAgeMs = options.maxAgeMs ?? 600_000;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#maxBytes = options.maxBytes ?? MAX_UPSTREAM_ANSWER_BYTES;
  }

  /** How many times the JWKS was requested (for tests and metrics). */
  get fetchCount(): number {
    return this.#fetches;
  }

  /** A jose key resolver: pass it to `jwtVerify`. */
  readonly getKey = async (header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey> => {
    const arrived = performance.now();
    if (this.#keys === undefined) {
      // No keys yet: retry failures sooner than the cool-down, nothing works until this succeeds.
      if (arrived - this.#attemptedAt < Math.min(this.#cooldownMs, 5_000) && this.#inFlight === undefined) {
        throw new AuthUnavailableError('The signing keys are not available yet.');
      }
      await this.reload();
    } else if (arrived - this.#fetchedAt > this.#maxAgeMs && arrived - this.#attemptedAt > this.#cooldownMs) {
      this.reload().catch(() => {}); // background refresh; a failure keeps the current keys
    }
    try {
      return await this.#lookUp(header, token);
    } catch (error) {
      if (!isUnknownKey(error)) throw error;
      return await this.#unknownKid(header, token, error, arrived);
    }
  };

  /**
   * A token whose `kid` the keys lack: perhaps the keys were rotated after they were fetched.
   * Refetches once, unless keys fetched since the token arrived lack it too (then it stays
   * unknown: 401) or a refetch for an unknown `kid` began less than the cool-down ago. A failed
   * refetch leaves the token undecided: `AuthUnavailableError` (503 with Retry-After), not 401.
   */
  async #unknownKid(
    header: JWSHeaderParameters,
    token: FlattenedJWSInput,
    unknown: unknown,
    arrived: number,
  ): Promise<CryptoKey> {
    if (this.#inFlight !== undefined) {
      // A fetch under way (another token's refetch, a readiness check, a background refresh)
      // may bring the key: wait for it rather than refuse or fetch a second time.
      await this.#inFlight.catch(() => {});
      try {
        return await this.#lookUp(header, token);
      } catch (error) {
        if (!isUnknownKey(error)) throw error;
      }
    }
    if (this.#fetchedAt >= arrived) throw unknown; // keys fetched after the token arrived lack it
    if (performance.now() - this.#unknownKidFetchAt < this.#cooldownMs) {
      // No refetch now. If the last fetch failed, a refetch would fail too as far as is known:
      // whether the key exists cannot be told, so the token is undecided, not refused.
      if (this.#failedAt > this.#fetchedAt) {
        throw new AuthUnavailableError(`The signing keys at ${this.url} could not be refreshed.`);
      }
      throw unknown;
    }
    this.#unknownKidFetchAt = performance.now();
    await this.reload(); // rejects with AuthUnavailableError
    return await this.#lookUp(header, token);
  }

  async #lookUp(header: JWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey> {
    const keys = this.#keys;
    if (keys === undefined) throw new AuthUnavailableError('The signing keys are not available.');
    return keys(header, token);
  }

  /** Fetches the keys now (concurrent callers share one fetch); rejects with `AuthUnavailableError`. */
  reload(): Promise<void> {
    this.#inFlight ??= this.#fetch().finally(() => {
      this.#inFlight = undefined;
    });
    return this.#inFlight;
  }

  async #fetch(): Promise<void> {
    const started = performance.now();
    this.#attemptedAt = started;
    this.#fetches += 1;
    let jwks: JSONWebKeySet;
    try {
      jwks = parseKeySet(await fetchJson(this.url, this.#timeoutMs, this.#maxBytes));
    } catch (error) {
      this.#failedAt = started;
      throw new AuthUnavailableError(`The signing keys at ${this.url} could not be fetched.`, { cause: error });
    }
    this.#keys = createLocalJWKSet(jwks);
    this.#fetchedAt = started;
  }
}

function isUnknownKey(error: unknown): boolean {
  return (error as { code?: string } | null)?.code === 'ERR_JWKS_NO_MATCHING_KEY';
}

function parseKeySet(value: unknown): JSONWebKeySet {
  const keys = (value as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || !keys.every((key) => typeof key === 'object' && key !== null)) {
    throw new Error('not a JSON Web Key Set');
  }
  return { keys: keys as JSONWebKeySet['keys'] };
}

/**
 * The most read of an answer from an identity provider (metadata, keys, registrations, tokens,
 * user info): a few KB each, so a quarter MB leaves room for large tokens and key sets, and bounds
 * what a misconfigured or hostile upstream can make a server hold.
 */
export const MAX_UPSTREAM_ANSWER_BYTES = 256 * 1024;

/**
 * GETs a JSON document with a time limit and a size limit, without following redirects (an
 * identity provider serves its metadata and keys where it says it does).
 */
export async function fetchJson(
  url: string,
  timeoutMs: number,
  maxBytes = MAX_UPSTREAM_ANSWER_BYTES,
): Promise<unknown> {
  const response = await fetch(url, {
    headers: { accept: 'application/json' },
    redirect: 'error',
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!response.ok) {
    await response.body?.cancel();
    throw new Error(`HTTP ${response.status} from ${url}`);
  }
  return parseJsonAnswer(await readAnswer(response, `the response from ${url}`, maxBytes), `the response from ${url}`);
}

/**
 * An answer's JSON, or an error naming only `what`: JSON.parse's own message quotes the text,
 * and answers hold access tokens, client secrets and people's names.
 */
export function parseJsonAnswer(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what}: the answer is not JSON`);
  }
}

/**
 * An answer's text, read as a stream up to `maxBytes` (a body without Content-Length is not held
 * whole first); past it the rest is cancelled and this throws, naming `what`.
 */
export async function readAnswer(
  response: Response,
  what: string,
  maxBytes = MAX_UPSTREAM_ANSWER_BYTES,
): Promise<string> {
  const text = await readResponseWithin(response, maxBytes);
  if (text === undefined) throw new Error(`${what} is larger than ${maxBytes} bytes`);
  return text;
}
