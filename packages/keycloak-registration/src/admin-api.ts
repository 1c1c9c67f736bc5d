import { parseJsonAnswer, readAnswer } from '@mcp-auth-stack/auth';

/** A realm service account's access to Keycloak's admin API (the janitor's `mcp-client-janitor`). */
export interface KeycloakAdminApiOptions {
  /** Where Keycloak answers, e.g. http://localhost:8080 (no realm path). */
  baseUrl: string;
  realm: string;
  clientId: string;
  clientSecret: string;
  fetch?: typeof fetch | undefined;
  now?: (() => number) | undefined;
}

/** Keycloak did not answer, or answered 5xx: what it would say is not known (unlike a refusal). */
export class KeycloakUnreachableError extends Error {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.name = 'KeycloakUnreachableError';
  }
}

/** fetch, with network failures and timeouts as KeycloakUnreachableError. */
async function reach(doFetch: typeof fetch, url: string, init: RequestInit, what: string): Promise<Response> {
  let response: Response;
  try {
    response = await doFetch(url, init);
  } catch (error) {
    throw new KeycloakUnreachableError(`${what}: ${(error as Error).message}`, { cause: error });
  }
  if (response.status >= 500) throw new KeycloakUnreachableError(`${what} answered ${response.status}`);
  return response;
}

/** A page of 100 client representations is a few hundred KB; this bounds one gone wrong. */
const MAX_ADMIN_ANSWER_BYTES = 4 * 1024 * 1024;
/** A token is taken again this long before Keycloak says it expires. */
const TOKEN_RENEWAL_MARGIN_MS = 30_000;

export interface KeycloakAdminApi {
  /** A token of the service account: the last one while it has more than 30 s to live. */
  token(): Promise<string>;
  /**
   * One admin call under `/admin/realms/{realm}`; a 404 answers `undefined`, other failures throw
   * (`KeycloakUnreachableError` when Keycloak did not answer or answered 5xx).
   */
  call(bearer: string, path: string, init?: { method?: string; body?: unknown }): Promise<unknown>;
}

export function keycloakAdminApi(options: KeycloakAdminApiOptions): KeycloakAdminApi {
  const base = options.baseUrl.replace(/\/+$/, '');
  const admin = `${base}/admin/realms/${encodeURIComponent(options.realm)}`;
  const doFetch = options.fetch ?? fetch;
  const now = options.now ?? Date.now;
  let current: { token: string; renewAt: number } | undefined;

  return {
    async token() {
      if (current && now() < current.renewAt) return current.token;
      const response = await reach(
        doFetch,
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
        `the ${options.clientId} token request`,
      );
      if (!response.ok) throw new Error(`the ${options.clientId} token request answered ${response.status}`);
      const answer = parseJsonAnswer(
        await readAnswer(response, 'its token answer'),
        `the ${options.clientId} token answer`,
      ) as {
        access_token: string;
        expires_in?: number;
      };
      // Without a lifetime the token is not kept: each caller asks again.
      current =
        typeof answer.expires_in === 'number'
          ? { token: answer.access_token, renewAt: now() + answer.expires_in * 1000 - TOKEN_RENEWAL_MARGIN_MS }
          : undefined;
      return answer.access_token;
    },

    async call(bearer, path, init = {}) {
      const response = await reach(
        doFetch,
        `${admin}${path}`,
        {
          method: init.method ?? 'GET',
          headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
          ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
          signal: AbortSignal.timeout(10_000),
        },
        `${init.method ?? 'GET'} ${path}`,
      );
      if (!response.ok && response.status !== 404) {
        throw new Error(`${init.method ?? 'GET'} ${path} answered ${response.status}`);
      }
      const text = await readAnswer(response, `${init.method ?? 'GET'} ${path}`, MAX_ADMIN_ANSWER_BYTES);
      return text ? parseJsonAnswer(text, `${init.method ?? 'GET'} ${path}`) : undefined;
    },
  };
}
