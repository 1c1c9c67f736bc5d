import type { Context, Handler } from 'hono';
import { decodeJwt } from 'jose';
import type pg from 'pg';
import { authenticateClient, readForm } from '../client-auth.ts';
import type { ProxyClient } from '../clients.ts';
import type { ProxyContext } from '../context.ts';
import { decrypt, encrypt, PKCE_VERIFIER, s256, safeEqual } from '../crypto.ts';
import { CORS, NO_STORE, OAuthError, oauthErrorResponse } from '../errors.ts';
import type { RefreshRow } from '../store.ts';
import { issueTokens } from '../tokens.ts';
import type { UpstreamEndpoints } from '../upstream.ts';
import { callUpstreamToken, checkUpstreamIdClaims, toStored, type UpstreamTokens } from '../upstream-login.ts';

type TokenResponse = Record<string, unknown>;

/** Upstream refresh errors that end the sign-in: only the user, signing in again, gets past them. */
const SIGN_IN_OVER = new Set(['invalid_grant', 'interaction_required', 'consent_required', 'login_required']);

/** POST /token: `authorization_code` and `refresh_token`, for an authenticated client. */
export function tokenHandler(ctx: ProxyContext): Handler {
  return async (c: Context) => {
    ctx.store.maybeCleanup();
    try {
      // RFC 8707 2: `resource` may be given more than once; this server issues for one only.
      const form = await readForm(c, ['resource']);
      const client = await authenticateClient(ctx, c, form);
      if (form.getAll('resource').some((requested) => requested !== ctx.resource)) {
        throw new OAuthError('invalid_target', `resource must be ${ctx.resource}.`);
      }
      const grantType = form.get('grant_type');
      let body: TokenResponse;
      if (grantType === 'authorization_code') body = await exchangeCode(ctx, client, form);
      else if (grantType === 'refresh_token') body = await refresh(ctx, client, form);
      // RFC 6749 5.2: a missing parameter is invalid_request; an unknown grant type is unsupported.
      else if (grantType === null) throw new OAuthError('invalid_request', 'grant_type is required.');
      else throw new OAuthError('unsupported_grant_type', 'Use authorization_code or refresh_token.');
      return Response.json(body, { headers: { ...NO_STORE, ...CORS } });
    } catch (error) {
      if (error instanceof OAuthError) {
        ctx.emit('token_refused', { error: error.error, description: error.message });
        return oauthErrorResponse(error);
      }
      throw error;
    }
  };
}

/**
 * Runs `work` in a transaction; a refusal it returns (rather than throws) commits what was
 * done before it, such as revoking a grant whose code or refresh token was replayed.
 */
async function settle<T>(ctx: ProxyContext, work: (db: pg.PoolClient) => Promise<T | OAuthError>): Promise<T> {
  const outcome = await ctx.store.inTransaction(work);
  if (outcome instanceof OAuthError) throw outcome;
  return outcome;
}

