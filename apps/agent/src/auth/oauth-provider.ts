/**
 * Interactive OAuth for a person at a terminal: the MCP SDK's `auth()` does discovery from the
 * 401, client registration (CIMD when the authorization server supports it and a metadata URL is
 * configured, else Dynamic Client Registration, or a pre-registered client id), PKCE and the
 * `resource` indicator; this provider supplies what the SDK leaves to the application: a
 * loopback redirect listener, the browser, and storage on disk.
 *
 * Two deliberate differences from a plain provider:
 * - `redirectToAuthorization` completes the whole login (browser, callback, code exchange)
 *   before returning. The SDK transport still reports that request as unauthorized, but the
 *   token is in place, so one retry succeeds (the agent's tool middleware does it; `authorizations`
 *   counts logins so it knows when).
 * - The refresh token is never shown to the SDK; this provider refreshes before expiry itself.
 *   The SDK answers a 403 `insufficient_scope` by refreshing when it sees a refresh token, and a
 *   refresh cannot add scope, so step-up would loop; without one it starts a new authorization
 *   with the scope the server asked for (widened here to keep what was already granted). An
 *   authorization that asks for no more than the token holds (a 401 for a token refused before
 *   its expiry: the server's signing key rotated, its clock ahead) refreshes instead, once per
 *   token, and opens the browser only when that does not give a new one.
 */
import { createHash, randomBytes } from 'node:crypto';
import { isLoopbackUrlHost } from '@mcp-auth-stack/loopback';
import {
  auth,
  extractWWWAuthenticateParams,
  type OAuthClientProvider,
  type OAuthDiscoveryState,
  refreshAuthorization,
  registerClient,
} from '@modelcontextprotocol/sdk/client/auth.js';
import {
  OAuthError,
  ServerError,
  TemporarilyUnavailableError,
  TooManyRequestsError,
} from '@modelcontextprotocol/sdk/server/auth/errors.js';
import type {
  AuthorizationServerMetadata,
  OAuthClientInformationMixed,
  OAuthClientMetadata,
  OAuthTokens,
} from '@modelcontextprotocol/sdk/shared/auth.js';
import type { BrowserOpener } from './browser.ts';
import { renewMarginMs } from './client-credentials.ts';
import {
  checkEndpointTransport,
  checkedResource,
  checkIssuer,
  checkMetadataTransport,
  DiscoveryError,
  withDeadline,
} from './discovery.ts';
import { findFreePort, listenForAuthorizationCode, redirectUrlFor } from './loopback.ts';
import { type StoredSession, type StoredTokens, TokenStore } from './token-store.ts';

export interface InteractiveOAuthOptions {
  mcpUrl: string;
  /** The scope to ask for besides what the server names; empty: only what the server names. */
  scope: string;
  clientId?: string | undefined;
  clientMetadataUrl?: string | undefined;
  /** The secret of a pre-registered confidential client (`MCP_CLIENT_SECRET` with `MCP_CLIENT_ID`). */
  clientSecret?: string | undefined;
  /** 0: the port of the previous login if any, else a free one. */
  redirectPort: number;
  cacheDir: string;
  openBrowser: BrowserOpener;
  /** Where messages for the person go (stderr in the CLI). */
  print: (line: string) => void;
  loginTimeoutMs?: number;
  /** How long one discovery, registration or token request may take (default 10 s). */
  requestTimeoutMs?: number | undefined;
  /**
   * The first login asks for `scope` alone (`MCP_SCOPE` was set: least privilege, more only by
   * step-up), instead of adding the scope the server's 401 names.
   */
  exactScope?: boolean | undefined;
  /** Told the access and refresh tokens in use, so that texts shown or logged can hide them. */
  onSecret?: ((value: string) => void) | undefined;
  now?: () => number;
  fetchFn?: typeof fetch;
}

const CLIENT_NAME = 'Expenses agent (mcp-auth-stack)';
/** How long a sign-in in the browser may take (a step-up happens inside a tool call). */
export const LOGIN_TIMEOUT_MS = 300_000;

