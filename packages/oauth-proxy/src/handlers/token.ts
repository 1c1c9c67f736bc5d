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
async function settle(ctx: ProxyContext, work: (db: pg.PoolClient) => Promise<TokenResponse | OAuthError>) {
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

async function refreshInTransaction(
  ctx: ProxyContext,
  client: ProxyClient,
  form: URLSearchParams,
  presented: string,
): Promise<TokenResponse> {
  return settle(ctx, async (db) => {
    const row = await ctx.store.lockRefreshToken(db, presented);
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
    let scopes = row.scopes;
    const requested = form.get('scope');
    if (requested !== null && requested.trim() !== '') {
      scopes = [...new Set(requested.split(' ').filter(Boolean))];
      if (!scopes.every((scope) => row.scopes.includes(scope))) {
        return new OAuthError('invalid_scope', 'A refresh cannot add scopes.');
      }
    }
    if (row.upstream_stale) {
      const permitted = await renewUpstream(ctx, db, row);
      if (permitted instanceof OAuthError) return permitted;
      if (permitted !== undefined) {
        scopes = scopes.filter((scope) => permitted.has(scope));
        if (scopes.length === 0) {
          return new OAuthError('invalid_scope', 'None of the requested scopes is permitted any more.');
        }
      }
    }
    await ctx.store.markRefreshTokenUsed(db, presented, row.grant_id);
    return await issueTokens(ctx, db, {
      id: row.grant_id,
      clientId: row.client_id,
      userId: row.user_id,
      userName: row.user_name,
      scopes,
      refreshable: true,
    });
  });
}

/**
 * Transparent upstream refresh: the upstream session must still be alive for ours to go on.
 * Returns the scopes `permittedScopes` allows now (undefined without that option), or the refusal.
 */
async function renewUpstream(
  ctx: ProxyContext,
  db: pg.PoolClient,
  row: RefreshRow,
): Promise<Set<string> | undefined | OAuthError> {
  const stored = JSON.parse(decrypt(ctx.keys.upstreamTokens, row.upstream_tokens, row.grant_id)) as UpstreamTokens;
  if (!stored.refresh_token) {
    await ctx.store.revokeGrant(db, row.grant_id, 'upstream session ended');
    return new OAuthError('invalid_grant', 'The sign-in at the identity provider has ended.');
  }
  let renewed: Awaited<ReturnType<typeof callUpstreamToken>>;
  let endpoints: UpstreamEndpoints;
  try {
    endpoints = await ctx.upstream.endpoints();
    renewed = await callUpstreamToken(ctx, endpoints, {
      grant_type: 'refresh_token',
      refresh_token: stored.refresh_token,
      scope: ctx.upstream.scopes.join(' '),
    });
  } catch {
    return new OAuthError('temporarily_unavailable', 'The identity provider is not reachable.', 503);
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
      return new OAuthError('temporarily_unavailable', 'The identity provider is not available.', 503);
    }
    await ctx.store.revokeGrant(db, row.grant_id, `upstream refresh refused: ${renewed.error}`);
    return new OAuthError('invalid_grant', 'The identity provider ended the sign-in.');
  }
  const next = toStored(renewed.tokens, stored);
  // Stored first: the upstream may have rotated its refresh token, which must not be lost
  // whatever is decided below.
  const sealed = encrypt(ctx.keys.upstreamTokens, JSON.stringify(next), row.grant_id);
  await ctx.store.updateUpstreamTokens(db, row.grant_id, sealed, next.expires_at ?? null);
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
      await ctx.store.revokeGrant(db, row.grant_id, 'upstream ID token refused at refresh');
      ctx.emit('upstream_refresh_refused', { grant_id: row.grant_id, reason: (error as Error).message });
      return new OAuthError('invalid_grant', 'The identity provider no longer lets this user in here.');
    }
  }
  ctx.emit('upstream_refreshed', { grant_id: row.grant_id });
  if (!ctx.permittedScopes) return undefined;
  // Decided again on every upstream refresh: a user who lost a role upstream (an
  // administrator no longer) loses what it permitted here too.
  let permitted: Set<string>;
  try {
    permitted = new Set(
      await ctx.permittedScopes({
        requested: row.scopes,
        userId: row.user_id,
        claims: freshIdToken ? decodeJwt(freshIdToken) : {},
        upstreamScope: next.scope,
      }),
    );
  } catch {
    // An ID token that cannot be read, or a hook that failed: nothing is decided or issued, but
    // the tokens stored above are kept (an error thrown here would roll them back, and with an
    // upstream that rotates refresh tokens the grant would be dead). Kept without a lifetime,
    // so that the retry goes upstream and decides again: with fresh tokens it would skip the
    // decision and issue every scope of the grant.
    await ctx.store.updateUpstreamTokens(db, row.grant_id, sealed, null);
    return new OAuthError('temporarily_unavailable', "The identity provider's answer could not be read.", 503);
  }
  const kept = row.scopes.filter((scope) => permitted.has(scope));
  if (kept.length === 0) {
    await ctx.store.revokeGrant(db, row.grant_id, 'nothing permitted after the upstream refresh');
    return new OAuthError('invalid_grant', 'The identity provider no longer permits this access.');
  }
  if (kept.length !== row.scopes.length) {
    await ctx.store.narrowGrant(db, row.grant_id, kept);
    ctx.emit('grant_narrowed', { grant_id: row.grant_id, scopes: kept });
  }
  return permitted;
}
