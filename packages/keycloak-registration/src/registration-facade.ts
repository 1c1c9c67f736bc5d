import {
  checkRegistration,
  clientAddress,
  FixedWindowLimiter,
  MAX_REGISTRATION_DEPTH,
  MAX_UPSTREAM_ANSWER_BYTES,
  readAnswer,
} from '@mcp-auth-stack/auth';
import { jsonTextTooDeep, readBodyWithin, readResponseWithin } from '@mcp-auth-stack/mcp-hono';
import type { Env, Hono } from 'hono';
import type pg from 'pg';
import { authorizationPassThrough } from './authorization-passthrough.ts';
import { DEFAULT_REDIRECT_HOSTS, isAllowedRedirectUri } from './redirect-hosts.ts';

/** Options of `registrationFacade`. */
export interface RegistrationFacadeOptions {
  /** Public base URL of this server, e.g. http://localhost:8000: the issuer it presents. */
  issuer: string;
  /** The provider's issuer, e.g. http://localhost:8080/realms/mcp. */
  upstreamIssuer: string;
  /** Where to fetch the provider's metadata and registration endpoint from, if not the issuer (compose, Azure). */
  upstreamBaseUrl?: string | undefined;
  /** Largest registration body accepted, in bytes. */
  maxBodyBytes?: number;
  /** Registrations allowed per client address per minute. */
  registrationsPerMinute?: number;
  /**
   * Behind a reverse proxy (Azure Container Apps ingress) every caller has the proxy's address;
   * then the last `X-Forwarded-For` entry, the one that proxy appended, identifies the client
   * (`clientAddress` of @mcp-auth-stack/auth).
   */
  trustForwardedFor?: boolean;
  /** How long the provider's metadata is kept before it is fetched again. */
  metadataTtlMs?: number;
  /**
   * Where the authorization pass-through keeps its clients, logins and codes (tables from
   * `authorizationPassThroughMigrations`). Without it, no pass-through: clients log in at the
   * provider directly, and one that checks RFC 9207 `iss` fails.
   */
  pool?: pg.Pool | undefined;
  /**
   * With the pass-through, Keycloak sees only this server's callback, so the realm's rule on
   * redirect hosts no longer reaches the clients' own URIs: the same rule is kept here. Besides
   * loopback, the hosts whose https redirect URIs are accepted (default: VS Code's web pages, as
   * the realm's `anonymous-registration-safe-clients` policy).
   */
  redirectHosts?: readonly string[];
  fetch?: typeof fetch;
}

/** How long a failed fetch of the identity provider's metadata is remembered. */
const METADATA_OUTAGE_CACHE_MS = 5_000;

const REPAIRED_MEMBERS = ['scope', 'resource', 'client_uri', 'logo_uri', 'tos_uri', 'policy_uri'] as const;

/**
 * The DCR workaround for identity providers whose registration endpoint MCP clients trip
 * over (Keycloak 26.7.3): this server presents itself as the authorization server, serving
 * the provider's metadata with its own `issuer` and `registration_endpoint`, and forwards
 * registrations after checking and repairing them. With a database (`pool`), authorization and
 * token requests of the clients it registered go through the server too, so that the issuer a
 * client sees stays the server's (see authorization-passthrough.ts); without one they go
 * straight to the provider (its endpoints stay in the metadata).
 *
 * Repairs, each needed by a client that otherwise fails against Keycloak 26.7.3:
 * - `scope` is dropped: Keycloak then gives the new client only `basic` as default scope,
 *   losing the realm's default scopes, the audience scope among them (https://github.com/keycloak/keycloak/issues/50807).
 * - `resource` is dropped: Keycloak answers 400 "Unrecognized field" to this RFC 8707 member.
 * - `client_uri`, `logo_uri`, `tos_uri` and `policy_uri` are dropped: a realm whose registration
 *   policy checks every URI of a registration (Keycloak's Trusted Hosts) refuses a client naming
 *   its home page (the MCP Inspector and mcp-remote name their GitHub pages) with 403; these
 *   URIs are display-only.
 * - `refresh_token` is added to `grant_types` that have `authorization_code` without it: with
 *   the `resource-indicators` feature, a token request with `resource` for a client that gets
 *   no refresh token fails with HTTP 500 (https://github.com/keycloak/keycloak/issues/50251).
 */
