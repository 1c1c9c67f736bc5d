import { onOneConnection } from '@mcp-auth-stack/database';
import type pg from 'pg';
import { sha256 } from './crypto.ts';

/** A pool, or a client inside a transaction. */
export type Queryable = pg.Pool | pg.PoolClient;

/** What /authorize asked, carried through the consent page and the upstream login to the code. */
export interface PendingLogin {
  clientId: string;
  redirectUri: string;
  /** The client named it at /authorize (RFC 6749 4.1.3: then it must name it again at /token). */
  redirectUriSent: boolean;
  scopes: string[];
  clientState: string | null;
  codeChallenge: string;
}

export interface ConsentRow {
  client_id: string;
  redirect_uri: string;
  redirect_uri_sent: boolean;
  scopes: string[];
  client_state: string | null;
  code_challenge: string;
}

export interface TransactionRow extends ConsentRow {
  browser_sha256: Buffer;
  resource: string;
  upstream_verifier: string;
  nonce: string;
  expired: boolean;
}

export interface CodeRow {
  grant_id: string;
  client_id: string;
  redirect_uri: string;
  redirect_uri_sent: boolean;
  code_challenge: string;
  expired: boolean;
  used: boolean;
  revoked: boolean;
  user_id: string;
  user_name: string | null;
  scopes: string[];
}

export interface RefreshRow {
  grant_id: string;
  client_id: string;
  used: boolean;
  expired: boolean;
  revoked: boolean;
  user_id: string;
  user_name: string | null;
  scopes: string[];
  upstream_tokens: Buffer;
  upstream_stale: boolean;
}

export interface ProxyStoreOptions {
  refreshTtlSeconds: number;
  /** 0 disables the opportunistic cleanup. */
  cleanupIntervalMs: number;
  emit(event: string, details?: Record<string, unknown>): void;
}

/**
 * All of the proxy's SQL. Secrets (request ids, CSRF tokens, states, codes, refresh tokens,
 * browser ids) come in as they were issued and are stored and looked up only as SHA-256.
 */
/** Rotated-out refresh tokens a grant keeps, newest first, so that a copy's return revokes it. */
export const USED_REFRESH_TOKENS_KEPT = 10;

export class ProxyStore {
  readonly pool: pg.Pool;
  readonly #options: ProxyStoreOptions;
  #nextCleanup: number;

  constructor(pool: pg.Pool, options: ProxyStoreOptions) {
    this.pool = pool;
    this.#options = options;
    this.#nextCleanup = Date.now() + Math.min(options.cleanupIntervalMs, 60_000);
  }

  async inTransaction<T>(work: (db: pg.PoolClient) => Promise<T>): Promise<T> {
    return onOneConnection(
      this.pool,
      async (db) => {
        await db.query('BEGIN');
        try {
          const result = await work(db);
          await db.query('COMMIT');
          return result;
        } catch (error) {
          await db.query('ROLLBACK').catch(() => {});
          throw error;
        }
      },
      // Rolled back, the connection is fit for the pool again (one that was lost is closed).
      { closeOnFailure: false },
    );
  }

  // ---- consent requests and upstream logins (short-lived, single use) -----------------------
  async createConsentRequest(
    input: PendingLogin & { requestId: string; csrf: string; browser: string; resource: string; ttlSeconds: number },
  ): Promise<void> {
    await this.pool.query(
      `INSERT INTO oauth_proxy_consent_requests (id_sha256, csrf_sha256, browser_sha256, client_id, redirect_uri,
         scopes, client_state, code_challenge, resource, redirect_uri_sent, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11))`,
      [
        sha256(input.requestId),
        sha256(input.csrf),
        sha256(input.browser),
        input.clientId,
        input.redirectUri,
        input.scopes,
        input.clientState,
        input.codeChallenge,
        input.resource,
        input.redirectUriSent,
        input.ttlSeconds,
      ],
    );
  }

  /** The CSRF and browser hashes of a live consent request. */
  /** A live consent request's checks, and how long ago its page was made (`shown_ms`, by the database's clock). */
  async findConsentRequest(
    requestId: string,
  ): Promise<{ csrf_sha256: Buffer; browser_sha256: Buffer; shown_ms: number } | undefined> {
    const { rows } = await this.pool.query<{ csrf_sha256: Buffer; browser_sha256: Buffer; shown_ms: number }>(
      `SELECT csrf_sha256, browser_sha256, extract(epoch FROM clock_timestamp() - created_at)::float8 * 1000 AS shown_ms
         FROM oauth_proxy_consent_requests WHERE id_sha256 = $1 AND expires_at > now()`,
      [sha256(requestId)],
    );
    return rows[0];
  }

