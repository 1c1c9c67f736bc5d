import { ApiKeyStore, type AuthProvider, apiKeyProvider, noAuthProvider } from '@mcp-auth-stack/auth';
import type { Database } from '@mcp-auth-stack/database';
import type { ServerConfig } from './config.ts';
import type { Logger } from './logger.ts';

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
  }
}
