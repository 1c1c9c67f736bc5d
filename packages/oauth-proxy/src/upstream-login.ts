import { readAnswer } from '@mcp-auth-stack/auth';
import type { Context } from 'hono';
import { decodeJwt } from 'jose';
import type { ProxyContext } from './context.ts';
import { randomToken, s256 } from './crypto.ts';
import { OAuthError } from './errors.ts';
import { failPage } from './responses.ts';
import type { PendingLogin } from './store.ts';
import { type UpstreamEndpoints, UpstreamUnavailableError } from './upstream.ts';

// The leg between the proxy and the upstream identity provider, as the proxy's one fixed client.

const ID_TOKEN_CLOCK_SKEW_MS = 60_000;

/**
 * How long upstream tokens are taken to last when the token answer has no `expires_in` (RFC 6749
 * 5.1 only recommends it). The grant's standing upstream (still signed in, still an
 * administrator) is checked again when they run out, so without a lifetime it would never be.
 */
export const UPSTREAM_LIFETIME_WHEN_UNSTATED_SECONDS = 3600;

/** The upstream tokens as sealed into a grant. */
export interface UpstreamTokens {
  access_token: string;
  refresh_token?: string | undefined;
  id_token?: string | undefined;
  /** Unset only in grants stored before UPSTREAM_LIFETIME_WHEN_UNSTATED_SECONDS (they count as run out). */
  expires_at?: number | undefined;
  scope?: string | undefined;
}

export type UpstreamTokenResult =
  | { ok: true; tokens: Record<string, unknown> }
  | { ok: false; error: string; status: number };

/**
 * How long a browser is asked to wait when the upstream cannot be reached. The discovery document
 * is fetched again on the next request (a failure is not cached), so this only paces retries.
 */
export const UPSTREAM_RETRY_AFTER_SECONDS = 10;

/**
 * The answer to a sign-in step (`/authorize`, the consent form) that needed the upstream while it
 * cannot be reached: a 503 page with `Retry-After` and one event without a stack, as an outage is
 * not this server's fault. Any other error is rethrown, to be the 500 it is.
 */
export function upstreamUnavailablePage(
  c: Context,
  ctx: ProxyContext,
  error: unknown,
  step: 'authorize' | 'consent',
  { requestUsedUp = false }: { requestUsedUp?: boolean } = {},
): Response {
  if (!(error instanceof UpstreamUnavailableError)) throw error;
  ctx.emit('upstream_unavailable', { step, message: error.message });
  // Once the consent request is used up, sending this page's form again would find it expired.
  const next = requestUsedUp ? 'Start the sign-in again from your application in a minute.' : 'Try again in a minute.';
  return failPage(c, 'Sign-in unavailable', `${ctx.upstream.displayName} cannot be reached right now. ${next}`, 503, {
    'Retry-After': String(UPSTREAM_RETRY_AFTER_SECONDS),
  });
}

/**
 * Stores the login (state, PKCE verifier, nonce) and returns the upstream authorization URL.
 * The upstream's endpoints come first: when it cannot be reached, nothing is stored.
 */
export async function startUpstreamLogin(ctx: ProxyContext, pending: PendingLogin, browser: string): Promise<string> {
  const { upstream } = ctx;
  const upstreamEndpoints = await upstream.endpoints();
  const state = randomToken();
  const verifier = randomToken();
  const nonce = randomToken();
  await ctx.store.createTransaction({
    ...pending,
    state,
    browser,
    resource: ctx.resource,
    verifier,
    nonce,
    ttlSeconds: ctx.ttl.login,
  });
  const target = new URL(upstreamEndpoints.authorizationEndpoint);
  const params: Record<string, string> = {
    ...upstream.authorizeParameters,
    response_type: 'code',
    client_id: upstream.clientId,
    redirect_uri: ctx.endpoints.callback,
    scope: (upstreamEndpoints.scopes ?? upstream.scopes).join(' '),
    state,
    nonce,
    code_challenge: s256(verifier),
    code_challenge_method: 'S256',
  };
  for (const [name, value] of Object.entries(params)) target.searchParams.set(name, value);
  return target.toString();
}

/** One call to the upstream token endpoint with the proxy's client credentials. */
export async function callUpstreamToken(
  ctx: ProxyContext,
  upstreamEndpoints: UpstreamEndpoints,
  grant: Record<string, string>,
): Promise<UpstreamTokenResult> {
  const { upstream } = ctx;
  const body = new URLSearchParams(grant);
  const headers: Record<string, string> = {
    'content-type': 'application/x-www-form-urlencoded',
    accept: 'application/json',
  };
  if (upstream.tokenEndpointAuthMethod === 'client_secret_basic') {
    const encode = (value: string) => encodeURIComponent(value).replace(/%20/g, '+');
    headers.authorization = `Basic ${Buffer.from(`${encode(upstream.clientId)}:${encode(upstream.clientSecret)}`).toString('base64')}`;
  } else {
    body.set('client_id', upstream.clientId);
    body.set('client_secret', upstream.clientSecret);
  }
  const response = await ctx.fetch(upstreamEndpoints.tokenEndpoint, {
    method: 'POST',
    headers,
    body,
    signal: AbortSignal.timeout(10_000),
  });
  // Too large throws, as an unreachable provider does: a refresh then keeps the grant (503).
  const json = parseObject(await readAnswer(response, 'the upstream token answer'));
  if (!response.ok || typeof json.access_token !== 'string') {
    return {
      ok: false,
      error: typeof json.error === 'string' ? json.error : 'server_error',
      status: response.status,
    };
  }
  return { ok: true, tokens: json };
}

