import type { Env, Hono } from 'hono';
import { type JWTPayload, jwtVerify } from 'jose';
import { type AuthOutcome, type AuthProvider, AuthUnavailableError } from './auth-provider.ts';
import { fetchJson, RemoteKeySet, type RemoteKeySetOptions } from './jwks.ts';
import { mountProtectedResourceMetadata, parseResourceUrl, protectedResourceMetadataUrl } from './metadata.ts';
import { authenticateRequest } from './middleware.ts';
import type { Principal } from './principal.ts';
import { VerifiedTokenCache } from './token-cache.ts';

/** Asymmetric signature algorithms only: a verifier holding public keys must never accept HMAC or `none`. */
export const DEFAULT_JWT_ALGORITHMS: readonly string[] = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
];

export interface JwtBearerProviderOptions {
  /** Exact `iss` of accepted tokens, e.g. `https://idp.example.com/realms/mcp`. */
  issuer: string;
  /** The issuer's JSON Web Key Set, e.g. `${issuer}/protocol/openid-connect/certs` for Keycloak. */
  jwksUri: string;
  /** This server's canonical resource URL, e.g. `https://mcp.example.com/mcp`. */
  resource: string;
  /** Accepted `aud` values; a token must name at least one (default: `[resource]`). */
  audience?: string | readonly string[] | undefined;
  /** Authorization servers named in the Protected Resource Metadata (default: `[issuer]`). */
  authorizationServers?: readonly string[] | undefined;
  /** Scopes a client should request, sent as `scope` in challenges (e.g. `['mcp:access']`). */
  challengeScopes?: readonly string[] | undefined;
  /** `scopes_supported` of the Protected Resource Metadata (default: `challengeScopes`). */
  scopesSupported?: readonly string[] | undefined;
  resourceName?: string | undefined;
  resourceDocumentation?: string | undefined;
  /** Accepted `alg` values (default `DEFAULT_JWT_ALGORITHMS`); `none` and HS* are refused. */
  algorithms?: readonly string[] | undefined;
  /** Accepted `typ` header, e.g. `at+jwt` (RFC 9068); unchecked by default (Keycloak sends `JWT`). */
  tokenType?: string | undefined;
  /** Leeway for `exp`, `nbf` and `iat`, in seconds (default 30). */
  clockToleranceSeconds?: number | undefined;
  /** Claim holding the user id (default `sub`; Entra ID uses `oid`). */
  userIdClaim?: string | undefined;
  /**
   * The form user ids must have, e.g. Keycloak's UUIDs: a token whose user id has another form
   * (a username or an email a protocol mapper put there) is refused.
   */
  userIdPattern?: RegExp | undefined;
  /**
   * Claims scopes are read from (default both `scope` and `scp`). Keycloak writes `scope` itself,
   * after every protocol mapper; `scp` is only ever written by a mapper, so the Keycloak mode reads
   * `scope` alone.
   */
  scopeClaims?: readonly ('scope' | 'scp')[] | undefined;
  /**
   * Required `typ` claim of the payload (Keycloak access tokens: `Bearer`; its ID tokens say `ID`,
   * refresh tokens `Refresh`). Unchecked by default.
   */
  payloadType?: string | undefined;
  /** Refuse tokens meant to live longer than this (`exp - iat`, seconds; `iat` then required). */
  maxLifetimeSeconds?: number | undefined;
  /** When set, only tokens whose `azp` (or `client_id`) is listed are accepted: pre-registered clients only. */
  allowedClientIds?: readonly string[] | undefined;
  /**
   * Asked once for each token verified (the verified-token cache keeps the answer with the
   * token) whether the client it was issued to (`azp`, or `client_id`) may use this resource:
   * a description refuses the token (`invalid_token`), undefined takes it. An
   * `AuthUnavailableError` it throws answers 503.
   */
  checkClient?: ((clientId: string | undefined) => Promise<string | undefined>) | undefined;
  /** Verified-token cache (default 10 000 entries, 5 min at most); `false` verifies every request. */
  cache?: false | { maxEntries?: number | undefined; maxAgeSeconds?: number | undefined } | undefined;
  /** JWKS fetching: cool-down for unknown `kid`s, background refresh age, fetch timeout. */
  jwks?: RemoteKeySetOptions | undefined;
  /** Metadata checked by `ready()` (default `${issuer}/.well-known/openid-configuration`). */
  issuerMetadataUri?: string | undefined;
  /** How long `ready()` reuses a successful check, in seconds (default 30; failures 5 at most). */
  readyTtlSeconds?: number | undefined;
  /** Serve the Protected Resource Metadata from `mount(app)` (default true). */
  serveMetadata?: boolean | undefined;
  /** The provider's name, as logs and `/ready` show it (default `jwt`). */
  name?: string | undefined;
  /** Called with the reason of every rejected token, for logs (the description the client gets, plus the error). */
  onRejected?: ((description: string, error: unknown) => void) | undefined;
}

