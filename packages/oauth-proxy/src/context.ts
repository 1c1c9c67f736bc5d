import {
  clientAddress,
  FixedWindowLimiter,
  parseResourceUrl,
  protectedResourceMetadataUrl,
} from '@mcp-auth-stack/auth';
import { isLoopbackUrlHost } from '@mcp-auth-stack/loopback';
import type { Context } from 'hono';
import type { JWK } from 'jose';
import type pg from 'pg';
import { ClientResolver } from './clients.ts';
import { deriveKey, parseKey } from './crypto.ts';
import { loadSigningKey, type SigningMaterial } from './keys.ts';
import { OneAtATime } from './one-at-a-time.ts';
import { ProxyStore } from './store.ts';
import type { Upstream } from './upstream.ts';

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
   * An approval sent sooner than this after its consent page was made is refused (default 1000
   * ms): a click or a key press meant for another page (an attacker's popup that puts the
   * consent page under the user's second click) arrives within a few hundred milliseconds, a
   * reader's does not. 0 turns the check off (tests that post the form at once).
   */
  consentMinimumViewMs?: number | undefined;
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
  /** Sign-ins (`/authorize` requests that store a pending login) per client address per minute (default 30). */
  authorizationsPerMinute?: number | undefined;
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

/** Scope tokens as RFC 6749 3.3 allows them (printable ASCII without space, `"` and `\`), at most 100 characters. */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]{1,100}$/;

/** What every handler needs, resolved once from the options: defaults applied, keys parsed, URLs built. */
export interface ProxyContext {
  issuer: string;
  issuerOrigin: string;
  /** The issuer's path ('' for a root issuer): the proxy's routes live below it. */
  prefix: string;
  resource: string;
  resourceName: string;
  resourceMetadataUrl: string;
  /** The issuer is https: cookies get `Secure` and the `__Host-` prefix. */
  secure: boolean;
  upstream: Upstream;
  store: ProxyStore;
  clients: ClientResolver;
  keys: { upstreamTokens: Buffer; cookies: Buffer; signing: Promise<SigningMaterial> };
  scopes: {
    supported: string[];
    defaults: string[];
    challenge: readonly string[];
    descriptions: Readonly<Record<string, string>> | undefined;
  };
  ttl: { access: number; refresh: number; code: number; login: number; rememberConsent: number };
  consentMinimumViewMs: number;
  /** Refreshes of one grant, one at a time in this process (waiting without a pool connection). */
  refreshesByGrant: OneAtATime;
  checkRevocation: boolean;
  clockTolerance: number;
  cimdEnabled: boolean;
  maxRegistrationBytes: number;
  /** Per client address: registration writes a row, a CIMD lookup makes this server fetch a URL. */
  limits: {
    registrations: FixedWindowLimiter;
    documentFetches: FixedWindowLimiter;
    authorizations: FixedWindowLimiter;
  };
  addressOf(c: Context): string;
  endpoints: Record<'authorize' | 'consent' | 'callback' | 'token' | 'register' | 'revoke' | 'jwks', string>;
  fetch: typeof fetch;
  emit(event: string, details?: Record<string, unknown>): void;
  permittedScopes: OAuthProxyOptions['permittedScopes'];
}

export function resolveContext(options: OAuthProxyOptions): ProxyContext {
  const issuerUrl = new URL(options.issuer);
  if (issuerUrl.search || issuerUrl.hash || options.issuer.endsWith('/')) {
    throw new Error('The issuer must be a URL without query, fragment or trailing slash.');
  }
  const issuer = options.issuer;
  parseResourceUrl(options.resource);
  const resource = options.resource;
  const secure = issuerUrl.protocol === 'https:';
  const development = options.development ?? false;
  if (!secure && !development && !isLoopbackUrlHost(issuerUrl.hostname)) {
    throw new Error('An http issuer is only allowed on loopback or with development: true.');
  }
  const masterKey = parseKey(options.encryptionKey, 'The encryption key');
  const signing = loadSigningKey(options.signingKey);
  signing.catch(() => {});
  const supported = [...(options.scopesSupported ?? ['mcp:access'])];
  for (const scope of supported) if (!SCOPE_TOKEN.test(scope)) throw new Error(`Not a valid scope: ${scope}`);
  const defaults = [...(options.defaultScopes ?? supported)];
  const ttl = {
    access: options.accessTokenTtlSeconds ?? 300,
    refresh: options.refreshTokenTtlSeconds ?? 30 * 86_400,
    code: options.authorizationCodeTtlSeconds ?? 60,
    login: options.loginTtlSeconds ?? 600,
    rememberConsent: (options.consentRememberDays ?? 30) * 86_400,
  };
  const emit = (event: string, details: Record<string, unknown> = {}) => options.onEvent?.(event, details);
  const trustForwardedFor = options.trustForwardedFor ?? false;
  const url = (path: string) => `${issuer}${path}`;
  return {
    issuer,
    issuerOrigin: issuerUrl.origin,
    prefix: issuerUrl.pathname === '/' ? '' : issuerUrl.pathname,
    resource,
    resourceName: options.resourceName ?? 'MCP server',
    resourceMetadataUrl: protectedResourceMetadataUrl(resource),
    secure,
    upstream: options.upstream,
    store: new ProxyStore(options.pool, {
      refreshTtlSeconds: ttl.refresh,
      cleanupIntervalMs: (options.cleanupIntervalSeconds ?? 300) * 1000,
      emit,
    }),
    clients: new ClientResolver({
      pool: options.pool,
      cimd: {
        enabled: options.cimd?.enabled ?? true,
        maxBytes: options.cimd?.maxBytes ?? 5 * 1024,
        timeoutMs: options.cimd?.timeoutMs ?? 3_000,
        allowInsecure: development,
        maxCacheEntries: 1_000,
      },
    }),
    keys: {
      upstreamTokens: deriveKey(masterKey, 'upstream-tokens'),
      cookies: deriveKey(masterKey, 'cookies'),
      signing,
    },
    scopes: {
      supported,
      defaults,
      challenge: options.challengeScopes ?? defaults,
      descriptions: options.scopeDescriptions,
    },
    ttl,
    consentMinimumViewMs: options.consentMinimumViewMs ?? 1_000,
    refreshesByGrant: new OneAtATime(),
    checkRevocation: options.checkRevocation ?? true,
    clockTolerance: options.clockToleranceSeconds ?? 5,
    cimdEnabled: options.cimd?.enabled ?? true,
    maxRegistrationBytes: options.maxRegistrationBytes ?? 16 * 1024,
    limits: {
      registrations: new FixedWindowLimiter(options.registrationsPerMinute ?? 20, 60_000),
      documentFetches: new FixedWindowLimiter(options.metadataDocumentFetchesPerMinute ?? 30, 60_000),
      authorizations: new FixedWindowLimiter(options.authorizationsPerMinute ?? 30, 60_000),
    },
    addressOf: (c) => clientAddress(c.req.raw, c.env as Record<string, unknown> | undefined, trustForwardedFor),
    endpoints: {
      authorize: url('/authorize'),
      consent: url('/consent'),
      callback: url('/auth/callback'),
      token: url('/token'),
      register: url('/register'),
      revoke: url('/revoke'),
      jwks: url('/.well-known/jwks.json'),
    },
    fetch: options.fetch ?? fetch,
    emit,
    permittedScopes: options.permittedScopes,
  };
}
