import { readAnswer } from '@mcp-auth-stack/auth';

/**
 * Removes dynamically registered Keycloak clients nobody uses, so that a flood of anonymous
 * registrations (the realm's Max Clients policy then answers 403 to everyone, real MCP clients
 * included) locks registration out for a bounded time only. Keycloak 26.7.3 never removes a
 * registered client by itself and records neither when it was created nor when it was last used,
 * so the janitor keeps both on the client, as attributes, and decides from them:
 *
 * - a client with active sessions (online or offline) is in use: `mcp.janitor.last-used` = now;
 * - a client never seen in use is removed `abandonedAfterSeconds` after it was first seen
 *   (`mcp.janitor.first-seen`): registered, then no login (default 15 minutes);
 * - a client once in use is removed after `idleAfterSeconds` without a session (default 7 days);
 *   its MCP client then registers again (and the user consents again).
 *
 * Only clients the realm's anonymous registration creates are candidates: consent required (the
 * Consent Required policy sets it on every anonymous registration) and not in `keep` (the realm's
 * own clients, Keycloak's built-in ones). Client ID Metadata Document clients (a URL id) are
 * candidates too: Keycloak persists one again at its next sign-in, and a registration may choose
 * a URL-like id. It runs with a realm service account holding `view-clients` and
 * `manage-clients` of `realm-management`.
 */
export interface KeycloakClientJanitorOptions {
  /** Where Keycloak answers, e.g. http://localhost:8080 (no realm path). */
  baseUrl: string;
  realm: string;
  clientId: string;
  clientSecret: string;
  /** Client ids never removed, in addition to Keycloak's built-in clients. */
  keep?: readonly string[] | undefined;
  abandonedAfterSeconds?: number | undefined;
  idleAfterSeconds?: number | undefined;
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

/** A page of 100 client representations is a few hundred KB; this bounds one gone wrong. */
const MAX_ADMIN_ANSWER_BYTES = 4 * 1024 * 1024;
const FIRST_SEEN = 'mcp.janitor.first-seen';
const LAST_USED = 'mcp.janitor.last-used';
const PAGE = 100;

interface ClientRepresentation {
  id: string;
  clientId: string;
  consentRequired?: boolean;
  attributes?: Record<string, string>;
}

export interface JanitorRun {
  inspected: number;
  removed: string[];
}

export function keycloakClientJanitor(options: KeycloakClientJanitorOptions) {
  const base = options.baseUrl.replace(/\/+$/, '');
  const admin = `${base}/admin/realms/${encodeURIComponent(options.realm)}`;
  const doFetch = options.fetch ?? fetch;
  const now = options.now ?? Date.now;
  const keep = new Set([...KEYCLOAK_BUILT_IN_CLIENTS, options.clientId, ...(options.keep ?? [])]);
  const abandonedAfterMs = (options.abandonedAfterSeconds ?? 15 * 60) * 1000;
  const idleAfterMs = (options.idleAfterSeconds ?? 7 * 24 * 3600) * 1000;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<JanitorRun> | undefined;
  /** First sight of clients, when Keycloak refused to record it on the client. */
  const seenHere = new Map<string, number>();

  async function token(): Promise<string> {
    const response = await doFetch(
      `${base}/realms/${encodeURIComponent(options.realm)}/protocol/openid-connect/token`,
      {
        method: 'POST',
        body: new URLSearchParams({
          grant_type: 'client_credentials',
          client_id: options.clientId,
          client_secret: options.clientSecret,
        }),
        signal: AbortSignal.timeout(10_000),
      },
    );
    if (!response.ok) throw new Error(`the janitor's token request answered ${response.status}`);
    return (JSON.parse(await readAnswer(response, 'its token answer')) as { access_token: string }).access_token;
  }

  async function api(bearer: string, path: string, init: { method?: string; body?: unknown } = {}) {
    const response = await doFetch(`${admin}${path}`, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
      signal: AbortSignal.timeout(10_000),
    });
    if (!response.ok && response.status !== 404) {
      throw new Error(`${init.method ?? 'GET'} ${path} answered ${response.status}`);
    }
    const text = await readAnswer(response, `${init.method ?? 'GET'} ${path}`, MAX_ADMIN_ANSWER_BYTES);
    return text ? (JSON.parse(text) as unknown) : undefined;
  }

  // A client id that looks like a URL is no exception: Keycloak's `default` registration provider
  // takes whatever id the caller chooses. A metadata-document client removed while unused is
  // persisted again at its next sign-in.
  function candidate(client: ClientRepresentation): boolean {
    return client.consentRequired === true && !keep.has(client.clientId);
  }

  async function sessions(bearer: string, id: string): Promise<number> {
    const [online, offline] = await Promise.all([
      api(bearer, `/clients/${id}/session-count`),
      api(bearer, `/clients/${id}/offline-session-count`),
    ]);
    return ((online as { count?: number })?.count ?? 0) + ((offline as { count?: number })?.count ?? 0);
  }

  async function mark(bearer: string, client: ClientRepresentation, attribute: string, value: number) {
    await api(bearer, `/clients/${client.id}`, {
      method: 'PUT',
      body: { ...client, attributes: { ...client.attributes, [attribute]: String(value) } },
    });
  }

  /** Marks or removes one candidate; true when removed. */
  async function tidy(bearer: string, client: ClientRepresentation): Promise<boolean> {
    const at = now();
    const lastUsed = Number(client.attributes?.[LAST_USED] ?? Number.NaN);
    const firstSeen = Number(client.attributes?.[FIRST_SEEN] ?? seenHere.get(client.id) ?? Number.NaN);
    if ((await sessions(bearer, client.id)) > 0) {
      // Written at most once an hour per client, not on every run.
      if (!(at - lastUsed < 3600_000)) await mark(bearer, client, LAST_USED, at);
      return false;
    }
    const expired = Number.isFinite(lastUsed)
      ? at - lastUsed > idleAfterMs
      : Number.isFinite(firstSeen) && at - firstSeen > abandonedAfterMs;
    if (expired) {
      await api(bearer, `/clients/${client.id}`, { method: 'DELETE' });
      seenHere.delete(client.id);
      return true;
    }
    if (!Number.isFinite(lastUsed) && !Number.isFinite(firstSeen)) {
      // Kept here too: a client Keycloak refuses to update is still removed in time.
      seenHere.set(client.id, at);
      await mark(bearer, client, FIRST_SEEN, at);
    }
    return false;
  }

  async function run(): Promise<JanitorRun> {
    const bearer = await token();
    const removed: string[] = [];
    let inspected = 0;
    for (let first = 0; ; first += PAGE) {
      const page = (await api(bearer, `/clients?first=${first}&max=${PAGE}`)) as ClientRepresentation[];
      for (const client of page.filter(candidate)) {
        inspected++;
        try {
          if (await tidy(bearer, client)) removed.push(client.clientId);
        } catch (error) {
          // One client Keycloak will not update (e.g. its pairwise sector URI no longer answers)
          // must not stop the others.
          options.onEvent?.('client_failed', { client_id: client.clientId, message: (error as Error).message });
        }
      }
      if (page.length < PAGE) break;
    }
    if (removed.length > 0) {
      options.onEvent?.('clients_removed', { count: removed.length, inspected });
      try {
        await options.onRemoved?.(removed);
      } catch (error) {
        options.onEvent?.('forget_failed', { count: removed.length, message: (error as Error).message });
      }
    }
    return { inspected, removed };
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
