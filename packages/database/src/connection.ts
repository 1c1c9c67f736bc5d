import type pg from 'pg';

export interface OneConnectionOptions {
  /**
   * Close the connection, rather than pool it, when `work` fails (default true): it may hold
   * session state, such as an advisory lock. A caller that rolled its transaction back says false.
   */
  closeOnFailure?: boolean;
}

/**
 * `work` on a connection checked out of `pool`. While a connection is checked out, pg-pool
 * listens for none of its `error` events, and a connection that dies without a word from the
 * server (a killed backend, a reset, a failover) emits one beside failing its query: unheard,
 * Node ends the process. It is heard here, and such a connection is closed, not pooled.
 */
export async function onOneConnection<T>(
  pool: pg.Pool,
  work: (client: pg.PoolClient) => Promise<T>,
  options: OneConnectionOptions = {},
): Promise<T> {
  const client = await pool.connect();
  let lost: Error | undefined;
  let failed: Error | undefined;
  const onError = (error: Error) => {
    lost ??= error;
  };
  client.on('error', onError);
  try {
    return await work(client);
  } catch (error) {
    if (options.closeOnFailure ?? true) failed = error instanceof Error ? error : new Error(String(error));
    throw error;
  } finally {
    client.off('error', onError);
    client.release(lost ?? failed);
  }
}
