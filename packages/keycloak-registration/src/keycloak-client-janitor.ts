import type { Migration } from '@mcp-auth-stack/database';
import type pg from 'pg';
import { keycloakAdminApi } from './admin-api.ts';

/**
 * Removes dynamically registered Keycloak clients nobody uses, so that a flood of anonymous
 * registrations (the realm's Max Clients policy then answers 403 to everyone, real MCP clients
 * included) locks registration out for a bounded time only. Keycloak 26.7.3 never removes a
 * registered client by itself and records neither when it was created nor when it was last used,
 * so the janitor keeps both in PostgreSQL (`keycloak_janitor_clients`, by Keycloak's internal
 * client id), shared by restarts and replicas, and decides from them:
 *
 * - a client with active sessions (online or offline) is in use: its last use is now;
 * - a client never seen in use is removed after a grace since it was first seen (registered,
 *   then no login): `calmAbandonedAfterSeconds` (default a day) while registration is calm,
 *   `abandonedAfterSeconds` (default 15 minutes) under a flood: `pressureAt` candidates
 *   (default 50) out of use, or the realm within `pressureAt` clients of its `maxClients`
 *   (default 200, the realm file's Max Clients, which counts every client). A removed client's MCP client keeps its client id and, with no token to refresh, goes
 *   to the login with it, where the realm answers "Client not found" and nothing makes it
 *   register again (VS Code, mcp-remote): so a person who left a first sign-in half done gets a
 *   day, not 15 minutes, unless registration is being flooded;
 * - a client once in use is removed after `idleAfterSeconds` without a session (default 7 days);
 *   its MCP client then registers again (and the user consents again);
 * - a user keeps at most `maxClientsPerUser` clients in use (default 10; the ones first seen
 *   earliest): a realm user who signs in to a flood of clients (one browser session takes a code
 *   of each) would otherwise keep them all, and registration locked, for as long as she likes.
 *   A client beyond every one of its users' share counts as unused.
 *
 * Not on the client itself: a registrant writes its own client's attributes (at registration
 * through the `default` provider, later with its registration access token), so a flood whose
 * clients claimed a last use in the year 5000 would have stayed for good.
 *
 * Only clients the realm's anonymous registration creates are candidates: consent required (the
 * Consent Required policy sets it on every anonymous registration) and not in `keep` (the realm's
 * own clients, Keycloak's built-in ones). Client ID Metadata Document clients (a URL id) are
 * candidates too: Keycloak persists one again at its next sign-in, and a registration may choose
 * a URL-like id. It runs with a realm service account holding `view-clients` and
 * `manage-clients` of `realm-management`.
 */
export const KEYCLOAK_JANITOR_NAMESPACE = 'keycloak_janitor';

export const keycloakJanitorMigrations: Migration[] = [
  {
    version: 1,
    name: 'create the janitor record of registered clients',
    sql: `
      -- What the janitor saw of each anonymously registered client, by Keycloak's internal id.
      CREATE TABLE keycloak_janitor_clients (
        id text PRIMARY KEY,
        first_seen timestamptz NOT NULL,
        last_used timestamptz
      );
    `,
  },
];

