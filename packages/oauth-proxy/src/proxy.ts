import { randomUUID } from 'node:crypto';
import {
  type AuthOutcome,
  type AuthProvider,
  bearerCredential,
  clientAddress,
  FixedWindowLimiter,
  mountProtectedResourceMetadata,
  type Principal,
  parseResourceUrl,
  protectedResourceMetadataUrl,
} from '@mcp-auth-stack/auth';
import { readBodyWithin } from '@mcp-auth-stack/mcp-hono';
import type { Context, Env, Hono } from 'hono';
import { getCookie } from 'hono/cookie';
import {
  type CryptoKey,
  calculateJwkThumbprint,
  decodeJwt,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  jwtVerify,
  SignJWT,
} from 'jose';
import type pg from 'pg';
import { ClientError, ClientResolver, isRegisteredRedirectUri, type ProxyClient, registerClient } from './clients.ts';
import {
  decrypt,
  deriveKey,
  encrypt,
  PKCE_CHALLENGE,
  PKCE_VERIFIER,
  parseKey,
  randomToken,
  s256,
  safeEqual,
  sha256,
  sign,
  verifySigned,
} from './crypto.ts';
import { consentPage, errorPage } from './pages.ts';
import type { Upstream, UpstreamEndpoints } from './upstream.ts';

export interface OAuthProxyOptions {
  /** The proxy's public base URL and OAuth issuer, e.g. `https://mcp.example.com` (no trailing slash). */
  issuer: string;
  /** The MCP endpoint's canonical URL: the `aud` of every access token, e.g. `https://mcp.example.com/mcp`. */
  resource: string;
  upstream: Upstream;
  pool: pg.Pool;
  /** Private JWK (EC P-256 for ES256, or OKP Ed25519 for EdDSA) that signs the proxy's access tokens. */
  signingKey: JWK;
  /** 32 bytes (base64, base64url or hex): seals upstream tokens (AES-256-GCM) and, derived, signs cookies. */
  encryptionKey: string | Uint8Array;
  /** Scopes MCP clients may ask for (default `['mcp:access']`). */
  scopesSupported?: readonly string[] | undefined;
  /** Scopes granted when a client asks for none (default: all of `scopesSupported`). */
  defaultScopes?: readonly string[] | undefined;
  /** Shown on the consent page next to each scope. */
  scopeDescriptions?: Readonly<Record<string, string>> | undefined;
  /** Sent as `scope` in 401 challenges (default `defaultScopes`). */
  challengeScopes?: readonly string[] | undefined;
  /** Named on the consent page and in the Protected Resource Metadata (default `MCP server`). */
  resourceName?: string | undefined;
  accessTokenTtlSeconds?: number | undefined;
  refreshTokenTtlSeconds?: number | undefined;
  authorizationCodeTtlSeconds?: number | undefined;
  /** How long a consent page and an upstream login may take (default 600 s). */
  loginTtlSeconds?: number | undefined;
  /** How long remembered consent lasts (default 30 days). */
  consentRememberDays?: number | undefined;
  /**
   * Development: CIMD documents over http and at private/loopback addresses. Cookies drop the
   * `__Host-` prefix and `Secure` whenever the issuer is http (browsers refuse them there).
   */
  development?: boolean | undefined;
  /** Client ID Metadata Documents (default on; 5 KB, 3 s, cached 60 s to 24 h by Cache-Control). */
  cimd?: { enabled?: boolean | undefined; maxBytes?: number | undefined; timeoutMs?: number | undefined } | undefined;
  /** Largest `/register` body (default 16 KB). */
  maxRegistrationBytes?: number | undefined;
  /** Registrations allowed per client address per minute (default 20). */
  registrationsPerMinute?: number | undefined;
  /** Client ID Metadata Document fetches an address may cause per minute (default 30). */
  metadataDocumentFetchesPerMinute?: number | undefined;
  /** Behind a reverse proxy: take the client address from `X-Forwarded-For` (default false). */
  trustForwardedFor?: boolean | undefined;
  /** Check on every request that the token's grant is not revoked (one primary-key lookup; default true). */
  checkRevocation?: boolean | undefined;
  /** How often expired rows are removed, opportunistically (default 300 s; 0 disables). */
  cleanupIntervalSeconds?: number | undefined;
  clockToleranceSeconds?: number | undefined;
  name?: string | undefined;
  /** For calls to the upstream token and userinfo endpoints (tests). */
  fetch?: typeof fetch | undefined;
  /** Security-relevant events (refusals, reuse detections), for logs. Never receives secrets. */
  onEvent?: ((event: string, details: Record<string, unknown>) => void) | undefined;
  /**
   * Which of the consented scopes this user may get, decided after the upstream login from the
   * upstream claims (e.g. only users with an admin role get `expenses:admin`). The result is
   * intersected with the consented scopes; an empty result ends the login with `access_denied`.
   * Default: every consented scope.
   */
  permittedScopes?:
    | ((input: {
        requested: readonly string[];
        userId: string;
        claims: Readonly<Record<string, unknown>>;
        upstreamScope: string | undefined;
      }) => readonly string[] | Promise<readonly string[]>)
    | undefined;
}

export interface OAuthProxy extends AuthProvider {
  readonly issuer: string;
  readonly resource: string;
  readonly resourceMetadataUrl: string;
  mount<E extends Env>(app: Hono<E>): void;
  /** RFC 8414 metadata document of the proxy. */
  metadata(): Record<string, unknown>;
  /** The public JWK Set (also served at `jwks_uri`), for verifiers in other processes. */
  jwks(): Promise<{ keys: JWK[] }>;
  /** Deletes expired and long-revoked rows; returns how many of each. */
  cleanupExpired(): Promise<Record<string, number>>;
  ready(): Promise<{ ok: boolean; checks: Record<string, string> }>;
}

type Alg = 'ES256' | 'EdDSA';

interface SigningMaterial {
  alg: Alg;
  kid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
}

/** A fresh private signing key as a JWK (store it as `OAUTH_PROXY_SIGNING_KEY`). */
export async function generateSigningKey(alg: Alg = 'ES256'): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, {
    extractable: true,
    ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}),
  });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, alg, kid: await calculateJwkThumbprint(jwk) };
}

async function loadSigningKey(jwk: JWK): Promise<SigningMaterial> {
  if (!jwk.d) throw new Error('The signing key must be a private JWK (with "d").');
  let alg: Alg;
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') alg = 'ES256';
  else if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') alg = 'EdDSA';
  else throw new Error('The signing key must be EC P-256 (ES256) or OKP Ed25519 (EdDSA).');
  if (jwk.alg !== undefined && jwk.alg !== alg && !(alg === 'EdDSA' && jwk.alg === 'Ed25519')) {
    throw new Error(`The signing key says alg ${jwk.alg}, but it is a ${alg} key.`);
  }
  const { d: _private, ...publicPart } = jwk;
  const kid = jwk.kid ?? (await calculateJwkThumbprint(publicPart));
  const publicJwk: JWK = { ...publicPart, alg, kid, use: 'sig' };
  delete publicJwk.key_ops;
  return {
    alg,
    kid,
    privateKey: (await importJWK({ ...jwk, alg }, alg)) as CryptoKey,
    publicKey: (await importJWK(publicJwk, alg)) as CryptoKey,
    publicJwk,
  };
}

