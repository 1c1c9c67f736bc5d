import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ApiKeyCache,
  ApiKeyStore,
  type AuthProvider,
  apiKeyProvider,
  jwtBearerProvider,
  noAuthProvider,
  withRoutes,
} from '@mcp-auth-stack/auth';
import { type Database, migrate } from '@mcp-auth-stack/database';
import { EXPENSE_ADMIN_ROLE, EXPENSE_SCOPES } from '@mcp-auth-stack/expenses';
import {
  AUTHORIZATION_PASSTHROUGH_NAMESPACE,
  authorizationPassThroughMigrations,
  DEFAULT_REDIRECT_HOSTS,
  forgetPassThroughClients,
  type JanitorRun,
  KEYCLOAK_JANITOR_NAMESPACE,
  keycloakClientJanitor,
  keycloakJanitorMigrations,
  keycloakRegisteredClientCheck,
  registrationFacade,
} from '@mcp-auth-stack/keycloak-registration';
import { isLoopbackBindAddress } from '@mcp-auth-stack/loopback';
import {
  entraUpstream,
  generateSigningKey,
  loadSigningKey,
  type OAuthProxyOptions,
  oauthProxy,
  oidcUpstream,
} from '@mcp-auth-stack/oauth-proxy';
import {
  ConfigError,
  decodedKeyLength,
  type KeycloakAuthConfig,
  type OAuthProxyAuthConfig,
  type ServerConfig,
} from './config.ts';
import { errorFields, type Logger } from './logger.ts';

/**
 * Chooses the access mode named by MCP_AUTH_PROVIDER. The database may still be opening (its
 * migrations running): a mode waits for it only where it needs it, so keycloak mode fetches
 * the realm's signing keys meanwhile.
 */
export async function createAuthProvider(
  config: ServerConfig,
  databaseReady: Database | Promise<Database>,
  logger: Logger,
): Promise<AuthProvider> {
  switch (config.authMode) {
    case 'none':
      logger.warn(
        'MCP_AUTH_PROVIDER=none: authentication is OFF. Every request acts as one local user. For development only.',
        { user_id: config.localUserId, host: config.host },
      );
      return noAuthProvider({ userId: config.localUserId });
    case 'key': {
      const database = await databaseReady;
      const store = new ApiKeyStore(database.pool);
      if ((await store.countActive()) === 0) {
        logger.warn(
          'No active API keys yet: requests get 401 until one is made (pnpm keys create --user <id>; on a terminal, pnpm start makes a demo key).',
        );
      }
      if (!config.apiKeyCache || !database.dedicatedClient) {
        // The embedded database gives every connection turns on one session, so it has no
        // connection of its own to LISTEN on; a lookup there costs no network round trip either.
        return apiKeyProvider({ store });
      }
      const newClient = database.dedicatedClient.bind(database);
      const cache = new ApiKeyCache({
        store,
        newClient,
        onEvent: (event, details) => {
          if (event === 'listening') logger.info('api key cache: listening for revocations', details);
          else if (event === 'listener_lost') {
            logger.warn('api key cache: listener lost; keys are looked up in the database until it is back', details);
          } else {
            logger.warn(
              'api key cache: off, DATABASE_URL reaches PostgreSQL through a connection pooler; every key is looked up in the database (use a direct URL, or API_KEY_CACHE=false to say so)',
              details,
            );
          }
        },
      });
      await cache.start();
      return { ...apiKeyProvider({ store: cache }), close: () => cache.close() };
    }
    case 'keycloak':
      return keycloakProvider(config, databaseReady, logger);
    case 'oauth_proxy':
    case 'entra_proxy':
      return oauthProxyProvider(config, await databaseReady, logger);
  }
}

/**
 * What a Keycloak access token must look like here: header `typ` `JWT` and payload `typ`
 * `Bearer` (what 26.7.3 issues; ID and refresh tokens say `ID` and `Refresh`), a `sub` in the
 * form of Keycloak's user ids (random, version 4 UUIDs: a pairwise `sub`, which Keycloak gives
 * a client registered with `subject_type: pairwise`, is a version 3 UUID made per client, and
 * would make one person a different user of this server through each client),
 * scopes from `scope` only, and a lifetime of at most an hour (the realm issues 5 minutes; a
 * registered client that raised its own lifespan would be refused).
 */
