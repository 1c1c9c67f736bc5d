/**
 * The headless, deployed agent acts as its own user: the realm's service-account client gets
 * tokens with the client credentials grant. One token is shared by every request until shortly
 * before it expires; concurrent callers wait for the same token request.
 */
import type { OAuthClientProvider, OAuthDiscoveryState } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { clientSecretForms } from '../url-secrets.ts';
import { AUTH_REQUEST_TIMEOUT_MS, discoverAuthorization, protectedResourceOf } from './discovery.ts';

export interface ClientCredentialsOptions {
  mcpUrl: string;
  clientId: string;
  clientSecret: string;
  scope: string;
  /**
   * Token endpoint to use instead of discovering it from the MCP server's 401. The resource the
   * token names still comes from the server's protected resource metadata.
   */
  tokenUrl?: string | undefined;
  /**
   * The resource tokens must name when the agent reaches the server by another URL than its
   * public one (`MCP_RESOURCE`); the server's metadata must name exactly it. Unset, the metadata
   * must name the server the agent calls.
   */
  resource?: string | undefined;
  /** How long a token request may take (default 10 s). */
  requestTimeoutMs?: number | undefined;
  /** Told every access token obtained, so that texts shown or logged can hide it. */
  onSecret?: ((value: string) => void) | undefined;
  fetchFn?: typeof fetch;
  now?: () => number;
}

interface CachedToken {
  accessToken: string;
  /** Epoch ms after which the token is no longer used (its expiry less a margin). */
  renewAt: number;
  scope: string | undefined;
}

/** Renew this long before expiry, so a request never leaves with a token about to lapse. */
const RENEW_MARGIN_MS = 30_000;

/**
 * How long before its expiry a token of `lifetimeMs` is renewed: `RENEW_MARGIN_MS`, or half its
 * life for a short-lived token, which the margin would otherwise eat all of (renewed at every
 * request).
 */
export function renewMarginMs(lifetimeMs: number): number {
  return Math.min(RENEW_MARGIN_MS, lifetimeMs / 2);
}

export class TokenRequestError extends Error {
  readonly status: number;

  constructor(status: number, body: string, tokenEndpoint: string) {
    super(`the token endpoint ${tokenEndpoint} answered ${status}: ${body.slice(0, 300)}`);
    this.name = 'TokenRequestError';
    this.status = status;
  }
}

export class ClientCredentialsTokenSource {
  readonly #options: ClientCredentialsOptions;
  readonly #fetch: typeof fetch;
  readonly #now: () => number;
  #endpoint:
    | Promise<{ tokenEndpoint: string; resource: string; discovered: OAuthDiscoveryState | undefined }>
    | undefined;
  #cached: CachedToken | undefined;
  #inFlight: Promise<CachedToken> | undefined;
  /** How many token requests were sent, for tests and logs. */
  tokenRequests = 0;

  constructor(options: ClientCredentialsOptions) {
    this.#options = options;
    this.#fetch = options.fetchFn ?? fetch;
    this.#now = options.now ?? Date.now;
  }