export function registrationFacade(options: RegistrationFacadeOptions) {
  const issuer = options.issuer.replace(/\/+$/, '');
  const upstreamIssuer = options.upstreamIssuer.replace(/\/+$/, '');
  const upstreamBase = (options.upstreamBaseUrl ?? upstreamIssuer).replace(/\/+$/, '');
  const maxBodyBytes = options.maxBodyBytes ?? 16 * 1024;
  const perMinute = options.registrationsPerMinute ?? 10;
  const ttl = options.metadataTtlMs ?? 5 * 60_000;
  const doFetch = options.fetch ?? fetch;
  const limiter = new FixedWindowLimiter(perMinute, 60_000);

  async function fetchUpstreamMetadata(): Promise<Record<string, unknown>> {
    const response = await doFetch(`${upstreamBase}/.well-known/openid-configuration`, {
      signal: AbortSignal.timeout(5_000),
    });
    if (!response.ok) {
      await response.body?.cancel();
      throw new Error(`the identity provider's metadata answered ${response.status}`);
    }
    return JSON.parse(await readAnswer(response, "the identity provider's metadata")) as Record<string, unknown>;
  }

  // Anyone's request reads it (the metadata routes, /authorize, /token): one fetch at a time,
  // shared by every request waiting on it, and a failure remembered for a few seconds, with the
  // last good document served meanwhile. Before, each request during an outage, and each one
  // waiting when the document expired, asked the identity provider again (a review counted 200
  // upstream requests for 200 anonymous reads while it answered 503).
  let cached: { metadata: Promise<Record<string, unknown>>; until: number } | undefined;
  let lastGood: Record<string, unknown> | undefined;
  function upstreamMetadata(): Promise<Record<string, unknown>> {
    if (cached && Date.now() < cached.until) return cached.metadata;
    const entry = { metadata: fetchUpstreamMetadata(), until: Number.POSITIVE_INFINITY };
    entry.metadata = entry.metadata.then(
      (metadata) => {
        lastGood = metadata;
        entry.until = Date.now() + ttl;
        return metadata;
      },
      (error: unknown) => {
        entry.until = Date.now() + Math.min(ttl, METADATA_OUTAGE_CACHE_MS);
        if (lastGood) return lastGood;
        throw error;
      },
    );
    cached = entry;
    return entry.metadata;
  }

  const redirectHosts = options.redirectHosts ?? DEFAULT_REDIRECT_HOSTS;
  const passThrough = options.pool
    ? authorizationPassThrough({
        issuer,
        upstreamIssuer,
        pool: options.pool,
        upstreamAuthorizationEndpoint: async () => String((await upstreamMetadata()).authorization_endpoint),
        upstreamTokenEndpoint: async () =>
          rebase(String((await upstreamMetadata()).token_endpoint), upstreamIssuer, upstreamBase),
        fetch: doFetch,
        ...(options.trustForwardedFor === undefined ? {} : { trustForwardedFor: options.trustForwardedFor }),
      })
    : undefined;

  /** The provider's metadata as this server presents it. */
  async function presentedMetadata(): Promise<Record<string, unknown>> {
    const metadata = { ...(await upstreamMetadata()) };
    // Asked at the provider's internal address (compose: http://keycloak:8080), Keycloak writes its
    // back-channel endpoints (token, JWKS, introspection, revocation, userinfo) with that address:
    // clients get the public one, which they can reach and which names no internal host.
    for (const [name, value] of Object.entries(metadata)) {
      if (typeof value === 'string') metadata[name] = rebase(value, upstreamBase, upstreamIssuer);
    }
    metadata.issuer = issuer;
    metadata.registration_endpoint = `${issuer}/register`;
    // This issuer is no OpenID provider: an ID token Keycloak issues names Keycloak in `iss`,
    // which a client checking it against this document refuses (OpenID Connect Discovery 4.3).
    // So the document is RFC 8414's, and it lists only what this server and the realm take.
    for (const member of OPENID_PROVIDER_MEMBERS) delete metadata[member];
    if (Array.isArray(metadata.scopes_supported)) {
      metadata.scopes_supported = metadata.scopes_supported.filter((scope) => scope !== 'openid');
    }
    metadata.response_types_supported = ['code'];
    metadata.code_challenge_methods_supported = ['S256'];
    // Registration here admits the code grant only; pre-registered confidential clients (the
    // agent's service account) also use client credentials through the same token endpoint.
    metadata.grant_types_supported = Array.isArray(metadata.grant_types_supported)
      ? metadata.grant_types_supported.filter((grant) => OFFERED_GRANT_TYPES.includes(grant as string))
      : [...OFFERED_GRANT_TYPES];
    if (passThrough) {
      metadata.authorization_endpoint = passThrough.authorizationEndpoint;
      metadata.token_endpoint = passThrough.tokenEndpoint;
      metadata.authorization_response_iss_parameter_supported = true;
      // Ways around the pass-through that would reach Keycloak with the client's own redirect
      // URI, which Keycloak does not know: pushed requests and the mTLS aliases of the endpoints.
      delete metadata.pushed_authorization_request_endpoint;
      delete metadata.require_pushed_authorization_requests;
      delete metadata.mtls_endpoint_aliases;
      // A client ID Metadata Document client is not the facade's: its login goes to Keycloak as
      // it is and comes back with Keycloak's `iss`, which a client checking RFC 9207 against
      // this issuer refuses. Without the announcement such clients register here instead.
      delete metadata.client_id_metadata_document_supported;
      // What a client can prove to this token endpoint, which forwards the request: not a TLS
      // client certificate, nor an assertion made out to this endpoint (Keycloak checks its
      // own as the audience).
      // What the pass-through cannot carry: a DPoP proof names this token endpoint (Keycloak
      // checks its own), the callback reads the answer from its query only, and request objects
      // would bring their own redirect URI and state past its checks (it refuses them).
      delete metadata.dpop_signing_alg_values_supported;
      metadata.response_modes_supported = ['query'];
      metadata.request_parameter_supported = false;
      metadata.request_uri_parameter_supported = false;
      const methods = metadata.token_endpoint_auth_methods_supported;
      metadata.token_endpoint_auth_methods_supported = Array.isArray(methods)
        ? methods.filter((method) => FORWARDABLE_AUTH_METHODS.includes(method as string))
        : ['none'];
    } else {
      // Keycloak puts its own issuer in `iss` of the authorization response; announcing RFC 9207
      // support under this issuer would make clients that check it reject every login.
      delete metadata.authorization_response_iss_parameter_supported;
    }
    return metadata;
  }

  function mount<E extends Env>(app: Hono<E>): void {
    const serveMetadata = async () => {
      try {
        return Response.json(await presentedMetadata(), {
          headers: { 'Cache-Control': 'public, max-age=300', 'Access-Control-Allow-Origin': '*' },
        });
      } catch {
        return Response.json(
          { error: 'temporarily_unavailable', error_description: 'The identity provider is not reachable.' },
          // Readable by a browser client too, which can then say why.
          { status: 503, headers: { 'Retry-After': '5', 'Access-Control-Allow-Origin': '*' } },
        );
      }
    };
    // RFC 8414's document only: under OpenID Connect's name it would promise ID tokens whose
    // issuer it is, which it is not. MCP clients look for RFC 8414's first.
    app.get('/.well-known/oauth-authorization-server', serveMetadata);
    app.options('/.well-known/oauth-authorization-server', () => new Response(null, { status: 204, headers: CORS }));
    passThrough?.mount(app);
    app.options('/register', () => new Response(null, { status: 204, headers: CORS }));
    app.post('/register', async (c) => {
      const address = clientAddress(c.req.raw, c.env as Record<string, unknown> | undefined, options.trustForwardedFor);
      if (!limiter.allow(address)) {
        return registrationError(429, 'invalid_client_metadata', 'Too many registrations; try again in a minute.', {
          'Retry-After': String(limiter.retryAfterSeconds()),
        });
      }
      const text = await readBodyWithin(c.req.raw, maxBodyBytes);
      if (text === undefined) {
        return registrationError(413, 'invalid_client_metadata', `Registration larger than ${maxBodyBytes} bytes.`);
      }
      if (jsonTextTooDeep(text, MAX_REGISTRATION_DEPTH)) {
        return registrationError(400, 'invalid_client_metadata', 'The registration nests too deeply.');
      }
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        return registrationError(400, 'invalid_client_metadata', 'The registration is not valid JSON.');
      }
      const problem = checkRegistration(body) ?? (passThrough ? checkRedirectHosts(body, redirectHosts) : undefined);
      if (problem) return registrationError(400, problem.error, problem.description);
      const repaired = repairRegistration(body as Record<string, unknown>);
      const clientRedirectUris = repaired.redirect_uris as string[];
      // Keycloak sends every code of this client to the server's callback, which passes it on.
      if (passThrough) repaired.redirect_uris = [passThrough.callbackUrl];

      let endpoint: string;
      try {
        endpoint = String((await upstreamMetadata()).registration_endpoint);
      } catch {
        return registrationError(503, 'temporarily_unavailable', 'The identity provider is not reachable.');
      }
      let upstream: Response;
      let answer: string | undefined;
      try {
        upstream = await doFetch(rebase(endpoint, upstreamIssuer, upstreamBase), {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json' },
          body: JSON.stringify(repaired),
          signal: AbortSignal.timeout(10_000),
        });
        answer = await readResponseWithin(upstream, MAX_UPSTREAM_ANSWER_BYTES);
      } catch {
        // The metadata was cached but the provider is down (or too slow) now.
        return registrationError(503, 'temporarily_unavailable', 'The identity provider is not reachable.');
      }
      if (answer === undefined) {
        return registrationError(
          502,
          'server_error',
          "The identity provider's answer is larger than this server accepts.",
        );
      }
      if (passThrough && upstream.status === 201) {
        const recorded = await recordPassThroughClient(answer, clientRedirectUris);
        if (!recorded) {
          return registrationError(503, 'temporarily_unavailable', 'The registration could not be stored.');
        }
        answer = recorded;
      }
      return new Response(answer, {
        status: upstream.status,
        headers: { 'content-type': 'application/json', 'Cache-Control': 'no-store', ...CORS },
      });
    });
  }

  /**
   * Remembers the client's own redirect URIs, and answers the client with them (Keycloak
   * answered with the callback). The RFC 7592 management URL and token are left out: updating
   * the client at Keycloak would bypass this record.
   */
  async function recordPassThroughClient(answer: string, redirectUris: string[]): Promise<string | undefined> {
    if (!passThrough) return answer;
    try {
      const registered = JSON.parse(answer) as Record<string, unknown>;
      if (typeof registered.client_id !== 'string') return undefined;
      await passThrough.recordClient(registered.client_id, redirectUris);
      registered.redirect_uris = redirectUris;
      delete registered.registration_access_token;
      delete registered.registration_client_uri;
      return JSON.stringify(registered);
    } catch {
      return undefined;
    }
  }

  return { mount, presentedMetadata };
}