export const KEYCLOAK_TOKEN_RULES = {
  tokenType: 'JWT',
  payloadType: 'Bearer',
  userIdPattern: /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
  scopeClaims: ['scope'],
  maxLifetimeSeconds: 3600,
} as const satisfies Partial<Parameters<typeof jwtBearerProvider>[0]>;

/** The scope that carries this server's audience in the realm (an audience mapper). */
export const MCP_ACCESS_SCOPE = 'mcp:access';

/**
 * Keycloak mode: access tokens of the realm, verified locally against its keys; this server's
 * resource URL must be in `aud`. Clients are told to ask for `mcp:access` plus the user scopes:
 * a client that Keycloak registered with a `scope` member only gets `mcp:access` (and so the
 * audience) when it asks for it (https://github.com/keycloak/keycloak/issues/50807).
 *
 * In `workaround` registration mode this server presents itself as the authorization server;
 * logins and code exchanges of the clients it registered pass through it (tables in the
 * server's database), so the `iss` they see is this server's (RFC 9207).
 */
async function keycloakProvider(
  config: ServerConfig & KeycloakAuthConfig,
  databaseReady: Database | Promise<Database>,
  logger: Logger,
): Promise<AuthProvider> {
  const realm = config.keycloakRealmUrl;
  const reachable = config.keycloakRealmInternalUrl ?? realm;
  const resource = `${config.baseUrl}/mcp`;
  const workaround = config.keycloakRegistration === 'workaround';
  const janitorSecret = config.keycloakJanitorSecret;
  const jwt = jwtBearerProvider({
    name: 'keycloak',
    issuer: realm,
    jwksUri: `${reachable}/protocol/openid-connect/certs`,
    issuerMetadataUri: `${reachable}/.well-known/openid-configuration`,
    resource,
    challengeScopes: [MCP_ACCESS_SCOPE, EXPENSE_SCOPES.read, EXPENSE_SCOPES.write],
    scopesSupported: [MCP_ACCESS_SCOPE, EXPENSE_SCOPES.read, EXPENSE_SCOPES.write, EXPENSE_SCOPES.admin],
    authorizationServers: [workaround ? config.baseUrl : realm],
    allowedClientIds: config.keycloakRegistration === 'off' ? config.allowedClientIds : undefined,
    resourceName: 'Expenses Tracker',
    // Keycloak and this server keep NTP time; a few seconds of leeway is plenty.
    clockToleranceSeconds: 5,
    // Only what the realm itself guarantees decides (docs/security.md): the user is `sub` in the
    // form Keycloak gives it, scopes come from `scope` (written by Keycloak after every protocol
    // mapper; `scp` could only come from a mapper), and only access tokens are taken.
    ...KEYCLOAK_TOKEN_RULES,
    // With the janitor's credential, the redirect hosts of a token's registered client are read
    // as text: Keycloak let through any host that resolved to loopback at registration
    // (decision 74).
    ...(janitorSecret === undefined
      ? {}
      : {
          checkClient: keycloakRegisteredClientCheck({
            ...adminAccessOf(reachable, janitorSecret),
            keep: janitorKeep(config),
            redirectHosts: [...DEFAULT_REDIRECT_HOSTS, new URL(config.baseUrl).hostname],
          }),
        }),
    onRejected: (description, error) => logger.debug('token rejected', { description, ...errorFields(error) }),
  });
  // The signing keys, fetched now while the database opens rather than by the first request
  // (which would wait for them). A failure is not fatal here: the first request retries it,
  // or answers 503 within the key set's 5 s retry bound, and /ready reports it.
  jwt.keySet.reload().catch(() => {});
  if (!workaround) {
    if (janitorSecret !== undefined) {
      startJanitor(reachable, janitorSecret, janitorKeep(config), databaseReady, logger);
    }
    return jwt;
  }
  const database = await databaseReady;
  await migrate(database.pool, AUTHORIZATION_PASSTHROUGH_NAMESPACE, authorizationPassThroughMigrations);
  if (janitorSecret !== undefined) {
    // What the pass-through keeps about a client goes with the client.
    startJanitor(reachable, janitorSecret, janitorKeep(config), database, logger, (clientIds) =>
      forgetPassThroughClients(database.pool, clientIds),
    );
  }
  const facade = registrationFacade({
    issuer: config.baseUrl,
    upstreamIssuer: realm,
    upstreamBaseUrl: reachable,
    trustForwardedFor: config.trustProxy,
    pool: database.pool,
  });
  return withRoutes(jwt, facade);
}

