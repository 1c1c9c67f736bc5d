import type pg from 'pg';
import { API_KEYS_CHANNEL, hashApiKey, type VerifiedKey } from './api-keys.ts';
import { VerifiedTokenCache } from './token-cache.ts';

export type VerifiedApiKey = VerifiedKey;

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
  /**
   * `listening`; `listener_lost` (retried with backoff); `listener_refused`, once: the connection
   * goes through a pooler, and the cache stays off for the life of the process.
   */
  onEvent?: (event: 'listening' | 'listener_lost' | 'listener_refused', details: Record<string, unknown>) => void;
}

/**
 * Keeps verified API keys in the process, so a request with a known key costs a hash and a map
 * lookup instead of a database round trip, while a revocation by any process (another replica,
 * `pnpm keys revoke`, an UPDATE in psql) still applies within `maxStalenessMs`.
 *
 * How the bound holds: the api_keys trigger NOTIFYs every change that can withdraw a key; this
 * cache LISTENs on a connection of its own and empties itself on each notification. PostgreSQL
 * delivers the notifications of transactions committed before a command on that connection
 * ahead of the command's reply, so a heartbeat sent at time H and answered proves that every
 * revocation committed before H has been applied here — provided the connection is a server
 * session of its own that still listens. So the listener refuses a connection through a pooler
 * (its cancel key's process id is not `pg_backend_pid()`: see #checkDirect), and a heartbeat
 * counts only if the session still listens on the channel (`pg_listening_channels()`); either
 * failure counts as a lost listener. Entries are served only while the last answered heartbeat
 * was sent less than `maxStalenessMs` ago (heartbeats go every quarter of it); otherwise —
 * listener down, reconnecting, slow, stalled, not listening or behind a pooler — every request
 * goes to the database, as without a cache. A lookup that was in flight when a notification
 * came is not stored (generation count), so it cannot bring back a key that was just revoked.
 * Unknown keys are never cached. Entries are keyed by the key's SHA-256, not the key itself.
 */
/** The listening connection reaches PostgreSQL through a pooler (see `ApiKeyCache#checkDirect`). */
class NotADirectConnectionError extends Error {
  constructor() {
    super(
      'the listening connection does not lead straight to PostgreSQL (a connection pooler?): LISTEN needs a direct connection, so keys are looked up in the database on every request',
    );
  }
}

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
    // Before the lookup: the database measures the time left while it answers, so the answer's
    // travel time must not be added to it.
    const askedAt = Date.now();
    const key = await this.#store.verify(secret);
    if (key && generation === this.#generation && this.serving) {
      // One record serves every request with this key until it expires: its principal's scopes
      // are this very array, handed to tools, so nobody may change it.
      Object.freeze(key.scopes);
      // Not served past the key's own expiry (measured by the database: the clocks may differ).
      this.#entries.set(id, Object.freeze(key), askedAt + Math.min(this.#ttlMs, key.expiresInMs ?? Infinity));
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
      await this.#checkDirect(client);
    } catch (error) {
      if (error instanceof NotADirectConnectionError) {
        // Not a moment's trouble: the database is reached through a pooler, and will be at the
        // next try too. Said once; the cache stays off (every key looked up in the database).
        lost = true;
        this.#client = undefined;
        client.end().catch(() => {});
        this.#onEvent('listener_refused', { message: error.message });
        return;
      }
      onLost(error as Error);
      return;
    }
    if (lost || this.#closed) return;
    // Whatever was announced while no one listened is unknown: start empty.
    this.#forget();
    this.#onEvent('listening', { max_staleness_ms: this.#maxStalenessMs });
    await this.#beat(client, onLost);
  }

  /**
   * Throws unless the connection leads straight to the server process that answers it. A
   * connection pooler (PgBouncer, Azure's built-in one on port 6432, RDS Proxy) answers the
   * startup with a cancel key of its own, whose process id is not the server's. Behind one in
   * transaction mode, LISTEN holds on one server session that the pooler hands to other clients
   * between transactions, and notifications that session receives while it is not lent to this
   * connection are dropped (PgBouncer: "got packet 'A' from server when not linked"), while
   * heartbeats are still answered, even by that very session: only this check sees it.
   */
  async #checkDirect(client: pg.Client): Promise<void> {
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    // node-pg keeps the BackendKeyData's process id as `processID` (it cancels queries with it).
    const announced = (client as unknown as { processID?: unknown }).processID;
    if (rows[0]?.pid !== announced) throw new NotADirectConnectionError();
  }

  /**
   * Sends one heartbeat and, once answered, schedules the next. It counts only if the session
   * still listens on the channel (an UNLISTEN, a `DISCARD ALL` would end that silently).
   */
  async #beat(client: pg.Client, onLost: (error?: Error) => void): Promise<void> {
    const sent = performance.now();
    let listening: boolean | undefined;
    try {
      const { rows } = await client.query<{ listening: boolean }>({
        // pg_listening_channels() is a set, not an array: IN, not = ANY.
        text: 'SELECT $1 IN (SELECT pg_listening_channels()) AS listening',
        values: [API_KEYS_CHANNEL],
        query_timeout: this.#maxStalenessMs * 2,
      } as pg.QueryConfig);
      listening = rows[0]?.listening;
    } catch (error) {
      onLost(error as Error);
      return;
    }
    if (listening !== true) {
      onLost(new Error(`the listening session no longer listens on ${API_KEYS_CHANNEL}`));
      return;
    }
    if (this.#client !== client || this.#closed) return;
    this.#confirmedAt = sent;
    // Reset only now: a listener that connects but never proves itself backs off.
    this.#reconnectDelayMs = 0;
    this.#heartbeat = setTimeout(() => void this.#beat(client, onLost), this.#maxStalenessMs / 4);
    this.#heartbeat.unref();
  }
}
