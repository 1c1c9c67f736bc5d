import { readAnswer } from '@mcp-auth-stack/auth';

/** The identity provider the proxy logs users in at, with one fixed, pre-registered confidential client. */
export interface UpstreamEndpoints {
  /**
   * The `iss` the upstream ID token must carry. A multi-tenant authority (Entra `common`,
   * `organizations`, `consumers`) names the user's own tenant there, so it gives a function of
   * the token's claims instead: the issuer expected of them, or undefined to refuse the token
   * (a tenant not allowed).
   */
  issuer: string | ((claims: Readonly<Record<string, unknown>>) => string | undefined);
  authorizationEndpoint: string;
  tokenEndpoint: string;
  userinfoEndpoint?: string | undefined;
  /** RFC 9207: the provider puts `iss` on its authorization answers, so one without it is refused. */
  authorizationResponseIss?: boolean | undefined;
  /**
   * The scopes to ask for, when the discovery document decides them (`oidcUpstream` without
   * `scopes`: `offline_access` only where the provider lists it); else `Upstream.scopes`.
   */
  scopes?: readonly string[] | undefined;
}

export interface Upstream {
  /** For logs and the consent page, e.g. `Microsoft Entra ID`. */
  readonly displayName: string;
  readonly clientId: string;
  readonly clientSecret: string;
  /**
   * Scopes asked for upstream, always the same whatever the MCP client asked (the consent page
   * lists the proxy's scopes); `UpstreamEndpoints.scopes`, when the discovery document gives
   * them, takes their place.
   */
  readonly scopes: readonly string[];
  /** Claim of the upstream ID token (or userinfo) that is the user id: `sub`, or `oid` for Entra. */
  readonly userIdClaim: string;
  /** How the proxy authenticates at the token endpoint (default `client_secret_post`). */
  readonly tokenEndpointAuthMethod: 'client_secret_post' | 'client_secret_basic';
  /** Extra parameters of the upstream authorization request (e.g. `prompt`). */
  readonly authorizeParameters: Readonly<Record<string, string>>;
  /**
   * Rejects with `UpstreamUnavailableError` when the provider cannot be reached now (a sign-in
   * then gets a 503 page); any other rejection is a fault of this server's (500).
   */
  endpoints(): Promise<UpstreamEndpoints>;
}

/**
 * The upstream provider cannot be reached, timed out or answered 5xx/429: its outage, which a
 * retry later may get past, not a fault of this server or its configuration.
 */
/** How long an upstream outage is remembered before the discovery document is asked for again. */
export const UPSTREAM_OUTAGE_CACHE_MS = 5_000;

export class UpstreamUnavailableError extends Error {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.name = 'UpstreamUnavailableError';
  }
}

export interface OidcUpstreamOptions {
  /** `https://idp.example.com/realms/mcp/.well-known/openid-configuration`, or the issuer (the well-known path is added). */
  discoveryUrl: string;
  clientId: string;
  clientSecret: string;
  /**
   * Default `openid profile offline_access`, without `offline_access` when the discovery
   * document's `scopes_supported` leaves it out (Google refuses the scope with `invalid_scope`;
   * most providers give a refresh token only with it).
   */
  scopes?: readonly string[] | undefined;
  userIdClaim?: string | undefined;
  displayName?: string | undefined;
  tokenEndpointAuthMethod?: 'client_secret_post' | 'client_secret_basic' | undefined;
  authorizeParameters?: Record<string, string> | undefined;
  /**
   * Rewrites endpoint URLs the proxy itself calls (token, userinfo) when it reaches the provider at
   * another address than browsers do (compose, Azure): `{ from: publicBase, to: internalBase }`.
   */
  internalBaseUrl?: { from: string; to: string } | undefined;
  /** How long the discovery document is kept (default 1 hour). */
  cacheSeconds?: number | undefined;
  fetch?: typeof fetch | undefined;
}

export const DEFAULT_UPSTREAM_SCOPES: readonly string[] = ['openid', 'profile', 'offline_access'];

/** The default scopes, less `offline_access` when the provider lists its scopes without it. */
function defaultScopesFor(document: Record<string, unknown>): readonly string[] {
  const listed = document.scopes_supported;
  if (!Array.isArray(listed) || listed.includes('offline_access')) return DEFAULT_UPSTREAM_SCOPES;
  return DEFAULT_UPSTREAM_SCOPES.filter((scope) => scope !== 'offline_access');
}