async function exchangeCode(ctx: ProxyContext, client: ProxyClient, form: URLSearchParams): Promise<TokenResponse> {
  const code = form.get('code');
  if (!code) throw new OAuthError('invalid_request', 'code is required.');
  const verifier = form.get('code_verifier');
  return settle(ctx, async (db) => {
    const row = await ctx.store.lockCode(db, code);
    if (!row) return new OAuthError('invalid_grant', 'The authorization code is unknown.');
    // The request is checked whole before a replay revokes anything: a code seen in a log or a
    // browser history, without its client's PKCE verifier, must not let anyone end the grant
    // it obtained (as a refresh token of another client ends nothing, below).
    if (row.client_id !== client.clientId) {
      return new OAuthError('invalid_grant', 'The code was issued to another client.');
    }
    const redirectUri = form.get('redirect_uri');
    // RFC 6749 4.1.3: required here when the authorization request had it, and identical.
    if (redirectUri === null && row.redirect_uri_sent) {
      return new OAuthError('invalid_request', 'redirect_uri is required: the authorization request named one.');
    }
    if (redirectUri !== null && redirectUri !== row.redirect_uri) {
      return new OAuthError('invalid_grant', 'redirect_uri differs from the authorization request.');
    }
    if (!verifier) return new OAuthError('invalid_request', 'code_verifier is required (PKCE).');
    if (!PKCE_VERIFIER.test(verifier) || !safeEqual(s256(verifier), row.code_challenge)) {
      return new OAuthError('invalid_grant', 'The PKCE code_verifier does not match.');
    }
    if (row.used) {
      // RFC 9700 4.4.3 / OAuth 2.1: a replayed code revokes what its first use obtained.
      await ctx.store.revokeGrant(db, row.grant_id, 'authorization code reused');
      return new OAuthError('invalid_grant', 'The authorization code was already used; its tokens are revoked.');
    }
    if (row.expired || row.revoked) return new OAuthError('invalid_grant', 'The authorization code has expired.');
    await ctx.store.markCodeUsed(db, code);
    return await issueTokens(ctx, db, {
      id: row.grant_id,
      clientId: row.client_id,
      userId: row.user_id,
      userName: row.user_name,
      scopes: row.scopes,
      refreshable: client.grantTypes.includes('refresh_token'),
    });
  });
}

async function refresh(ctx: ProxyContext, client: ProxyClient, form: URLSearchParams): Promise<TokenResponse> {
  // RFC 6749 5.2: a client that did not register the grant may not use it.
  if (!client.grantTypes.includes('refresh_token')) {
    throw new OAuthError('unauthorized_client', 'This client did not register the refresh_token grant.');
  }
  const presented = form.get('refresh_token');
  if (!presented) throw new OAuthError('invalid_request', 'refresh_token is required.');
  // Read without a lock, to wait for the grant's other refreshes here rather than at its row lock.
  const owner = await ctx.store.refreshTokenOwner(presented);
  if (!owner) throw new OAuthError('invalid_grant', 'The refresh token is unknown.');
  return ctx.refreshesByGrant.run(owner.grant_id, () => refreshInTransaction(ctx, client, form, presented));
}

/**
 * The refresh in two short transactions when the upstream tokens must be renewed first: the
 * upstream call (up to its timeouts, seconds) runs with no row lock and no transaction open, so
 * that a revocation of the grant, a copy of the token sent to another replica, or (on the
 * embedded database, one session for the whole process) every other request does not wait
 * behind it. The second transaction checks the presented token again before it is rotated.
 */
async function refreshInTransaction(
  ctx: ProxyContext,
  client: ProxyClient,
  form: URLSearchParams,
  presented: string,
): Promise<TokenResponse> {
  const first = await settle(ctx, async (db) => {
    const row = await ctx.store.lockRefreshToken(db, presented);
    const scopes = await checkPresented(ctx, db, row, client, form);
    if (scopes instanceof OAuthError) return scopes;
    if (row?.upstream_stale) return { stale: row };
    return { tokens: await rotate(ctx, db, row as RefreshRow, presented, scopes) };
  });
  if ('tokens' in first) return first.tokens;
  const grantId = first.stale.grant_id;
  const renewal = await renewUpstream(ctx, first.stale);
  return settle(ctx, async (db) => {
    // Locked first, as every refresh locks (the grant, then the token's row): another order
    // deadlocks with a copy of the token refreshing on another replica.
    const row = await ctx.store.lockRefreshToken(db, presented);
    // Kept whatever is decided below: the upstream may have rotated its refresh token.
    if (renewal.store) await ctx.store.updateUpstreamTokens(db, grantId, renewal.store.sealed, renewal.store.expiresAt);
    // Revoked, rotated by another replica or expired while the upstream answered: refused as then.
    let scopes = await checkPresented(ctx, db, row, client, form);
    if (scopes instanceof OAuthError) return scopes;
    const current = row as RefreshRow;
    if (renewal.endGrant) await ctx.store.revokeGrant(db, grantId, renewal.endGrant);
    if (renewal.refusal) return renewal.refusal;
    if (renewal.permitted) {
      const permitted = renewal.permitted;
      const kept = current.scopes.filter((scope) => permitted.has(scope));
      if (kept.length === 0) {
        await ctx.store.revokeGrant(db, grantId, 'nothing permitted after the upstream refresh');
        return new OAuthError('invalid_grant', 'The identity provider no longer permits this access.');
      }
      if (kept.length !== current.scopes.length) {
        await ctx.store.narrowGrant(db, grantId, kept);
        ctx.emit('grant_narrowed', { grant_id: grantId, scopes: kept });
      }
      scopes = scopes.filter((scope) => permitted.has(scope));
      if (scopes.length === 0) {
        return new OAuthError('invalid_scope', 'None of the requested scopes is permitted any more.');
      }
    }
    return rotate(ctx, db, current, presented, scopes);
  });
}

