import { type Database, migrate, openDatabase } from '@mcp-auth-stack/database';
import { createTestDatabase } from '@mcp-auth-stack/testing';
import { AUTHORIZATION_PASSTHROUGH_NAMESPACE, authorizationPassThroughMigrations } from '../src/index.ts';

/** A throwaway database on the real PostgreSQL (TEST_DATABASE_URL) with the pass-through's tables; `close` drops it. */
export async function openPassThroughDatabase(): Promise<{ database: Database; close(): Promise<void> }> {
  const testDb = await createTestDatabase();
  const database = await openDatabase({ url: testDb.url });
  await migrate(database.pool, AUTHORIZATION_PASSTHROUGH_NAMESPACE, authorizationPassThroughMigrations);
  return {
    database,
    async close() {
      await database.close();
      await testDb.drop();
    },
  };
}
