import { createHash, randomBytes } from 'node:crypto';
import type { Migration } from '@mcp-auth-stack/database';
import type pg from 'pg';
import { lookAlikeIdProblem, misleadingTextProblem } from './plain-text.ts';

/**
 * API keys: 256 random bits behind a recognisable prefix (so secret scanners can find a
 * leaked one). Only the SHA-256 of a key is stored. A slow password hash buys nothing for
 * a random 256-bit secret and would cost a hash per request.
 */
export const API_KEY_PREFIX = 'mcpk_';
const KEY_PATTERN = /^mcpk_[A-Za-z0-9_-]{43}$/;

export interface ApiKeyRecord {
  id: string;
  userId: string;
  name: string | null;
  scopes: string[];
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
  /** When the key stops working by itself; null: when it is revoked. */
  expiresAt: string | null;
  /** Whether that time has passed, by the database's clock. */
  expired: boolean;
}

export interface CreatedApiKey {
  record: ApiKeyRecord;
  /** The key itself: shown to its owner once, stored nowhere. */
  secret: string;
}

export const API_KEYS_NAMESPACE = 'api_keys';

/**
 * A key that works now: whose it is, what it may do, and for how long still (milliseconds, by
 * the database's clock, which decides; null: until revoked).
 */
export interface VerifiedKey extends Pick<ApiKeyRecord, 'id' | 'userId' | 'scopes'> {
  expiresInMs: number | null;
}

export const apiKeyMigrations: Migration[] = [
  {
    version: 1,
    name: 'create api_keys',
    sql: `
      CREATE TABLE api_keys (
        id text PRIMARY KEY,
        user_id text NOT NULL CHECK (char_length(user_id) BETWEEN 1 AND 255),
        name text CHECK (char_length(name) <= 100),
        scopes text[] NOT NULL DEFAULT '{}',
        secret_sha256 bytea NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz,
        revoked_at timestamptz
      );
      CREATE INDEX api_keys_user_idx ON api_keys (user_id);
    `,
  },
  {
    // Every change that can withdraw a key (revocation, deletion, new scopes or owner) is
    // announced on API_KEYS_CHANNEL with the key's id, in the same transaction: processes that
    // cache verified keys (ApiKeyCache) drop it. A trigger, so a revocation by hand in psql is
    // announced too; `last_used_at` bookkeeping is not a column it watches.
    version: 2,
    name: 'notify api_keys changes',
    sql: `
      CREATE FUNCTION api_keys_notify_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
      BEGIN
        PERFORM pg_notify('api_keys_changed', OLD.id);
        RETURN NULL;
      END
      $fn$;
      CREATE TRIGGER api_keys_changed
        AFTER UPDATE OF revoked_at, scopes, user_id, secret_sha256 OR DELETE ON api_keys
        FOR EACH ROW EXECUTE FUNCTION api_keys_notify_change();
    `,
  },
  {
    // TRUNCATE fires no row trigger: announced as one statement (payload '*'), so keys removed
    // that way are withdrawn from every cache too.
    version: 3,
    name: 'notify api_keys truncation',
    sql: `
      CREATE FUNCTION api_keys_notify_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$
      BEGIN
        PERFORM pg_notify('api_keys_changed', '*');
        RETURN NULL;
      END
      $fn$;
      CREATE TRIGGER api_keys_truncated
        AFTER TRUNCATE ON api_keys
        FOR EACH STATEMENT EXECUTE FUNCTION api_keys_notify_truncate();
    `,
  },
  {
    // A key may be made to expire (`pnpm keys create --expires-in`). A change of it by hand
    // (psql) is announced like a revocation, so that caches drop the key.
    version: 4,
    name: 'api_keys expiry',
    sql: `
      ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
      DROP TRIGGER api_keys_changed ON api_keys;
      CREATE TRIGGER api_keys_changed
        AFTER UPDATE OF revoked_at, scopes, user_id, secret_sha256, expires_at OR DELETE ON api_keys
        FOR EACH ROW EXECUTE FUNCTION api_keys_notify_change();
    `,
  },
];

/** Longest lifetime a key can be given: ten years. */
export const MAX_API_KEY_LIFETIME_SECONDS = 10 * 366 * 86_400;

/** The NOTIFY channel of key changes (migrations 2 and 3); the payload is the key's id, or `*` for all. */
export const API_KEYS_CHANNEL = 'api_keys_changed';