/** Any OpenID Connect provider, from its discovery document (fetched lazily, cached, retried after a failure). */
export function oidcUpstream(options: OidcUpstreamOptions): Upstream {
  const discoveryUrl = options.discoveryUrl.includes('/.well-known/')
    ? options.discoveryUrl
    : `${options.discoveryUrl.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  const doFetch = options.fetch ?? fetch;
  const ttl = (options.cacheSeconds ?? 3600) * 1000;
  // An outage is remembered this long, so that sign-ins during it do not each ask the upstream
  // again (the proxy checks it before its per-address limit); never longer than a success.
  const outageTtl = Math.min(ttl, UPSTREAM_OUTAGE_CACHE_MS);
  const rebase = (url: string | undefined) => {
    const internal = options.internalBaseUrl;
    if (url === undefined || !internal || !url.startsWith(internal.from)) return url;
    return internal.to + url.slice(internal.from.length);
  };
  let cached: { value: Promise<UpstreamEndpoints>; until: number } | undefined;

  async function load(): Promise<UpstreamEndpoints> {
    let response: Response;
    try {
      response = await doFetch(rebase(discoveryUrl) as string, {
        headers: { accept: 'application/json' },
        signal: AbortSignal.timeout(5_000),
      });
    } catch (error) {
      // fetch rejects only for the network (refused, reset, DNS) or the timeout.
      const reason = ((error as { cause?: { code?: unknown } }).cause?.code ?? (error as Error).name) as string;
      throw new UpstreamUnavailableError(`The upstream discovery document could not be fetched (${reason}).`, {
        cause: error,
      });
    }
    if (response.status >= 500 || response.status === 429) {
      await response.body?.cancel();
      throw new UpstreamUnavailableError(`The upstream discovery document answered ${response.status}.`);
    }
    if (!response.ok) throw new Error(`The upstream discovery document answered ${response.status}.`);
    const document = JSON.parse(await readAnswer(response, 'the upstream discovery document')) as Record<
      string,
      unknown
    >;
    const issuer = stringMember(document, 'issuer');
    const authorizationEndpoint = stringMember(document, 'authorization_endpoint');
    const tokenEndpoint = stringMember(document, 'token_endpoint');
    if (!issuer || !authorizationEndpoint || !tokenEndpoint) {
      throw new Error('The upstream discovery document lacks issuer, authorization_endpoint or token_endpoint.');
    }
    const methods = document.code_challenge_methods_supported;
    if (Array.isArray(methods) && !methods.includes('S256')) {
      throw new Error('The upstream provider does not support PKCE S256.');
    }
    return {
      issuer,
      authorizationEndpoint,
      tokenEndpoint: rebase(tokenEndpoint) as string,
      userinfoEndpoint: rebase(stringMember(document, 'userinfo_endpoint')),
      authorizationResponseIss: document.authorization_response_iss_parameter_supported === true,
      ...(options.scopes === undefined ? { scopes: defaultScopesFor(document) } : {}),
    };
  }

  return {
    displayName: options.displayName ?? new URL(discoveryUrl).host,
    clientId: options.clientId,
    clientSecret: options.clientSecret,
    scopes: [...(options.scopes ?? DEFAULT_UPSTREAM_SCOPES)],
    userIdClaim: options.userIdClaim ?? 'sub',
    tokenEndpointAuthMethod: options.tokenEndpointAuthMethod ?? 'client_secret_post',
    authorizeParameters: { ...options.authorizeParameters },
    endpoints() {
      if (cached && Date.now() < cached.until) return cached.value;
      const entry = { value: load(), until: Number.POSITIVE_INFINITY };
      cached = entry;
      entry.value.then(
        () => {
          entry.until = Date.now() + ttl;
        },
        (error: unknown) => {
          if (cached !== entry) return;
          // A misconfiguration (a 404, a malformed document) is asked again at once.
          if (error instanceof UpstreamUnavailableError && outageTtl > 0) entry.until = Date.now() + outageTtl;
          else cached = undefined;
        },
      );
      return entry.value;
    },
  };
}

export interface EntraUpstreamOptions {
  /** Directory (tenant) id: a GUID or a verified domain; `organizations`/`common` for multi-tenant apps. */
  tenantId: string;
  /** Application (client) id of the app registration the proxy logs in with. */
  clientId: string;
  clientSecret: string;
  /**
   * Scopes of the app's own API, without the `api://<client-id>/` prefix (default `['mcp-access']`);
   * full `api://` or `https://` scope URIs are kept as given.
   */
  apiScopes?: readonly string[] | undefined;
  /** Application ID URI, default `api://<client-id>`. */
  applicationIdUri?: string | undefined;
  /** Default `https://login.microsoftonline.com` (sovereign clouds differ). */
  authority?: string | undefined;
  /** Default `oid`: stable per user and tenant, unlike `sub`, which is pairwise per application. */
  userIdClaim?: string | undefined;
  /**
   * With a multi-tenant `tenantId` (`common`, `organizations`, `consumers`), required: the tenant
   * GUIDs whose users may sign in (personal Microsoft accounts are tenant
   * `9188040d-6c67-4c5b-b112-36a304b66dad`). Without it any tenant's users would get in, and any
   * tenant's administrator could give themselves the app's roles.
   */
  allowedTenantIds?: readonly string[] | undefined;
  authorizeParameters?: Record<string, string> | undefined;
}