export interface KeycloakClientJanitorOptions {
  /** Where Keycloak answers, e.g. http://localhost:8080 (no realm path). */
  baseUrl: string;
  /** Where the janitor keeps what it saw (`keycloakJanitorMigrations` applied). */
  pool: pg.Pool;
  realm: string;
  clientId: string;
  clientSecret: string;
  /** Client ids never removed, in addition to Keycloak's built-in clients. */
  keep?: readonly string[] | undefined;
  /** Grace of a never-used client under a flood (default 15 minutes). */
  abandonedAfterSeconds?: number | undefined;
  /** Grace of a never-used client otherwise (default a day). */
  calmAbandonedAfterSeconds?: number | undefined;
  /**
   * Candidates out of use from which a pass counts as a flood (default 50: a quarter of the
   * realm's Max Clients); also how near `maxClients` the realm may come before it does.
   */
  pressureAt?: number | undefined;
  /** The realm's Max Clients policy (default 200), which counts every client of the realm. */
  maxClients?: number | undefined;
  idleAfterSeconds?: number | undefined;
  /** Clients one user keeps in use (default 10); the rest count as unused. */
  maxClientsPerUser?: number | undefined;
  /** Time between runs (default 5 minutes); 0 runs only when `runOnce` is called. */
  intervalSeconds?: number | undefined;
  onEvent?: ((event: string, details: Record<string, unknown>) => void) | undefined;
  /**
   * Called after a pass that removed clients, with their client ids, so that what else is kept
   * about them goes too (the `workaround` pass-through's record). A failure is reported as
   * `forget_failed` and does not fail the pass: the clients are gone either way.
   */
  onRemoved?: ((clientIds: readonly string[]) => Promise<void>) | undefined;
  fetch?: typeof fetch | undefined;
  now?: () => number;
}

export const KEYCLOAK_BUILT_IN_CLIENTS: readonly string[] = [
  'account',
  'account-console',
  'admin-cli',
  'broker',
  'realm-management',
  'security-admin-console',
];

const PAGE = 100;
/** A client in use has its last use written at most this often, not on every pass. */
const LAST_USED_RESOLUTION_MS = 3600_000;

interface ClientRepresentation {
  id: string;
  clientId: string;
  consentRequired?: boolean;
}

interface ClientRecord {
  firstSeen: number;
  lastUsed: number | undefined;
}

export interface JanitorRun {
  inspected: number;
  removed: string[];
}

/**
 * A client's internal id as one segment of an admin URL. Keycloak's `default` registration
 * provider keeps the `id` an anonymous caller sends (`f/1`, `x?y`): written into the path as it
 * is, such an id named another URL, whose 404 read as "no sessions" and, for the DELETE, as
 * "removed", and the flood of such clients stayed for good.
 */
function clientPath(id: string): string {
  return encodeURIComponent(id);
}

/**
 * `.` and `..`: no encoding keeps a URL parser from resolving them (`%2e` counts as a dot too),
 * so no admin URL reaches such a client; the janitor leaves them (an id is unique: two at most).
 */
const DOT_SEGMENT = /^\.{1,2}$/;

