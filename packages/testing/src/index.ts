export { dockerignore, type ReplayedImage, replayDockerfile } from './dockerfile.ts';
export { neverEndingHeaders, openMcpPost, postMcp } from './mcp-http.ts';
export {
  type AuthorizeRequest,
  audienceOf,
  authorizeUrl,
  type CallbackServer,
  decodeJwtPayload,
  freePort,
  scopesOf,
  startCallbackServer,
} from './oauth.ts';
export { createPkce, type Pkce } from './pkce.ts';
export { run, type ServerProcess, spawnServerProcess } from './process.ts';
export { type TcpRelay, tcpRelayTo } from './tcp-relay.ts';

import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** The server the tests use; `scripts/ci/postgres.sh` installs, starts and prints it. */
export const TEST_DATABASE_URL =
  process.env.TEST_DATABASE_URL ?? 'postgres://mcp_test:mcp_test@127.0.0.1:5432/postgres';

export interface TestDatabase {
  /** URL of a new, empty database that belongs to this test file alone. */
  url: string;
  drop(): Promise<void>;
}

/**
 * Creates an empty database on the real PostgreSQL server. Fails loudly, never skips, when
 * the server is not there: a test that needs Postgres must not pass without it.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
  try {
    await admin.connect();
  } catch (error) {
    throw new Error(
      `PostgreSQL is not reachable at ${redact(TEST_DATABASE_URL)} (${(error as Error).message}). ` +
        'Start it with `sudo bash scripts/ci/postgres.sh`, or set TEST_DATABASE_URL to a role that may CREATE DATABASE.',
    );
  }
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await client.connect();
      try {
        // FORCE ends the database's sessions, but only those this role may signal: a session
        // it may not (most likely an autovacuum worker after the test's writes, on PostgreSQL
        // 15) makes it refuse with 42501. Such a session ends within moments; try again.
        for (let attempt = 1; ; attempt++) {
          try {
            await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
            return;
          } catch (error) {
            if ((error as { code?: string }).code !== '42501' || attempt >= DROP_ATTEMPTS) throw error;
            await new Promise((resolve) => setTimeout(resolve, 200));
          }
        }
      } finally {
        await client.end();
      }
    },
  };
}

/** Attempts at dropping a test database held by a session this role may not end: 10 s in all. */
const DROP_ATTEMPTS = 50;

function redact(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}
