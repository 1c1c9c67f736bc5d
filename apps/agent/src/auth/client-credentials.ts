/**
 * The headless, deployed agent acts as its own user: the realm's service-account client gets
 * tokens with the client credentials grant. One token is shared by every request until shortly
 * before it expires; concurrent callers wait for the same token request.
 */
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { discoverAuthorization, protectedResourceOf } from './discovery.ts';

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
  #endpoint: Promise<{ tokenEndpoint: string; resource: string }> | undefined;
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
  endpoint(): Promise<{ tokenEndpoint: string; resource: string }> {
    const { tokenUrl, mcpUrl } = this.#options;
    this.#endpoint ??= tokenUrl
      ? protectedResourceOf(mcpUrl, this.#fetch).then((resource) => ({ tokenEndpoint: tokenUrl, resource }))
      : discoverAuthorization(mcpUrl, this.#fetch).then(({ tokenEndpoint, resource }) => ({ tokenEndpoint, resource }));
    // A failed discovery is retried on the next call rather than remembered forever.
    this.#endpoint.catch(() => {
      this.#endpoint = undefined;
    });
    return this.#endpoint;
  }

  async #requestToken(): Promise<CachedToken> {
    const { tokenEndpoint, resource } = await this.endpoint();
    const { clientId, clientSecret, scope } = this.#options;
    const form = new URLSearchParams({ grant_type: 'client_credentials', scope, resource });
    // client_secret_basic (RFC 6749 §2.3.1): id and secret are form-encoded before base64.
    const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64');
    this.tokenRequests++;
    const requestedAt = this.#now();
    const response = await this.#fetch(tokenEndpoint, {
      method: 'POST',
      headers: {
        authorization: `Basic ${basic}`,
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
      },
      body: form,
    });
    const text = await response.text();
    if (!response.ok) throw new TokenRequestError(response.status, text, tokenEndpoint);
    const body = JSON.parse(text) as { access_token?: unknown; expires_in?: unknown; scope?: unknown };
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
    // No expires_in: assume a minute rather than forever.
    const lifetimeMs = (expiresIn ?? 60) * 1000;
    // Short-lived tokens renew at half their life; the margin would otherwise eat all of it.
    const margin = Math.min(RENEW_MARGIN_MS, lifetimeMs / 2);
    return { accessToken, renewAt: since + lifetimeMs - margin, scope };
  }
}

/**
 * The token source as the MCP SDK's `OAuthClientProvider`, so the transport asks it for the
 * token before every request. Without a redirect URL the SDK treats it as non-interactive: on a
 * 401 it requests a token through `prepareTokenRequest` and hands it back through `saveTokens`.
 */
export function clientCredentialsAuthProvider(
  source: ClientCredentialsTokenSource,
  options: Pick<ClientCredentialsOptions, 'clientId' | 'clientSecret' | 'scope'>,
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
    clientInformation: () => ({ client_id: options.clientId, client_secret: options.clientSecret }),
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