/** This project's realm clients that ask for consent: anonymous registrations look the same to the janitor. */
export const REALM_CLIENTS_KEPT: readonly string[] = [
  'mcp-server',
  'vscode-mcp-client',
  'expenses-agent',
  'mcp-oauth-proxy',
];

/**
 * What the janitor leaves alone among the consent-required clients: the realm's, and those the
 * operator names in `KEYCLOAK_JANITOR_KEEP` (a partner's client added in the admin console with
 * "Consent required" on would otherwise be removed after a day without a session).
 */
export function janitorKeep(config: Pick<KeycloakAuthConfig, 'keycloakJanitorKeep'>): string[] {
  return [...new Set([...REALM_CLIENTS_KEPT, ...config.keycloakJanitorKeep])];
}

/** The realm's admin API as the service account `mcp-client-janitor` reaches it. */
function adminAccessOf(realmUrl: string, secret: string) {
  const match = /^(.*)\/realms\/([^/]+)\/?$/.exec(realmUrl);
  if (!match) throw new Error(`KEYCLOAK_REALM_URL is not a Keycloak realm URL: ${realmUrl}`);
  return {
    baseUrl: match[1] as string,
    realm: decodeURIComponent(match[2] as string),
    clientId: 'mcp-client-janitor',
    clientSecret: secret,
  };
}

/**
 * Removes anonymously registered clients nobody uses (a flood of them would fill the realm's
 * Max Clients): never used, a day after the janitor first saw them (15 minutes under a flood);
 * once used, after 7 days without a session. Checked every 5 minutes. See docs/security.md.
 */
function startJanitor(
  realmUrl: string,
  secret: string,
  keep: readonly string[],
  databaseReady: Database | Promise<Database>,
  logger: Logger,
  onRemoved?: (clientIds: readonly string[]) => Promise<void>,
) {
  const { baseUrl, realm } = adminAccessOf(realmUrl, secret);
  // Once the database is open (the janitor keeps what it saw there); the server does not wait.
  void Promise.resolve(databaseReady)
    .then(async (database) => {
      await migrate(database.pool, KEYCLOAK_JANITOR_NAMESPACE, keycloakJanitorMigrations);
      runJanitor(baseUrl, realm, secret, keep, database, logger, onRemoved);
    })
    .catch((error: unknown) => logger.warn('keycloak client janitor: failed', { message: (error as Error).message }));
}

function runJanitor(
  baseUrl: string,
  realm: string,
  secret: string,
  keep: readonly string[],
  database: Database,
  logger: Logger,
  onRemoved?: (clientIds: readonly string[]) => Promise<void>,
) {
  const janitor = keycloakClientJanitor({
    baseUrl,
    pool: database.pool,
    realm,
    clientId: 'mcp-client-janitor',
    clientSecret: secret,
    keep,
    onEvent: (event, details) => logger.info(`keycloak client janitor: ${event}`, details),
    onRemoved,
  });
  // One pass at start: a wrong secret shows in the log now, not in five minutes; clients left
  // from a flood before a restart go as soon as they are due.
  void firstJanitorPass(() => janitor.runOnce(), logger);
  janitor.start();
}

/**
 * The janitor's pass at start, reported once: "on" or "failed". A Keycloak that has just
 * started can take longer than the janitor's 10 s to answer its first admin calls (seen in CI
 * at a load of 5); a timeout or a connection that failed is tried again after each of
 * `retryDelaysMs` before the pass is reported failed. A refusal (a wrong secret) is reported
 * at once.
 */
