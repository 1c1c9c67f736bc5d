import { createHash, randomBytes } from 'node:crypto';
import {
  clientAddress,
  FixedWindowLimiter,
  isRegisteredRedirectUri,
  MAX_UPSTREAM_ANSWER_BYTES,
} from '@mcp-auth-stack/auth';
import type { Migration } from '@mcp-auth-stack/database';
import { readBodyWithin, readResponseWithin } from '@mcp-auth-stack/mcp-hono';
import type { Env, Hono } from 'hono';
import type pg from 'pg';

/**
 * The authorization pass-through of the DCR workaround: it keeps the issuer that clients see
 * consistent (RFC 9207). The server presents itself as the authorization server, so a client
 * that checks `iss` in the authorization response expects the server's issuer; Keycloak would
 * put its realm URL there. So, for the clients that registered through the facade:
 *
 * - `/authorize` checks `client_id` and `redirect_uri` against what the client registered,
 *   remembers where the client wants the answer (single use, short-lived), and sends the
 *   browser to Keycloak with the server's callback as `redirect_uri` and a state of its own;
 *   PKCE, scope, resource and everything else go to Keycloak unchanged.
 * - `/auth/callback` takes Keycloak's answer, remembers which client and redirect URI the code
 *   belongs to, and sends the browser on to the client with the code, the client's `state` and
 *   `iss` = this server's issuer (errors likewise).
 * - `/token` checks an authorization code against that record (single use, same client, same
 *   redirect URI) and exchanges it at Keycloak with the callback as `redirect_uri`; every other
 *   grant (refresh) is forwarded unchanged.
 *
 * Clients the facade did not register (pre-registered, CIMD) are sent to Keycloak as they are.
 * Everything lives in PostgreSQL, so any replica serves any step; states and codes are stored
 * as SHA-256 hashes only.
 */
export const AUTHORIZATION_PASSTHROUGH_NAMESPACE = 'authorization_passthrough';

export const authorizationPassThroughMigrations: Migration[] = [
  {
    version: 1,
    name: 'create authorization pass-through tables',
    sql: `
      -- Clients registered through the facade, with the redirect URIs they asked for (Keycloak
      -- only knows the server's callback).
      CREATE TABLE passthrough_clients (
        client_id text PRIMARY KEY,
        redirect_uris text[] NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );
      -- A login on its way through Keycloak; the key is the hash of the state sent to Keycloak.
      CREATE TABLE passthrough_authorizations (
        state_sha256 bytea PRIMARY KEY,
        client_id text NOT NULL,
        redirect_uri text NOT NULL,
        -- Whether the client sent redirect_uri (RFC 6749 4.1.3: then its token request must too).
        redirect_uri_sent boolean NOT NULL,
        client_state text,
        expires_at timestamptz NOT NULL
      );
      CREATE INDEX passthrough_authorizations_expiry ON passthrough_authorizations (expires_at);
      -- A code Keycloak issued, waiting for the client's token request.
      CREATE TABLE passthrough_codes (
        code_sha256 bytea PRIMARY KEY,
        client_id text NOT NULL,
        -- The redirect_uri the token request must name; NULL when the authorization request had none.
        redirect_uri text,
        expires_at timestamptz NOT NULL
      );
      CREATE INDEX passthrough_codes_expiry ON passthrough_codes (expires_at);
    `,
  },
];

/**
 * Forgets clients that no longer exist at Keycloak (the janitor removed them): their record of
 * redirect URIs, and logins and codes on their way.
 */
export async function forgetPassThroughClients(pool: pg.Pool, clientIds: readonly string[]): Promise<void> {
  await pool.query(
    `WITH ids AS (SELECT unnest($1::text[]) AS client_id),
          logins AS (DELETE FROM passthrough_authorizations WHERE client_id IN (SELECT client_id FROM ids)),
          codes AS (DELETE FROM passthrough_codes WHERE client_id IN (SELECT client_id FROM ids))
     DELETE FROM passthrough_clients WHERE client_id IN (SELECT client_id FROM ids)`,
    [clientIds],
  );
}