export class InteractiveOAuthProvider implements OAuthClientProvider {
  readonly #options: InteractiveOAuthOptions;
  readonly #store: TokenStore;
  readonly #session: StoredSession;
  readonly #port: number;
  readonly #now: () => number;
  readonly #fetch: typeof fetch;
  /** The PKCE verifier of the sign-in under way, while its code is exchanged. */
  #codeVerifier: string | undefined;
  /**
   * Verifiers the SDK's `auth()` calls saved, by their S256 challenge: two calls at once (parallel
   * tool calls meeting a 401 together) save theirs before either reaches the browser, and the
   * sign-in that goes ahead must exchange its code with its own.
   */
  readonly #verifiers = new Map<string, string>();
  /** The sign-in under way: another authorization asked for meanwhile waits for it. */
  #signIn: Promise<void> | undefined;
  #refreshing: Promise<void> | undefined;
  /** The authorization server refused this client at the code exchange of the sign-in under way. */
  #clientRefused = false;
  clientMetadataUrl?: string;
  /** The access token a refresh instead of a sign-in gave: refused too, it gets a sign-in. */
  #refreshedForRefusal: string | undefined;
  /** The scope of tokens a refused refresh dropped: the sign-in that follows asks for it again. */
  #scopeOfDropped: string | undefined;
  /** Completed browser logins, and refreshes instead of one, in this process; moves when a retry can succeed. */
  authorizations = 0;

  /** Whether a sign-in (or the refresh tried in its place) is under way: the person may be at the browser. */
  get signingIn(): boolean {
    return this.#signIn !== undefined;
  }

  /** When the last sign-in (or the refresh tried in its place) ended, in ms since the epoch. */
  signInEndedAt: number | undefined;
  /** Refresh-token grants performed by this provider. */
  refreshes = 0;

  static async create(options: InteractiveOAuthOptions): Promise<InteractiveOAuthProvider> {
    const store = new TokenStore(options.cacheDir, options.mcpUrl);
    const loaded = await store.load();
    const session: StoredSession = loaded?.mcpUrl === options.mcpUrl ? loaded : { mcpUrl: options.mcpUrl };
    const dynamicClient = !options.clientId && !options.clientMetadataUrl;
    if (
      options.redirectPort &&
      session.redirectPort &&
      options.redirectPort !== session.redirectPort &&
      dynamicClient
    ) {
      // The registration names the old redirect URI; a new port needs a new registration.
      delete session.clientInformation;
    }
    const port = options.redirectPort || session.redirectPort || (await findFreePort());
    session.redirectPort = port;
    return new InteractiveOAuthProvider(options, store, session, port);
  }

  private constructor(options: InteractiveOAuthOptions, store: TokenStore, session: StoredSession, port: number) {
    this.#options = options;
    this.#store = store;
    this.#session = session;
    this.#port = port;
    this.#now = options.now ?? Date.now;
    // Every request this provider makes has a deadline (the SDK's own retry after a 401 or 403
    // discovers with the MCP transport's fetch, mcpConnectionFetch, which has one too).
    this.#fetch = withDeadline(options.fetchFn ?? fetch, options.requestTimeoutMs);
    if (options.clientMetadataUrl) this.clientMetadataUrl = options.clientMetadataUrl;
  }

  get cacheFile(): string {
    return this.#store.file;
  }

  get redirectUrl(): string {
    return redirectUrlFor(this.#port);
  }

  get clientMetadata(): OAuthClientMetadata {
    return {
      client_name: CLIENT_NAME,
      redirect_uris: [this.redirectUrl],
      // refresh_token too: Keycloak issues none to clients that do not ask, and it then fails
      // token requests with `resource` (keycloak/README.md, https://github.com/keycloak/keycloak/issues/50251).
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      // A program on the user's machine with a loopback redirect (OpenID DCR; the MCP
      // specification asks registrants to say which kind they are).
      application_type: 'native',
      ...(this.#options.scope ? { scope: this.#options.scope } : {}),
    } as OAuthClientMetadata;
  }

  state(): string {
    return randomBytes(16).toString('base64url');
  }

  clientInformation(): OAuthClientInformationMixed | undefined {
    const stored = this.#session.clientInformation;
    const configured = this.#options.clientId;
    if (!configured) return stored;
    // A pre-registered client: its id and secret come from the configuration; the store keeps
    // only the authorization server it first signed in at (the SDK's `issuer` stamp).
    const issuer = stored?.client_id === configured ? (stored as { issuer?: string }).issuer : undefined;
    const secret = this.#options.clientSecret;
    return {
      client_id: configured,
      ...(secret ? { client_secret: secret } : {}),
      ...(issuer ? { issuer } : {}),
    } as OAuthClientInformationMixed;
  }

  async saveClientInformation(clientInformation: OAuthClientInformationMixed): Promise<void> {
    if (this.#options.clientId) {
      // A configured secret is never written to disk.
      const { client_secret: _configured, ...kept } = clientInformation as OAuthClientInformationMixed & {
        client_secret?: string;
      };
      clientInformation = kept;
    }
    this.#session.clientInformation = clientInformation;
    await this.#persist();
  }

  /** The access token for the next request, refreshed first when it is about to expire. */
  async tokens(): Promise<OAuthTokens | undefined> {
    if (this.#expiring()) {
      this.#refreshing ??= this.#refresh().finally(() => {
        this.#refreshing = undefined;
      });
      await this.#refreshing;
    }
    const tokens = this.#session.tokens;
    if (!tokens) return undefined;
    // Before every request: tokens from the store, a sign-in or a refresh alike.
    this.#reportSecrets();
    const { refresh_token: _hidden, expires_at: _expiresAt, ...visible } = tokens;
    return visible;
  }

