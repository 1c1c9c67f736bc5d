import { resolve } from 'node:path';
import pg from 'pg';
import type { EmbeddedServerOptions } from './embedded.ts';

export { type Migration, migrate } from './migrate.ts';

export interface Database {
  pool: pg.Pool;
  /** `postgres` for a server named by a URL, `embedded` for PGlite under a data directory. */
  kind: 'postgres' | 'embedded';
  /** Where the data lives, safe to log (no password). */
  location: string;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** A `postgres://` URL. When absent, the embedded database under `dataDir` is used. */
  url?: string | undefined;
  dataDir?: string | undefined;
  /** Pool size; the embedded database multiplexes onto one session, so it needs few. */
  maxConnections?: number;
  embedded?: Pick<EmbeddedServerOptions, 'mustOwn' | 'waitForLockMs'>;
  applicationName?: string;
}

export async function openDatabase(options: OpenDatabaseOptions): Promise<Database> {
  const applicationName = options.applicationName ?? 'mcp-auth-stack';
  if (options.url) {
    const pool = new pg.Pool({
      connectionString: options.url,
      max: options.maxConnections ?? 10,
      application_name: applicationName,
    });
    pool.on('error', () => {
      // An idle client lost its connection; the pool replaces it. Without a listener, Node exits.
    });
    return { pool, kind: 'postgres', location: redactUrl(options.url), close: () => pool.end() };
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
  });
  const pool = new pg.Pool({
    host: embedded.socketDir,
    user: 'postgres',
    database: 'postgres',
    max: maxConnections,
    application_name: applicationName,
  });
  pool.on('error', () => {});
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

/** The URL without its password, for logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparseable database URL)';
  }
}