export async function firstJanitorPass(
  run: () => Promise<JanitorRun>,
  logger: Pick<Logger, 'info' | 'warn'>,
  retryDelaysMs: readonly number[] = [5_000, 15_000],
): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      const done = await run();
      logger.info('keycloak client janitor: on', { inspected: done.inspected, removed: done.removed.length });
      return;
    } catch (error) {
      const transient = (error as Error).name === 'TimeoutError' || error instanceof TypeError;
      const delay = retryDelaysMs[attempt];
      if (!transient || delay === undefined) {
        logger.warn('keycloak client janitor: failed', { message: (error as Error).message });
        return;
      }
      logger.info('keycloak client janitor: Keycloak did not answer, trying again', {
        message: (error as Error).message,
        retry_in_ms: delay,
      });
      await new Promise((resolve) => setTimeout(resolve, delay).unref());
    }
  }
}

/** The scopes the proxy offers, with what its consent page says about each. */
const PROXY_USER_SCOPES = [MCP_ACCESS_SCOPE, EXPENSE_SCOPES.read, EXPENSE_SCOPES.write];
const PROXY_SCOPES = [...PROXY_USER_SCOPES, EXPENSE_SCOPES.admin];
const PROXY_SCOPE_DESCRIPTIONS: Record<string, string> = {
  [MCP_ACCESS_SCOPE]: 'use the Expenses Tracker MCP server',
  [EXPENSE_SCOPES.read]: 'read your expenses',
  [EXPENSE_SCOPES.write]: 'add and delete your expenses',
  [EXPENSE_SCOPES.admin]: 'see statistics across all users (administrators only)',
};

/**
 * Whether the upstream says this user is an expenses administrator: Keycloak granted the
 * realm's `expenses:admin` scope (it does so only for the `expenses-admin` role), or Entra put
 * the app role `expenses-admin` in the ID token's `roles`.
 */
export function upstreamAdmin(claims: Readonly<Record<string, unknown>>, upstreamScope: string | undefined): boolean {
  if ((upstreamScope ?? '').split(' ').includes(EXPENSE_SCOPES.admin)) return true;
  return Array.isArray(claims.roles) && claims.roles.includes(EXPENSE_ADMIN_ROLE);
}

/**
 * `oauth_proxy` and `entra_proxy` modes: this server is the authorization server of its MCP
 * clients (registration, consent, PKCE, its own short-lived tokens) in front of an OIDC provider
 * with one fixed confidential client. See docs/oauth-proxy.md.
 */
async function oauthProxyProvider(
  config: ServerConfig & OAuthProxyAuthConfig,
  database: Database,
  logger: Logger,
): Promise<AuthProvider> {
  const { upstream } = config.oauthProxy;
  const keys = await proxyKeys(config, logger);
  return oauthProxy({
    name: config.authMode,
    issuer: config.baseUrl,
    resource: `${config.baseUrl}/mcp`,
    upstream:
      upstream.kind === 'entra'
        ? entraUpstream({
            tenantId: upstream.tenantId,
            clientId: upstream.clientId,
            clientSecret: upstream.clientSecret,
            allowedTenantIds: upstream.allowedTenantIds,
          })
        : oidcUpstream({
            displayName: upstream.discoveryUrl === config.keycloakRealmUrl ? 'Keycloak' : undefined,
            discoveryUrl: upstream.discoveryUrl,
            clientId: upstream.clientId,
            clientSecret: upstream.clientSecret,
            scopes: upstream.scopes,
            internalBaseUrl: upstream.internalUrl
              ? { from: upstream.discoveryUrl, to: upstream.internalUrl }
              : undefined,
          }),
    pool: database.pool,
    signingKey: keys.signingKey,
    encryptionKey: keys.encryptionKey,
    scopesSupported: PROXY_SCOPES,
    // A client that names no scope gets a user's scopes; the admin scope is asked for, then
    // granted only to administrators.
    defaultScopes: PROXY_USER_SCOPES,
    permittedScopes: ({ requested, claims, upstreamScope }) =>
      requested.filter((scope) => scope !== EXPENSE_SCOPES.admin || upstreamAdmin(claims, upstreamScope)),
    scopeDescriptions: PROXY_SCOPE_DESCRIPTIONS,
    resourceName: 'Expenses Tracker',
    // A developer's machine (a loopback base URL, listening on loopback only): http Client ID
    // Metadata Documents on loopback are accepted. Anywhere else, a container listening on
    // 0.0.0.0 included, CIMD is https-only with private and loopback addresses refused.
    development: config.oauthProxy.loopbackBaseUrl && isLoopbackBindAddress(config.host),
    trustForwardedFor: config.trustProxy,
    onEvent: logProxyEvent(logger),
  });
}