const MULTI_TENANT = new Set(['common', 'organizations', 'consumers']);
// A tenant GUID. Not a verified domain (contoso.onmicrosoft.com): Entra's endpoints accept one,
// but its ID tokens always carry the GUID in `iss`, so every login would fail the issuer check.
const TENANT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A tenant Entra's tokens can be checked against: its GUID, or a multi-tenant authority name. */
export function isEntraTenant(value: string): boolean {
  return TENANT_ID.test(value) || isEntraMultiTenant(value);
}

/** `common`, `organizations` or `consumers`: users of many tenants sign in (see `allowedTenantIds`). */
export function isEntraMultiTenant(value: string): boolean {
  return MULTI_TENANT.has(value.toLowerCase());
}

/**
 * Microsoft Entra ID (v2.0 endpoints). Entra has no Dynamic Client Registration, which is why the
 * proxy exists. Endpoints are fixed by the tenant, so no discovery request is needed.
 */
export function entraUpstream(options: EntraUpstreamOptions): Upstream {
  // Entra writes the tenant GUID in lower case in `iss`, which is compared exactly.
  const tenant = options.tenantId.trim().toLowerCase();
  if (!isEntraTenant(tenant)) {
    throw new Error(
      `Not an Entra tenant id: ${JSON.stringify(options.tenantId)}. Give the directory (tenant) id, a GUID, or common, organizations or consumers.`,
    );
  }
  if (!options.clientId) throw new Error('entraUpstream needs the application (client) id.');
  if (!options.clientSecret) throw new Error('entraUpstream needs a client secret.');
  const authority = (options.authority ?? 'https://login.microsoftonline.com').replace(/\/+$/, '');
  const base = `${authority}/${encodeURIComponent(tenant)}`;
  const applicationIdUri = (options.applicationIdUri ?? `api://${options.clientId}`).replace(/\/+$/, '');
  const apiScopes = (options.apiScopes ?? ['mcp-access']).map((scope) =>
    /^(api|https?):\/\//.test(scope) ? scope : `${applicationIdUri}/${scope}`,
  );
  const endpoints: UpstreamEndpoints = {
    issuer: MULTI_TENANT.has(tenant.toLowerCase())
      ? multiTenantIssuer(authority, tenant, options.allowedTenantIds)
      : singleTenantIssuer(base, options.allowedTenantIds),
    authorizationEndpoint: `${base}/oauth2/v2.0/authorize`,
    tokenEndpoint: `${base}/oauth2/v2.0/token`,
    userinfoEndpoint: undefined,
  };
  return {
    displayName: 'Microsoft Entra ID',
    clientId: options.clientId,
    clientSecret: options.clientSecret,
    scopes: [...apiScopes, ...DEFAULT_UPSTREAM_SCOPES],
    userIdClaim: options.userIdClaim ?? 'oid',
    tokenEndpointAuthMethod: 'client_secret_post',
    authorizeParameters: { ...options.authorizeParameters },
    endpoints: async () => endpoints,
  };
}

function singleTenantIssuer(base: string, allowedTenantIds: readonly string[] | undefined): string {
  if (allowedTenantIds !== undefined) {
    throw new Error('allowedTenantIds is for a multi-tenant tenantId (common, organizations or consumers) only.');
  }
  return `${base}/v2.0`;
}

/**
 * A multi-tenant authority issues tokens with the user's own tenant in `iss` and `tid`: the
 * token must come from an allowed tenant and name that tenant's issuer.
 */
function multiTenantIssuer(
  authority: string,
  tenant: string,
  allowedTenantIds: readonly string[] | undefined,
): (claims: Readonly<Record<string, unknown>>) => string | undefined {
  if (allowedTenantIds === undefined || allowedTenantIds.length === 0) {
    throw new Error(
      `A multi-tenant authority (${tenant}) lets users of any tenant sign in: give allowedTenantIds, the tenant GUIDs whose users may.`,
    );
  }
  const invalid = allowedTenantIds.find((id) => !TENANT_ID.test(id));
  if (invalid !== undefined) throw new Error(`Not a tenant GUID in allowedTenantIds: ${JSON.stringify(invalid)}.`);
  const allowed = new Set(allowedTenantIds.map((id) => id.toLowerCase()));
  return (claims) =>
    typeof claims.tid === 'string' && allowed.has(claims.tid.toLowerCase())
      ? `${authority}/${claims.tid}/v2.0`
      : undefined;
}

function stringMember(document: Record<string, unknown>, name: string): string | undefined {
  const value = document[name];
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}
