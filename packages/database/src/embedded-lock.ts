import { join } from 'node:path';
import { livePidIn } from '@mcp-auth-stack/pid-lock';

/** The lock file of the embedded database's owner, in its data directory (apart from PGlite, which is loaded only to run it). */
export const LOCK_NAME = 'embedded.lock';

/** The live process that owns the embedded database under `dataDir` (a server, or a `pnpm start`), if any. */
export async function embeddedDatabaseOwner(dataDir: string): Promise<number | undefined> {
  return await livePidIn(join(dataDir, LOCK_NAME));
}
