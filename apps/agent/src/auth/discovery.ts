/**
 * How a client that knows only the MCP URL finds where to get a token: the server's 401 names
 * its protected resource metadata (RFC 9728), which names the authorization server, whose
 * metadata (RFC 8414 or OpenID discovery) names the token endpoint. The MCP SDK's own discovery
 * functions do the fetching, so the agent follows the same rules as every SDK client.
 */

import { isLoopbackUrlHost } from '@mcp-auth-stack/loopback';
import {
  discoverOAuthProtectedResourceMetadata,
  discoverOAuthServerInfo,
  extractWWWAuthenticateParams,
  type OAuthServerInfo,
} from '@modelcontextprotocol/sdk/client/auth.js';
import { checkResourceAllowed, resourceUrlFromServerUrl } from '@modelcontextprotocol/sdk/shared/auth-utils.js';

/** How long one request of discovery or of a token may take before it counts as failed. */
export const AUTH_REQUEST_TIMEOUT_MS = 10_000;

/** `fetchFn` with a deadline on every request that does not bring its own signal. */
export function withDeadline(fetchFn: typeof fetch, timeoutMs = AUTH_REQUEST_TIMEOUT_MS): typeof fetch {
  return (input, init) => fetchFn(input, { ...init, signal: init?.signal ?? AbortSignal.timeout(timeoutMs) });
}

/**
 * The resource a token for `mcpUrl` is asked for: the one the server's protected resource
 * metadata names, which must be this server (RFC 9728 3.3: the URL the client called, or under
 * it, as the MCP SDK checks), or exactly `expectedResource` when the agent reaches the server by
 * another URL than its public one (`MCP_RESOURCE`; compose). A server that names another
 * resource would get a token for that one, to replay there.
 */
export function checkedResource(mcpUrl: string, named: string | undefined, expectedResource?: string): string {
  if (expectedResource !== undefined) {
    if (named !== undefined && named !== expectedResource) {
      throw new DiscoveryError(
        `${mcpUrl} says it is the resource ${named}, not ${expectedResource} (MCP_RESOURCE): no token is asked for it`,
      );
    }
    return expectedResource;
  }
  if (named === undefined) return mcpUrl;
  // The SDK's check compares origin and path only: `…/mcp?tenant=other` would pass, and the
  // token be asked for a resource this server's URL (which has no query) is not.
  if (named.includes('?') || named.includes('#')) {
    throw new DiscoveryError(
      `${mcpUrl} says it is the resource ${named}, with a query or fragment its URL has not: no token is asked for it`,
    );
  }
  if (!checkResourceAllowed({ requestedResource: resourceUrlFromServerUrl(mcpUrl), configuredResource: named })) {
    throw new DiscoveryError(
      `${mcpUrl} says it is the resource ${named}, another server: no token is asked for it (when the agent reaches the server by another URL than its public one, set MCP_RESOURCE to that public resource)`,
    );
  }
  return named;
}

/**
 * RFC 8414 3.3 (and OpenID Connect Discovery 4.3): the metadata's `issuer` must be the very
 * identifier it was looked up by, or nothing in it may be used. A resource that names one
 * authorization server but is served another's metadata (a poisoned cache, a misconfigured
 * proxy) would otherwise get the sign-in, the code and the client's secret sent to endpoints
 * nobody named. Compared as strings, except that a bare origin may end in `/` on either side
 * (RFC 3986 6.2.3; the SDK writes its fallback address with one, some servers their issuer).
 */
export function checkIssuer(authorizationServerUrl: string, metadata: { issuer: string } | undefined): void {
  if (metadata === undefined) return;
  if (withoutRootSlash(metadata.issuer) !== withoutRootSlash(authorizationServerUrl)) {
    throw new DiscoveryError(
      `the metadata of the authorization server ${authorizationServerUrl} names the issuer ${metadata.issuer}: not used (RFC 8414 3.3)`,
    );
  }
}