  /** A valid access token: the cached one, or a new one when it is (nearly) expired. */
  async accessToken(): Promise<string> {
    if (this.#cached && this.#now() < this.#cached.renewAt) return this.#cached.accessToken;
    this.#inFlight ??= this.#requestToken().finally(() => {
      this.#inFlight = undefined;
    });
    this.#cached = await this.#inFlight;
    return this.#cached.accessToken;
  }

  /** Forgets the token (the server refused it); the next call asks for a new one. */
  invalidate(): void {
    this.#cached = undefined;
  }

  /** Takes a token obtained elsewhere (the SDK's retry after a 401) as the cached one. */
  accept(tokens: OAuthTokens): void {
    this.#cached = this.#cache(tokens.access_token, tokens.expires_in, tokens.scope, this.#now());
  }

  /**
   * Where tokens come from and for which resource: the token endpoint configured or discovered,
   * the resource from the server's metadata (else its URL), found once.
   */
  async endpoint(): Promise<{ tokenEndpoint: string; resource: string }> {
    const { tokenEndpoint, resource } = await this.#found();
    return { tokenEndpoint, resource };
  }

  #found() {
    const { tokenUrl, mcpUrl, resource: expected } = this.#options;
    this.#endpoint ??= tokenUrl
      ? protectedResourceOf(mcpUrl, this.#fetch, expected).then((resource) => ({
          tokenEndpoint: tokenUrl,
          resource,
          discovered: undefined,
        }))
      : discoverAuthorization(mcpUrl, this.#fetch, expected).then(
          ({ tokenEndpoint, resource, challengeScope: _scope, ...discovered }) => ({
            tokenEndpoint,
            resource,
            discovered,
          }),
        );
    // A failed discovery is retried on the next call rather than remembered forever.
    this.#endpoint.catch(() => {
      this.#endpoint = undefined;
    });
    return this.#endpoint;
  }

  /**
   * What this source found, as the MCP SDK's discovery state: when the server refuses a token
   * (401), the SDK's own retry then asks this token endpoint for this resource, without a
   * discovery of its own. That discovery would ignore `MCP_TOKEN_URL` and `MCP_RESOURCE`, and
   * for a server without metadata it would post the client secret to the server's own `/token`.
   */
  async discoveryState(): Promise<OAuthDiscoveryState> {
    const { tokenEndpoint, resource, discovered } = await this.#found();
    if (discovered) return { ...discovered, resourceMetadata: { ...discovered.resourceMetadata, resource } };
    // MCP_TOKEN_URL: no authorization server metadata was read; the SDK needs only its token endpoint.
    return {
      authorizationServerUrl: tokenEndpoint,
      resourceMetadata: { resource },
      authorizationServerMetadata: {
        issuer: tokenEndpoint,
        authorization_endpoint: tokenEndpoint,
        token_endpoint: tokenEndpoint,
        response_types_supported: [],
        grant_types_supported: ['client_credentials'],
        token_endpoint_auth_methods_supported: ['client_secret_basic'],
      },
    };
  }

  /** The `Authorization` header of a token request to `url`, which must be this source's token endpoint. */
  async clientAuthentication(url: URL | string): Promise<string> {
    const { tokenEndpoint } = await this.#found();
    if (new URL(url).href !== new URL(tokenEndpoint).href) {
      throw new Error(`the client secret goes to ${tokenEndpoint} only, not to ${new URL(url).href}`);
    }
    const { clientId, clientSecret } = this.#options;
    // client_secret_basic (RFC 6749 §2.3.1): id and secret are form-encoded before base64.
    return `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`;
  }

  async #requestToken(): Promise<CachedToken> {
    const { tokenEndpoint, resource } = await this.endpoint();
    const form = new URLSearchParams({ grant_type: 'client_credentials', scope: this.#options.scope, resource });
    this.tokenRequests++;
    const requestedAt = this.#now();
    const timeoutMs = this.#options.requestTimeoutMs ?? AUTH_REQUEST_TIMEOUT_MS;
    const response = await this.#fetch(tokenEndpoint, {
      method: 'POST',
      headers: {
        authorization: await this.clientAuthentication(tokenEndpoint),
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
      },
      body: form,
      // A token endpoint does not redirect (RFC 6749 3.2): one that does would send the request,
      // and take the token, from an origin nobody named, or over plain http.
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    }).catch((error: unknown) => {
      if ((error as Error).name !== 'TimeoutError') throw error;
      throw new Error(`the token endpoint ${tokenEndpoint} did not answer within ${timeoutMs / 1000} s`);
    });
    if (response.type === 'opaqueredirect' || (response.status >= 300 && response.status < 400)) {
      await response.body?.cancel();
      throw new TokenRequestError(
        response.status,
        'a redirect, which a token endpoint must not answer; not followed',
        tokenEndpoint,
      );
    }
    const text = await response.text();
    if (!response.ok) {
      // Its own secret out of the answer before the answer is cut: one cut in two would pass
      // every later hider, and its first half decode to most of `id:secret`.
      const { clientId, clientSecret } = this.#options;
      const shown = clientSecretForms(clientId, clientSecret).reduce((body, form) => body.replaceAll(form, '…'), text);
      throw new TokenRequestError(response.status, shown, tokenEndpoint);
    }
    let body: { access_token?: unknown; expires_in?: unknown; scope?: unknown };
    try {
      body = JSON.parse(text);
    } catch {
      // JSON.parse's own message would quote the answer, a token in it, into the log.
      throw new TokenRequestError(response.status, 'an answer that is not JSON', tokenEndpoint);
    }
    if (typeof body.access_token !== 'string')
      throw new TokenRequestError(response.status, 'no access_token', tokenEndpoint);
    return this.#cache(
      body.access_token,
      typeof body.expires_in === 'number' ? body.expires_in : undefined,
      typeof body.scope === 'string' ? body.scope : undefined,
      requestedAt,
    );
  }

  #cache(accessToken: string, expiresIn: number | undefined, scope: string | undefined, since: number): CachedToken {
    this.#options.onSecret?.(accessToken);
    // No expires_in: assume a minute rather than forever.
    const lifetimeMs = (expiresIn ?? 60) * 1000;
    return { accessToken, renewAt: since + lifetimeMs - renewMarginMs(lifetimeMs), scope };
  }
}

/**
 * The token source as the MCP SDK's `OAuthClientProvider`, so the transport asks it for the
 * token before every request. Without a redirect URL the SDK treats it as non-interactive: on a
 * 401 it requests a token through `prepareTokenRequest` and hands it back through `saveTokens`,
 * at the source's token endpoint (`discoveryState`) and nowhere else: the SDK never holds the
 * secret, which `addClientAuthentication` adds only for that endpoint.
 */
export function clientCredentialsAuthProvider(
  source: ClientCredentialsTokenSource,
  options: Pick<ClientCredentialsOptions, 'clientId' | 'scope'>,
): OAuthClientProvider {
  const metadata: OAuthClientMetadata = {
    redirect_uris: [],
    grant_types: ['client_credentials'],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: options.scope,
  };
  return {
    get redirectUrl() {
      return undefined;
    },
    get clientMetadata() {
      return metadata;
    },
    clientInformation: () => ({ client_id: options.clientId }),
    discoveryState: () => source.discoveryState(),
    // The resource the source checked (the SDK would hold the metadata's to the URL it calls,
    // which is not the public one when MCP_RESOURCE is set).
    validateResourceURL: async () => new URL((await source.endpoint()).resource),
    addClientAuthentication: async (headers, _parameters, url) => {
      headers.set('authorization', await source.clientAuthentication(url));
    },
    tokens: async (): Promise<OAuthTokens> => ({ access_token: await source.accessToken(), token_type: 'Bearer' }),
    // The SDK fetched a new token after a 401 (the cached one was refused): cache that one.
    saveTokens: (tokens) => source.accept(tokens),
    prepareTokenRequest: () => new URLSearchParams({ grant_type: 'client_credentials', scope: options.scope }),
    redirectToAuthorization: () => {
      throw new Error('client credentials need no browser');
    },
    saveCodeVerifier: () => {},
    codeVerifier: () => {
      throw new Error('client credentials use no PKCE verifier');
    },
    invalidateCredentials: (scope) => {
      if (scope === 'all' || scope === 'tokens') source.invalidate();
    },
  };
}
