import { resolve } from 'node:path';
import pg from 'pg';
import type { EmbeddedServerOptions } from './embedded.ts';
import { registerStatementLimitExemption } from './statement-limit.ts';

export { type OneConnectionOptions, onOneConnection } from './connection.ts';
export type { RestartEvent } from './embedded.ts';
export { type EmbeddedDatabaseOwner, embeddedDatabaseOwner } from './embedded-lock.ts';
export { type Migration, type MigrationSet, migrate, migrateToCurrent } from './migrate.ts';

export interface Database {
  pool: pg.Pool;
  /** `postgres` for a server named by a URL, `embedded` for PGlite under a data directory. */
  kind: 'postgres' | 'embedded';
  /** Where the data lives, safe to log (no password). */
  location: string;
  /**
   * A new connection outside the pool, for a session that must stay open (LISTEN); the caller
   * connects and ends it. Only for servers named by a URL: the embedded database gives every
   * connection turns on one session, where LISTEN would be shared by all of them.
   */
  dedicatedClient?(): pg.Client;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** A `postgres://` URL. When absent, the embedded database under `dataDir` is used. */
  url?: string | undefined;
  dataDir?: string | undefined;
  /** Pool size; the embedded database runs one connection's turn at a time, so it needs few. */
  maxConnections?: number;
  embedded?: Pick<EmbeddedServerOptions, 'mustOwn' | 'waitForLockMs' | 'onRestart'>;
  applicationName?: string;
  /**
   * Longest wait for a connection, new or from the pool (default 5000 ms). Without it a
   * request waits as long as an unresponsive server (a frozen host, a partition) keeps it.
   */
  connectTimeoutMs?: number;
  /**
   * Longest statement (default 5000 ms): PostgreSQL cancels it (`statement_timeout`), and the
   * client gives up `CLIENT_GRACE_MS` later if the server itself does not answer; that
   * connection is then dropped. The embedded database takes no session settings: a statement
   * it runs for three times as long is ended by opening it again (every connection closed).
   */
  queryTimeoutMs?: number;
}

/** How much longer than statement_timeout the client waits, so the server's cancel normally wins. */
const CLIENT_GRACE_MS = 1_000;

export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  const applicationName = options.applicationName ?? 'mcp-auth-stack';
  const queryTimeoutMs = options.queryTimeoutMs ?? 5_000;
  const bounds = {
    connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
    query_timeout: queryTimeoutMs + CLIENT_GRACE_MS,
  };
  if (options.url) {
    const pool = new pg.Pool({
      connectionString: options.url,
      max: options.maxConnections ?? 10,
      application_name: applicationName,
      statement_timeout: queryTimeoutMs,
      ...bounds,
    });
    pool.on('error', () => {
      // An idle client lost its connection; the pool replaces it. Without a listener, Node exits.
    });
    return {
      pool,
      kind: 'postgres',
      location: redactUrl(options.url),
      dedicatedClient: () =>
        new pg.Client({
          connectionString: options.url,
          application_name: applicationName,
          connectionTimeoutMillis: bounds.connectionTimeoutMillis,
          query_timeout: bounds.query_timeout,
          // A listener sits idle for long stretches: keepalives find a dead peer the OS knows of.
          keepAlive: true,
        }),
      close: () => pool.end(),
    };
  }
  if (!options.dataDir) throw new Error('openDatabase needs a url or a dataDir');
  // Absolute, whatever the caller passed: `pg` reads a host that does not start with "/" as a
  // host name, so a relative socket directory (`.data`) would be looked up in DNS.
  const dataDir = resolve(options.dataDir);
  const maxConnections = options.maxConnections ?? 4;
  // PGlite (a WebAssembly Postgres) is loaded only when it is used: a server on a real
  // PostgreSQL never pays for it.
  const { startEmbeddedServer } = await import('./embedded.ts');
  const embedded = await startEmbeddedServer(dataDir, {
    ...options.embedded,
    maxConnections: maxConnections + 2,
    // PGlite has no statement_timeout: a statement that runs well past it (the client gave up
    // long before) is ended by opening the database again.
    statementLimitMs: Math.max(3 * queryTimeoutMs, 1_000),
  });
  const connection = {
    host: embedded.socketDir,
    port: embedded.port,
    user: 'postgres',
    database: 'postgres',
    application_name: applicationName,
  };
  const pool = new pg.Pool({ ...connection, max: maxConnections, ...bounds });
  pool.on('error', () => {});
  registerStatementLimitExemption(pool, embedded.withoutStatementLimit);
  return {
    pool,
    kind: 'embedded',
    location: `${dataDir} (embedded PGlite${embedded.owner ? '' : ', shared with a running process'})`,
    async close() {
      await pool.end();
      await embedded.stop();
    },
  };
}

