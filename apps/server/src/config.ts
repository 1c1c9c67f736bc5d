import { misleadingTextProblem } from '@mcp-auth-stack/auth';
import {
  boolean,
  ConfigError,
  defaultServerBaseUrl,
  directory,
  type Env,
  hostList,
  httpUrl,
  integer,
  LOG_LEVELS,
  type LogLevel,
  list,
  oneOf,
  optional,
  originList,
  text,
} from '@mcp-auth-stack/config';
import { DEFAULT_MAX_EXPENSES_PER_USER } from '@mcp-auth-stack/expenses';
import { isLoopbackBindAddress, isLoopbackUrlHost, LOOPBACK_URL_HOSTS } from '@mcp-auth-stack/loopback';
import { isEntraMultiTenant, isEntraTenant, type OAuthProxyOptions } from '@mcp-auth-stack/oauth-proxy';
import { parse as parseConnectionString } from 'pg-connection-string';

/** A private JWK, as the proxy takes it. */
type JWK = OAuthProxyOptions['signingKey'];

export { ConfigError, type LogLevel };

/** How callers authenticate (MCP_AUTH_PROVIDER). */
export type AuthMode = 'none' | 'key' | 'keycloak' | 'oauth_proxy' | 'entra_proxy';

/**
 * MCP_AUTH_PROVIDER's default when the server runs on its own: `key` needs nothing but the
 * database. The launchers that bring Keycloak along (`pnpm start`, `azd up`) ask for
 * `STACK_AUTH_MODE` themselves; see docs/decisions.md (37).
 */
export const DEFAULT_AUTH_MODE: AuthMode = 'key';
/** What `pnpm start` and the azd hooks run when MCP_AUTH_PROVIDER is unset: the whole stack. */
export const STACK_AUTH_MODE: AuthMode = 'keycloak';

/**
 * How MCP clients get a client id in `keycloak` mode: `direct` registers at Keycloak itself;
 * `workaround` registers through this server, which repairs what Keycloak 26.7.3 gets wrong;
 * `off` accepts only tokens of the pre-registered clients in ALLOWED_CLIENT_IDS.
 */
export type KeycloakRegistration = 'direct' | 'workaround' | 'off';
export const DEFAULT_KEYCLOAK_REGISTRATION: KeycloakRegistration = 'direct';

/** What every mode has. */
export interface CommonConfig {
  host: string;
  port: number;
  /** Public URL of this server, without a trailing slash; the MCP endpoint is `${baseUrl}/mcp`. */
  baseUrl: string;
  /** Trust X-Forwarded-For for per-client limits (behind a reverse proxy that sets it). */
  trustProxy: boolean;
  databaseUrl: string | undefined;
  /** Absolute: DATA_DIR resolved against the working directory. */
  dataDir: string;
  databasePoolSize: number;
  /** `key` mode on PostgreSQL: keep verified keys in memory, invalidated by LISTEN/NOTIFY. */
  apiKeyCache: boolean;
  allowedHosts: string[];
  allowedOrigins: string[];
  maxRequestBytes: number;
  /** How many expenses one user may hold; an add past it is a tool error that stores nothing. */
  maxExpensesPerUser: number;
  logLevel: LogLevel;
  shutdownTimeoutMs: number;
  /** Longest wait for a database connection (a new one, or a free one from the pool). */
  databaseConnectTimeoutMs: number;
  /** Longest statement (PostgreSQL's statement_timeout); the client gives up 1 s later if the server is silent. */
  databaseQueryTimeoutMs: number;
  /** Longest wait for the database to close its connections at shutdown. */
  databaseCloseTimeoutMs: number;
  /** Longest time `/ready` spends on its checks before answering. */
  readyTimeoutMs: number;
}

export interface NoAuthConfig {
  authMode: 'none';
  /** The single local user every request acts as. */
  localUserId: string;
  /** Permit listening on a non-loopback address. */
  allowUnauthenticatedRemote: boolean;
}