  /** The tokens in hand, to `onSecret`: texts shown or logged hide them from now on. */
  #reportSecrets(): void {
    const tokens = this.#session.tokens;
    if (!tokens) return;
    this.#options.onSecret?.(tokens.access_token);
    if (tokens.refresh_token) this.#options.onSecret?.(tokens.refresh_token);
  }

  async saveTokens(tokens: OAuthTokens): Promise<void> {
    const previous = this.#session.tokens;
    const stored: StoredTokens = { ...tokens };
    if (tokens.expires_in !== undefined) stored.expires_at = this.#now() + tokens.expires_in * 1000;
    // A refresh response may omit the refresh token: the old one stays valid then (RFC 6749 §6).
    if (!stored.refresh_token && previous?.refresh_token) stored.refresh_token = previous.refresh_token;
    this.#session.tokens = stored;
    this.#reportSecrets();
    await this.#persist();
  }

  saveCodeVerifier(codeVerifier: string): void {
    this.#verifiers.set(s256(codeVerifier), codeVerifier);
  }

  codeVerifier(): string {
    if (this.#clientRefused) throw clientRefused();
    if (!this.#codeVerifier) throw new Error('no PKCE code verifier: no authorization is in progress');
    return this.#codeVerifier;
  }

  /**
   * What a discovery found (the SDK's `auth()` calls this before it uses any of it), checked:
   * the authorization server's metadata must have been read, and name the issuer it was looked
   * up by (RFC 8414 3.3); the protected resource must be this server (RFC 9728 3.3: the SDK
   * checks that only after this call, and a stored discovery is what a later refresh asks a
   * token for). Then what belongs to another authorization server is let go of:
   * tokens it issued are dropped (its refresh token is never sent to this one); a dynamic
   * registration made there is replaced by one here; a pre-registered client that signed in
   * there stops with an error, since its id and secret are for that server.
   */
  async saveDiscoveryState(state: OAuthDiscoveryState): Promise<void> {
    if (this.#clientRefused) throw clientRefused();
    const server = state.authorizationServerUrl;
    const metadata = state.authorizationServerMetadata;
    if (!metadata) {
      // What the SDK falls back to when nothing was found (the server's own origin): no PKCE
      // announced, so no sign-in; refused before anything is dropped.
      throw new DiscoveryError(`no authorization server metadata at ${server}: no sign-in without it`);
    }
    checkMetadataTransport(this.#options.mcpUrl, state);
    checkIssuer(server, metadata);
    checkEndpointTransport(metadata);
    thisServersResource(this.#options.mcpUrl, state.resourceMetadata?.resource || undefined);
    const clientId = this.#options.clientId;
    // `clientInformation()` carries the stamp only when the stored client is the configured one.
    const boundTo = clientId ? (this.clientInformation() as { issuer?: string }).issuer : undefined;
    if (clientId && boundTo !== undefined && boundTo !== server) {
      throw new DiscoveryError(
        `${this.#options.mcpUrl} now names the authorization server ${server}, but the pre-registered client ${clientId} (MCP_CLIENT_ID) signed in at ${boundTo}; register it there and delete ${this.cacheFile} to sign in anew`,
      );
    }
    const tokensFrom = this.#session.tokens?.issuer;
    if (tokensFrom !== undefined && tokensFrom !== server) delete this.#session.tokens;
    this.#session.discoveryState = state;
    await this.#registerIfNeeded(state);
    await this.#persist();
  }

  /**
   * The stored discovery, only while a sign-in is under way (its code is exchanged where the
   * authorization was asked). Every new authorization discovers afresh from the server's
   * metadata, so a server that moved to another authorization server is followed there.
   */
  discoveryState(): OAuthDiscoveryState | undefined {
    return this.#codeVerifier === undefined ? undefined : this.#session.discoveryState;
  }

  async invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery'): Promise<void> {
    // 'all' while a code is exchanged: the SDK saw invalid_client (or unauthorized_client) and
    // retries the exchange. That retry must not register a new client for a code issued to
    // the refused one; it stops with the reason instead (saveDiscoveryState, codeVerifier).
    if (scope === 'all' && this.#codeVerifier !== undefined) this.#clientRefused = true;
    if (scope === 'all' || scope === 'client') delete this.#session.clientInformation;
    if (scope === 'all' || scope === 'tokens') delete this.#session.tokens;
    if (scope === 'all' || scope === 'discovery') delete this.#session.discoveryState;
    if (scope === 'all' || scope === 'verifier') this.#codeVerifier = undefined;
    await this.#persist();
  }

  /**
   * Runs the login in the browser and exchanges the code, all before returning (see the module
   * comment). One at a time: an authorization asked for while one is under way (a parallel tool
   * call's 401) opens no second browser and binds no second listener; it waits for that one and
   * shares its outcome (its request is then retried with the new token).
   */
  async redirectToAuthorization(authorizationUrl: URL): Promise<void> {
    if (this.#signIn) return await this.#signIn;
    this.#signIn = this.#refreshInstead(authorizationUrl).then((refreshed) =>
      refreshed ? undefined : this.#signInAt(authorizationUrl),
    );
    try {
      await this.#signIn;
    } finally {
      this.#signIn = undefined;
      this.signInEndedAt = Date.now();
    }
  }

  /**
   * A token refused before its expiry, where no more scope is asked than it holds: a refresh
   * gives a new one without a person (RFC 6749 1.5: for when the access token "becomes invalid
   * or expires"). Not for a step-up (a refresh cannot add scope), and once per token: a token a
   * refresh gave that is refused too gets a sign-in.
   */
  async #refreshInstead(authorizationUrl: URL): Promise<boolean> {
    const tokens = this.#session.tokens;
    if (!tokens?.refresh_token || tokens.access_token === this.#refreshedForRefusal) return false;
    const held = new Set((tokens.scope ?? '').split(' ').filter(Boolean));
    const asked = (authorizationUrl.searchParams.get('scope') ?? '').split(' ').filter(Boolean);
    if (held.size === 0 || !asked.every((word) => held.has(word))) return false;
    this.#refreshing ??= this.#refresh().finally(() => {
      this.#refreshing = undefined;
    });
    await this.#refreshing;
    if (this.#session.tokens === undefined) this.#scopeOfDropped = tokens.scope;
    const renewed = this.#session.tokens?.access_token;
    // Refused (or no new token): the sign-in goes ahead, with the verifier the SDK saved for it.
    if (renewed === undefined || renewed === tokens.access_token) return false;
    // No sign-in follows for the verifier the SDK made for this authorization.
    this.#verifiers.clear();
    this.#refreshedForRefusal = renewed;
    this.authorizations++;
    return true;
  }

  async #signInAt(authorizationUrl: URL): Promise<void> {
    try {
      this.#codeVerifier = this.#verifiers.get(authorizationUrl.searchParams.get('code_challenge') ?? '');
      if (this.#codeVerifier === undefined) throw new Error('no PKCE code verifier for this authorization request');
      const metadata = checkSignInPossible(this.#session.discoveryState?.authorizationServerMetadata);
      const url = new URL(authorizationUrl);
      checkSignInPage(url, metadata.issuer);
      const scope = this.#widenedScope(url.searchParams.get('scope'));
      // No scope named anywhere: none is asked for (the authorization server's default applies).
      if (scope) url.searchParams.set('scope', scope);
      else url.searchParams.delete('scope');
      const state = url.searchParams.get('state');
      if (!state) throw new Error('the authorization request carries no state');
      // Bound before the browser opens: with the port taken (EADDRINUSE; it is predictable, the
      // last login's or MCP_OAUTH_REDIRECT_PORT) the code would go to whoever holds it, so the
      // sign-in stops here instead. A fast browser (or a test's) may also call back at once.
      const { code } = await listenForAuthorizationCode(
        this.#port,
        state,
        this.#options.loginTimeoutMs ?? LOGIN_TIMEOUT_MS,
        {
          issuer: metadata.issuer,
          // RFC 9207's metadata member, kept by the SDK's loose schema though not in its type.
          required: (metadata as Record<string, unknown>).authorization_response_iss_parameter_supported === true,
        },
      );
      code.catch(() => {}); // awaited below; this only keeps an early failure from being "unhandled"
      const opened = await this.#options.openBrowser(url.href).catch(() => false);
      this.#options.print(
        opened
          ? `Sign in to the expenses MCP server in your browser. If it did not open, visit:\n  ${url.href}`
          : `Open this URL in a browser to sign in to the expenses MCP server:\n  ${url.href}`,
      );
      const authorizationCode = await code;
      const discovery = this.#session.discoveryState;
      const result = await auth(this, {
        serverUrl: this.#options.mcpUrl,
        authorizationCode,
        ...(discovery?.resourceMetadataUrl ? { resourceMetadataUrl: new URL(discovery.resourceMetadataUrl) } : {}),
        fetchFn: this.#fetch,
      }).catch((error: unknown) => {
        throw this.#clientRefused ? clientRefused() : error;
      });
      if (result !== 'AUTHORIZED') throw new Error('the authorization code could not be exchanged for a token');
      const granted = this.#session.tokens;
      if (granted && granted.scope === undefined && scope) {
        // RFC 6749 5.1: a token answer without `scope` was granted the scope asked for.
        granted.scope = scope;
        await this.#persist();
      }
      this.authorizations++;
      this.#options.print('Signed in.');
    } finally {
      // Signed in or not, this authorization is over; the next one discovers afresh.
      this.#codeVerifier = undefined;
      this.#verifiers.clear();
      this.#clientRefused = false;
      this.#scopeOfDropped = undefined;
    }
  }

  /**
   * Makes sure a token is at hand before the MCP client connects: the cached one, a refreshed
   * one, or a new login. Discovery starts from the server's 401, as a fresh client's would.
   */
  async ensureAuthorized(): Promise<void> {
    if (await this.tokens()) return;
    const probe = await this.#fetch(this.#options.mcpUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 0, method: 'ping' }),
    }).catch((error: unknown) => {
      throw new Error(
        `could not reach ${this.#options.mcpUrl}: ${(error as Error).message} (${String((error as { cause?: unknown }).cause ?? '')})`,
      );
    });
    await probe.body?.cancel();
    if (probe.status !== 401) {
      throw new Error(
        `${this.#options.mcpUrl} answered ${probe.status} without credentials; expected 401 with OAuth metadata`,
      );
    }
    const { resourceMetadataUrl, scope } = extractWWWAuthenticateParams(probe);
    await auth(this, {
      serverUrl: this.#options.mcpUrl,
      ...(resourceMetadataUrl ? { resourceMetadataUrl } : {}),
      // The configured scope, plus whatever the server says it needs (unless the scope was set
      // explicitly: then a tool that needs more gets it through step-up when it is called).
      scope: this.#widenedScope(this.#options.exactScope ? null : (scope ?? null)),
      fetchFn: this.#fetch,
    });
    if (!(await this.tokens())) throw new Error('sign-in did not complete');
  }

  /**
   * Dynamic Client Registration with every scope the client may ever need (the configured ones
   * and all the server lists), done at discovery rather than by the SDK's `auth()`, which
   * registers with only the scope of the current request: Keycloak then limits the client to
   * it, and a later step-up to `expenses:write` fails with `invalid_scope`. A registration is
   * kept for the server it was made with (one saved unstamped, by an older version, is bound by
   * the SDK to the first server that takes it).
   */
  async #registerIfNeeded(state: OAuthDiscoveryState): Promise<void> {
    if (this.#options.clientId) return;
    const server = state.authorizationServerUrl;
    const stored = this.#session.clientInformation as { issuer?: string } | undefined;
    if (stored && (stored.issuer === undefined || stored.issuer === server)) return;
    // A registration is for a sign-in: none where no sign-in could follow (no S256, a sign-in
    // page that would not be opened), so nothing is sent to such a server.
    const metadata = checkSignInPossible(state.authorizationServerMetadata);
    if (URL.canParse(metadata.authorization_endpoint)) {
      checkSignInPage(new URL(metadata.authorization_endpoint), metadata.issuer);
    }
    // CIMD needs no registration; the SDK uses the metadata URL as the client id.
    if (this.clientMetadataUrl && metadata.client_id_metadata_document_supported) return;
    const scope = [...new Set([...this.#options.scope.split(' '), ...(state.resourceMetadata?.scopes_supported ?? [])])]
      .filter(Boolean)
      .join(' ');
    const registered = await registerClient(server, {
      metadata,
      clientMetadata: this.clientMetadata,
      ...(scope ? { scope } : {}),
      fetchFn: this.#fetch,
    });
    this.#session.clientInformation = { ...registered, issuer: server } as OAuthClientInformationMixed;
  }

  /** What was asked, plus the configured scope, plus what the current token already has. */
  #widenedScope(requested: string | null): string {
    const words = [
      ...(requested ?? '').split(' '),
      ...this.#options.scope.split(' '),
      ...(this.#session.tokens?.scope ?? this.#scopeOfDropped ?? '').split(' '),
    ];
    return [...new Set(words.filter(Boolean))].join(' ');
  }

  /** Refreshed 30 s before it expires, or at half its life when shorter (as client credentials renew). */
  #expiring(): boolean {
    const { expires_at: expiresAt, expires_in: expiresIn } = this.#session.tokens ?? {};
    if (expiresAt === undefined) return false;
    const lifetimeMs = expiresIn === undefined ? Number.POSITIVE_INFINITY : expiresIn * 1000;
    return this.#now() >= expiresAt - renewMarginMs(lifetimeMs);
  }

  async #refresh(): Promise<void> {
    // Before the refresh token is sent: an answer quoting it is then hidden too.
    this.#reportSecrets();
    const tokens = this.#session.tokens;
    const discovery = this.#session.discoveryState;
    const clientInformation = this.clientInformation();
    // Tokens and the stored discovery are of one server: saveDiscoveryState drops the tokens of
    // another before it stores a new discovery.
    if (!tokens?.refresh_token || !discovery || !clientInformation) {
      await this.invalidateCredentials('tokens');
      return;
    }
    try {
      // A discovery an older version stored may name a token endpoint on plain http to another
      // host: its refresh token is not sent there (the next request signs in, checked anew).
      checkEndpointTransport(discovery.authorizationServerMetadata);
    } catch {
      await this.invalidateCredentials('tokens');
      return;
    }
    // As the authorization request and the code exchange: the SDK sends `resource` only when the
    // server has protected resource metadata (a 2025-03-26 server has none, and its authorization
    // server may not know resource indicators).
    let resource: string | undefined;
    if (discovery.resourceMetadata) {
      try {
        // Checked again before it is sent: a discovery cached by an older version may name another
        // server, and no token is asked for that one. Nothing to refresh with then: the next
        // request gets a 401 and a new login, whose discovery is checked when it is saved.
        resource = thisServersResource(this.#options.mcpUrl, discovery.resourceMetadata.resource || undefined);
      } catch {
        await this.invalidateCredentials('tokens');
        return;
      }
    }
    let status: number | undefined;
    try {
      const refreshed = await refreshAuthorization(discovery.authorizationServerUrl, {
        ...(discovery.authorizationServerMetadata ? { metadata: discovery.authorizationServerMetadata } : {}),
        clientInformation,
        refreshToken: tokens.refresh_token,
        // The string as the authorization request and the code exchange sent it (the SDK's auth()
        // sends the metadata's as written): `new URL(…).href` adds a `/` to a path-less resource,
        // and a server that compares exactly would refuse every refresh (invalid_target).
        ...(resource === undefined ? {} : { resource }),
        fetchFn: async (input, init) => {
          const response = await this.#fetch(input, init);
          status = response.status;
          return response;
        },
      });
      this.refreshes++;
      await this.saveTokens({
        ...refreshed,
        // RFC 6749 6: a refresh answer without `scope` keeps the scope the grant had.
        ...(refreshed.scope === undefined && tokens.scope !== undefined ? { scope: tokens.scope } : {}),
        ...(tokens.issuer ? { issuer: tokens.issuer } : {}),
      } as OAuthTokens);
    } catch (error) {
      // Expired or revoked refresh token (invalid_grant), or this client refused: the next
      // request gets a 401 and a new login.
      if (refreshRefused(error, status)) {
        await this.invalidateCredentials('tokens');
        return;
      }
      // No answer, a timeout, the server's own trouble: nothing is known against the refresh
      // token, which is kept for the next request to try again.
      throw new Error(
        `could not refresh the access token at ${discovery.authorizationServerUrl} (the refresh token is kept; the next request tries again): ${(error as Error).message}`,
        { cause: error },
      );
    }
  }

  async #persist(): Promise<void> {
    await this.#store.save(this.#session);
  }
}

/**
 * MCP authorization, "Authorization Code Protection": without S256 in the metadata there is no
 * PKCE to rely on, and the client must not go on (the SDK refuses only a list without it). The
 * metadata, when it allows a sign-in.
 */
function checkSignInPossible(metadata: AuthorizationServerMetadata | undefined): AuthorizationServerMetadata {
  if (!metadata?.code_challenge_methods_supported?.includes('S256')) {
    throw new Error(
      `the authorization server ${metadata?.issuer ?? '(no metadata)'} does not announce PKCE with S256 (code_challenge_methods_supported): no sign-in without it`,
    );
  }
  return metadata;
}

/**
 * The sign-in page the authorization server's metadata names (`authorization_endpoint`) must be
 * a web page: `https:`, or `http:` on this machine (a developer's server). The SDK refuses only
 * javascript:, data: and vbscript:, and the system opener hands any scheme to its handler:
 * `file:` and `smb:` reach out to a share (Windows signs in to it as the user), a custom
 * protocol starts its program, and plain http to another host can be read and changed on the way.
 */
function checkSignInPage(url: URL, issuer: string): void {
  if (url.protocol === 'https:') return;
  if (url.protocol === 'http:' && isLoopbackUrlHost(url.hostname)) return;
  const where = url.host ? ` on ${url.host}` : '';
  throw new Error(
    `the authorization server ${issuer} names a sign-in page (authorization_endpoint) with the scheme ${url.protocol}${where}: not opened, no sign-in (only https, or http on localhost, 127.0.0.0/8 or [::1])`,
  );
}

/**
 * `checkedResource` for a person's sign-in, whose message leaves out `MCP_RESOURCE`: that admits
 * another name in client_credentials mode only.
 */
function thisServersResource(mcpUrl: string, named: string | undefined): string {
  try {
    return checkedResource(mcpUrl, named);
  } catch {
    throw new DiscoveryError(
      `${mcpUrl} says it is the resource ${named}, another server: no token is asked for it (RFC 9728 3.3)`,
    );
  }
}

/**
 * The authorization server answered the refresh with a refusal of the grant or the client: an
 * OAuth error such as `invalid_grant`, `invalid_client` or `unauthorized_client`, or any other
 * 4xx but 408 and 429 (the SDK makes `server_error` of a body without a known OAuth error, such
 * as a 404 page for a realm that is gone: kept, it would fail every run). Not an answer saying
 * the server is in trouble (a 5xx, `temporarily_unavailable`, 408, 429) or none at all.
 */
function refreshRefused(error: unknown, status: number | undefined): boolean {
  if (!(error instanceof OAuthError)) return false;
  if (error instanceof TemporarilyUnavailableError || error instanceof TooManyRequestsError) return false;
  if (status !== undefined && status >= 400 && status < 500) return status !== 408 && status !== 429;
  return !(error instanceof ServerError);
}

/** RFC 7636's S256 challenge of a verifier. */
function s256(verifier: string): string {
  return createHash('sha256').update(verifier).digest('base64url');
}

function clientRefused(): Error {
  return new Error(
    'the authorization server refused this client when the code was exchanged (invalid_client): check MCP_CLIENT_ID and MCP_CLIENT_SECRET; a dynamically registered client is registered anew at the next sign-in',
  );
}