export interface ReadinessReport {
  ok: boolean;
  checks: { issuer_metadata: string; jwks: string };
  /** When the checks ran (epoch ms); results are reused for `readyTtlSeconds`. */
  checkedAt: number;
}

export interface JwtBearerProvider extends AuthProvider {
  readonly resource: string;
  readonly resourceMetadataUrl: string;
  readonly keySet: RemoteKeySet;
  /** `authenticateRequest` with this provider, for callers that hold a request. */
  authenticate(request: Request): Promise<AuthOutcome>;
  /** Verifies one access token (no cache) and maps it to a principal. */
  verifyToken(token: string): Promise<AuthOutcome>;
  /** Whether the issuer's metadata and keys are reachable; cached, for a `/ready` route. */
  ready(): Promise<ReadinessReport>;
  /** Empties the verified-token cache (e.g. after a configuration change in tests). */
  clearCache(): void;
  /** Serves the Protected Resource Metadata (unless `serveMetadata: false`). */
  mount<E extends Env>(app: Hono<E>): void;
}

const REJECTED_ALGORITHM = /^(none|HS\d+)$/i;

/**
 * OAuth 2.0 Bearer access tokens that are JWTs signed by one issuer (Keycloak, Entra ID, Auth0...),
 * verified locally against the issuer's published keys. Checks the signature with an allow-list
 * of asymmetric algorithms, the exact issuer, that the audience is this resource (RFC 8707: no
 * token meant for another service is accepted), `exp` (required) and `nbf` with a small leeway,
 * and optionally the client the token was issued to.
 */
