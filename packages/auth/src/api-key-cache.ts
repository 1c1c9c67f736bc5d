import type pg from 'pg';
import { API_KEYS_CHANNEL, type ApiKeyRecord, hashApiKey } from './api-keys.ts';
import { VerifiedTokenCache } from './token-cache.ts';

export type VerifiedApiKey = Pick<ApiKeyRecord, 'id' | 'userId' | 'scopes'>;

/** What the cache needs of the key store (ApiKeyStore). */
export interface ApiKeyVerifier {
  verify(secret: string): Promise<VerifiedApiKey | undefined>;
  recordUse(id: string): void;
}

export interface ApiKeyCacheOptions {
  store: ApiKeyVerifier;
  /** A new, unconnected client for the listening session (`Database.dedicatedClient`). */
  newClient: () => pg.Client;
  /**
   * The bound on revocation: a key revoked (committed) at time R is refused by every request
   * this process receives at R + maxStalenessMs or later. Default 1000 ms.
   */
  maxStalenessMs?: number;
  /** Longest an entry lives whatever happens (default 5 minutes). */
  ttlMs?: number;
  maxEntries?: number;
  /** Longest pause between attempts to reconnect the listener (default 5000 ms). */
  maxReconnectDelayMs?: number;
  onEvent?: (event: 'listening' | 'listener_lost', details: Record<string, unknown>) => void;
}

/**
 * Keeps verified API keys in the process, so a request with a known key costs a hash and a map
 * lookup instead of a database round trip, while a revocation by any process (another replica,
 * `pnpm keys revoke`, an UPDATE in psql) still applies within `maxStalenessMs`.
 *
 * How the bound holds: the api_keys trigger NOTIFYs every change that can withdraw a key; this
 * cache LISTENs on a connection of its own and empties itself on each notification. PostgreSQL
 * delivers the notifications of transactions committed before a command on that connection
 * ahead of the command's reply, so a heartbeat (`SELECT 1`) sent at time H and answered proves
 * that every revocation committed before H has been applied here. Entries are served only while
 * the last answered heartbeat was sent less than `maxStalenessMs` ago (heartbeats go every
 * quarter of it); otherwise — listener down, reconnecting, slow or stalled — every request goes
 * to the database, as without a cache. A lookup that was in flight when a notification came is
 * not stored (generation count), so it cannot bring back a key that was just revoked.
 * Unknown keys are never cached. Entries are keyed by the key's SHA-256, not the key itself.
 */
export class ApiKeyCache {
  readonly #store: ApiKeyVerifier;
  readonly #newClient: () => pg.Client;
  readonly #maxStalenessMs: number;
  readonly #ttlMs: number;
  readonly #maxReconnectDelayMs: number;
  readonly #onEvent: NonNullable<ApiKeyCacheOptions['onEvent']>;
  readonly #entries: VerifiedTokenCache<VerifiedApiKey>;
  #generation = 0;
  /** performance.now() when the last answered heartbeat was sent. */
  #confirmedAt = Number.NEGATIVE_INFINITY;
  #client: pg.Client | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #reconnect: NodeJS.Timeout | undefined;
  #reconnectDelayMs = 0;
  #closed = false;
  #hits = 0;
  #misses = 0;

  constructor(options: ApiKeyCacheOptions) {
    this.#store = options.store;
    this.#newClient = options.newClient;
    this.#maxStalenessMs = options.maxStalenessMs ?? 1_000;
    this.#ttlMs = options.ttlMs ?? 5 * 60_000;
    this.#maxReconnectDelayMs = options.maxReconnectDelayMs ?? 5_000;
    this.#onEvent = options.onEvent ?? (() => {});
    this.#entries = new VerifiedTokenCache({ maxEntries: options.maxEntries ?? 10_000 });
  }

  /** Connects the listener; resolves once it listens or has failed once (then retries in the background). */
  start(): Promise<void> {
    return this.#connect();
  }

  /** Whether entries may be served now (the listener is connected and recently confirmed). */
  get serving(): boolean {
    return performance.now() - this.#confirmedAt < this.#maxStalenessMs;
  }

  /** Requests answered from memory and from the database since start (for tests and diagnostics). */
  get stats(): { hits: number; misses: number; entries: number } {
    return { hits: this.#hits, misses: this.#misses, entries: this.#entries.size };
  }

  async verify(secret: string): Promise<VerifiedApiKey | undefined> {
    const id = hashApiKey(secret).toString('base64');
    if (this.serving) {
      const cached = this.#entries.get(id);
      if (cached) {
        this.#hits++;
        this.#store.recordUse(cached.id);
        return cached;
      }
    }
    this.#misses++;
    const generation = this.#generation;
    const key = await this.#store.verify(secret);
    if (key && generation === this.#generation && this.serving) {
      // One record serves every request with this key until it expires: its principal's scopes
      // are this very array, handed to tools, so nobody may change it.
      Object.freeze(key.scopes);
      this.#entries.set(id, Object.freeze(key), Date.now() + this.#ttlMs);
    }
    return key;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#heartbeat);
    clearTimeout(this.#reconnect);
    this.#forget();
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
  }

  /** Drops every entry (a key changed; revocations are rare enough not to track which). */
  #invalidate(): void {
    this.#generation++;
    this.#entries.clear();
  }

  /** Drops every entry and stops serving until the next answered heartbeat. */
  #forget(): void {
    this.#invalidate();
    this.#confirmedAt = Number.NEGATIVE_INFINITY;
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    const client = this.#newClient();
    this.#client = client;
    let lost = false;
    const onLost = (error?: Error) => {
      if (lost) return;
      lost = true;
      if (this.#client === client) this.#client = undefined;
      clearTimeout(this.#heartbeat);
      this.#forget();
      client.end().catch(() => {});
      if (this.#closed) return;
      this.#reconnectDelayMs = Math.min(Math.max(this.#reconnectDelayMs * 2, 250), this.#maxReconnectDelayMs);
      this.#onEvent('listener_lost', { message: error?.message, retry_in_ms: this.#reconnectDelayMs });
      this.#reconnect = setTimeout(() => void this.#connect(), this.#reconnectDelayMs);
      this.#reconnect.unref();
    };
    client.on('error', onLost);
    client.on('end', () => onLost(new Error('the listening connection closed')));
    client.on('notification', (message) => {
      if (message.channel === API_KEYS_CHANNEL) this.#invalidate();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${API_KEYS_CHANNEL}`);
    } catch (error) {
      onLost(error as Error);
      return;
    }
    if (lost || this.#closed) return;
    // Whatever was announced while no one listened is unknown: start empty.
    this.#forget();
    this.#reconnectDelayMs = 0;
    this.#onEvent('listening', { max_staleness_ms: this.#maxStalenessMs });
    await this.#beat(client, onLost);
  }

  async #beat(client: pg.Client, onLost: (error?: Error) => void): Promise<void> {
    const sent = performance.now();
    try {
      await client.query({ text: 'SELECT 1', query_timeout: this.#maxStalenessMs * 2 } as pg.QueryConfig);
    } catch (error) {
      onLost(error as Error);
      return;
    }
    if (this.#client !== client || this.#closed) return;
    this.#confirmedAt = sent;
    this.#heartbeat = setTimeout(() => void this.#beat(client, onLost), this.#maxStalenessMs / 4);
    this.#heartbeat.unref();
  }
}