export interface KeyAuthConfig {
  authMode: 'key';
}

export interface KeycloakAuthConfig {
  authMode: 'keycloak';
  /** The realm's issuer URL, e.g. http://localhost:8080/realms/mcp. */
  keycloakRealmUrl: string;
  /** Where this server itself reaches the realm, when not at its public URL (compose, Azure). */
  keycloakRealmInternalUrl: string | undefined;
  keycloakRegistration: KeycloakRegistration;
  /** With registration `off`: only tokens whose `azp` is listed are accepted. */
  allowedClientIds: string[];
  /** Secret of the realm's `mcp-client-janitor`; set, unused registered clients are removed. */
  keycloakJanitorSecret: string | undefined;
  /** Client ids of the operator's own consent-required clients the janitor must leave alone. */
  keycloakJanitorKeep: string[];
}

export interface OAuthProxyAuthConfig {
  authMode: 'oauth_proxy' | 'entra_proxy';
  /** This server is the OAuth authorization server. */
  oauthProxy: OAuthProxyConfig;
  /** Set when the upstream is the local realm (named "Keycloak" on the consent page). */
  keycloakRealmUrl: string | undefined;
}

type AuthFieldName = keyof NoAuthConfig | keyof KeycloakAuthConfig | keyof OAuthProxyAuthConfig;
/** One mode's fields, the other modes' marked absent, so `config.x` reads on any mode and narrows on `authMode`. */
type OnlyMode<T> = T & { [K in Exclude<AuthFieldName, keyof T>]?: undefined };

/** The auth part: a union on `authMode`, each mode with exactly its settings, checked once in `loadConfig`. */
export type AuthConfig =
  | OnlyMode<NoAuthConfig>
  | OnlyMode<KeyAuthConfig>
  | OnlyMode<KeycloakAuthConfig>
  | OnlyMode<OAuthProxyAuthConfig>;

/** The server's whole configuration: what every mode has, and the settings of its auth mode. */
export type ServerConfig = CommonConfig & AuthConfig;

export interface OAuthProxyConfig {
  upstream:
    | {
        kind: 'oidc';
        /** The upstream issuer (its discovery document is at `/.well-known/openid-configuration`). */
        discoveryUrl: string;
        /** Where this server reaches the upstream, when not at its public URL (compose, Azure). */
        internalUrl: string | undefined;
        clientId: string;
        clientSecret: string;
        /** Unset: the package's default, decided by the provider's discovery document. */
        scopes: string[] | undefined;
      }
    | {
        kind: 'entra';
        tenantId: string;
        clientId: string;
        clientSecret: string;
        /** With a multi-tenant `tenantId` only: the tenants whose users may sign in. */
        allowedTenantIds: string[] | undefined;
      };
  /** The private JWK; unset only on a loopback base URL (generated into the data directory). */
  signingKey: JWK | undefined;
  /** 32 bytes (base64, base64url or hex); unset only on a loopback base URL. */
  encryptionKey: string | undefined;
  /** The base URL is loopback: the keys may be generated locally, the realm's demo secret is accepted. */
  loopbackBaseUrl: boolean;
}

/** The realm's demo secret of `mcp-oauth-proxy` (keycloak/realm-mcp.json); accepted on loopback only. */
export const KEYCLOAK_PROXY_DEMO_SECRET = 'mcp-oauth-proxy-demo-secret-not-for-production';
export const KEYCLOAK_PROXY_CLIENT_ID = 'mcp-oauth-proxy';

