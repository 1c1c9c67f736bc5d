import {
  ApiKeyStore,
  type AuthProvider,
  apiKeyProvider,
  jwtBearerProvider,
  noAuthProvider,
  registrationFacade,
} from '@mcp-auth-stack/auth';
import type { Database } from '@mcp-auth-stack/database';
import { EXPENSE_SCOPES } from '@mcp-auth-stack/expenses';
import type { ServerConfig } from './config.ts';
import { errorFields, type Logger } from './logger.ts';

/** Chooses the access mode named by MCP_AUTH_PROVIDER. */
export async function createAuthProvider(
  config: ServerConfig,
  database: Database,
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
      const store = new ApiKeyStore(database.pool);
      if ((await store.countActive()) === 0) {
        logger.warn(
          'No active API keys yet: every request will get 401. Create one with: pnpm keys create --user <id>',
        );
      }
      return apiKeyProvider({ store });
    }
    case 'keycloak':
      return keycloakProvider(config, logger);
  }
}

/** The scope that carries this server's audience in the realm (an audience mapper). */
export const MCP_ACCESS_SCOPE = 'mcp:access';

/**
 * Keycloak mode: access tokens of the realm, verified locally against its keys; this server's
 * resource URL must be in `aud`. Clients are told to ask for `mcp:access` plus the user scopes:
 * a client that Keycloak registered with a `scope` member only gets `mcp:access` (and so the
 * audience) when it asks for it (issue 50807).
 */
function keycloakProvider(config: ServerConfig, logger: Logger): AuthProvider {
  const realm = config.keycloakRealmUrl as string;
  const reachable = config.keycloakRealmInternalUrl ?? realm;
  const resource = `${config.baseUrl}/mcp`;
  const workaround = config.keycloakRegistration === 'workaround';
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
    onRejected: (description, error) => logger.debug('token rejected', { description, ...errorFields(error) }),
  });
  if (!workaround) return jwt;
  const facade = registrationFacade({
    issuer: config.baseUrl,
    upstreamIssuer: realm,
    upstreamBaseUrl: reachable,
    trustForwardedFor: config.trustProxy,
  });
  return {
    ...jwt,
    authenticate: (request) => jwt.authenticate(request),
    challengeParameters: () => jwt.challengeParameters(),
    ready: () => jwt.ready(),
    mount(app) {
      jwt.mount(app);
      facade.mount(app);
    },
  };
}