/**
 * Query parameters whose value may be a secret. pg takes every query parameter as a connection
 * setting, so `?password=` and `?sslpassword=` work as well as `user:pass@`; `sslkey` names the
 * private key's file. Broad on purpose: masking a harmless value costs less than logging a secret.
 */
const SECRET_QUERY_PARAMETER = /pass|secret|key|token/i;

/** The URL without its password or other secret query parameters, for logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    // Host, database, sslmode and the like stay readable: they are what an operator checks first.
    const masked = new URLSearchParams();
    for (const [name, value] of parsed.searchParams) {
      masked.append(name, SECRET_QUERY_PARAMETER.test(name) ? '***' : value);
    }
    if (parsed.search) parsed.search = masked.toString();
    return parsed.toString();
  } catch {
    return '(unparseable database URL)';
  }
}

/** SQLSTATE 53100 `disk_full`: the server has no room for what a statement writes. */
const DISK_FULL_SQLSTATE = '53100';

/**
 * Whether an error says the database is out of disk space: a statement that must write was
 * refused (and rolled back); reads and writes into space already allocated still work. Also an
 * outage to `isDatabaseUnavailable` (a retry once space is freed succeeds), but one the operator
 * must act on, and one that does not make the database unreachable.
 */
export function isDatabaseFull(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if ((error as { code?: unknown }).code === DISK_FULL_SQLSTATE) return true;
  return error.cause !== undefined && isDatabaseFull(error.cause);
}

/** serialization_failure and deadlock_detected: the statement was rolled back for a concurrent one. */
const CONTENTION_SQLSTATES = new Set(['40001', '40P01']);

/**
 * Whether PostgreSQL refused a statement because of a concurrent one (a serialization failure
 * under REPEATABLE READ or SERIALIZABLE, or a deadlock): it changed nothing, and the same
 * statement again may well succeed. Not an outage: the database answered.
 */
export function isDatabaseContention(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && CONTENTION_SQLSTATES.has(code)) return true;
  return error.cause !== undefined && isDatabaseContention(error.cause);
}

/** SQLSTATE classes and codes that mean "the database cannot serve now", not "this statement is wrong". */
const UNAVAILABLE_SQLSTATES = /^(08|53|57P0[1-4]|57014|58)/;
const UNAVAILABLE_NODE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENOENT',
]);
const UNAVAILABLE_MESSAGES =
  /timeout exceeded when trying to connect|Query read timeout|Connection terminated|connection error and is not queryable|Client was closed|Cannot use a pool after calling end/i;

/**
 * Whether an error from `pg` says the database is unreachable, overloaded, restarting or too
 * slow (connection refused or reset, a connect or query timeout, the server shutting down, a
 * statement cancelled by statement_timeout), as opposed to a problem with the statement itself.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_SQLSTATES.test(code) || UNAVAILABLE_NODE_CODES.has(code))) return true;
  if (UNAVAILABLE_MESSAGES.test(error.message)) return true;
  return error.cause !== undefined && isDatabaseUnavailable(error.cause);
}