/** The OAuth proxy modes' variables (always read, so every mode reads the same set). */
const PROXY_VARIABLES = [
  'OAUTH_PROXY_UPSTREAM_DISCOVERY_URL',
  'OAUTH_PROXY_UPSTREAM_CLIENT_ID',
  'OAUTH_PROXY_UPSTREAM_CLIENT_SECRET',
  'OAUTH_PROXY_UPSTREAM_SCOPES',
  'OAUTH_PROXY_SIGNING_KEY',
  'OAUTH_PROXY_ENCRYPTION_KEY',
  'ENTRA_PROXY_AZURE_CLIENT_ID',
  'ENTRA_PROXY_AZURE_CLIENT_SECRET',
  'AZURE_TENANT_ID',
  'ENTRA_PROXY_ALLOWED_TENANT_IDS',
  'ENTRA_PROXY_MCP_SERVER_BASE_URL',
] as const;

/** Every variable `loadConfig` reads; the README documents each (a test keeps the two in step). */
export const CONFIG_VARIABLES = [
  'HOST',
  'PORT',
  'MCP_SERVER_BASE_URL',
  'MCP_AUTH_PROVIDER',
  'ALLOW_UNAUTHENTICATED_REMOTE',
  'DATABASE_URL',
  'LOCAL_USER_ID',
  'DATA_DIR',
  'DATABASE_POOL_SIZE',
  'API_KEY_CACHE',
  'ALLOWED_HOSTS',
  'ALLOWED_ORIGINS',
  'MAX_REQUEST_BYTES',
  'MAX_EXPENSES_PER_USER',
  'LOG_LEVEL',
  'SHUTDOWN_TIMEOUT_MS',
  'DATABASE_CONNECT_TIMEOUT_MS',
  'DATABASE_QUERY_TIMEOUT_MS',
  'DATABASE_CLOSE_TIMEOUT_MS',
  'READY_TIMEOUT_MS',
  'KEYCLOAK_REALM_URL',
  'KEYCLOAK_REALM_INTERNAL_URL',
  'KEYCLOAK_REGISTRATION',
  'ALLOWED_CLIENT_IDS',
  'KEYCLOAK_JANITOR_CLIENT_SECRET',
  'KEYCLOAK_JANITOR_KEEP',
  'TRUST_PROXY',
  ...PROXY_VARIABLES,
] as const;

const AUTH_MODES: readonly AuthMode[] = ['none', 'key', 'keycloak', 'oauth_proxy', 'entra_proxy'];
const KEYCLOAK_REGISTRATIONS: readonly KeycloakRegistration[] = ['direct', 'workaround', 'off'];

/**
 * Reads and checks every variable of CONFIG_VARIABLES once, at start-up. A missing or invalid
 * one throws a ConfigError that names it (the process then stops with EX_CONFIG).
 */