export interface AuthorizationPassThroughOptions {
  /** This server's issuer (its public base URL). */
  issuer: string;
  /** Keycloak's issuer, expected in `iss` of its authorization responses. */
  upstreamIssuer: string;
  pool: pg.Pool;
  /** Keycloak's authorization endpoint as browsers reach it. */
  upstreamAuthorizationEndpoint: () => Promise<string>;
  /** Keycloak's token endpoint as this server reaches it. */
  upstreamTokenEndpoint: () => Promise<string>;
  /** How long a login may take from `/authorize` to the callback. */
  loginTtlSeconds?: number;
  /**
   * Logins a client address may start per minute (each stores a pending login of up to 8 KB
   * until the callback or its expiry): without a bound, anyone holding one registered client
   * id could fill the database. Default 30: a person signs in a few times an hour.
   */
  loginsPerMinute?: number;
  /** As the facade's: the last `X-Forwarded-For` entry names the client behind a reverse proxy. */
  trustForwardedFor?: boolean;
  /** How long a code waits for its token request (Keycloak's own codes live 60 s by default). */
  codeTtlSeconds?: number;
  maxBodyBytes?: number;
  fetch?: typeof fetch;
}

/**
 * The path of the server's callback, which Keycloak knows as the clients' only redirect URI. The
 * proxy modes use the same path for theirs (never at the same time), so the realm's
 * `MCP_OAUTH_PROXY_CALLBACK_URL` names it in every deployment.
 */
export const PASSTHROUGH_CALLBACK_PATH = '/auth/callback';

const MAX_QUERY_LENGTH = 8 * 1024;