const CORS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
  // The MCP SDK sends its protocol version with the metadata request.
  'Access-Control-Allow-Headers': 'content-type, authorization, mcp-protocol-version',
};

/**
 * Members of OpenID Connect discovery about ID tokens, userinfo and sessions, which this issuer
 * does not offer, and the endpoints of grants it does not list (device, CIBA).
 */
const OPENID_PROVIDER_MEMBERS = [
  'userinfo_endpoint',
  'end_session_endpoint',
  'check_session_iframe',
  'frontchannel_logout_supported',
  'frontchannel_logout_session_supported',
  'backchannel_logout_supported',
  'backchannel_logout_session_supported',
  'id_token_signing_alg_values_supported',
  'id_token_encryption_alg_values_supported',
  'id_token_encryption_enc_values_supported',
  'userinfo_signing_alg_values_supported',
  'userinfo_encryption_alg_values_supported',
  'userinfo_encryption_enc_values_supported',
  'claims_supported',
  'claim_types_supported',
  'claims_parameter_supported',
  'subject_types_supported',
  'acr_values_supported',
  'require_request_uri_registration',
  'device_authorization_endpoint',
  'backchannel_authentication_endpoint',
  'backchannel_token_delivery_modes_supported',
  'backchannel_authentication_request_signing_alg_values_supported',
  'backchannel_user_code_parameter_supported',
];
/** Grants a client of this issuer can use: the code grant and its refresh; client credentials for confidential clients. */
const OFFERED_GRANT_TYPES: readonly string[] = ['authorization_code', 'refresh_token', 'client_credentials'];
/** Client authentication that survives the pass-through's forwarding of a token request. */
const FORWARDABLE_AUTH_METHODS: readonly string[] = ['none', 'client_secret_basic', 'client_secret_post'];