export function loadConfig(env: Env = process.env): ServerConfig {
  const host = text(env, 'HOST', '127.0.0.1');
  const port = integer(env, 'PORT', 8000, 0, 65535);
  const authMode = oneOf(env, 'MCP_AUTH_PROVIDER', AUTH_MODES, DEFAULT_AUTH_MODE);
  // The proxy modes' variables, read whatever the mode (so every variable is always seen).
  const proxyEnv: Env = Object.fromEntries(PROXY_VARIABLES.map((name) => [name, env[name]]));
  const baseUrl = serverBaseUrl({ ...proxyEnv, MCP_SERVER_BASE_URL: env.MCP_SERVER_BASE_URL }, authMode, host, port);
  const baseUrlGiven =
    optional(env, 'MCP_SERVER_BASE_URL') !== undefined ||
    (authMode === 'entra_proxy' && optional(env, 'ENTRA_PROXY_MCP_SERVER_BASE_URL') !== undefined);
  if (port === 0 && !baseUrlGiven && OAUTH_MODES.has(authMode)) {
    // The URL derived from PORT=0 (http://localhost:0) would be the resource clients are told to
    // get tokens for, and the audience checked: no client could ever be let in.
    throw new ConfigError(
      'PORT',
      `is 0 (a free port, chosen at start), so with MCP_AUTH_PROVIDER=${authMode} the server cannot name its own URL in its OAuth metadata and token audience. Set a fixed PORT, or MCP_SERVER_BASE_URL to the URL clients use`,
    );
  }
  const allowUnauthenticatedRemote = boolean(env, 'ALLOW_UNAUTHENTICATED_REMOTE', false);
  if (authMode === 'none' && !isLoopbackBindAddress(host) && !allowUnauthenticatedRemote) {
    throw new ConfigError(
      'HOST',
      `is ${host}, a non-loopback address, while MCP_AUTH_PROVIDER=none lets anyone act as the local user. Use HOST=127.0.0.1, another MCP_AUTH_PROVIDER, or set ALLOW_UNAUTHENTICATED_REMOTE=true if you really mean it.`,
    );
  }
  const base = new URL(baseUrl);
  const databaseUrl = optional(env, 'DATABASE_URL');
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError('DATABASE_URL', 'must be a postgres:// or postgresql:// URL');
  }
  if (databaseUrl !== undefined) checkConnectionString(databaseUrl);
  const keycloakRealmUrl = optional(env, 'KEYCLOAK_REALM_URL');
  const keycloakRegistration = oneOf(
    env,
    'KEYCLOAK_REGISTRATION',
    KEYCLOAK_REGISTRATIONS,
    DEFAULT_KEYCLOAK_REGISTRATION,
  );
  const allowedClientIds = list(env, 'ALLOWED_CLIENT_IDS', []);
  // Every variable is read and checked whatever the mode; each mode keeps only its own.
  const keycloakRealmInternalUrl =
    optional(env, 'KEYCLOAK_REALM_INTERNAL_URL') === undefined
      ? undefined
      : httpUrl(env, 'KEYCLOAK_REALM_INTERNAL_URL', '');
  const realmUrl = keycloakRealmUrl === undefined ? undefined : httpUrl(env, 'KEYCLOAK_REALM_URL', '');
  const keycloakJanitorSecret = optional(env, 'KEYCLOAK_JANITOR_CLIENT_SECRET');
  const keycloakJanitorKeep = list(env, 'KEYCLOAK_JANITOR_KEEP', []);
  const localUserId = loadLocalUserId(env);
  const common: CommonConfig = {
    host,
    port,
    baseUrl,
    trustProxy: boolean(env, 'TRUST_PROXY', false),
    databaseUrl,
    dataDir: directory(env, 'DATA_DIR', '.data'),
    databasePoolSize: integer(env, 'DATABASE_POOL_SIZE', 10, 1, 100),
    apiKeyCache: boolean(env, 'API_KEY_CACHE', true),
    allowedHosts: hostList(env, 'ALLOWED_HOSTS', [...new Set([base.host, base.hostname, ...LOOPBACK_URL_HOSTS])]),
    allowedOrigins: originList(env, 'ALLOWED_ORIGINS', ownOrigins(base)),
    maxRequestBytes: integer(env, 'MAX_REQUEST_BYTES', 1024 * 1024, 1024, 64 * 1024 * 1024),
    maxExpensesPerUser: integer(env, 'MAX_EXPENSES_PER_USER', DEFAULT_MAX_EXPENSES_PER_USER, 1, 100_000_000),
    logLevel: oneOf(env, 'LOG_LEVEL', LOG_LEVELS, 'info'),
    shutdownTimeoutMs: integer(env, 'SHUTDOWN_TIMEOUT_MS', 10_000, 0, 600_000),
    databaseConnectTimeoutMs: integer(env, 'DATABASE_CONNECT_TIMEOUT_MS', 5_000, 100, 600_000),
    databaseQueryTimeoutMs: integer(env, 'DATABASE_QUERY_TIMEOUT_MS', 5_000, 100, 600_000),
    databaseCloseTimeoutMs: integer(env, 'DATABASE_CLOSE_TIMEOUT_MS', 2_000, 0, 600_000),
    readyTimeoutMs: integer(env, 'READY_TIMEOUT_MS', 2_000, 100, 60_000),
  };
  switch (authMode) {
    case 'none':
      return { ...common, authMode, localUserId, allowUnauthenticatedRemote };
    case 'key':
      return { ...common, authMode };
    case 'keycloak':
      if (realmUrl === undefined) {
        throw new ConfigError(
          'KEYCLOAK_REALM_URL',
          'is required when MCP_AUTH_PROVIDER=keycloak (the realm issuer, e.g. http://localhost:8080/realms/mcp)',
        );
      }
      if (keycloakRegistration === 'off' && allowedClientIds.length === 0) {
        throw new ConfigError(
          'ALLOWED_CLIENT_IDS',
          'must list the pre-registered client ids when KEYCLOAK_REGISTRATION=off (e.g. vscode-mcp-client)',
        );
      }
      return {
        ...common,
        authMode,
        keycloakRealmUrl: realmUrl,
        keycloakRealmInternalUrl,
        keycloakRegistration,
        allowedClientIds,
        keycloakJanitorSecret,
        keycloakJanitorKeep,
      };
    case 'oauth_proxy':
    case 'entra_proxy':
      return {
        ...common,
        authMode,
        oauthProxy: proxyConfig(
          {
            ...proxyEnv,
            KEYCLOAK_REALM_URL: keycloakRealmUrl,
            KEYCLOAK_REALM_INTERNAL_URL: env.KEYCLOAK_REALM_INTERNAL_URL,
          },
          authMode,
          base,
        ),
        keycloakRealmUrl: realmUrl,
      };
  }
}