class OAuthError extends Error {
  readonly error: string;
  readonly status: number;
  constructor(error: string, description: string, status = 400) {
    super(description);
    this.error = error;
    this.status = status;
  }
}

const CORS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
  'Access-Control-Allow-Headers': 'authorization, content-type, mcp-protocol-version',
  'Access-Control-Max-Age': '86400',
};
const NO_STORE = { 'Cache-Control': 'no-store', Pragma: 'no-cache' };
const ID_TOKEN_CLOCK_SKEW_MS = 60_000;
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]{1,100}$/;

/**
 * An OAuth 2.1 authorization server for MCP clients in front of an OIDC provider that has no
 * Dynamic Client Registration (Entra ID): clients register here (DCR or CIMD), the user consents
 * here, logs in upstream with the proxy's one fixed client, and the client gets the proxy's own
 * short-lived JWTs for the MCP resource. Upstream tokens stay sealed in Postgres.
 */
export function oauthProxy(options: OAuthProxyOptions): OAuthProxy {
  const issuerUrl = new URL(options.issuer);
  if (issuerUrl.search || issuerUrl.hash || options.issuer.endsWith('/')) {
    throw new Error('The issuer must be a URL without query, fragment or trailing slash.');
  }
  const issuer = options.issuer;
  const prefix = issuerUrl.pathname === '/' ? '' : issuerUrl.pathname;
  parseResourceUrl(options.resource);
  const resource = options.resource;
  const secure = issuerUrl.protocol === 'https:';
  const development = options.development ?? false;
  if (!secure && !development && !['localhost', '127.0.0.1', '[::1]'].includes(issuerUrl.hostname)) {
    throw new Error('An http issuer is only allowed on loopback or with development: true.');
  }
  const pool = options.pool;
  const upstream = options.upstream;
  const masterKey = parseKey(options.encryptionKey, 'The encryption key');
  const tokenKey = deriveKey(masterKey, 'upstream-tokens');
  const cookieKey = deriveKey(masterKey, 'cookies');
  const signing = loadSigningKey(options.signingKey);
  signing.catch(() => {});
  const scopesSupported = [...(options.scopesSupported ?? ['mcp:access'])];
  for (const scope of scopesSupported) if (!SCOPE_TOKEN.test(scope)) throw new Error(`Not a valid scope: ${scope}`);
  const defaultScopes = [...(options.defaultScopes ?? scopesSupported)];
  const challengeScopes = options.challengeScopes ?? defaultScopes;
  const accessTtl = options.accessTokenTtlSeconds ?? 300;
  const refreshTtl = options.refreshTokenTtlSeconds ?? 30 * 86_400;
  const codeTtl = options.authorizationCodeTtlSeconds ?? 60;
  const loginTtl = options.loginTtlSeconds ?? 600;
  const rememberSeconds = (options.consentRememberDays ?? 30) * 86_400;
  const checkRevocation = options.checkRevocation ?? true;
  const cleanupInterval = (options.cleanupIntervalSeconds ?? 300) * 1000;
  const clockTolerance = options.clockToleranceSeconds ?? 5;
  const maxRegistrationBytes = options.maxRegistrationBytes ?? 16 * 1024;
  // Per address: registration writes a row, a CIMD lookup makes this server fetch a URL.
  const registrationLimiter = new FixedWindowLimiter(options.registrationsPerMinute ?? 20, 60_000);
  const documentFetchLimiter = new FixedWindowLimiter(options.metadataDocumentFetchesPerMinute ?? 30, 60_000);
  const addressOf = (c: Context) =>
    clientAddress(c.req.raw, c.env as Record<string, unknown> | undefined, options.trustForwardedFor ?? false);
  const doFetch = options.fetch ?? fetch;
  const emit = (event: string, details: Record<string, unknown> = {}) => options.onEvent?.(event, details);
  const resourceName = options.resourceName ?? 'MCP server';
  const resourceMetadataUrl = protectedResourceMetadataUrl(resource);
  const clients = new ClientResolver({
    pool,
    cimd: {
      enabled: options.cimd?.enabled ?? true,
      maxBytes: options.cimd?.maxBytes ?? 5 * 1024,
      timeoutMs: options.cimd?.timeoutMs ?? 3_000,
      allowInsecure: development,
      maxCacheEntries: 1_000,
    },
  });

  const url = (path: string) => `${issuer}${path}`;
  const endpoints = {
    authorize: url('/authorize'),
    consent: url('/consent'),
    callback: url('/auth/callback'),
    token: url('/token'),
    register: url('/register'),
    revoke: url('/revoke'),
    jwks: url('/.well-known/jwks.json'),
  };

  // Cookies: `__Host-` (Secure, Path=/, no Domain) over https. Browsers refuse Secure cookies
  // (and so the prefix) on plain http, so a development issuer on http uses the bare names.
  const cookieName = (name: string) => (secure ? `__Host-${name}` : name);
  const BROWSER_COOKIE = cookieName('mcp_oauth_browser');
  const CONSENT_COOKIE = cookieName('mcp_oauth_consent');
  const cookieOptions = { path: '/', httpOnly: true, secure, sameSite: 'Lax' as const };

  function metadata(): Record<string, unknown> {
    return {
      issuer,
      authorization_endpoint: endpoints.authorize,
      token_endpoint: endpoints.token,
      registration_endpoint: endpoints.register,
      revocation_endpoint: endpoints.revoke,
      jwks_uri: endpoints.jwks,
      scopes_supported: scopesSupported,
      response_types_supported: ['code'],
      response_modes_supported: ['query'],
      grant_types_supported: ['authorization_code', 'refresh_token'],
      token_endpoint_auth_methods_supported: ['none', 'client_secret_post', 'client_secret_basic'],
      revocation_endpoint_auth_methods_supported: ['none', 'client_secret_post', 'client_secret_basic'],
      code_challenge_methods_supported: ['S256'],
      authorization_response_iss_parameter_supported: true,
      client_id_metadata_document_supported: options.cimd?.enabled ?? true,
      protected_resources: [resource],
    };
  }

  // ---- opportunistic cleanup --------------------------------------------------------------
  let nextCleanup = Date.now() + Math.min(cleanupInterval, 60_000);
  async function cleanupExpired(): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    const run = async (name: string, sql: string, values: unknown[] = []) => {
      counts[name] = (await pool.query(sql, values)).rowCount ?? 0;
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
    // Anonymous DCR would otherwise grow the table forever: clients that never got a token a day
    // after registering, and clients unused for longer than a refresh token lives, with nothing
    // left to them. A client that comes back after that registers again.
    await run(
      'clients',
      `DELETE FROM oauth_proxy_clients c
        WHERE CASE WHEN c.last_used_at IS NULL THEN c.created_at < now() - interval '1 day'
                   ELSE c.last_used_at < now() - make_interval(secs => $1) END
         AND NOT EXISTS (SELECT 1 FROM oauth_proxy_grants g WHERE g.client_id = c.client_id)
         AND NOT EXISTS (SELECT 1 FROM oauth_proxy_consent_requests r WHERE r.client_id = c.client_id)
         AND NOT EXISTS (SELECT 1 FROM oauth_proxy_transactions t WHERE t.client_id = c.client_id)`,
      [Math.max(refreshTtl, 86_400) * 2],
    );
    return counts;
  }
  function maybeCleanup(): void {
    if (cleanupInterval <= 0 || Date.now() < nextCleanup) return;
    nextCleanup = Date.now() + cleanupInterval;
    cleanupExpired().then(
      (counts) => emit('cleanup', counts),
      (error) => emit('cleanup_failed', { message: (error as Error).message }),
    );
  }

  // ---- helpers -------------------------------------------------------------------------
  function html(body: string, nonce: string, status = 200, extra: Record<string, string> = {}): Response {
    return new Response(body, {
      status,
      headers: {
        'Content-Type': 'text/html; charset=utf-8',
        'Content-Security-Policy': `default-src 'none'; style-src 'nonce-${nonce}'; form-action 'self' ${extra.formAction ?? ''}; frame-ancestors 'none'; base-uri 'none'`,
        'X-Frame-Options': 'DENY',
        'X-Content-Type-Options': 'nosniff',
        // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the
        // consent form's POST, which the CSRF check then could not tell from a sandboxed frame's.
        'Referrer-Policy': 'same-origin',
        ...NO_STORE,
      },
    });
  }
  function failPage(title: string, message: string, status = 400): Response {
    const nonce = randomToken().slice(0, 22);
    return html(errorPage(nonce, title, message), nonce, status);
  }
  function redirectToClient(redirectUri: string, params: Record<string, string | undefined | null>): Response {
    const target = new URL(redirectUri);
    for (const [name, value] of Object.entries(params)) if (value != null) target.searchParams.set(name, value);
    target.searchParams.set('iss', issuer);
    return new Response(null, { status: 302, headers: { Location: target.toString(), ...NO_STORE } });
  }
  function tokenError(error: OAuthError): Response {
    const headers: Record<string, string> = { ...NO_STORE, ...CORS };
    if (error.status === 401) headers['WWW-Authenticate'] = 'Basic realm="oauth-proxy"';
    return Response.json({ error: error.error, error_description: error.message }, { status: error.status, headers });
  }

  function parseScopes(requested: string | undefined): string[] {
    if (requested === undefined || requested.trim() === '') return defaultScopes;
    const scopes = [...new Set(requested.split(' ').filter(Boolean))];
    const unknown = scopes.filter((scope) => !scopesSupported.includes(scope));
    if (unknown.length > 0) throw new OAuthError('invalid_scope', `Unknown scope ${unknown[0]}.`);
    return scopes;
  }

  function browserId(c: Context): { value: string; fresh: boolean } {
    const existing = getCookie(c, BROWSER_COOKIE);
    if (existing && /^[A-Za-z0-9_-]{43}$/.test(existing)) return { value: existing, fresh: false };
    return { value: randomToken(), fresh: true };
  }
  function setBrowserCookie(headers: Headers, value: string): void {
    headers.append('Set-Cookie', serializeCookie(BROWSER_COOKIE, value, { ...cookieOptions, maxAge: undefined }));
  }

  interface RememberedConsent {
    c: string;
    s: string[];
    x: number;
  }
  function rememberedConsents(c: Context): RememberedConsent[] {
    const raw = getCookie(c, CONSENT_COOKIE);
    if (!raw) return [];
    const payload = verifySigned(cookieKey, raw) as { v?: number; e?: RememberedConsent[] } | undefined;
    if (payload?.v !== 1 || !Array.isArray(payload.e)) return [];
    const now = Math.floor(Date.now() / 1000);
    return payload.e.filter((entry) => typeof entry?.c === 'string' && Array.isArray(entry.s) && entry.x > now);
  }
  function consentRemembered(c: Context, clientId: string, scopes: readonly string[]): boolean {
    return rememberedConsents(c).some(
      (entry) => entry.c === clientId && scopes.every((scope) => entry.s.includes(scope)),
    );
  }

  // ---- the upstream leg --------------------------------------------------------------------
  interface PendingLogin {
    clientId: string;
    redirectUri: string;
    /** The client named it at /authorize (RFC 6749 4.1.3: then it must name it again at /token). */
    redirectUriSent: boolean;
    scopes: string[];
    clientState: string | null;
    codeChallenge: string;
  }
  async function startUpstreamLogin(pending: PendingLogin, browser: string): Promise<string> {
    const upstreamEndpoints = await upstream.endpoints();
    const state = randomToken();
    const verifier = randomToken();
    const nonce = randomToken();
    await pool.query(
      `INSERT INTO oauth_proxy_transactions (state_sha256, browser_sha256, client_id, redirect_uri, scopes,
         client_state, code_challenge, resource, upstream_verifier, nonce, redirect_uri_sent, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now() + make_interval(secs => $12))`,
      [
        sha256(state),
        sha256(browser),
        pending.clientId,
        pending.redirectUri,
        pending.scopes,
        pending.clientState,
        pending.codeChallenge,
        resource,
        verifier,
        nonce,
        pending.redirectUriSent,
        loginTtl,
      ],
    );
    const target = new URL(upstreamEndpoints.authorizationEndpoint);
    const params: Record<string, string> = {
      ...upstream.authorizeParameters,
      response_type: 'code',
      client_id: upstream.clientId,
      redirect_uri: endpoints.callback,
      scope: upstream.scopes.join(' '),
      state,
      nonce,
      code_challenge: s256(verifier),
      code_challenge_method: 'S256',
    };
    for (const [name, value] of Object.entries(params)) target.searchParams.set(name, value);
    return target.toString();
  }

  interface UpstreamTokens {
    access_token: string;
    refresh_token?: string | undefined;
    id_token?: string | undefined;
    expires_at?: number | undefined;
    scope?: string | undefined;
  }

  async function callUpstreamToken(
    upstreamEndpoints: UpstreamEndpoints,
    grant: Record<string, string>,
  ): Promise<{ ok: true; tokens: Record<string, unknown> } | { ok: false; error: string; status: number }> {
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
    const response = await doFetch(upstreamEndpoints.tokenEndpoint, {
      method: 'POST',
      headers,
      body,
      signal: AbortSignal.timeout(10_000),
    });
    const json = (await response.json().catch(() => ({}))) as Record<string, unknown>;
    if (!response.ok || typeof json.access_token !== 'string') {
      return {
        ok: false,
        error: typeof json.error === 'string' ? json.error : 'server_error',
        status: response.status,
      };
    }
    return { ok: true, tokens: json };
  }

  function toStored(tokens: Record<string, unknown>, previous?: UpstreamTokens): UpstreamTokens {
    const expiresIn = typeof tokens.expires_in === 'number' ? tokens.expires_in : Number(tokens.expires_in);
    return {
      access_token: tokens.access_token as string,
      refresh_token: typeof tokens.refresh_token === 'string' ? tokens.refresh_token : previous?.refresh_token,
      id_token: typeof tokens.id_token === 'string' ? tokens.id_token : previous?.id_token,
      expires_at: Number.isFinite(expiresIn) ? Date.now() + expiresIn * 1000 : undefined,
      scope: typeof tokens.scope === 'string' ? tokens.scope : previous?.scope,
    };
  }

  /** The user behind an upstream login: the configured claim of the ID token, else of userinfo. */
  async function upstreamUser(
    upstreamEndpoints: UpstreamEndpoints,
    tokens: UpstreamTokens,
    nonce: string,
  ): Promise<{ userId: string; name: string | undefined; claims: Record<string, unknown> }> {
    let claims: Record<string, unknown> = {};
    if (tokens.id_token) {
      // Received straight from the token endpoint over TLS, with this client's credentials: OIDC
      // Core 3.1.3.7 allows TLS server validation in place of the signature; the claims are checked.
      claims = decodeJwt(tokens.id_token);
      if (upstreamEndpoints.issuer !== undefined && claims.iss !== upstreamEndpoints.issuer) {
        throw new Error('The upstream ID token has an unexpected issuer.');
      }
      const audience = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
      if (!audience.includes(upstream.clientId)) throw new Error('The upstream ID token is for another client.');
      // OIDC Core 3.1.3.7: the nonce that was sent must come back, and the token must be current.
      if (claims.nonce !== nonce) throw new Error('The upstream ID token does not carry the nonce of this login.');
      if (typeof claims.exp !== 'number' || claims.exp * 1000 < Date.now() - ID_TOKEN_CLOCK_SKEW_MS) {
        throw new Error('The upstream ID token has expired.');
      }
    }
    if (typeof claims[upstream.userIdClaim] !== 'string' && upstreamEndpoints.userinfoEndpoint) {
      const response = await doFetch(upstreamEndpoints.userinfoEndpoint, {
        headers: { authorization: `Bearer ${tokens.access_token}`, accept: 'application/json' },
        signal: AbortSignal.timeout(10_000),
      });
      if (response.ok) {
        const info = (await response.json()) as Record<string, unknown>;
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

  // ---- our own tokens ------------------------------------------------------------------------
  async function issueTokens(
    db: pg.PoolClient,
    grant: { id: string; clientId: string; userId: string; userName: string | null; scopes: string[] },
  ): Promise<Record<string, unknown>> {
    const key = await signing;
    const refreshToken = randomToken('mcpr_');
    await db.query(
      `INSERT INTO oauth_proxy_refresh_tokens (token_sha256, grant_id, client_id, expires_at)
       VALUES ($1, $2, $3, now() + make_interval(secs => $4))`,
      [sha256(refreshToken), grant.id, grant.clientId, refreshTtl],
    );
    await db.query('UPDATE oauth_proxy_clients SET last_used_at = now() WHERE client_id = $1', [grant.clientId]);
    await db.query('UPDATE oauth_proxy_grants SET expires_at = now() + make_interval(secs => $2) WHERE id = $1', [
      grant.id,
      refreshTtl,
    ]);
    const claims: Record<string, unknown> = {
      client_id: grant.clientId,
      scope: grant.scopes.join(' '),
      gid: grant.id,
    };
    if (grant.userName) claims.name = grant.userName;
    const accessToken = await new SignJWT(claims)
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'at+jwt' })
      .setIssuer(issuer)
      .setAudience(resource)
      .setSubject(grant.userId)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + accessTtl)
      .setJti(randomUUID())
      .sign(key.privateKey);
    return {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: accessTtl,
      refresh_token: refreshToken,
      scope: grant.scopes.join(' '),
    };
  }

  async function verifyAccessToken(token: string): Promise<AuthOutcome & { grantId?: string }> {
    const key = await signing;
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, key.publicKey, {
        issuer,
        audience: resource,
        algorithms: [key.alg],
        typ: 'at+jwt',
        clockTolerance,
        requiredClaims: ['exp', 'sub', 'gid'],
      }));
    } catch (error) {
      const code = (error as { code?: string }).code;
      return {
        ok: false,
        error: 'invalid_token',
        description:
          code === 'ERR_JWT_EXPIRED' ? 'The access token has expired.' : 'The access token is not valid here.',
      };
    }
    if (checkRevocation) {
      const { rowCount } = await pool.query(
        'SELECT 1 FROM oauth_proxy_grants WHERE id = $1 AND revoked_at IS NULL AND expires_at > now()',
        [payload.gid],
      );
      if (rowCount !== 1) return { ok: false, error: 'invalid_token', description: 'The access token was revoked.' };
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

  async function inTransaction<T>(work: (db: pg.PoolClient) => Promise<T>): Promise<T> {
    const db = await pool.connect();
    try {
      await db.query('BEGIN');
      const result = await work(db);
      await db.query('COMMIT');
      return result;
    } catch (error) {
      await db.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      db.release();
    }
  }

  async function revokeGrant(db: pg.Pool | pg.PoolClient, grantId: string, reason: string): Promise<void> {
    await db.query('UPDATE oauth_proxy_grants SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL', [grantId]);
    await db.query('UPDATE oauth_proxy_refresh_tokens SET used_at = coalesce(used_at, now()) WHERE grant_id = $1', [
      grantId,
    ]);
    emit('grant_revoked', { grant_id: grantId, reason });
  }

  /** Client authentication at /token and /revoke: `none` by client_id, secrets by Basic or form. */
  async function authenticateClient(c: Context, form: URLSearchParams): Promise<ProxyClient> {
    let clientId = form.get('client_id') ?? undefined;
    let secret = form.get('client_secret') ?? undefined;
    const header = c.req.header('authorization');
    if (header?.toLowerCase().startsWith('basic ')) {
      const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) throw new OAuthError('invalid_client', 'Malformed Basic credentials.', 401);
      // RFC 6749 2.3.1: both halves are form-encoded; bad escapes are bad credentials, not a 500.
      const formDecode = (part: string) => {
        try {
          return decodeURIComponent(part.replace(/\+/g, ' '));
        } catch {
          throw new OAuthError('invalid_client', 'Malformed Basic credentials.', 401);
        }
      };
      const basicId = formDecode(decoded.slice(0, colon));
      if (clientId !== undefined && clientId !== basicId) {
        throw new OAuthError('invalid_request', 'Two different client ids.', 400);
      }
      clientId = basicId;
      secret = formDecode(decoded.slice(colon + 1));
    }
    if (!clientId) throw new OAuthError('invalid_client', 'client_id is required.', 401);
    let client: ProxyClient | undefined;
    try {
      // The same per-address limit as at /authorize: /token and /revoke take URL client ids too.
      client = await clients.resolve(clientId, { mayFetch: () => documentFetchLimiter.allow(addressOf(c)) });
    } catch (error) {
      if (error instanceof ClientError) throw new OAuthError('invalid_client', error.message, 401);
      throw error;
    }
    if (!client) throw new OAuthError('invalid_client', 'Unknown client.', 401);
    if (client.secretSha256) {
      if (secret === undefined || !safeEqual(sha256(secret).toString('hex'), client.secretSha256.toString('hex'))) {
        throw new OAuthError('invalid_client', 'Client authentication failed.', 401);
      }
    }
    return client;
  }

  async function readForm(c: Context): Promise<URLSearchParams> {
    const type = c.req.header('content-type') ?? '';
    if (!type.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
      throw new OAuthError('invalid_request', 'Send application/x-www-form-urlencoded.');
    }
    const text = await readBodyWithin(c.req.raw, 16 * 1024);
    if (text === undefined) throw new OAuthError('invalid_request', 'The request is too large.');
    const form = new URLSearchParams(text);
    for (const name of new Set(form.keys())) {
      if (form.getAll(name).length > 1) throw new OAuthError('invalid_request', `Parameter ${name} is repeated.`);
    }
    return form;
  }

  // ---- endpoints ---------------------------------------------------------------------------
  async function authorize(c: Context): Promise<Response> {
    maybeCleanup();
    const query = new URL(c.req.url).searchParams;
    // RFC 6749 3.1: no parameter more than once. Before anything is read, so that no check and
    // the later use can each see another copy.
    const repeated = [...new Set(query.keys())].find((name) => query.getAll(name).length > 1);
    if (repeated !== undefined) {
      return failPage('Invalid request', `The parameter ${repeated} appears more than once.`);
    }
    const clientId = query.get('client_id');
    if (!clientId) return failPage('Invalid request', 'The application did not say who it is (client_id).');
    let client: ProxyClient | undefined;
    try {
      client = await clients.resolve(clientId, { mayFetch: () => documentFetchLimiter.allow(addressOf(c)) });
    } catch (error) {
      if (!(error instanceof ClientError)) throw error;
      emit('client_refused', { client_id: clientId, reason: error.message });
      return failPage('Unknown application', error.message);
    }
    if (!client) return failPage('Unknown application', 'This application is not registered here.');
    let redirectUri = query.get('redirect_uri');
    const redirectUriSent = redirectUri !== null;
    if (redirectUri === null && client.redirectUris.length === 1) redirectUri = client.redirectUris[0] as string;
    if (redirectUri === null || !isRegisteredRedirectUri(client.redirectUris, redirectUri)) {
      emit('redirect_uri_refused', { client_id: clientId });
      return failPage(
        'Invalid redirect',
        'The redirect URI is not one this application registered, so the request was stopped here.',
      );
    }
    // From here on, errors go back to the (verified) redirect URI.
    const state = query.get('state');
    const back = (error: string, description: string) =>
      redirectToClient(redirectUri, { error, error_description: description, state });
    if (query.get('response_type') !== 'code') return back('unsupported_response_type', 'Only response_type=code.');
    const challenge = query.get('code_challenge');
    if (!challenge || !PKCE_CHALLENGE.test(challenge)) return back('invalid_request', 'PKCE code_challenge required.');
    if (query.get('code_challenge_method') !== 'S256')
      return back('invalid_request', 'code_challenge_method must be S256.');
    const requestedResource = query.get('resource');
    if (requestedResource !== null && requestedResource !== resource) {
      return back('invalid_target', `resource must be ${resource}.`);
    }
    if (state !== null && state.length > 1024) return back('invalid_request', 'state is too long.');
    let scopes: string[];
    try {
      scopes = parseScopes(query.get('scope') ?? undefined);
    } catch (error) {
      return back((error as OAuthError).error, (error as Error).message);
    }
    const browser = browserId(c);
    const headers = new Headers(NO_STORE);
    if (browser.fresh) setBrowserCookie(headers, browser.value);

    if (consentRemembered(c, client.clientId, scopes)) {
      const location = await startUpstreamLogin(
        {
          clientId: client.clientId,
          redirectUri,
          redirectUriSent,
          scopes,
          clientState: state,
          codeChallenge: challenge,
        },
        browser.value,
      );
      headers.set('Location', location);
      emit('consent_remembered', { client_id: client.clientId });
      return new Response(null, { status: 302, headers });
    }

    const requestId = randomToken();
    const csrf = randomToken();
    await pool.query(
      `INSERT INTO oauth_proxy_consent_requests (id_sha256, csrf_sha256, browser_sha256, client_id, redirect_uri,
         scopes, client_state, code_challenge, resource, redirect_uri_sent, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11))`,
      [
        sha256(requestId),
        sha256(csrf),
        sha256(browser.value),
        client.clientId,
        redirectUri,
        scopes,
        state,
        challenge,
        resource,
        redirectUriSent,
        loginTtl,
      ],
    );
    const upstreamEndpoints = await upstream.endpoints();
    const nonce = randomToken().slice(0, 22);
    const page = consentPage({
      nonce,
      action: endpoints.consent,
      requestId,
      csrf,
      clientName: client.clientName,
      clientId: client.clientId,
      clientKind: client.kind,
      redirectUri,
      scopes: scopes.map((name) => ({ name, description: options.scopeDescriptions?.[name] })),
      resourceName,
      resource,
      upstreamName: upstream.displayName,
    });
    const response = html(page, nonce, 200, {
      // After the form is posted, the browser follows a redirect upstream (approve) or to the client (deny).
      formAction: `${new URL(upstreamEndpoints.authorizationEndpoint).origin} ${new URL(redirectUri).origin}`,
    });
    for (const [name, value] of headers) if (name.toLowerCase() === 'set-cookie') response.headers.append(name, value);
    return response;
  }

  async function consent(c: Context): Promise<Response> {
    let form: URLSearchParams;
    try {
      form = await readForm(c);
    } catch (error) {
      return failPage('Invalid request', (error as Error).message);
    }
    const origin = c.req.header('origin');
    if (origin !== undefined && origin !== issuerUrl.origin) {
      emit('consent_csrf_refused', { reason: 'origin' });
      return failPage('Request refused', 'The consent form was posted from another site.', 403);
    }
    const requestId = form.get('request') ?? '';
    const csrf = form.get('csrf') ?? '';
    const browser = getCookie(c, BROWSER_COOKIE) ?? '';
    const { rows } = await pool.query<{ csrf_sha256: Buffer; browser_sha256: Buffer }>(
      'SELECT csrf_sha256, browser_sha256 FROM oauth_proxy_consent_requests WHERE id_sha256 = $1 AND expires_at > now()',
      [sha256(requestId)],
    );
    const pending = rows[0];
    if (!pending)
      return failPage('This page has expired', 'The consent request is unknown, expired or already answered.');
    if (
      !csrf ||
      !browser ||
      !sha256(csrf).equals(pending.csrf_sha256) ||
      !sha256(browser).equals(pending.browser_sha256)
    ) {
      emit('consent_csrf_refused', { reason: 'token' });
      return failPage('Request refused', 'The consent form could not be verified (CSRF check failed).', 403);
    }
    // Single use: whoever deletes the row owns the decision.
    const consumed = await pool.query<{
      client_id: string;
      redirect_uri: string;
      redirect_uri_sent: boolean;
      scopes: string[];
      client_state: string | null;
      code_challenge: string;
    }>(
      `DELETE FROM oauth_proxy_consent_requests WHERE id_sha256 = $1
       RETURNING client_id, redirect_uri, redirect_uri_sent, scopes, client_state, code_challenge`,
      [sha256(requestId)],
    );
    const request = consumed.rows[0];
    if (!request) return failPage('This page has expired', 'The consent request was already answered.');
    const decision = form.get('decision');
    if (decision !== 'approve') {
      emit('consent_denied', { client_id: request.client_id });
      return redirectToClient(request.redirect_uri, {
        error: 'access_denied',
        error_description: 'The user denied the request.',
        state: request.client_state,
      });
    }
    const location = await startUpstreamLogin(
      {
        clientId: request.client_id,
        redirectUri: request.redirect_uri,
        redirectUriSent: request.redirect_uri_sent,
        scopes: request.scopes,
        clientState: request.client_state,
        codeChallenge: request.code_challenge,
      },
      browser,
    );
    const headers = new Headers({ Location: location, ...NO_STORE });
    if (form.get('remember') === '1') {
      const now = Math.floor(Date.now() / 1000);
      const entries = rememberedConsents(c).filter((entry) => entry.c !== request.client_id);
      entries.push({ c: request.client_id, s: request.scopes, x: now + rememberSeconds });
      const value = sign(cookieKey, { v: 1, e: entries.slice(-20) });
      headers.append(
        'Set-Cookie',
        serializeCookie(CONSENT_COOKIE, value, { ...cookieOptions, maxAge: rememberSeconds }),
      );
    }
    emit('consent_approved', { client_id: request.client_id });
    return new Response(null, { status: 302, headers });
  }

  async function callback(c: Context): Promise<Response> {
    const query = new URL(c.req.url).searchParams;
    const state = query.get('state');
    if (!state) return failPage('Sign-in failed', 'The identity provider answered without state.');
    const { rows } = await pool.query<{
      browser_sha256: Buffer;
      client_id: string;
      redirect_uri: string;
      redirect_uri_sent: boolean;
      scopes: string[];
      client_state: string | null;
      code_challenge: string;
      resource: string;
      upstream_verifier: string;
      nonce: string;
      expired: boolean;
    }>(
      `DELETE FROM oauth_proxy_transactions WHERE state_sha256 = $1
       RETURNING browser_sha256, client_id, redirect_uri, redirect_uri_sent, scopes, client_state, code_challenge,
         resource, upstream_verifier, nonce, expires_at < now() AS expired`,
      [sha256(state)],
    );
    const login = rows[0];
    if (!login || login.expired) {
      emit('state_refused', { reason: login ? 'expired' : 'unknown or replayed' });
      return failPage('Sign-in link expired', 'This sign-in was already completed or has expired.');
    }
    const browser = getCookie(c, BROWSER_COOKIE);
    if (!browser || !sha256(browser).equals(login.browser_sha256)) {
      emit('state_refused', { reason: 'other browser' });
      return failPage('Sign-in refused', 'This sign-in was started in another browser.', 403);
    }
    const back = (params: Record<string, string>) =>
      redirectToClient(login.redirect_uri, { ...params, state: login.client_state });
    const upstreamError = query.get('error');
    if (upstreamError) {
      return back({
        error: upstreamError === 'access_denied' ? 'access_denied' : 'server_error',
        error_description: 'The sign-in at the identity provider did not complete.',
      });
    }
    const code = query.get('code');
    if (!code) return back({ error: 'server_error', error_description: 'The identity provider sent no code.' });
    let tokens: UpstreamTokens;
    let user: { userId: string; name: string | undefined; claims: Record<string, unknown> };
    try {
      const upstreamEndpoints = await upstream.endpoints();
      const exchanged = await callUpstreamToken(upstreamEndpoints, {
        grant_type: 'authorization_code',
        code,
        redirect_uri: endpoints.callback,
        code_verifier: login.upstream_verifier,
      });
      if (!exchanged.ok) throw new Error(`upstream token endpoint: ${exchanged.error} (${exchanged.status})`);
      tokens = toStored(exchanged.tokens);
      user = await upstreamUser(upstreamEndpoints, tokens, login.nonce);
      if (options.permittedScopes) {
        const permitted = new Set(
          await options.permittedScopes({
            requested: login.scopes,
            userId: user.userId,
            claims: user.claims,
            upstreamScope: tokens.scope,
          }),
        );
        login.scopes = login.scopes.filter((scope) => permitted.has(scope));
      }
    } catch (error) {
      emit('upstream_failed', { message: (error as Error).message });
      return back({
        error: 'server_error',
        error_description: 'The identity provider could not complete the sign-in.',
      });
    }
    if (login.scopes.length === 0) {
      emit('scopes_refused', { client_id: login.client_id, user_id: user.userId });
      return back({
        error: 'access_denied',
        error_description: 'None of the requested scopes is permitted for this user.',
      });
    }
    const grantId = `grant_${randomToken().slice(0, 32)}`;
    const ourCode = randomToken('mcpc_');
    await inTransaction(async (db) => {
      await db.query(
        `INSERT INTO oauth_proxy_grants (id, client_id, user_id, user_name, scopes, resource, upstream_tokens,
           upstream_expires_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8::double precision / 1000), now() + make_interval(secs => $9))`,
        [
          grantId,
          login.client_id,
          user.userId,
          user.name ?? null,
          login.scopes,
          login.resource,
          encrypt(tokenKey, JSON.stringify(tokens), grantId),
          tokens.expires_at ?? null,
          Math.max(codeTtl + 3600, 0),
        ],
      );
      await db.query(
        `INSERT INTO oauth_proxy_codes (code_sha256, grant_id, client_id, redirect_uri, redirect_uri_sent,
           code_challenge, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))`,
        [
          sha256(ourCode),
          grantId,
          login.client_id,
          login.redirect_uri,
          login.redirect_uri_sent,
          login.code_challenge,
          codeTtl,
        ],
      );
    });
    emit('login_completed', { client_id: login.client_id, user_id: user.userId });
    return back({ code: ourCode });
  }

  async function token(c: Context): Promise<Response> {
    maybeCleanup();
    try {
      const form = await readForm(c);
      const client = await authenticateClient(c, form);
      const requestedResource = form.get('resource');
      if (requestedResource !== null && requestedResource !== resource) {
        throw new OAuthError('invalid_target', `resource must be ${resource}.`);
      }
      const grantType = form.get('grant_type');
      let body: Record<string, unknown>;
      if (grantType === 'authorization_code') body = await exchangeCode(client, form);
      else if (grantType === 'refresh_token') body = await refresh(client, form);
      else throw new OAuthError('unsupported_grant_type', 'Use authorization_code or refresh_token.');
      return Response.json(body, { headers: { ...NO_STORE, ...CORS } });
    } catch (error) {
      if (error instanceof OAuthError) {
        emit('token_refused', { error: error.error, description: error.message });
        return tokenError(error);
      }
      throw error;
    }
  }

  async function exchangeCode(client: ProxyClient, form: URLSearchParams): Promise<Record<string, unknown>> {
    const code = form.get('code');
    if (!code) throw new OAuthError('invalid_request', 'code is required.');
    const verifier = form.get('code_verifier');
    const outcome = await inTransaction(async (db) => {
      const { rows } = await db.query<{
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
      }>(
        `SELECT c.grant_id, c.client_id, c.redirect_uri, c.redirect_uri_sent, c.code_challenge,
           c.expires_at < now() AS expired,
           c.used_at IS NOT NULL AS used, g.revoked_at IS NOT NULL AS revoked, g.user_id, g.user_name, g.scopes
         FROM oauth_proxy_codes c JOIN oauth_proxy_grants g ON g.id = c.grant_id
         WHERE c.code_sha256 = $1 FOR UPDATE OF c, g`,
        [sha256(code)],
      );
      const row = rows[0];
      if (!row) return new OAuthError('invalid_grant', 'The authorization code is unknown.');
      if (row.used) {
        // RFC 9700 4.4.3 / OAuth 2.1: a replayed code revokes what its first use obtained.
        await revokeGrant(db, row.grant_id, 'authorization code reused');
        return new OAuthError('invalid_grant', 'The authorization code was already used; its tokens are revoked.');
      }
      if (row.expired || row.revoked) return new OAuthError('invalid_grant', 'The authorization code has expired.');
      if (row.client_id !== client.clientId)
        return new OAuthError('invalid_grant', 'The code was issued to another client.');
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
      await db.query('UPDATE oauth_proxy_codes SET used_at = now() WHERE code_sha256 = $1', [sha256(code)]);
      return await issueTokens(db, {
        id: row.grant_id,
        clientId: row.client_id,
        userId: row.user_id,
        userName: row.user_name,
        scopes: row.scopes,
      });
    });
    if (outcome instanceof OAuthError) throw outcome;
    return outcome;
  }

  async function refresh(client: ProxyClient, form: URLSearchParams): Promise<Record<string, unknown>> {
    const presented = form.get('refresh_token');
    if (!presented) throw new OAuthError('invalid_request', 'refresh_token is required.');
    const outcome = await inTransaction(async (db) => {
      const { rows } = await db.query<{
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
      }>(
        `SELECT r.grant_id, r.client_id, r.used_at IS NOT NULL AS used,
           (r.expires_at < now() OR g.expires_at < now()) AS expired, g.revoked_at IS NOT NULL AS revoked,
           g.user_id, g.user_name, g.scopes, g.upstream_tokens,
           coalesce(g.upstream_expires_at < now() + interval '60 seconds', false) AS upstream_stale
         FROM oauth_proxy_refresh_tokens r JOIN oauth_proxy_grants g ON g.id = r.grant_id
         WHERE r.token_sha256 = $1 FOR UPDATE OF r, g`,
        [sha256(presented)],
      );
      const row = rows[0];
      if (!row) return new OAuthError('invalid_grant', 'The refresh token is unknown.');
      if (row.client_id !== client.clientId)
        return new OAuthError('invalid_grant', 'The refresh token belongs to another client.');
      if (row.revoked) return new OAuthError('invalid_grant', 'The grant was revoked.');
      if (row.used) {
        // A rotated-out refresh token came back: someone holds a copy. End the whole grant.
        await revokeGrant(db, row.grant_id, 'refresh token reused');
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
        // Transparent upstream refresh: the upstream session must still be alive for ours to go on.
        const stored = JSON.parse(decrypt(tokenKey, row.upstream_tokens, row.grant_id)) as UpstreamTokens;
        if (!stored.refresh_token) {
          await revokeGrant(db, row.grant_id, 'upstream session ended');
          return new OAuthError('invalid_grant', 'The sign-in at the identity provider has ended.');
        }
        let renewed: Awaited<ReturnType<typeof callUpstreamToken>>;
        try {
          renewed = await callUpstreamToken(await upstream.endpoints(), {
            grant_type: 'refresh_token',
            refresh_token: stored.refresh_token,
            scope: upstream.scopes.join(' '),
          });
        } catch {
          return new OAuthError('temporarily_unavailable', 'The identity provider is not reachable.', 503);
        }
        if (!renewed.ok) {
          if (renewed.status >= 500) {
            return new OAuthError('temporarily_unavailable', 'The identity provider is not available.', 503);
          }
          await revokeGrant(db, row.grant_id, `upstream refresh refused: ${renewed.error}`);
          return new OAuthError('invalid_grant', 'The identity provider ended the sign-in.');
        }
        const next = toStored(renewed.tokens, stored);
        // Stored first: the upstream may have rotated its refresh token, which must not be lost
        // whatever is decided below.
        await db.query(
          `UPDATE oauth_proxy_grants SET upstream_tokens = $2,
             upstream_expires_at = to_timestamp($3::double precision / 1000) WHERE id = $1`,
          [row.grant_id, encrypt(tokenKey, JSON.stringify(next), row.grant_id), next.expires_at ?? null],
        );
        emit('upstream_refreshed', { grant_id: row.grant_id });
        if (options.permittedScopes) {
          // Decided again on every upstream refresh: a user who lost a role upstream (an
          // administrator no longer) loses what it permitted here too.
          const freshIdToken = typeof renewed.tokens.id_token === 'string' ? renewed.tokens.id_token : undefined;
          const permitted = new Set(
            await options.permittedScopes({
              requested: row.scopes,
              userId: row.user_id,
              claims: freshIdToken ? decodeJwt(freshIdToken) : {},
              upstreamScope: next.scope,
            }),
          );
          const kept = row.scopes.filter((scope) => permitted.has(scope));
          if (kept.length === 0) {
            await revokeGrant(db, row.grant_id, 'nothing permitted after the upstream refresh');
            return new OAuthError('invalid_grant', 'The identity provider no longer permits this access.');
          }
          if (kept.length !== row.scopes.length) {
            await db.query('UPDATE oauth_proxy_grants SET scopes = $2 WHERE id = $1', [row.grant_id, kept]);
            emit('grant_narrowed', { grant_id: row.grant_id, scopes: kept });
          }
          scopes = scopes.filter((scope) => permitted.has(scope));
          if (scopes.length === 0) {
            return new OAuthError('invalid_scope', 'None of the requested scopes is permitted any more.');
          }
        }
      }
      await db.query('UPDATE oauth_proxy_refresh_tokens SET used_at = now() WHERE token_sha256 = $1', [
        sha256(presented),
      ]);
      return await issueTokens(db, {
        id: row.grant_id,
        clientId: row.client_id,
        userId: row.user_id,
        userName: row.user_name,
        scopes,
      });
    });
    if (outcome instanceof OAuthError) throw outcome;
    return outcome;
  }

  async function revoke(c: Context): Promise<Response> {
    try {
      const form = await readForm(c);
      const client = await authenticateClient(c, form);
      const presented = form.get('token');
      if (!presented) throw new OAuthError('invalid_request', 'token is required.');
      let grantId: string | undefined;
      if (presented.startsWith('mcpr_')) {
        const { rows } = await pool.query<{ grant_id: string; client_id: string }>(
          'SELECT grant_id, client_id FROM oauth_proxy_refresh_tokens WHERE token_sha256 = $1',
          [sha256(presented)],
        );
        if (rows[0]?.client_id === client.clientId) grantId = rows[0].grant_id;
      } else {
        const verified = await verifyAccessToken(presented);
        if (verified.ok && verified.principal.clientId === client.clientId) grantId = verified.grantId;
      }
      if (grantId !== undefined) await revokeGrant(pool, grantId, 'revoked by the client');
      // RFC 7009 2.2: 200 whether or not the token was known.
      return new Response(null, { status: 200, headers: { ...NO_STORE, ...CORS } });
    } catch (error) {
      if (error instanceof OAuthError) return tokenError(error);
      throw error;
    }
  }

  async function register(c: Context): Promise<Response> {
    const fail = (status: number, error: string, description: string) =>
      Response.json({ error, error_description: description }, { status, headers: { ...NO_STORE, ...CORS } });
    if (!registrationLimiter.allow(addressOf(c))) {
      emit('registration_limited', {});
      return Response.json(
        { error: 'invalid_client_metadata', error_description: 'Too many registrations; try again in a minute.' },
        { status: 429, headers: { ...NO_STORE, ...CORS, 'Retry-After': '60' } },
      );
    }
    const text = await readBodyWithin(c.req.raw, maxRegistrationBytes);
    if (text === undefined) {
      return fail(413, 'invalid_client_metadata', `Registration larger than ${maxRegistrationBytes} bytes.`);
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return fail(400, 'invalid_client_metadata', 'The registration is not valid JSON.');
    }
    try {
      const document = await registerClient(pool, body);
      emit('client_registered', { client_id: document.client_id });
      return Response.json(document, { status: 201, headers: { ...NO_STORE, ...CORS } });
    } catch (error) {
      if (error instanceof ClientError) return fail(400, error.error, error.message);
      throw error;
    }
  }

  const preflight = () => new Response(null, { status: 204, headers: CORS });
  async function jwks(): Promise<{ keys: JWK[] }> {
    return { keys: [(await signing).publicJwk] };
  }

  return {
    name: options.name ?? 'oauth_proxy',
    issuer,
    resource,
    resourceMetadataUrl,
    metadata,
    cleanupExpired,
    challengeParameters() {
      const parameters: Record<string, string> = { resource_metadata: resourceMetadataUrl };
      if (challengeScopes.length > 0) parameters.scope = challengeScopes.join(' ');
      return parameters;
    },
    async authenticate(request) {
      const credential = bearerCredential(request);
      if (credential === undefined) {
        if (request.headers.has('authorization')) {
          return { ok: false, error: 'invalid_request', description: 'Send "Authorization: Bearer <token>".' };
        }
        return { ok: false };
      }
      const { grantId: _grant, ...outcome } = await verifyAccessToken(credential);
      return outcome as AuthOutcome;
    },
    jwks,
    async ready() {
      const checks: Record<string, string> = {};
      await Promise.all([
        upstream.endpoints().then(
          () => {
            checks.upstream = 'ok';
          },
          () => {
            checks.upstream = 'unreachable';
          },
        ),
        pool.query('SELECT 1 FROM oauth_proxy_grants LIMIT 1').then(
          () => {
            checks.database = 'ok';
          },
          () => {
            checks.database = 'unreachable';
          },
        ),
      ]);
      return { ok: Object.values(checks).every((value) => value === 'ok'), checks };
    },
    mount<E extends Env>(app: Hono<E>) {
      mountProtectedResourceMetadata(app, {
        resource,
        authorizationServers: [issuer],
        scopesSupported,
        resourceName,
      });
      const metadataPath = `/.well-known/oauth-authorization-server${prefix}`;
      app.get(metadataPath, () =>
        Response.json(metadata(), { headers: { 'Cache-Control': 'public, max-age=300', ...CORS } }),
      );
      app.options(metadataPath, preflight);
      app.get(`${prefix}/.well-known/jwks.json`, async () =>
        Response.json(await jwks(), { headers: { 'Cache-Control': 'public, max-age=300', ...CORS } }),
      );
      app.get(`${prefix}/authorize`, (c) => authorize(c as unknown as Context));
      app.post(`${prefix}/consent`, (c) => consent(c as unknown as Context));
      app.get(`${prefix}/auth/callback`, (c) => callback(c as unknown as Context));
      for (const [path, handler] of [
        ['/register', register],
        ['/token', token],
        ['/revoke', revoke],
      ] as const) {
        app.post(`${prefix}${path}`, (c) => handler(c as unknown as Context));
        app.options(`${prefix}${path}`, preflight);
      }
    },
  };
}

function serializeCookie(
  name: string,
  value: string,
  options: { path: string; httpOnly: boolean; secure: boolean; sameSite: 'Lax'; maxAge?: number | undefined },
): string {
  const parts = [`${name}=${value}`, `Path=${options.path}`, `SameSite=${options.sameSite}`];
  if (options.maxAge !== undefined) parts.push(`Max-Age=${options.maxAge}`);
  if (options.httpOnly) parts.push('HttpOnly');
  if (options.secure) parts.push('Secure');
  return parts.join('; ');
}