export function keycloakClientJanitor(options: KeycloakClientJanitorOptions) {
  const now = options.now ?? Date.now;
  const keep = new Set([...KEYCLOAK_BUILT_IN_CLIENTS, options.clientId, ...(options.keep ?? [])]);
  const abandonedAfterMs = (options.abandonedAfterSeconds ?? 15 * 60) * 1000;
  const calmAbandonedAfterMs = (options.calmAbandonedAfterSeconds ?? 24 * 3600) * 1000;
  const pressureAt = options.pressureAt ?? 50;
  const maxClients = options.maxClients ?? 200;
  const idleAfterMs = (options.idleAfterSeconds ?? 7 * 24 * 3600) * 1000;
  const maxClientsPerUser = options.maxClientsPerUser ?? 10;
  const { pool } = options;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<JanitorRun> | undefined;

  const adminApi = keycloakAdminApi(options);
  const token = () => adminApi.token();
  const api = (bearer: string, path: string, init?: { method?: string; body?: unknown }) =>
    adminApi.call(bearer, path, init);

  // A client id that looks like a URL is no exception: Keycloak's `default` registration provider
  // takes whatever id the caller chooses. A metadata-document client removed while unused is
  // persisted again at its next sign-in.
  function candidate(client: ClientRepresentation): boolean {
    return client.consentRequired === true && !keep.has(client.clientId) && !DOT_SEGMENT.test(client.id);
  }

  /** The users with a session (online or offline) of the client; empty when it has none. */
  async function usersOf(bearer: string, id: string): Promise<Set<string>> {
    const [online, offline] = await Promise.all([
      api(bearer, `/clients/${clientPath(id)}/session-count`),
      api(bearer, `/clients/${clientPath(id)}/offline-session-count`),
    ]);
    const users = new Set<string>();
    const count = ((online as { count?: number })?.count ?? 0) + ((offline as { count?: number })?.count ?? 0);
    if (count === 0) return users;
    for (const kind of ['user-sessions', 'offline-sessions']) {
      const listed = (await api(bearer, `/clients/${clientPath(id)}/${kind}?first=0&max=${PAGE}`)) as
        | { userId?: string }[]
        | undefined;
      for (const session of listed ?? []) if (session.userId) users.add(session.userId);
    }
    // Sessions counted but none listed (ended in between): in use, by nobody in particular.
    if (users.size === 0) users.add('');
    return users;
  }

  async function records(ids: readonly string[]): Promise<Map<string, ClientRecord>> {
    const { rows } = await pool.query<{ id: string; first_seen: Date; last_used: Date | null }>(
      'SELECT id, first_seen, last_used FROM keycloak_janitor_clients WHERE id = ANY($1::text[])',
      [ids],
    );
    return new Map(
      rows.map((row) => [row.id, { firstSeen: row.first_seen.getTime(), lastUsed: row.last_used?.getTime() }]),
    );
  }

  /**
   * Marks or removes one candidate; true when removed. In use within a user's share: its last
   * use is now. Beyond every share: removed once past the grace since first seen, whatever use
   * it had. Unused: removed once idle (used before) or abandoned (never used).
   */
  async function tidy(
    client: ClientRepresentation,
    record: ClientRecord | undefined,
    use: 'in use' | 'beyond share' | 'unused',
    graceMs: number,
    bearer: string,
  ): Promise<boolean> {
    const at = now();
    if (use === 'in use') {
      if (!(record?.lastUsed !== undefined && at - record.lastUsed < LAST_USED_RESOLUTION_MS)) {
        await pool.query(
          `INSERT INTO keycloak_janitor_clients (id, first_seen, last_used) VALUES ($1, $2, $2)
           ON CONFLICT (id) DO UPDATE SET last_used = GREATEST(keycloak_janitor_clients.last_used, $2)`,
          [client.id, new Date(at)],
        );
      }
      return false;
    }
    if (!record) {
      // Another replica may have seen it first: its sight stands.
      await pool.query(
        'INSERT INTO keycloak_janitor_clients (id, first_seen) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING',
        [client.id, new Date(at)],
      );
      return false;
    }
    const expired =
      use === 'unused' && record.lastUsed !== undefined
        ? at - record.lastUsed > idleAfterMs
        : at - record.firstSeen > graceMs;
    if (!expired) return false;
    await api(bearer, `/clients/${clientPath(client.id)}`, { method: 'DELETE' });
    await pool.query('DELETE FROM keycloak_janitor_clients WHERE id = $1', [client.id]);
    return true;
  }

  async function run(): Promise<JanitorRun> {
    const started = now();
    const bearer = await token();
    // Every page first, then the changes: deleting while paging would shift the pages under the
    // listing, and each deletion would hide a client of the next page from this pass.
    const candidates: ClientRepresentation[] = [];
    let clientsInRealm = 0;
    for (let first = 0; ; first += PAGE) {
      const page = (await api(bearer, `/clients?first=${first}&max=${PAGE}`)) as ClientRepresentation[];
      clientsInRealm += page.length;
      candidates.push(...page.filter(candidate));
      if (page.length < PAGE) break;
    }
    const seen = await records(candidates.map((client) => client.id));
    const users = new Map<string, Set<string>>();
    for (const client of candidates) {
      try {
        users.set(client.id, await usersOf(bearer, client.id));
      } catch (error) {
        options.onEvent?.('client_failed', { client_id: client.clientId, message: (error as Error).message });
      }
    }
    const inUse = withinUserShares(candidates, users, seen);
    const useOf = (client: ClientRepresentation) =>
      inUse.has(client.id) ? 'in use' : (users.get(client.id)?.size ?? 0) > 0 ? 'beyond share' : 'unused';
    const beyondShares = candidates.filter((client) => useOf(client) === 'beyond share').length;
    if (beyondShares > 0) {
      options.onEvent?.('clients_beyond_user_share', { count: beyondShares, max_per_user: maxClientsPerUser });
    }
    const outOfUse = candidates.filter((client) => users.has(client.id) && useOf(client) !== 'in use').length;
    // A few clients out of use fill a realm whose other places are taken (clients in use,
    // offline sessions keep for weeks): near the limit, any flood is one.
    const underPressure = outOfUse >= pressureAt || clientsInRealm >= maxClients - pressureAt;
    if (underPressure) {
      options.onEvent?.('registration_pressure', {
        out_of_use: outOfUse,
        clients: clientsInRealm,
        pressure_at: pressureAt,
        max_clients: maxClients,
      });
    }
    const graceMs = underPressure ? abandonedAfterMs : calmAbandonedAfterMs;
    const removed: string[] = [];
    for (const client of candidates) {
      if (!users.has(client.id)) continue; // its sessions could not be read: left for the next pass
      try {
        if (await tidy(client, seen.get(client.id), useOf(client), graceMs, bearer)) removed.push(client.clientId);
      } catch (error) {
        // One client that fails (Keycloak refuses its deletion) must not stop the others.
        options.onEvent?.('client_failed', { client_id: client.clientId, message: (error as Error).message });
      }
    }
    // Records of clients gone by other hands (an administrator), once they would be due anyway:
    // a listing shifted by a deletion elsewhere meanwhile (another replica's janitor, the
    // client's owner) can miss a client that still exists, whose last use must not be lost.
    await pool.query(
      `DELETE FROM keycloak_janitor_clients
        WHERE NOT (id = ANY($1::text[])) AND COALESCE(last_used, first_seen) < $2`,
      [candidates.map((client) => client.id), new Date(started - idleAfterMs)],
    );
    if (removed.length > 0) {
      options.onEvent?.('clients_removed', { count: removed.length, inspected: candidates.length });
      try {
        await options.onRemoved?.(removed);
      } catch (error) {
        options.onEvent?.('forget_failed', { count: removed.length, message: (error as Error).message });
      }
    }
    return { inspected: candidates.length, removed };
  }

  /**
   * The candidates in use: each user's `maxClientsPerUser` first seen earliest (never seen yet:
   * last), and every client with a session nobody in particular holds.
   */
  function withinUserShares(
    candidates: readonly ClientRepresentation[],
    users: ReadonlyMap<string, ReadonlySet<string>>,
    seen: ReadonlyMap<string, ClientRecord>,
  ): Set<string> {
    const byUser = new Map<string, ClientRepresentation[]>();
    const kept = new Set<string>();
    for (const client of candidates) {
      for (const user of users.get(client.id) ?? []) {
        if (user === '') kept.add(client.id);
        else byUser.set(user, [...(byUser.get(user) ?? []), client]);
      }
    }
    const firstSeen = (client: ClientRepresentation) => seen.get(client.id)?.firstSeen ?? Number.POSITIVE_INFINITY;
    for (const clients of byUser.values()) {
      clients.sort((a, b) => firstSeen(a) - firstSeen(b) || a.id.localeCompare(b.id));
      for (const client of clients.slice(0, maxClientsPerUser)) kept.add(client.id);
    }
    return kept;
  }

  return {
    /** One pass; concurrent calls share it. */
    runOnce(): Promise<JanitorRun> {
      running ??= run().finally(() => {
        running = undefined;
      });
      return running;
    },
    start() {
      const interval = (options.intervalSeconds ?? 300) * 1000;
      if (interval <= 0 || timer) return;
      timer = setInterval(() => {
        this.runOnce().catch((error: unknown) =>
          options.onEvent?.('janitor_failed', { message: (error as Error).message }),
        );
      }, interval);
      timer.unref();
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
    },
  };
}