export function authorizationPassThrough(options: AuthorizationPassThroughOptions) {
  const issuer = options.issuer.replace(/\/+$/, '');
  const callbackUrl = `${issuer}${PASSTHROUGH_CALLBACK_PATH}`;
  const { pool } = options;
  const loginTtl = options.loginTtlSeconds ?? 600;
  const loginLimiter = new FixedWindowLimiter(options.loginsPerMinute ?? 30, 60_000);
  const codeTtl = options.codeTtlSeconds ?? 300;
  const maxBodyBytes = options.maxBodyBytes ?? 16 * 1024;
  const doFetch = options.fetch ?? fetch;

  async function registeredRedirectUris(clientId: string): Promise<string[] | undefined> {
    const { rows } = await pool.query<{ redirect_uris: string[] }>(
      'SELECT redirect_uris FROM passthrough_clients WHERE client_id = $1',
      [clientId],
    );
    return rows[0]?.redirect_uris;
  }

  /** Records a client the facade registered at Keycloak, with the redirect URIs it asked for. */
  async function recordClient(clientId: string, redirectUris: string[]): Promise<void> {
    await pool.query(
      `INSERT INTO passthrough_clients (client_id, redirect_uris) VALUES ($1, $2)
       ON CONFLICT (client_id) DO UPDATE SET redirect_uris = EXCLUDED.redirect_uris`,
      [clientId, redirectUris],
    );
  }

  async function authorize(request: Request, address: string): Promise<Response> {
    const url = new URL(request.url);
    if (url.search.length > MAX_QUERY_LENGTH) return errorPage(414, 'The authorization request is too long.');
    const params = url.searchParams;
    const clientId = params.get('client_id');
    if (!clientId) return errorPage(400, 'client_id is missing.');
    let registered: string[] | undefined;
    try {
      registered = await registeredRedirectUris(clientId);
    } catch {
      return errorPage(503, 'The server cannot reach its database; try again shortly.');
    }
    let upstream: URL;
    try {
      upstream = new URL(await options.upstreamAuthorizationEndpoint());
    } catch {
      return errorPage(503, 'The identity provider is not reachable; try again shortly.');
    }
    if (!registered) {
      // Not registered through the facade (pre-registered, CIMD): Keycloak handles it as always.
      upstream.search = url.search;
      return redirect(upstream.href);
    }
    const sent = params.get('redirect_uri');
    const requested = sent ?? (registered.length === 1 ? registered[0] : undefined);
    if (!requested || !isRegisteredRedirectUri(registered, requested)) {
      // Never redirect to a URI the client did not register: tell the person instead.
      return errorPage(400, 'redirect_uri is missing or not registered for this client.');
    }
    const clientState = params.get('state');
    if (params.get('response_type') !== 'code') {
      return redirect(
        clientRedirect(requested, {
          error: 'unsupported_response_type',
          error_description: 'Only response_type=code is supported.',
          state: clientState,
          iss: issuer,
        }),
      );
    }
    const responseMode = params.get('response_mode');
    if (responseMode !== null && responseMode !== 'query') {
      // The callback reads the answer from its query: a form_post would arrive as a POST it does
      // not take, a fragment never reaches it.
      return redirect(
        clientRedirect(requested, {
          error: 'invalid_request',
          error_description: 'Only response_mode=query is supported.',
          state: clientState,
          iss: issuer,
        }),
      );
    }
    if (params.has('request') || params.has('request_uri')) {
      // A request object would carry its own redirect_uri and state past the checks above.
      return redirect(
        clientRedirect(requested, {
          error: params.has('request') ? 'request_not_supported' : 'request_uri_not_supported',
          error_description: 'Request objects are not supported here.',
          state: clientState,
          iss: issuer,
        }),
      );
    }
    if (!loginLimiter.allow(address)) {
      return errorPage(429, 'Too many sign-ins from this address; try again in a minute.', {
        'Retry-After': String(loginLimiter.retryAfterSeconds()),
      });
    }
    const state = randomBytes(32).toString('base64url');
    try {
      await pool.query('DELETE FROM passthrough_authorizations WHERE expires_at < now()');
      await pool.query(
        `INSERT INTO passthrough_authorizations
           (state_sha256, client_id, redirect_uri, redirect_uri_sent, client_state, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))`,
        [sha256(state), clientId, requested, sent !== null, clientState, loginTtl],
      );
    } catch {
      return errorPage(503, 'The server cannot reach its database; try again shortly.');
    }
    for (const [name, value] of params) {
      if (name !== 'redirect_uri' && name !== 'state') upstream.searchParams.append(name, value);
    }
    upstream.searchParams.set('redirect_uri', callbackUrl);
    upstream.searchParams.set('state', state);
    return redirect(upstream.href);
  }

  async function callback(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (url.search.length > MAX_QUERY_LENGTH) return errorPage(414, 'The answer is too long.');
    const params = url.searchParams;
    const state = params.get('state');
    if (!state) return errorPage(400, 'The answer carries no state.');
    let login: PendingLogin | undefined;
    try {
      const { rows } = await pool.query<PendingLogin>(
        `DELETE FROM passthrough_authorizations WHERE state_sha256 = $1 AND expires_at > now()
         RETURNING client_id, redirect_uri, redirect_uri_sent, client_state`,
        [sha256(state)],
      );
      login = rows[0];
    } catch {
      return errorPage(503, 'The server cannot reach its database; try again shortly.');
    }
    if (!login) return errorPage(400, 'This login is unknown, was already used or has expired; start again.');
    const upstreamIss = params.get('iss');
    if (upstreamIss !== null && upstreamIss !== options.upstreamIssuer.replace(/\/+$/, '')) {
      return redirect(
        clientRedirect(login.redirect_uri, {
          error: 'server_error',
          error_description: 'The identity provider answered with an unexpected issuer.',
          state: login.client_state,
          iss: issuer,
        }),
      );
    }
    const error = params.get('error');
    const code = params.get('code');
    if (error || !code) {
      return redirect(
        clientRedirect(login.redirect_uri, {
          error: error ?? 'server_error',
          error_description: params.get('error_description') ?? (error ? null : 'No code in the answer.'),
          error_uri: params.get('error_uri'),
          state: login.client_state,
          iss: issuer,
        }),
      );
    }
    try {
      await pool.query('DELETE FROM passthrough_codes WHERE expires_at < now()');
      await pool.query(
        `INSERT INTO passthrough_codes (code_sha256, client_id, redirect_uri, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) ON CONFLICT (code_sha256) DO NOTHING`,
        [sha256(code), login.client_id, login.redirect_uri_sent ? login.redirect_uri : null, codeTtl],
      );
    } catch {
      return redirect(
        clientRedirect(login.redirect_uri, {
          error: 'temporarily_unavailable',
          error_description: 'The server cannot reach its database; try again shortly.',
          state: login.client_state,
          iss: issuer,
        }),
      );
    }
    return redirect(clientRedirect(login.redirect_uri, { code, state: login.client_state, iss: issuer }));
  }

  async function token(request: Request): Promise<Response> {
    const type = request.headers.get('content-type') ?? '';
    if (!type.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
      return tokenError(400, 'invalid_request', 'The token request must be application/x-www-form-urlencoded.');
    }
    const text = await readBodyWithin(request, maxBodyBytes);
    if (text === undefined)
      return tokenError(413, 'invalid_request', `Token request larger than ${maxBodyBytes} bytes.`);
    const form = new URLSearchParams(text);
    // The code this request took, given back when Keycloak could not be asked: its code is then
    // still unused there, and the client's retry must reach it.
    let codeTaken: { hash: Buffer; client_id: string; redirect_uri: string | null; expires_at: Date } | undefined;
    const giveCodeBack = async () => {
      if (!codeTaken) return;
      const { hash, client_id, redirect_uri, expires_at } = codeTaken;
      await pool
        .query(
          `INSERT INTO passthrough_codes (code_sha256, client_id, redirect_uri, expires_at)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
          [hash, client_id, redirect_uri, expires_at],
        )
        .catch(() => {});
    };
    if (form.get('grant_type') === 'authorization_code') {
      const code = form.get('code');
      if (!code) return tokenError(400, 'invalid_request', 'code is missing.');
      const clientId = form.get('client_id') ?? basicClientId(request.headers.get('authorization'));
      const sentRedirectUri = form.get('redirect_uri');
      let issued: { client_id: string; redirect_uri: string | null; expires_at: Date } | undefined;
      let known: boolean;
      let claimed = false;
      try {
        const { rows } = await pool.query<{ client_id: string; redirect_uri: string | null; expires_at: Date }>(
          'SELECT client_id, redirect_uri, expires_at FROM passthrough_codes WHERE code_sha256 = $1 AND expires_at > now()',
          [sha256(code)],
        );
        issued = rows[0];
        const registered = clientId === null ? undefined : await registeredRedirectUris(clientId);
        known = issued !== undefined || registered !== undefined;
        // Checked before the code is used up: anyone who saw a code (a log, a browser's
        // history) could otherwise end that login by sending it under another client.
        // RFC 6749 4.1.3: the same redirect_uri when the authorization request named one;
        // when it named none, none or one the client registered.
        const matches =
          issued !== undefined &&
          issued.client_id === clientId &&
          (issued.redirect_uri === null
            ? sentRedirectUri === null || (registered ?? []).includes(sentRedirectUri)
            : issued.redirect_uri === sentRedirectUri);
        if (matches) {
          // One request takes it, however many arrive at once.
          const taken = await pool.query('DELETE FROM passthrough_codes WHERE code_sha256 = $1', [sha256(code)]);
          claimed = taken.rowCount === 1;
        }
      } catch {
        return tokenError(503, 'temporarily_unavailable', 'The server cannot reach its database; try again shortly.');
      }
      if (issued && !claimed) {
        return tokenError(400, 'invalid_grant', 'The code was not issued to this client and redirect_uri, or is used.');
      }
      if (issued) {
        form.set('redirect_uri', callbackUrl);
        codeTaken = { hash: sha256(code), ...issued };
      } else if (known) {
        return tokenError(400, 'invalid_grant', 'The code is unknown, already used or expired.');
      }
      // Otherwise a client the facade does not know (pre-registered, CIMD): Keycloak decides.
    }
    let endpoint: string;
    try {
      endpoint = await options.upstreamTokenEndpoint();
    } catch {
      await giveCodeBack();
      return tokenError(503, 'temporarily_unavailable', 'The identity provider is not reachable.');
    }
    const headers: Record<string, string> = {
      'content-type': 'application/x-www-form-urlencoded',
      accept: 'application/json',
    };
    const authorization = request.headers.get('authorization');
    if (authorization) headers.authorization = authorization;
    // No DPoP header: a proof names the URL it was made for (`htu`), this endpoint, and Keycloak
    // refuses it at its own; the metadata does not announce DPoP here.
    let upstream: Response;
    let answer: string | undefined;
    try {
      upstream = await doFetch(endpoint, {
        method: 'POST',
        headers,
        body: form.toString(),
        // Ended with the caller's request too: a client gone need not hold a request to Keycloak.
        signal: AbortSignal.any([request.signal, AbortSignal.timeout(10_000)]),
      });
      answer = await readResponseWithin(upstream, MAX_UPSTREAM_ANSWER_BYTES);
    } catch {
      // Keycloak may have taken the code before the answer was lost; then it refuses the retry itself.
      await giveCodeBack();
      return tokenError(503, 'temporarily_unavailable', 'The identity provider is not reachable.');
    }
    if (answer === undefined) {
      return tokenError(502, 'server_error', "The identity provider's answer is larger than this server accepts.");
    }
    const answerHeaders: Record<string, string> = {
      'content-type': upstream.headers.get('content-type') ?? 'application/json',
      'Cache-Control': 'no-store',
      Pragma: 'no-cache',
      ...CORS,
    };
    const challenge = upstream.headers.get('www-authenticate');
    if (challenge) answerHeaders['WWW-Authenticate'] = challenge;
    return new Response(answer, { status: upstream.status, headers: answerHeaders });
  }

  function mount<E extends Env>(app: Hono<E>): void {
    // Hono runs these for HEAD too: a link checker or an unfurler asking only for the headers
    // would store a pending login, or use one up, for nothing.
    const headWithoutEffect = () => new Response(null, { status: 200, headers: { 'Cache-Control': 'no-store' } });
    app.get('/authorize', (c) =>
      c.req.method === 'HEAD'
        ? headWithoutEffect()
        : authorize(
            c.req.raw,
            clientAddress(c.req.raw, c.env as Record<string, unknown> | undefined, options.trustForwardedFor),
          ),
    );
    app.get(PASSTHROUGH_CALLBACK_PATH, (c) => (c.req.method === 'HEAD' ? headWithoutEffect() : callback(c.req.raw)));
    app.options('/token', () => new Response(null, { status: 204, headers: CORS }));
    app.post('/token', (c) => token(c.req.raw));
  }

  return {
    mount,
    recordClient,
    callbackUrl,
    authorizationEndpoint: `${issuer}/authorize`,
    tokenEndpoint: `${issuer}/token`,
  };
}

export type AuthorizationPassThrough = ReturnType<typeof authorizationPassThrough>;

interface PendingLogin {
  client_id: string;
  redirect_uri: string;
  redirect_uri_sent: boolean;
  client_state: string | null;
}

const CORS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'POST, OPTIONS',
  'Access-Control-Allow-Headers': 'content-type, authorization, dpop',
};

function sha256(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

function basicClientId(header: string | null): string | null {
  const match = /^Basic\s+(\S+)$/i.exec(header ?? '');
  if (!match?.[1]) return null;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return null;
  try {
    return decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' '));
  } catch {
    return null;
  }
}

/** The client's redirect URI with the answer's parameters added to its query (RFC 6749 4.1.2). */
function clientRedirect(redirectUri: string, answer: Record<string, string | null | undefined>): string {
  const url = new URL(redirectUri);
  for (const [name, value] of Object.entries(answer)) {
    if (value !== null && value !== undefined) url.searchParams.set(name, value);
  }
  return url.href;
}

function redirect(location: string): Response {
  return new Response(null, { status: 302, headers: { Location: location, 'Cache-Control': 'no-store' } });
}

function tokenError(status: number, error: string, description: string): Response {
  return Response.json(
    { error, error_description: description },
    { status, headers: { 'Cache-Control': 'no-store', Pragma: 'no-cache', ...CORS } },
  );
}

/** A plain page for errors that must not be redirected to an unverified client. */
function errorPage(status: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(`Authorization failed: ${message}\n`, {
    status,
    headers: { 'content-type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store', ...headers },
  });
}