/**
 * The generated keys file, checked: a file cut short or edited by hand stops the start with
 * its name and what to do, never with JSON.parse's message, which quotes the file's text (the
 * private key).
 */
async function storedProxyKeys(text: string, file: string): Promise<ProxyKeys> {
  const unusable = new Error(
    `${file} does not hold the OAuth proxy's generated keys (a private JWK "signingKey" and a 32-byte "encryptionKey"). Delete it to generate new ones (tokens and registrations made with the old ones stop working), or set OAUTH_PROXY_SIGNING_KEY and OAUTH_PROXY_ENCRYPTION_KEY.`,
  );
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw unusable;
  }
  const { signingKey, encryptionKey } = (parsed ?? {}) as Partial<Record<keyof ProxyKeys, unknown>>;
  if (typeof signingKey !== 'object' || signingKey === null) throw unusable;
  if (typeof encryptionKey !== 'string' || decodedKeyLength(encryptionKey) !== 32) throw unusable;
  try {
    await loadSigningKey(signingKey as ProxyKeys['signingKey']);
  } catch {
    throw unusable;
  }
  return { signingKey: signingKey as ProxyKeys['signingKey'], encryptionKey };
}

/** Proxy events that need an operator (an outage of the identity provider), logged at `warn`. */
const PROXY_WARNINGS = new Set(['upstream_unavailable']);

/** The proxy's events as log lines: security events at `info`, outages at `warn`. */
export function logProxyEvent(
  logger: Pick<Logger, 'info' | 'warn'>,
): (event: string, details: Record<string, unknown>) => void {
  return (event, details) =>
    PROXY_WARNINGS.has(event)
      ? logger.warn(`oauth proxy: ${event}`, details)
      : logger.info(`oauth proxy: ${event}`, details);
}

interface ProxyKeys {
  signingKey: OAuthProxyOptions['signingKey'];
  encryptionKey: string;
}

/**
 * The keys from OAUTH_PROXY_SIGNING_KEY and OAUTH_PROXY_ENCRYPTION_KEY; on a loopback base URL
 * (config refuses their absence elsewhere), generated once into the data directory, so
 * `MCP_AUTH_PROVIDER=oauth_proxy pnpm start` needs no other setting.
 */
async function proxyKeys(config: ServerConfig & OAuthProxyAuthConfig, logger: Logger): Promise<ProxyKeys> {
  const configured = config.oauthProxy;
  if (configured.signingKey !== undefined) {
    // Imported once here: a key config's shape check lets through but the proxy cannot sign with
    // (a point off the curve, a wrong "d") stops the start, not every sign-in later.
    try {
      await loadSigningKey(configured.signingKey);
    } catch (error) {
      throw new ConfigError(
        'OAUTH_PROXY_SIGNING_KEY',
        `is not a key the proxy can sign with (${(error as Error).message})`,
      );
    }
  }
  if (configured.signingKey !== undefined && configured.encryptionKey !== undefined) {
    return { signingKey: configured.signingKey, encryptionKey: configured.encryptionKey };
  }
  const file = join(config.dataDir, 'oauth-proxy-keys.json');
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  let stored = text === undefined ? undefined : await storedProxyKeys(text, file);
  if (!stored) {
    stored = {
      signingKey: await generateSigningKey(),
      encryptionKey: randomBytes(32).toString('base64url'),
    };
    await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
    await writeFile(file, `${JSON.stringify(stored, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    await chmod(file, 0o600);
    logger.warn(
      'OAUTH_PROXY_SIGNING_KEY / OAUTH_PROXY_ENCRYPTION_KEY unset: generated local development keys. Set both for anything but this machine.',
      { file },
    );
  }
  return {
    signingKey: configured.signingKey ?? stored.signingKey,
    encryptionKey: configured.encryptionKey ?? stored.encryptionKey,
  };
}