/**
 * Whether the presented refresh token may be used by this client now; the scopes to issue, or
 * the refusal. A rotated-out token coming back revokes its grant.
 */
async function checkPresented(
  ctx: ProxyContext,
  db: pg.PoolClient,
  row: RefreshRow | undefined,
  client: ProxyClient,
  form: URLSearchParams,
): Promise<string[] | OAuthError> {
  if (!row) return new OAuthError('invalid_grant', 'The refresh token is unknown.');
  if (row.client_id !== client.clientId) {
    return new OAuthError('invalid_grant', 'The refresh token belongs to another client.');
  }
  if (row.revoked) return new OAuthError('invalid_grant', 'The grant was revoked.');
  if (row.used) {
    // A rotated-out refresh token came back: someone holds a copy. End the whole grant.
    await ctx.store.revokeGrant(db, row.grant_id, 'refresh token reused');
    return new OAuthError('invalid_grant', 'The refresh token was already used; the grant is revoked.');
  }
  if (row.expired) return new OAuthError('invalid_grant', 'The refresh token has expired.');
  const requested = form.get('scope');
  if (requested === null || requested.trim() === '') return row.scopes;
  const scopes = [...new Set(requested.split(' ').filter(Boolean))];
  if (!scopes.every((scope) => row.scopes.includes(scope))) {
    return new OAuthError('invalid_scope', 'A refresh cannot add scopes.');
  }
  return scopes;
}

/** The presented refresh token is used up and the grant's next tokens issued. */
async function rotate(
  ctx: ProxyContext,
  db: pg.PoolClient,
  row: RefreshRow,
  presented: string,
  scopes: string[],
): Promise<TokenResponse> {
  await ctx.store.markRefreshTokenUsed(db, presented, row.grant_id);
  return await issueTokens(ctx, db, {
    id: row.grant_id,
    clientId: row.client_id,
    userId: row.user_id,
    userName: row.user_name,
    scopes,
    refreshable: true,
  });
}

/** What the upstream refresh decided, applied to the grant once it is locked again. */
interface UpstreamRenewal {
  /** The upstream tokens to store whatever is decided. */
  store?: { sealed: Buffer; expiresAt: number | null };
  /** The grant ends, for this reason (with `refusal`). */
  endGrant?: string;
  refusal?: OAuthError;
  /** The scopes `permittedScopes` allows now (absent without that option). */
  permitted?: Set<string>;
}

/**
 * Transparent upstream refresh: the upstream session must still be alive for ours to go on.
 * Touches no table: its outcome is applied under the grant's lock by the caller.
 */