/** A token response as stored; a refresh response without a new refresh or ID token keeps the previous one. */
export function toStored(tokens: Record<string, unknown>, previous?: UpstreamTokens): UpstreamTokens {
  const expiresIn = typeof tokens.expires_in === 'number' ? tokens.expires_in : Number(tokens.expires_in);
  return {
    access_token: tokens.access_token as string,
    refresh_token: typeof tokens.refresh_token === 'string' ? tokens.refresh_token : previous?.refresh_token,
    id_token: typeof tokens.id_token === 'string' ? tokens.id_token : previous?.id_token,
    expires_at: Date.now() + (Number.isFinite(expiresIn) ? expiresIn : UPSTREAM_LIFETIME_WHEN_UNSTATED_SECONDS) * 1000,
    scope: typeof tokens.scope === 'string' ? tokens.scope : previous?.scope,
  };
}

/**
 * The checks of an upstream ID token's claims, at a login and at every upstream refresh: its
 * issuer (for a multi-tenant Entra authority, one of the allowed tenants: `access_denied`
 * otherwise), this client as audience, and, as asked, the login's nonce, a current `exp`, and
 * the grant's user. Received straight from the token endpoint over TLS with this client's
 * credentials: OIDC Core 3.1.3.7 allows TLS server validation in place of the signature.
 */
export function checkUpstreamIdClaims(
  ctx: ProxyContext,
  upstreamEndpoints: UpstreamEndpoints,
  claims: Record<string, unknown>,
  expect: { nonce?: string; current: boolean; userId?: string },
): void {
  const { issuer } = upstreamEndpoints;
  const expectedIssuer = typeof issuer === 'function' ? issuer(claims) : issuer;
  if (expectedIssuer === undefined) {
    throw new OAuthError('access_denied', "Users of this account's organization may not sign in here.");
  }
  if (claims.iss !== expectedIssuer) throw new Error('The upstream ID token has an unexpected issuer.');
  const audience = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!audience.includes(ctx.upstream.clientId)) throw new Error('The upstream ID token is for another client.');
  // OIDC Core 3.1.3.7: the nonce that was sent must come back, and the token must be current.
  if (expect.nonce !== undefined && claims.nonce !== expect.nonce) {
    throw new Error('The upstream ID token does not carry the nonce of this login.');
  }
  if (expect.current && (typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now() - ID_TOKEN_CLOCK_SKEW_MS)) {
    throw new Error('The upstream ID token has expired.');
  }
  const userId = claims[ctx.upstream.userIdClaim];
  if (expect.userId !== undefined && typeof userId === 'string' && userId !== expect.userId) {
    throw new Error('The upstream ID token names another user than the grant.');
  }
}

/** The user behind an upstream login: the configured claim of the ID token, else of userinfo. */
export async function upstreamUser(
  ctx: ProxyContext,
  upstreamEndpoints: UpstreamEndpoints,
  tokens: UpstreamTokens,
  nonce: string,
): Promise<{ userId: string; name: string | undefined; claims: Record<string, unknown> }> {
  const { upstream } = ctx;
  let claims: Record<string, unknown> = {};
  // OIDC Core 3.1.3.3: a login that asked for `openid` gets an ID token. Without one, nothing
  // would check the nonce, issuer or audience, and the user would come from userinfo alone.
  if (!tokens.id_token && upstream.scopes.includes('openid')) {
    throw new Error('The upstream answered an OpenID Connect login without an ID token.');
  }
  if (tokens.id_token) {
    claims = decodeJwt(tokens.id_token);
    checkUpstreamIdClaims(ctx, upstreamEndpoints, claims, { nonce, current: true });
  }
  if (typeof claims[upstream.userIdClaim] !== 'string' && upstreamEndpoints.userinfoEndpoint) {
    const response = await ctx.fetch(upstreamEndpoints.userinfoEndpoint, {
      headers: { authorization: `Bearer ${tokens.access_token}`, accept: 'application/json' },
      signal: AbortSignal.timeout(10_000),
    });
    if (response.ok) {
      // Not JSON: nothing learned (the claim check below says what is missing). JSON.parse's own
      // message would quote the answer, the user's name and address, into the log.
      const info = parseObject(await readAnswer(response, 'the upstream user info'));
      if (claims.sub === undefined || info.sub === claims.sub) claims = { ...claims, ...info };
    }
  }
  const userId = claims[upstream.userIdClaim];
  if (typeof userId !== 'string' || userId.length === 0 || userId.length > 255) {
    throw new Error(`The upstream login did not name the user (claim ${upstream.userIdClaim}).`);
  }
  const name = [claims.name, claims.preferred_username, claims.email].find((value) => typeof value === 'string');
  return { userId, name: name as string | undefined, claims };
}

/** A JSON object from an upstream answer; `{}` when it is not one (the caller reports what is missing). */
function parseObject(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