  /** Single use: whoever deletes the row owns the decision. */
  async takeConsentRequest(requestId: string): Promise<ConsentRow | undefined> {
    const { rows } = await this.pool.query<ConsentRow>(
      `DELETE FROM oauth_proxy_consent_requests WHERE id_sha256 = $1
       RETURNING client_id, redirect_uri, redirect_uri_sent, scopes, client_state, code_challenge`,
      [sha256(requestId)],
    );
    return rows[0];
  }

  async createTransaction(
    input: PendingLogin & {
      state: string;
      browser: string;
      resource: string;
      verifier: string;
      nonce: string;
      ttlSeconds: number;
    },
  ): Promise<void> {
    await this.pool.query(
      `INSERT INTO oauth_proxy_transactions (state_sha256, browser_sha256, client_id, redirect_uri, scopes,
         client_state, code_challenge, resource, upstream_verifier, nonce, redirect_uri_sent, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now() + make_interval(secs => $12))`,
      [
        sha256(input.state),
        sha256(input.browser),
        input.clientId,
        input.redirectUri,
        input.scopes,
        input.clientState,
        input.codeChallenge,
        input.resource,
        input.verifier,
        input.nonce,
        input.redirectUriSent,
        input.ttlSeconds,
      ],
    );
  }

  /** Single use, like the consent request; an expired row is removed too and reported as such. */
  async takeTransaction(
    state: string,
    browserSha256: Buffer | undefined,
  ): Promise<TransactionRow | 'other browser' | undefined> {
    // Taken only by the browser that started it: a request from any other (a link sent to a
    // victim, a page that loads the callback URL) is refused without using the login up.
    const { rows } = await this.pool.query<TransactionRow>(
      `DELETE FROM oauth_proxy_transactions WHERE state_sha256 = $1 AND browser_sha256 = $2
       RETURNING browser_sha256, client_id, redirect_uri, redirect_uri_sent, scopes, client_state, code_challenge,
         resource, upstream_verifier, nonce, expires_at < now() AS expired`,
      [sha256(state), browserSha256 ?? Buffer.alloc(0)],
    );
    if (rows[0]) return rows[0];
    const other = await this.pool.query('SELECT 1 FROM oauth_proxy_transactions WHERE state_sha256 = $1', [
      sha256(state),
    ]);
    return other.rowCount ? 'other browser' : undefined;
  }

  // ---- grants, codes, refresh tokens -------------------------------------------------------
  /** A new grant (with the sealed upstream tokens) and its authorization code, together or not at all. */
  async createGrantWithCode(input: {
    grantId: string;
    code: string;
    codeTtlSeconds: number;
    clientId: string;
    userId: string;
    userName: string | null;
    scopes: string[];
    resource: string;
    sealedUpstreamTokens: Buffer;
    upstreamExpiresAt: number | null;
    redirectUri: string;
    redirectUriSent: boolean;
    codeChallenge: string;
  }): Promise<void> {
    await this.inTransaction(async (db) => {
      await db.query(
        `INSERT INTO oauth_proxy_grants (id, client_id, user_id, user_name, scopes, resource, upstream_tokens,
           upstream_expires_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::double precision / 1000), now() + make_interval(secs => $9))`,
        [
          input.grantId,
          input.clientId,
          input.userId,
          input.userName,
          input.scopes,
          input.resource,
          input.sealedUpstreamTokens,
          input.upstreamExpiresAt,
          Math.max(input.codeTtlSeconds + 3600, 0),
        ],
      );
      await db.query(
        `INSERT INTO oauth_proxy_codes (code_sha256, grant_id, client_id, redirect_uri, redirect_uri_sent,
           code_challenge, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))`,
        [
          sha256(input.code),
          input.grantId,
          input.clientId,
          input.redirectUri,
          input.redirectUriSent,
          input.codeChallenge,
          input.codeTtlSeconds,
        ],
      );
    });
  }