export function hashApiKey(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

/** True for strings shaped like a key; anything else is rejected without a database lookup. */
export function looksLikeApiKey(value: string): boolean {
  return KEY_PATTERN.test(value);
}

/**
 * Whether a word (no white space) could be a key or a good part of one, for messages that must
 * never show one: the prefix in any case (`mcpk`), or a run of a key's characters with upper and
 * lower case letters, of 20 with a digit among them or of 32 without (a key's random part is 43
 * of them; 20 random ones lack a digit 3 times in 100, and a case 6 in 100,000). Hides more than
 * keys on purpose (a long mixed-case name), never a UUID, a key id or a hex digest. Linear.
 */
export function couldBeAKey(word: string): boolean {
  if (/mcpk/i.test(word)) return true;
  for (const run of word.split(/[^A-Za-z0-9_-]+/)) {
    if (run.length < 20 || !/[A-Z]/.test(run) || !/[a-z]/.test(run)) continue;
    if (run.length >= 32 || /[0-9]/.test(run)) return true;
  }
  return false;
}

/**
 * Whether text holds a key as keys are printed and pasted: with its prefix (in any case), or
 * a word that is a key's random part (43 key characters, with upper and lower case letters and
 * a digit). Narrower than `couldBeAKey`: for text that is stored, where a refusal must not meet
 * a real name.
 */
export function holdsAKey(text: string): boolean {
  if (/mcpk[_-]/i.test(text)) return true;
  return text
    .split(/\s+/)
    .some((word) => /^[A-Za-z0-9_-]{43}$/.test(word) && /[A-Z]/.test(word) && /[a-z]/.test(word) && /[0-9]/.test(word));
}

const RECORD_COLUMNS = `id, user_id AS "userId", name, scopes,
  to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "createdAt",
  to_char(last_used_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "lastUsedAt",
  to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "revokedAt",
  to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "expiresAt",
  coalesce(expires_at <= now(), false) AS expired`;

/** A key that works: not revoked, not expired. */
const USABLE = 'revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())';

const SCOPE_PATTERN = /^[\x21\x23-\x5B\x5D-\x7E]{1,100}$/; // RFC 6749 scope-token

/** A key that cannot be made as asked (its user id, name, scopes or lifetime): the caller's to fix. */
export class ApiKeyInputError extends Error {
  override name = 'ApiKeyInputError';
}

export class ApiKeyStore {
  readonly #pool: pg.Pool;
  /** When each key's `last_used_at` was last written, so a busy key is written at most once a minute. */
  readonly #lastTouched = new Map<string, number>();
  readonly #touchIntervalMs: number;

  constructor(pool: pg.Pool, options: { touchIntervalMs?: number } = {}) {
    this.#pool = pool;
    this.#touchIntervalMs = options.touchIntervalMs ?? 60_000;
  }

  /**
   * A new key for `userId`. `expiresInSeconds`: it stops working that long from now (whole
   * seconds, up to ten years); without it, it works until revoked.
   */
  async create(input: {
    userId: string;
    name?: string | undefined;
    scopes?: string[];
    expiresInSeconds?: number | undefined;
  }): Promise<CreatedApiKey> {
    // `josé` typed with a combining accent would be a second user that `pnpm keys list` shows
    // as the first: refused, naming the composed spelling. Not turned into it: the keys and
    // expenses already stored under a decomposed id would then belong to nobody. The name is
    // only a label, so it is composed. Lengths count characters, as the table's CHECKs
    // (char_length) do, not UTF-16 units.
    const userId = input.userId.trim();
    // Both are printed by `pnpm keys list` and the user id is logged with every request: a key
    // pasted into the wrong option would be kept in plain text (and not shown back here).
    for (const [what, text] of [
      ['user id', userId],
      ['name', input.name ?? ''],
    ] as const) {
      if (holdsAKey(text)) {
        throw new ApiKeyInputError(`A key's ${what} must not be an API key or look like one (not shown here).`);
      }
    }
    if (userId !== userId.normalize('NFC')) {
      throw new ApiKeyInputError(
        `A key's user id must be written with composed characters (Unicode NFC): ${JSON.stringify(userId.normalize('NFC'))} is the same letters, and a different user id.`,
      );
    }
    const name = input.name?.normalize('NFC');
    const userIdLength = [...userId].length;
    if (userIdLength === 0 || userIdLength > 255)
      throw new ApiKeyInputError('A key needs a user id of 1 to 255 characters.');
    if (name !== undefined && [...name].length > 100)
      throw new ApiKeyInputError('A key name is at most 100 characters.');
    // Both are printed by `pnpm keys list` and logged with each request: they must read as what they are.
    // And it names whose data a key reaches: it must not pass for another user's id either.
    const userIdProblem = misleadingTextProblem(userId) ?? lookAlikeIdProblem(userId);
    if (userIdProblem) throw new ApiKeyInputError(`A key's user id ${userIdProblem}: ${JSON.stringify(userId)}`);
    const nameProblem = name === undefined ? undefined : misleadingTextProblem(name);
    if (nameProblem) throw new ApiKeyInputError(`A key's name ${nameProblem}: ${JSON.stringify(name)}`);
    const scopes = [...new Set(input.scopes ?? [])];
    for (const scope of scopes) {
      if (!SCOPE_PATTERN.test(scope)) throw new ApiKeyInputError(`Not a valid scope: ${JSON.stringify(scope)}`);
    }
    const lifetime = input.expiresInSeconds;
    if (
      lifetime !== undefined &&
      (!Number.isSafeInteger(lifetime) || lifetime < 1 || lifetime > MAX_API_KEY_LIFETIME_SECONDS)
    ) {
      throw new ApiKeyInputError('A key expires after a whole number of seconds, from 1 second to ten years.');
    }
    const secret = API_KEY_PREFIX + randomBytes(32).toString('base64url');
    const id = `key_${randomBytes(8).toString('hex')}`;
    const { rows } = await this.#pool.query<ApiKeyRecord>(
      `INSERT INTO api_keys (id, user_id, name, scopes, secret_sha256, expires_at)
       VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
       RETURNING ${RECORD_COLUMNS}`,
      [id, userId, name ?? null, scopes, hashApiKey(secret), lifetime ?? null],
    );
    return { record: rows[0] as ApiKeyRecord, secret };
  }

  async list(filter: { userId?: string | undefined } = {}): Promise<ApiKeyRecord[]> {
    const { rows } = await this.#pool.query<ApiKeyRecord>(
      `SELECT ${RECORD_COLUMNS} FROM api_keys WHERE ($1::text IS NULL OR user_id = $1) ORDER BY created_at, id`,
      [filter.userId === undefined ? null : filter.userId.trim()],
    );
    return rows;
  }

  /** Revokes a key; true when it was active. Takes effect on the key's next request. */
  async revoke(id: string): Promise<boolean> {
    const { rowCount } = await this.#pool.query(
      'UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL',
      [id],
    );
    return rowCount === 1;
  }

  /**
   * Revokes the key with this secret (a leaked key, as a secret scanner reports it: its id is
   * not in it); the revoked key's id, or undefined when no active key has this secret.
   */
  async revokeBySecret(secret: string): Promise<string | undefined> {
    if (!looksLikeApiKey(secret)) return undefined;
    const { rows } = await this.#pool.query<{ id: string }>(
      'UPDATE api_keys SET revoked_at = now() WHERE secret_sha256 = $1 AND revoked_at IS NULL RETURNING id',
      [hashApiKey(secret)],
    );
    return rows[0]?.id;
  }

  /** Whether any key was ever created here, revoked ones included. */
  async hasAny(): Promise<boolean> {
    const { rows } = await this.#pool.query<{ any: boolean }>('SELECT EXISTS (SELECT 1 FROM api_keys) AS any');
    return rows[0]?.any ?? false;
  }

  async countActive(): Promise<number> {
    const { rows } = await this.#pool.query<{ count: number }>(
      `SELECT count(*)::int AS count FROM api_keys WHERE ${USABLE}`,
    );
    return rows[0]?.count ?? 0;
  }

  /**
   * The active key with this secret, or undefined, from the database: a revocation by another
   * process applies to the very next call. ApiKeyCache keeps the results for a while.
   */
  async verify(secret: string): Promise<VerifiedKey | undefined> {
    if (!looksLikeApiKey(secret)) return undefined;
    const { rows } = await this.#pool.query<VerifiedKey>({
      text: `SELECT id, user_id AS "userId", scopes, (extract(epoch FROM expires_at - now()) * 1000)::float8 AS "expiresInMs"
        FROM api_keys WHERE secret_sha256 = $1 AND ${USABLE}`,
      values: [hashApiKey(secret)],
    });
    const key = rows[0];
    if (key) this.recordUse(key.id);
    return key;
  }

  /** Notes that the key was used (`last_used_at`), at most once per interval per key, without waiting. */
  recordUse(id: string): void {
    const now = Date.now();
    const last = this.#lastTouched.get(id);
    if (last !== undefined && now - last < this.#touchIntervalMs) return;
    this.#lastTouched.set(id, now);
    if (this.#lastTouched.size > 10_000) this.#lastTouched.clear();
    // Bookkeeping, not authorization: it must not slow down or fail the request.
    this.#pool
      .query('UPDATE api_keys SET last_used_at = now() WHERE id = $1', [id])
      .catch(() => this.#lastTouched.delete(id));
  }
}