/**
 * MCP authorization, "Communication Security": every authorization server endpoint is served
 * over HTTPS. The endpoints the agent sends secrets to (the code and its verifier, refresh
 * tokens, a client secret: `token_endpoint`; its registration: `registration_endpoint`) must
 * be `https:`, or `http:` on this machine (a developer's server): plain http to another host
 * can be read and changed on the way. A token endpoint set by hand (`MCP_TOKEN_URL`, compose's
 * `http://keycloak:8080`) is the operator's choice and not checked here.
 */
export function checkEndpointTransport(metadata: Record<string, unknown> | undefined): void {
  for (const name of ['token_endpoint', 'registration_endpoint'] as const) {
    // Without a token endpoint the SDK posts to `/token` at the issuer.
    const issuer = typeof metadata?.issuer === 'string' && URL.canParse(metadata.issuer) ? metadata.issuer : undefined;
    const value =
      name === 'token_endpoint' && metadata?.[name] === undefined && issuer
        ? new URL('/token', issuer).href
        : metadata?.[name];
    if (typeof value !== 'string') continue;
    const url = URL.canParse(value) ? new URL(value) : undefined;
    if (url?.protocol === 'https:') continue;
    if (url?.protocol === 'http:' && isLoopbackUrlHost(url.hostname)) continue;
    throw new DiscoveryError(
      `the authorization server ${String(metadata?.issuer)} names ${name} ${value}: not used, no secret or code goes there (only https, or http on localhost, 127.0.0.0/8 or [::1]${name === 'token_endpoint' ? '; set MCP_TOKEN_URL to name a token endpoint yourself' : ''})`,
    );
  }
}

/**
 * Where the agent read the metadata that names its endpoints (the protected resource metadata
 * and the authorization server's): over `https:`, on this machine, or at the MCP server's own
 * origin (the operator chose that transport in `MCP_SERVER_URL`; compose's `http://server:8000`).
 * A document read over plain http from any other host can be rewritten on the way to name an
 * attacker's https endpoints, which would then pass `checkEndpointTransport`.
 */
export function checkMetadataTransport(
  mcpUrl: string,
  state: { authorizationServerUrl: string; resourceMetadataUrl?: string | undefined },
): void {
  const server = new URL(mcpUrl).origin;
  for (const [what, value] of [
    ['protected resource metadata', state.resourceMetadataUrl],
    ['authorization server', state.authorizationServerUrl],
  ] as const) {
    if (value === undefined || !URL.canParse(value)) continue;
    const url = new URL(value);
    if (url.protocol === 'https:' || url.origin === server) continue;
    if (url.protocol === 'http:' && isLoopbackUrlHost(url.hostname)) continue;
    throw new DiscoveryError(
      `${mcpUrl} names its ${what} at ${url.origin}${url.pathname}, over plain http from another host: not used (only https, http on localhost, 127.0.0.0/8 or [::1], or the MCP server's own origin)`,
    );
  }
}

/** `https://as.example/` as `https://as.example`: an empty path and `/` are one (RFC 3986 6.2.3). */
function withoutRootSlash(url: string): string {
  return URL.canParse(url) && new URL(url).pathname === '/' && url.endsWith('/') ? url.slice(0, -1) : url;
}

export interface DiscoveredAuthorization extends OAuthServerInfo {
  /** The resource indicator to send (`resource`): the metadata's `resource`, else the MCP URL. */
  resource: string;
  /** `scope` from the 401's `WWW-Authenticate`, if the server named one. */
  challengeScope: string | undefined;
  tokenEndpoint: string;
}

export class DiscoveryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DiscoveryError';
  }
}