/** The registration as Keycloak 26.7.3 handles it correctly (see the repairs listed above). */
export function repairRegistration(body: Record<string, unknown>): Record<string, unknown> {
  const repaired = { ...body };
  for (const member of REPAIRED_MEMBERS) delete repaired[member];
  const grants = repaired.grant_types;
  if (Array.isArray(grants) && grants.includes('authorization_code') && !grants.includes('refresh_token')) {
    repaired.grant_types = [...grants, 'refresh_token'];
  }
  return repaired;
}

/** RFC 7591 section 3.2.2 errors, with what went wrong. */
function registrationError(status: number, error: string, description: string, headers: Record<string, string> = {}) {
  return Response.json(
    { error, error_description: description },
    { status, headers: { 'Cache-Control': 'no-store', ...CORS, ...headers } },
  );
}

/** Redirect URIs on loopback, or https on one of `hosts` (the realm's rule, see redirectHosts). */
function checkRedirectHosts(
  body: unknown,
  hosts: readonly string[],
): { error: string; description: string } | undefined {
  for (const uri of (body as { redirect_uris: string[] }).redirect_uris) {
    if (isAllowedRedirectUri(uri, hosts)) continue;
    return {
      error: 'invalid_redirect_uri',
      description: `Redirect URI ${JSON.stringify(uri)} is neither loopback nor on an allowed host.`,
    };
  }
  return undefined;
}

function rebase(url: string, from: string, to: string): string {
  return from !== to && url.startsWith(from) ? to + url.slice(from.length) : url;
}