export function jwtBearerProvider(options: JwtBearerProviderOptions): JwtBearerProvider {
  parseResourceUrl(options.resource);
  const algorithms = [...(options.algorithms ?? DEFAULT_JWT_ALGORITHMS)];
  if (algorithms.length === 0) throw new Error('jwtBearerProvider needs at least one algorithm.');
  for (const algorithm of algorithms) {
    if (REJECTED_ALGORITHM.test(algorithm)) {
      throw new Error(
        `jwtBearerProvider refuses the algorithm ${algorithm}: only asymmetric signatures are safe here.`,
      );
    }
  }
  const audience = toList(options.audience ?? options.resource);
  if (audience.length === 0) throw new Error('jwtBearerProvider needs at least one accepted audience.');
  const userIdClaim = options.userIdClaim ?? 'sub';
  const scopeClaims = options.scopeClaims ?? ['scope', 'scp'];
  const maxLifetime = options.maxLifetimeSeconds;
  const allowedClientIds = options.allowedClientIds ? new Set(options.allowedClientIds) : undefined;
  const clockTolerance = options.clockToleranceSeconds ?? 30;
  const keySet = new RemoteKeySet(options.jwksUri, options.jwks);
  const resourceMetadataUrl = protectedResourceMetadataUrl(options.resource);
  const challenge: Record<string, string> = { resource_metadata: resourceMetadataUrl };
  if (options.challengeScopes && options.challengeScopes.length > 0) {
    challenge.scope = options.challengeScopes.join(' ');
  }
  const cache =
    options.cache === false
      ? undefined
      : new VerifiedTokenCache<Principal>({ maxEntries: options.cache?.maxEntries ?? 10_000 });
  const cacheMaxAgeMs = (options.cache === false ? 0 : (options.cache?.maxAgeSeconds ?? 300)) * 1000;
  const verifyOptions = {
    issuer: options.issuer,
    audience,
    algorithms,
    clockTolerance,
    requiredClaims: maxLifetime === undefined ? ['exp'] : ['exp', 'iat'],
    ...(options.tokenType === undefined ? {} : { typ: options.tokenType }),
  };

  function reject(description: string, error?: unknown): AuthOutcome {
    options.onRejected?.(description, error);
    return { ok: false, error: 'invalid_token', description };
  }

  async function verify(token: string): Promise<{ outcome: AuthOutcome; expiresAt?: number }> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keySet.getKey, verifyOptions));
    } catch (error) {
      if (error instanceof AuthUnavailableError) throw error;
      return { outcome: reject(describeFailure(error), error) };
    }
    if (payload.cnf !== undefined) {
      // Bound to a key (DPoP, RFC 9449; mTLS, RFC 8705): only a proof of that key makes it usable,
      // and this resource checks no proof. Taken as a bearer token, a stolen one would work.
      return { outcome: reject('The access token is bound to a key (cnf); this resource accepts bearer tokens only.') };
    }
    if (options.payloadType !== undefined && payload.typ !== options.payloadType) {
      return { outcome: reject('The token is not an access token (typ).') };
    }
    if (maxLifetime !== undefined) {
      if ((payload.exp as number) - (payload.iat as number) > maxLifetime) {
        return { outcome: reject(`The access token lives longer than this resource accepts (${maxLifetime} s).`) };
      }
      // Without this, an iat in the future would make any lifetime look short (jose checks iat
      // only with maxTokenAge).
      if ((payload.iat as number) > Date.now() / 1000 + clockTolerance) {
        return { outcome: reject('The access token says it was issued in the future (iat).') };
      }
    }
    const userId = payload[userIdClaim];
    if (typeof userId !== 'string' || userId.length === 0) {
      return { outcome: reject(`The access token does not name a user (claim ${userIdClaim}).`) };
    }
    if (options.userIdPattern && !options.userIdPattern.test(userId)) {
      return { outcome: reject(`The access token names a user id of an unexpected form (claim ${userIdClaim}).`) };
    }
    const clientId = firstString(payload.azp, payload.client_id);
    if (allowedClientIds && (clientId === undefined || !allowedClientIds.has(clientId))) {
      return { outcome: reject('The access token was issued to a client this resource does not accept.') };
    }
    const clientRefusal = await options.checkClient?.(clientId);
    if (clientRefusal !== undefined) return { outcome: reject(clientRefusal) };
    const principal: Principal = { userId, scopes: Object.freeze(scopesOf(payload, scopeClaims)), method: 'oauth' };
    if (clientId !== undefined) principal.clientId = clientId;
    const name = firstString(payload.name, payload.preferred_username);
    if (name !== undefined) principal.name = name;
    principal.roles = Object.freeze(rolesOf(payload));
    // One principal object serves every cached request with this token: nobody may change it.
    Object.freeze(principal);
    return { outcome: { ok: true, principal }, expiresAt: (payload.exp as number) * 1000 };
  }

  let readiness: { report: Promise<ReadinessReport>; until: number } | undefined;
  const readyTtlMs = (options.readyTtlSeconds ?? 30) * 1000;
  const issuerMetadataUri =
    options.issuerMetadataUri ?? `${options.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;

  async function checkReadiness(): Promise<ReadinessReport> {
    const [metadata, jwks] = await Promise.allSettled([
      fetchJson(issuerMetadataUri, options.jwks?.timeoutMs ?? 5_000),
      keySet.reload(),
    ]);
    let issuerMetadata = 'ok';
    if (metadata.status === 'rejected') issuerMetadata = 'unreachable';
    else if ((metadata.value as { issuer?: unknown } | null)?.issuer !== options.issuer)
      issuerMetadata = 'issuer mismatch';
    const keys = jwks.status === 'fulfilled' ? 'ok' : 'unreachable';
    return {
      ok: issuerMetadata === 'ok' && keys === 'ok',
      checks: { issuer_metadata: issuerMetadata, jwks: keys },
      checkedAt: Date.now(),
    };
  }

  const provider: JwtBearerProvider = {
    name: options.name ?? 'jwt',
    resource: options.resource,
    resourceMetadataUrl,
    keySet,
    challengeParameters: () => ({ ...challenge }),

    async verify(token) {
      const cached = cache?.get(token);
      if (cached !== undefined) return { ok: true, principal: cached };
      const { outcome, expiresAt } = await verify(token);
      if (cache && outcome.ok && expiresAt !== undefined) {
        cache.set(token, outcome.principal, Math.min(expiresAt, Date.now() + cacheMaxAgeMs));
      }
      return outcome;
    },

    authenticate: (request) => authenticateRequest(provider, request),

    async verifyToken(token) {
      return (await verify(token)).outcome;
    },

    ready() {
      if (readiness && Date.now() < readiness.until) return readiness.report;
      // Concurrent probes share one check; its result is kept for the TTL (a failure for at
      // most 5 s, so recovery shows quickly).
      const entry = { report: checkReadiness(), until: Number.POSITIVE_INFINITY };
      readiness = entry;
      entry.report.then(
        (report) => {
          entry.until = Date.now() + (report.ok ? readyTtlMs : Math.min(readyTtlMs, 5_000));
        },
        () => {
          entry.until = 0;
        },
      );
      return entry.report;
    },

    clearCache() {
      cache?.clear();
    },

    mount<E extends Env>(app: Hono<E>) {
      if (options.serveMetadata === false) return;
      mountProtectedResourceMetadata(app, {
        resource: options.resource,
        authorizationServers: options.authorizationServers ?? [options.issuer],
        scopesSupported: options.scopesSupported ?? options.challengeScopes,
        resourceName: options.resourceName,
        resourceDocumentation: options.resourceDocumentation,
      });
    },
  };
  return provider;
}

/** What the client is told: enough to act on, nothing about the expected values. */
function describeFailure(error: unknown): string {
  const { code, claim, reason } = error as { code?: string; claim?: string; reason?: string };
  switch (code) {
    case 'ERR_JWT_EXPIRED':
      return 'The access token has expired.';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (reason === 'missing' && claim === 'aud') {
        return 'The access token names no audience; this resource accepts only tokens issued for it.';
      }
      if (reason === 'missing') return `The access token lacks the required claim ${claim}.`;
      switch (claim) {
        case 'nbf':
          return 'The access token is not valid yet.';
        case 'iss':
          return 'The access token was issued by another authorization server.';
        case 'aud':
          return 'The access token is meant for another resource (audience mismatch).';
        case 'typ':
          return 'The access token has the wrong type (typ).';
        case 'iat':
          return 'The access token has an invalid issue time (iat).';
        default:
          return `The access token has an invalid claim ${claim}.`;
      }
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'The access token signature is invalid.';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'The access token is signed with an algorithm this resource does not accept.';
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return 'The access token is signed with an unknown key.';
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return 'The access token does not say which key signed it (kid).';
    default:
      return 'The access token is malformed or not a signed JWT.';
  }
}

function toList(value: string | readonly string[]): string[] {
  return typeof value === 'string' ? [value] : [...value];
}

function firstString(...values: unknown[]): string | undefined {
  for (const value of values) {
    if (typeof value === 'string' && value.length > 0) return value;
  }
  return undefined;
}

/** `scope` (RFC 8693/9068: space-separated) and `scp` (Entra, Okta: array or string), merged, as chosen. */
function scopesOf(payload: JWTPayload, claims: readonly ('scope' | 'scp')[]): string[] {
  const scopes = new Set<string>();
  const add = (value: unknown) => {
    const list = typeof value === 'string' ? value.split(' ') : Array.isArray(value) ? value : [];
    for (const scope of list) {
      if (typeof scope === 'string' && scope.length > 0) scopes.add(scope);
    }
  };
  for (const claim of claims) add(payload[claim]);
  return [...scopes];
}

/** Keycloak realm roles (`realm_access.roles`) and the flat `roles` claim (Entra ID app roles), merged. */
function rolesOf(payload: JWTPayload): string[] {
  const roles = new Set<string>();
  const add = (value: unknown) => {
    if (!Array.isArray(value)) return;
    for (const role of value) {
      if (typeof role === 'string' && role.length > 0) roles.add(role);
    }
  };
  add((payload.realm_access as { roles?: unknown } | undefined)?.roles);
  add(payload.roles);
  return [...roles];
}