async function renewUpstream(ctx: ProxyContext, row: RefreshRow): Promise<UpstreamRenewal> {
  const stored = JSON.parse(decrypt(ctx.keys.upstreamTokens, row.upstream_tokens, row.grant_id)) as UpstreamTokens;
  if (!stored.refresh_token) {
    return {
      endGrant: 'upstream session ended',
      refusal: new OAuthError('invalid_grant', 'The sign-in at the identity provider has ended.'),
    };
  }
  let renewed: Awaited<ReturnType<typeof callUpstreamToken>>;
  let endpoints: UpstreamEndpoints;
  try {
    endpoints = await ctx.upstream.endpoints();
    renewed = await callUpstreamToken(ctx, endpoints, {
      grant_type: 'refresh_token',
      refresh_token: stored.refresh_token,
      scope: (endpoints.scopes ?? ctx.upstream.scopes).join(' '),
    });
  } catch {
    return { refusal: new OAuthError('temporarily_unavailable', 'The identity provider is not reachable.', 503) };
  }
  if (!renewed.ok) {
    // `invalid_grant` says the sign-in is over (revoked, expired, the user disabled), and so do
    // the OIDC errors asking for the user (Entra's `interaction_required` for a Conditional
    // Access or MFA prompt, `consent_required`, `login_required`): only a new sign-in gets past
    // them, which the client starts on `invalid_grant`. Throttling (429), the proxy's own
    // credential refused (`invalid_client`: an expired client secret) or the provider's trouble
    // are the operator's to fix: revoking would make every user sign in again once it is fixed.
    if (!SIGN_IN_OVER.has(renewed.error ?? '')) {
      ctx.emit('upstream_refresh_failed', { grant_id: row.grant_id, status: renewed.status, error: renewed.error });
      return { refusal: new OAuthError('temporarily_unavailable', 'The identity provider is not available.', 503) };
    }
    return {
      endGrant: `upstream refresh refused: ${renewed.error}`,
      refusal: new OAuthError('invalid_grant', 'The identity provider ended the sign-in.'),
    };
  }
  const next = toStored(renewed.tokens, stored);
  const sealed = encrypt(ctx.keys.upstreamTokens, JSON.stringify(next), row.grant_id);
  const store = { sealed, expiresAt: next.expires_at ?? null };
  // The login's checks again, on the refresh's ID token (or the login's, when the answer has
  // none): a tenant taken off the allowed list, or a token for another client or user, ends
  // the grant, as it would refuse a new sign-in.
  const freshIdToken = typeof renewed.tokens.id_token === 'string' ? renewed.tokens.id_token : undefined;
  const idToken = freshIdToken ?? next.id_token;
  if (idToken) {
    try {
      checkUpstreamIdClaims(ctx, endpoints, decodeJwt(idToken), {
        current: freshIdToken !== undefined,
        userId: row.user_id,
      });
    } catch (error) {
      ctx.emit('upstream_refresh_refused', { grant_id: row.grant_id, reason: (error as Error).message });
      return {
        store,
        endGrant: 'upstream ID token refused at refresh',
        refusal: new OAuthError('invalid_grant', 'The identity provider no longer lets this user in here.'),
      };
    }
  }
  ctx.emit('upstream_refreshed', { grant_id: row.grant_id });
  if (!ctx.permittedScopes) return { store };
  // Decided again on every upstream refresh: a user who lost a role upstream (an
  // administrator no longer) loses what it permitted here too.
  try {
    const permitted = new Set(
      await ctx.permittedScopes({
        requested: row.scopes,
        userId: row.user_id,
        claims: freshIdToken ? decodeJwt(freshIdToken) : {},
        upstreamScope: next.scope,
      }),
    );
    return { store, permitted };
  } catch {
    // An ID token that cannot be read, or a hook that failed: nothing is decided or issued, but
    // the tokens are kept. Kept without a lifetime, so that the retry goes upstream and decides
    // again: with fresh tokens it would skip the decision and issue every scope of the grant.
    return {
      store: { sealed, expiresAt: null },
      refusal: new OAuthError('temporarily_unavailable', "The identity provider's answer could not be read.", 503),
    };
  }
}