/** The modes whose OAuth metadata and token audience carry the server's own URL. */
const OAUTH_MODES: ReadonlySet<AuthMode> = new Set(['keycloak', 'oauth_proxy', 'entra_proxy']);

/**
 * The server's public URL: an origin without a path. The server answers at `/mcp` and serves its
 * metadata and OAuth endpoints from the root, so a URL with a path would advertise a resource
 * and endpoints it does not answer at (a reverse proxy that strips the prefix makes that no
 * better: the metadata still names the prefixed paths).
 */
function originUrl(env: Env, name: string, fallback: string): string {
  const url = httpUrl(env, name, fallback);
  if (new URL(url).pathname !== '/') {
    throw new ConfigError(
      name,
      `is ${url}, which has a path; give the URL without it (e.g. ${new URL(url).origin}): the server answers at /mcp and its OAuth endpoints at the root, so serve it on a host name or port of its own`,
    );
  }
  return url;
}

/** In `entra_proxy` mode ENTRA_PROXY_MCP_SERVER_BASE_URL names the public URL too; both set must agree. */
function serverBaseUrl(env: Env, authMode: AuthMode, host: string, port: number): string {
  const baseUrl = originUrl(env, 'MCP_SERVER_BASE_URL', defaultServerBaseUrl(host, port));
  if (authMode !== 'entra_proxy' || optional(env, 'ENTRA_PROXY_MCP_SERVER_BASE_URL') === undefined) return baseUrl;
  const entraBaseUrl = originUrl(env, 'ENTRA_PROXY_MCP_SERVER_BASE_URL', '');
  if (optional(env, 'MCP_SERVER_BASE_URL') !== undefined && entraBaseUrl !== baseUrl) {
    throw new ConfigError(
      'ENTRA_PROXY_MCP_SERVER_BASE_URL',
      `is ${entraBaseUrl} but MCP_SERVER_BASE_URL is ${baseUrl}; set one, or both to the same URL`,
    );
  }
  return entraBaseUrl;
}

/** The tenant of every personal Microsoft account's token (`tid`). */
const PERSONAL_ACCOUNTS_TENANT = '9188040d-6c67-4c5b-b112-36a304b66dad';

/**
 * Entra's ID tokens name the tenant by its GUID in `iss`, so a domain name cannot be checked
 * against them. A multi-tenant authority lets users of any tenant sign in, and any tenant's
 * administrator assign the app's roles (`expenses-admin`) in their own tenant: it needs the
 * list of tenants whose users may.
 */
