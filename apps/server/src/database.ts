import { API_KEYS_NAMESPACE, apiKeyMigrations } from '@mcp-auth-stack/auth';
import { type Database, migrateToCurrent, openDatabase, type RestartEvent } from '@mcp-auth-stack/database';
import { EXPENSES_NAMESPACE, expensesMigrations } from '@mcp-auth-stack/expenses';
import { OAUTH_PROXY_NAMESPACE, oauthProxyMigrations } from '@mcp-auth-stack/oauth-proxy';
import type { ServerConfig } from './config.ts';
import type { Logger } from './logger.ts';

/** The server's schema, in the order it is applied. */
const MIGRATIONS = [
  { namespace: API_KEYS_NAMESPACE, migrations: apiKeyMigrations },
  { namespace: EXPENSES_NAMESPACE, migrations: expensesMigrations },
  { namespace: OAUTH_PROXY_NAMESPACE, migrations: oauthProxyMigrations },
];

/**
 * The part of the schema a process uses: the expenses always, the API keys in key mode and for
 * the keys CLI, the proxy's tables in the proxy modes. Another mode's tables are made when a
 * server of that mode first starts on the database (as the workaround's are, in auth.ts): a
 * first start does not pay for DDL it has no use for (about 50 ms of a keycloak-mode cold
 * start; docs/decisions.md #49).
 */
export function migrationsFor(authMode: ServerConfig['authMode'], role: 'server' | 'tool') {
  const used = new Set<string>([EXPENSES_NAMESPACE]);
  if (authMode === 'key' || role === 'tool') used.add(API_KEYS_NAMESPACE);
  if (authMode === 'oauth_proxy' || authMode === 'entra_proxy') used.add(OAUTH_PROXY_NAMESPACE);
  return MIGRATIONS.filter(({ namespace }) => used.has(namespace));
}

type DatabaseConfig = Pick<
  ServerConfig,
  'authMode' | 'databaseUrl' | 'dataDir' | 'databasePoolSize' | 'databaseConnectTimeoutMs' | 'databaseQueryTimeoutMs'
>;

/**
 * Opens the configured database (Postgres by URL, else the embedded one) and brings the part
 * of its schema this process uses up to date; closes it again if that fails. The server must
 * own an embedded data directory; the keys CLI may join a running server's.
 */
export async function openAppDatabase(config: DatabaseConfig, role: 'server' | 'tool'): Promise<Database> {
  const database = await openConfiguredDatabase(config, role);
  try {
    await migrateAppSchema(database, config.authMode, role);
  } catch (error) {
    await database.close();
    throw error;
  }
  return database;
}

/**
 * Opens the configured database without reading or changing its schema: the server builds
 * its app on it while `migrateAppSchema` runs, and listens only after that.
 */
export async function openConfiguredDatabase(
  config: DatabaseConfig,
  role: 'server' | 'tool',
  logger?: Logger,
): Promise<Database> {
  return openDatabase({
    url: config.databaseUrl,
    dataDir: config.dataDir,
    maxConnections: config.databaseUrl ? config.databasePoolSize : Math.min(config.databasePoolSize, 4),
    embedded: {
      mustOwn: role === 'server',
      waitForLockMs: role === 'server' ? 15_000 : 30_000,
      ...(logger && { onRestart: (event: RestartEvent) => logRestart(logger, event) }),
    },
    applicationName: role === 'server' ? 'mcp-expenses-server' : 'mcp-expenses-keys',
    connectTimeoutMs: config.databaseConnectTimeoutMs,
    queryTimeoutMs: config.databaseQueryTimeoutMs,
  });
}

/** Brings the part of the schema a process of `authMode` uses up to date (`migrationsFor`). */
export async function migrateAppSchema(
  database: Database,
  authMode: ServerConfig['authMode'],
  role: 'server' | 'tool',
): Promise<void> {
  // On an up-to-date schema (every start but the first) one query, no lock, and the pool's
  // connection is warm for requests; on a new database that same connection migrates.
  await migrateToCurrent(database.pool, migrationsFor(authMode, role));
}

/** The embedded database's restarts, as PostgreSQL's log would say them. */
function logRestart(logger: Logger, event: RestartEvent): void {
  if (event.type === 'restarting') {
    logger.error('embedded database restarting: its connections are closed', { reason: event.reason });
  } else if (event.type === 'restarted') {
    logger.warn('embedded database restarted', { after_ms: event.afterMs });
  } else {
    logger.error('embedded database did not open; trying again', {
      error: event.message,
      retry_in_ms: event.retryInMs,
    });
  }
}
