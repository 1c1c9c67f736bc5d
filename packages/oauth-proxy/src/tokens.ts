import { randomUUID } from 'node:crypto';
import { type AuthOutcome, AuthUnavailableError, type Principal } from '@mcp-auth-stack/auth';
import { type JWK, jwtVerify, SignJWT } from 'jose';
import type pg from 'pg';
import type { ProxyContext } from './context.ts';
import { randomToken } from './crypto.ts';

export interface GrantForTokens {
  id: string;
  clientId: string;
  userId: string;
  userName: string | null;
  scopes: string[];
  /** Whether the client registered the `refresh_token` grant (RFC 7591 `grant_types`). */
  refreshable: boolean;
}

/**
 * The token response for a grant: an `at+jwt` access token (RFC 9068) for the MCP resource and,
 * for a client that registered the refresh grant, a fresh refresh token (stored in the caller's
 * transaction).
 */
export async function issueTokens(
  ctx: ProxyContext,
  db: pg.PoolClient,
  grant: GrantForTokens,
): Promise<Record<string, unknown>> {
  const key = await ctx.keys.signing;
  const refreshToken = grant.refreshable ? randomToken('mcpr_') : undefined;
  await ctx.store.recordIssue(
    db,
    grant,
    // Without a refresh token the grant ends when its access token does, as a verifier with the clock tolerance sees it.
    refreshToken === undefined
      ? { refreshToken, accessSeconds: ctx.ttl.access + ctx.clockTolerance }
      : { refreshToken },
  );
  const claims: Record<string, unknown> = {
    client_id: grant.clientId,
    scope: grant.scopes.join(' '),
    gid: grant.id,
  };
  if (grant.userName) claims.name = grant.userName;
  const accessToken = await new SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
    .setIssuer(ctx.issuer)
    .setAudience(ctx.resource)
    .setSubject(grant.userId)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + ctx.ttl.access)
    .setJti(randomUUID())
    .sign(key.privateKey);
  return {
    access_token: accessToken,
    token_type: 'Bearer',
    expires_in: ctx.ttl.access,
    ...(refreshToken === undefined ? {} : { refresh_token: refreshToken }),
    scope: grant.scopes.join(' '),
  };
}

/** Checks one of the proxy's access tokens: signature, issuer, audience, type, expiry, and (by default) its grant. */
export async function verifyAccessToken(ctx: ProxyContext, token: string): Promise<AuthOutcome & { grantId?: string }> {
  const key = await ctx.keys.signing;
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, key.publicKey, {
      issuer: ctx.issuer,
      audience: ctx.resource,
      algorithms: [key.alg],
      typ: 'at+jwt',
      clockTolerance: ctx.clockTolerance,
      requiredClaims: ['exp', 'sub', 'gid'],
    }));
  } catch (error) {
    const code = (error as { code?: string }).code;
    return {
      ok: false,
      error: 'invalid_token',
      description: code === 'ERR_JWT_EXPIRED' ? 'The access token has expired.' : 'The access token is not valid here.',
    };
  }
  if (ctx.checkRevocation) {
    let active: boolean;
    try {
      active = await ctx.store.grantIsActive(payload.gid);
    } catch (error) {
      // The database, not the token, failed: 503 and a retry, not a 401 or a 500 (as key mode).
      throw new AuthUnavailableError('The grant store cannot be reached.', { cause: error });
    }
    if (!active) return { ok: false, error: 'invalid_token', description: 'The access token was revoked.' };
  }
  const principal: Principal = {
    userId: payload.sub as string,
    scopes: Object.freeze(typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : []),
    method: 'oauth',
    clientId: typeof payload.client_id === 'string' ? payload.client_id : undefined,
    name: typeof payload.name === 'string' ? payload.name : undefined,
    roles: Object.freeze([]),
  };
  return { ok: true, principal: Object.freeze(principal), grantId: payload.gid as string };
}

/** The public JWK Set (served at `jwks_uri`), for verifiers in other processes. */
export async function publicJwks(ctx: ProxyContext): Promise<{ keys: JWK[] }> {
  return { keys: [(await ctx.keys.signing).publicJwk] };
}