function tenants(env: Env, tenantId: string): { tenantId: string; allowedTenantIds: string[] | undefined } {
  if (!isEntraTenant(tenantId)) {
    throw new ConfigError(
      'AZURE_TENANT_ID',
      `must be the directory (tenant) id, a GUID (az account show --query tenantId), not "${tenantId}"`,
    );
  }
  const allowed = optional(env, 'ENTRA_PROXY_ALLOWED_TENANT_IDS');
  if (!isEntraMultiTenant(tenantId)) {
    if (allowed !== undefined) {
      throw new ConfigError(
        'ENTRA_PROXY_ALLOWED_TENANT_IDS',
        `is for a multi-tenant AZURE_TENANT_ID (common, organizations or consumers); AZURE_TENANT_ID is the single tenant ${tenantId}`,
      );
    }
    return { tenantId, allowedTenantIds: undefined };
  }
  const allowedTenantIds = list(env, 'ENTRA_PROXY_ALLOWED_TENANT_IDS', []);
  if (allowedTenantIds.length === 0) {
    throw new ConfigError(
      'ENTRA_PROXY_ALLOWED_TENANT_IDS',
      `is required when AZURE_TENANT_ID is ${tenantId}: the comma-separated tenant GUIDs whose users may sign in (without it any tenant's would)`,
    );
  }
  const invalid = allowedTenantIds.find((id) => !isEntraTenant(id) || isEntraMultiTenant(id));
  if (invalid !== undefined) {
    throw new ConfigError('ENTRA_PROXY_ALLOWED_TENANT_IDS', `must list tenant GUIDs, not "${invalid}"`);
  }
  // Lists under which nobody could ever sign in: personal accounts all carry one tenant, and
  // `organizations` has none of them.
  const personal = allowedTenantIds.some((id) => id.toLowerCase() === PERSONAL_ACCOUNTS_TENANT);
  const authority = tenantId.toLowerCase();
  if (authority === 'consumers' && allowedTenantIds.some((id) => id.toLowerCase() !== PERSONAL_ACCOUNTS_TENANT)) {
    throw new ConfigError(
      'ENTRA_PROXY_ALLOWED_TENANT_IDS',
      `lists an organization's tenant, but AZURE_TENANT_ID=consumers signs in personal Microsoft accounts only, whose tenant is ${PERSONAL_ACCOUNTS_TENANT}; use organizations or common for an organization's users`,
    );
  }
  if (authority === 'organizations' && personal) {
    throw new ConfigError(
      'ENTRA_PROXY_ALLOWED_TENANT_IDS',
      `lists the personal accounts' tenant ${PERSONAL_ACCOUNTS_TENANT}, which AZURE_TENANT_ID=organizations never signs in; use common (or consumers) for personal Microsoft accounts`,
    );
  }
  return { tenantId, allowedTenantIds };
}