export async function discoverAuthorization(
  mcpUrl: string,
  fetchFn: typeof fetch = fetch,
  expectedResource?: string,
): Promise<DiscoveredAuthorization> {
  fetchFn = withDeadline(fetchFn);
  // An initialize request without credentials: the server must answer 401 and say where to look.
  const probe = await fetchFn(mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'ping' }),
  }).catch((error: unknown) => {
    throw new Error(
      `could not reach ${mcpUrl}: ${(error as Error).message} (${String((error as { cause?: unknown }).cause ?? '')})`,
    );
  });
  await probe.body?.cancel();
  if (probe.status !== 401) {
    throw new DiscoveryError(`${mcpUrl} answered ${probe.status} without credentials, not 401: nothing to discover`);
  }
  const { resourceMetadataUrl, scope } = extractWWWAuthenticateParams(probe);
  let info: OAuthServerInfo;
  try {
    info = await discoverOAuthServerInfo(mcpUrl, { ...(resourceMetadataUrl ? { resourceMetadataUrl } : {}), fetchFn });
  } catch (error) {
    throw new DiscoveryError(`could not discover the authorization server of ${mcpUrl}: ${(error as Error).message}`);
  }
  if (!info.resourceMetadata) {
    throw new DiscoveryError(
      `${mcpUrl} publishes no protected resource metadata (RFC 9728); set MCP_TOKEN_URL to the token endpoint instead`,
    );
  }
  checkMetadataTransport(mcpUrl, { ...info, resourceMetadataUrl: resourceMetadataUrl?.href });
  checkIssuer(info.authorizationServerUrl, info.authorizationServerMetadata);
  checkEndpointTransport(info.authorizationServerMetadata);
  const tokenEndpoint = info.authorizationServerMetadata?.token_endpoint;
  if (!tokenEndpoint) {
    throw new DiscoveryError(`the authorization server ${info.authorizationServerUrl} advertises no token_endpoint`);
  }
  const resource = checkedResource(mcpUrl, info.resourceMetadata.resource || undefined, expectedResource);
  return { ...info, resource, challengeScope: scope, tokenEndpoint };
}

/**
 * The resource a token for `mcpUrl` must name when the token endpoint is configured rather than
 * discovered (`MCP_TOKEN_URL`): what the server's protected resource metadata says. The URL the
 * agent reaches the server by need not be the server's public one (in docker compose the agent
 * uses http://server:8000/mcp while tokens name http://localhost:8000/mcp, the only resource
 * the realm knows, so `MCP_RESOURCE` says so). A server that says it has no metadata (404, or another 4xx) is
 * named by its URL (or `MCP_RESOURCE`); one that cannot answer for now (unreachable, a 5xx, 408 or 429, a
 * document that is not metadata) is an error, so the caller retries instead of settling on a
 * guess that would be kept for the life of the process.
 */
export async function protectedResourceOf(
  mcpUrl: string,
  fetchFn: typeof fetch = fetch,
  expectedResource?: string,
): Promise<string> {
  // How the last metadata request ended: the SDK throws one error for a 404 and for no answer
  // at all (it swallows fetch's TypeError), so its message cannot tell them apart.
  let lastOutcome: { status: number } | { failure: unknown } | undefined;
  const deadlineFetch = withDeadline(fetchFn);
  const observedFetch: typeof fetch = async (input, init) => {
    try {
      const response = await deadlineFetch(input, init);
      lastOutcome = { status: response.status };
      return response;
    } catch (failure) {
      lastOutcome = { failure };
      throw failure;
    }
  };
  let resource: string | undefined;
  try {
    resource = (await discoverOAuthProtectedResourceMetadata(mcpUrl, {}, observedFetch)).resource;
  } catch (error) {
    const failure = lastOutcome && 'failure' in lastOutcome ? lastOutcome.failure : error;
    // fetch() fails with a TypeError when nothing answers, and a TimeoutError past the deadline.
    if (failure instanceof TypeError) {
      throw new Error(`could not reach ${mcpUrl}: ${failure.message} (${String(failure.cause ?? '')})`);
    }
    if ((failure as Error).name === 'TimeoutError') {
      throw new Error(`${mcpUrl} did not answer within ${AUTH_REQUEST_TIMEOUT_MS / 1000} s`);
    }
    // A refusal (404, or another 4xx: a gateway that guards every path) says there is no
    // metadata; an outage (5xx, 408, 429) or a broken document is asked again at the next attempt.
    const status = lastOutcome && 'status' in lastOutcome ? lastOutcome.status : undefined;
    const saysNone = status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429;
    if (!saysNone) {
      throw new Error(
        `could not read the protected resource metadata of ${mcpUrl} (RFC 9728): ${(error as Error).message}`,
      );
    }
  }
  return checkedResource(mcpUrl, resource || undefined, expectedResource);
}
