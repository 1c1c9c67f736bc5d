import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { livePidIn } from '@mcp-auth-stack/pid-lock';

/** The lock file of the embedded database's owner, in its data directory (apart from PGlite, which is loaded only to run it). */
export const LOCK_NAME = 'embedded.lock';

/** The socket a server serves on, in its data directory; a tool that owns the files serves one of its own. */
export const SERVER_PORT = 5432;
export const SERVER_SOCKET = `.s.PGSQL.${SERVER_PORT}`;

export interface EmbeddedDatabaseOwner {
  pid: number;
  /**
   * Whether it serves the server's socket: a server, up. Otherwise a tool that owns the files
   * for a moment (the keys CLI), or a server still starting; either lets go, or serves, soon.
   */
  serving: boolean;
}

/** The live process that owns the embedded database under `dataDir` (a server, a `pnpm start`, a keys command), if any. */
export async function embeddedDatabaseOwner(dataDir: string): Promise<EmbeddedDatabaseOwner | undefined> {
  const pid = await livePidIn(join(dataDir, LOCK_NAME));
  if (pid === undefined) return undefined;
  const serving = await access(join(dataDir, SERVER_SOCKET)).then(
    () => true,
    () => false,
  );
  return { pid, serving };
}