function proxyConfig(env: Env, authMode: 'oauth_proxy' | 'entra_proxy', base: URL): OAuthProxyConfig {
  const local = isLoopbackUrlHost(base.hostname);
  const keys = configuredProxyKeys(env, local, authMode);
  if (authMode === 'entra_proxy') {
    const need = (name: string, what: string) => {
      const value = optional(env, name);
      if (value === undefined) throw new ConfigError(name, `is required when MCP_AUTH_PROVIDER=entra_proxy (${what})`);
      return value;
    };
    return {
      upstream: {
        kind: 'entra',
        clientId: need('ENTRA_PROXY_AZURE_CLIENT_ID', 'the application (client) id of the Entra app registration'),
        clientSecret: need('ENTRA_PROXY_AZURE_CLIENT_SECRET', 'a client secret of that app registration'),
        ...tenants(env, need('AZURE_TENANT_ID', 'the directory (tenant) id')),
      },
      ...keys,
    };
  }
  const discoveryName =
    optional(env, 'OAUTH_PROXY_UPSTREAM_DISCOVERY_URL') === undefined
      ? 'KEYCLOAK_REALM_URL'
      : 'OAUTH_PROXY_UPSTREAM_DISCOVERY_URL';
  if (optional(env, discoveryName) === undefined) {
    throw new ConfigError(
      'OAUTH_PROXY_UPSTREAM_DISCOVERY_URL',
      'is required when MCP_AUTH_PROVIDER=oauth_proxy (the upstream issuer, e.g. http://localhost:8080/realms/mcp), or set KEYCLOAK_REALM_URL',
    );
  }
  const clientId = text(env, 'OAUTH_PROXY_UPSTREAM_CLIENT_ID', KEYCLOAK_PROXY_CLIENT_ID);
  const clientSecret = optional(env, 'OAUTH_PROXY_UPSTREAM_CLIENT_SECRET');
  if (clientSecret === undefined && !(local && clientId === KEYCLOAK_PROXY_CLIENT_ID)) {
    throw new ConfigError(
      'OAUTH_PROXY_UPSTREAM_CLIENT_SECRET',
      `is required when MCP_AUTH_PROVIDER=oauth_proxy (the realm's demo secret is used only on a loopback base URL with the client ${KEYCLOAK_PROXY_CLIENT_ID})`,
    );
  }
  const internal = optional(env, 'KEYCLOAK_REALM_INTERNAL_URL');
  return {
    upstream: {
      kind: 'oidc',
      discoveryUrl: httpUrl(env, discoveryName, ''),
      internalUrl:
        discoveryName === 'KEYCLOAK_REALM_URL' && internal !== undefined
          ? httpUrl(env, 'KEYCLOAK_REALM_INTERNAL_URL', '')
          : undefined,
      clientId,
      clientSecret: clientSecret ?? KEYCLOAK_PROXY_DEMO_SECRET,
      // The realm grants its expenses:admin scope only to holders of the expenses-admin role:
      // asking for it upstream is how the proxy learns who may see cross-user statistics.
      // Keycloak gives a refresh token without offline_access (which would make it an offline
      // token, outliving the sign-in). Another provider gets the package's default, which asks
      // for offline_access where the provider lists it: most give a refresh token only with it,
      // and without one the proxy's grant ends when the upstream access token does.
      scopes:
        optional(env, 'OAUTH_PROXY_UPSTREAM_SCOPES') === undefined && discoveryName !== 'KEYCLOAK_REALM_URL'
          ? undefined
          : list(env, 'OAUTH_PROXY_UPSTREAM_SCOPES', ['openid', 'profile', 'expenses:admin']),
    },
    ...keys,
  };
}

/** The two keys, checked (and the JWK parsed) here once; required unless the base URL is loopback. */
function configuredProxyKeys(
  env: Env,
  local: boolean,
  authMode: AuthMode,
): Pick<OAuthProxyConfig, 'signingKey' | 'encryptionKey' | 'loopbackBaseUrl'> {
  const signingKey = optional(env, 'OAUTH_PROXY_SIGNING_KEY');
  let jwk: unknown;
  const encryptionKey = optional(env, 'OAUTH_PROXY_ENCRYPTION_KEY');
  if (signingKey !== undefined) {
    try {
      jwk = JSON.parse(signingKey);
    } catch {
      throw new ConfigError('OAUTH_PROXY_SIGNING_KEY', 'must be a private JWK as JSON');
    }
    if (typeof jwk !== 'object' || jwk === null || !('d' in jwk) || !('kty' in jwk)) {
      throw new ConfigError('OAUTH_PROXY_SIGNING_KEY', 'must be a private JWK (with "kty" and "d")');
    }
    const { kty, crv } = jwk as { kty?: unknown; crv?: unknown };
    if (!((kty === 'EC' && crv === 'P-256') || (kty === 'OKP' && crv === 'Ed25519'))) {
      throw new ConfigError('OAUTH_PROXY_SIGNING_KEY', 'must be an EC P-256 (ES256) or OKP Ed25519 (EdDSA) key');
    }
  }
  if (encryptionKey !== undefined && decodedKeyLength(encryptionKey) !== 32) {
    throw new ConfigError('OAUTH_PROXY_ENCRYPTION_KEY', 'must be 32 bytes as base64, base64url or hex');
  }
  if (!local) {
    for (const [name, value] of [
      ['OAUTH_PROXY_SIGNING_KEY', signingKey],
      ['OAUTH_PROXY_ENCRYPTION_KEY', encryptionKey],
    ] as const) {
      if (value === undefined) {
        throw new ConfigError(
          name,
          `is required when MCP_AUTH_PROVIDER=${authMode} and the base URL is not loopback (every replica needs the same key; see docs/oauth-proxy.md)`,
        );
      }
    }
  }
  return { signingKey: jwk as JWK | undefined, encryptionKey, loopbackBaseUrl: local };
}