  /**
   * Locks the grant of a code or refresh token first, as every writer of a grant's rows does
   * (revokeGrant: the grant, then its refresh tokens): locking the token's row first deadlocked
   * a replayed spent token, whose revocation updates every token of the grant, with the grant's
   * current token being refreshed at the same moment (one of them got a 500).
   */
  async #lockGrantOf(db: pg.PoolClient, table: 'oauth_proxy_codes' | 'oauth_proxy_refresh_tokens', hash: Buffer) {
    const column = table === 'oauth_proxy_codes' ? 'code_sha256' : 'token_sha256';
    await db.query(
      `SELECT 1 FROM oauth_proxy_grants WHERE id = (SELECT grant_id FROM ${table} WHERE ${column} = $1) FOR UPDATE`,
      [hash],
    );
  }

  /** The code with its grant, both locked until the transaction ends. */
  async lockCode(db: pg.PoolClient, code: string): Promise<CodeRow | undefined> {
    await this.#lockGrantOf(db, 'oauth_proxy_codes', sha256(code));
    const { rows } = await db.query<CodeRow>(
      `SELECT c.grant_id, c.client_id, c.redirect_uri, c.redirect_uri_sent, c.code_challenge,
         c.expires_at < now() AS expired,
         c.used_at IS NOT NULL AS used, g.revoked_at IS NOT NULL AS revoked, g.user_id, g.user_name, g.scopes
       FROM oauth_proxy_codes c JOIN oauth_proxy_grants g ON g.id = c.grant_id
       WHERE c.code_sha256 = $1 FOR UPDATE OF c, g`,
      [sha256(code)],
    );
    return rows[0];
  }

  async markCodeUsed(db: pg.PoolClient, code: string): Promise<void> {
    await db.query('UPDATE oauth_proxy_codes SET used_at = now() WHERE code_sha256 = $1', [sha256(code)]);
  }

  /** The refresh token with its grant, both locked until the transaction ends. */
  async lockRefreshToken(db: pg.PoolClient, token: string): Promise<RefreshRow | undefined> {
    await this.#lockGrantOf(db, 'oauth_proxy_refresh_tokens', sha256(token));
    const { rows } = await db.query<RefreshRow>(
      `SELECT r.grant_id, r.client_id, r.used_at IS NOT NULL AS used,
         (r.expires_at < now() OR g.expires_at < now()) AS expired, g.revoked_at IS NOT NULL AS revoked,
         g.user_id, g.user_name, g.scopes, g.upstream_tokens,
         coalesce(g.upstream_expires_at < now() + interval '60 seconds', true) AS upstream_stale
       FROM oauth_proxy_refresh_tokens r JOIN oauth_proxy_grants g ON g.id = r.grant_id
       WHERE r.token_sha256 = $1 FOR UPDATE OF r, g`,
      [sha256(token)],
    );
    return rows[0];
  }

  /**
   * Rotated out: kept so that its return revokes the grant, as the grant's newest
   * `USED_REFRESH_TOKENS_KEPT` are. Older ones go now: a grant refreshed every few minutes
   * would otherwise keep thousands for the refresh lifetime, and a client refreshing in a loop
   * as many as it liked. An older one presented again is unknown (refused, nothing revoked).
   */
  async markRefreshTokenUsed(db: pg.PoolClient, token: string, grantId: string): Promise<void> {
    await db.query('UPDATE oauth_proxy_refresh_tokens SET used_at = now() WHERE token_sha256 = $1', [sha256(token)]);
    await db.query(
      `DELETE FROM oauth_proxy_refresh_tokens WHERE grant_id = $1 AND used_at IS NOT NULL AND token_sha256 NOT IN (
         SELECT token_sha256 FROM oauth_proxy_refresh_tokens WHERE grant_id = $1 AND used_at IS NOT NULL
          ORDER BY used_at DESC, token_sha256 LIMIT $2)`,
      [grantId, USED_REFRESH_TOKENS_KEPT],
    );
  }

  /** Who a refresh token belongs to (for revocation: any state). */
  async refreshTokenOwner(token: string): Promise<{ grant_id: string; client_id: string } | undefined> {
    const { rows } = await this.pool.query<{ grant_id: string; client_id: string }>(
      'SELECT grant_id, client_id FROM oauth_proxy_refresh_tokens WHERE token_sha256 = $1',
      [sha256(token)],
    );
    return rows[0];
  }

  /** A new refresh token for the grant; the grant and its client count as used and live another refresh lifetime. */
  /**
   * Records tokens issued for a grant: its refresh token, which the grant then lives as long as,
   * or, for a client without the refresh grant, none, and the grant ends with its access token
   * (`accessSeconds`), which is checked against it.
   */
  async recordIssue(
    db: pg.PoolClient,
    grant: { id: string; clientId: string },
    issued: { refreshToken: string } | { refreshToken: undefined; accessSeconds: number },
  ): Promise<void> {
    let grantSeconds: number;
    if (issued.refreshToken === undefined) grantSeconds = issued.accessSeconds;
    else {
      grantSeconds = this.#options.refreshTtlSeconds;
      await db.query(
        `INSERT INTO oauth_proxy_refresh_tokens (token_sha256, grant_id, client_id, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))`,
        [sha256(issued.refreshToken), grant.id, grant.clientId, grantSeconds],
      );
    }
    await db.query('UPDATE oauth_proxy_clients SET last_used_at = now() WHERE client_id = $1', [grant.clientId]);
    await db.query('UPDATE oauth_proxy_grants SET expires_at = now() + make_interval(secs => $2) WHERE id = $1', [
      grant.id,
      grantSeconds,
    ]);
  }

  async updateUpstreamTokens(
    db: pg.PoolClient,
    grantId: string,
    sealed: Buffer,
    upstreamExpiresAt: number | null,
  ): Promise<void> {
    await db.query(
      `UPDATE oauth_proxy_grants SET upstream_tokens = $2,
         upstream_expires_at = to_timestamp($3::double precision / 1000) WHERE id = $1`,
      [grantId, sealed, upstreamExpiresAt],
    );
  }

  async narrowGrant(db: pg.PoolClient, grantId: string, scopes: string[]): Promise<void> {
    await db.query('UPDATE oauth_proxy_grants SET scopes = $2 WHERE id = $1', [grantId, scopes]);
  }

  /** The grant and every refresh token of it end now. */
  async revokeGrant(db: Queryable, grantId: string, reason: string): Promise<void> {
    await db.query('UPDATE oauth_proxy_grants SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL', [grantId]);
    await db.query('UPDATE oauth_proxy_refresh_tokens SET used_at = coalesce(used_at, now()) WHERE grant_id = $1', [
      grantId,
    ]);
    this.#options.emit('grant_revoked', { grant_id: grantId, reason });
  }

  /** One primary-key lookup: the grant exists, is not revoked and not expired. */
  async grantIsActive(grantId: unknown): Promise<boolean> {
    const { rowCount } = await this.pool.query(
      'SELECT 1 FROM oauth_proxy_grants WHERE id = $1 AND revoked_at IS NULL AND expires_at > now()',
      [grantId],
    );
    return rowCount === 1;
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1 FROM oauth_proxy_grants LIMIT 1');
  }

  // ---- cleanup -------------------------------------------------------------------------------
  /** Deletes expired and long-revoked rows; returns how many of each. */
  async cleanupExpired(): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    const run = async (name: string, sql: string, values: unknown[] = []) => {
      counts[name] = (await this.pool.query(sql, values)).rowCount ?? 0;
    };
    await run('consent_requests', 'DELETE FROM oauth_proxy_consent_requests WHERE expires_at < now()');
    await run('transactions', 'DELETE FROM oauth_proxy_transactions WHERE expires_at < now()');
    // Used codes stay an hour past expiry, so a late replay still revokes its grant.
    await run('codes', "DELETE FROM oauth_proxy_codes WHERE expires_at < now() - interval '1 hour'");
    await run('refresh_tokens', 'DELETE FROM oauth_proxy_refresh_tokens WHERE expires_at < now()');
    await run(
      'grants',
      "DELETE FROM oauth_proxy_grants WHERE expires_at < now() OR revoked_at < now() - interval '1 day'",
    );
    // Anonymous DCR would otherwise grow the table forever: clients that never got a token an
    // hour after registering (a client registers when its user is about to sign in; a sign-in's
    // own requests live 10 minutes), and clients unused for longer than a refresh token lives,
    // with nothing left to them. A client that comes back after that registers again. The hour
    // bounds what one address's registrations hold at a time (20 a minute, decision 88).
    await run(
      'clients',
      `DELETE FROM oauth_proxy_clients c
        WHERE CASE WHEN c.last_used_at IS NULL THEN c.created_at < now() - interval '1 hour'
                   ELSE c.last_used_at < now() - make_interval(secs => $1) END
         AND NOT EXISTS (SELECT 1 FROM oauth_proxy_grants g WHERE g.client_id = c.client_id)
         AND NOT EXISTS (SELECT 1 FROM oauth_proxy_consent_requests r WHERE r.client_id = c.client_id)
         AND NOT EXISTS (SELECT 1 FROM oauth_proxy_transactions t WHERE t.client_id = c.client_id)`,
      [Math.max(this.#options.refreshTtlSeconds, 86_400) * 2],
    );
    return counts;
  }

  /** Runs the cleanup in the background when the interval has passed; called from busy endpoints. */
  maybeCleanup(): void {
    const interval = this.#options.cleanupIntervalMs;
    if (interval <= 0 || Date.now() < this.#nextCleanup) return;
    this.#nextCleanup = Date.now() + interval;
    this.cleanupExpired().then(
      (counts) => this.#options.emit('cleanup', counts),
      (error) => this.#options.emit('cleanup_failed', { message: (error as Error).message }),
    );
  }
}