/** The bytes an encryption key holds, as the proxy reads it (hex, base64 or base64url); -1 for neither. */
export function decodedKeyLength(value: string): number {
  if (/^[0-9a-fA-F]{64}$/.test(value)) return 32;
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(value)) return -1;
  return Buffer.from(value.replace(/-/g, '+').replace(/_/g, '/'), 'base64').length;
}

/**
 * The origins of the server's own pages: its base URL's, and for a loopback base URL the same
 * port under every loopback name, which all reach this one server (a page at
 * http://127.0.0.1:8000 calls the server at http://localhost:8000 same-site). Another port is
 * another program and stays refused.
 */
export function ownOrigins(base: URL): string[] {
  if (!isLoopbackUrlHost(base.hostname)) return [base.origin];
  const port = base.port ? `:${base.port}` : '';
  return [...new Set([base.origin, ...LOOPBACK_URL_HOSTS.map((name) => `${base.protocol}//${name}${port}`)])];
}

/**
 * The user every request acts as in `none` mode: as an API key's user id, 1 to 255 characters
 * (the expenses table holds no other) that read as what they are (it is logged with each request).
 */
function loadLocalUserId(env: Env): string {
  // Counted in characters, as the table's CHECK (char_length) counts them. Taken as written:
  // expenses already stored under it must stay its.
  const userId = text(env, 'LOCAL_USER_ID', 'local-user');
  const length = [...userId].length;
  if (length > 255) throw new ConfigError('LOCAL_USER_ID', `must be at most 255 characters, got ${length}`);
  const problem = misleadingTextProblem(userId);
  if (problem) throw new ConfigError('LOCAL_USER_ID', problem);
  return userId;
}

/**
 * Reads DATABASE_URL as pg will (its own parser), so a port out of range or a broken host
 * stops the start here, naming the variable, rather than as pg's bare `Invalid URL` at the
 * first connection. The value is not quoted: it may hold a password.
 */
function checkConnectionString(databaseUrl: string): void {
  let port: string | undefined;
  try {
    port = parseConnectionString(databaseUrl).port ?? undefined;
  } catch (error) {
    // pg reads sslrootcert, sslcert and sslkey while it parses: a file it cannot open.
    const { code, path } = error as { code?: unknown; path?: unknown };
    if (typeof path === 'string' && typeof code === 'string') {
      throw new ConfigError('DATABASE_URL', `names a file pg cannot read (${code}): ${path}`);
    }
    throw new ConfigError(
      'DATABASE_URL',
      'is not a URL pg can read: check its host, its port (1-65535), and that special characters of the user name and password are percent-encoded',
    );
  }
  if (port === '0')
    throw new ConfigError('DATABASE_URL', 'names port 0: give the port PostgreSQL listens on (5432 by default)');
}
