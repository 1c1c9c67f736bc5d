import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CallbackServer } from '@mcp-auth-stack/keycloak/testing';
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type {
  OAuthClientInformationMixed,
  OAuthClientMetadata,
  OAuthTokens,
} from '@modelcontextprotocol/sdk/shared/auth.js';
import type { Browser } from 'playwright-core';

export interface LoginUser {
  username: string;
  password: string;
}

export interface BrowserOAuthOptions {
  clientName?: string;
  /** Use a Client ID Metadata Document at this URL instead of registering. */
  clientMetadataUrl?: string;
  /** What the user does on the consent page: accept (default) or deny. */
  consent?: 'accept' | 'deny';
  /** The password typed instead of the user's (for the wrong-password test). */
  password?: string;
}

/**
 * An MCP client's OAuth side, as a desktop client has it: a loopback redirect listener, state
 * in memory, and a browser for the login. Here the browser is Chromium driven by Playwright
 * through Keycloak's real login (and consent) pages.
 */
export class BrowserOAuthProvider implements OAuthClientProvider {
  #clientInformation: OAuthClientInformationMixed | undefined;
  #tokens: OAuthTokens | undefined;
  #codeVerifier = '';
  readonly authorizationUrls: URL[] = [];
  /** Text of each consent page shown, and each error the login page showed. */
  readonly consentPages: string[] = [];
  readonly loginErrors: string[] = [];
  clientMetadataUrl?: string;

  readonly browser: Browser;
  readonly callback: CallbackServer;
  user: LoginUser;
  readonly options: BrowserOAuthOptions;

  constructor(browser: Browser, callback: CallbackServer, user: LoginUser, options: BrowserOAuthOptions = {}) {
    this.browser = browser;
    this.callback = callback;
    this.user = user;
    this.options = options;
    if (options.clientMetadataUrl) this.clientMetadataUrl = options.clientMetadataUrl;
  }

  get redirectUrl(): string {
    return this.callback.redirectUri;
  }

  get clientMetadata(): OAuthClientMetadata {
    return {
      client_name: this.options.clientName ?? 'e2e MCP client',
      redirect_uris: [this.callback.redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  clientInformation() {
    return this.#clientInformation;
  }
  saveClientInformation(information: OAuthClientInformationMixed) {
    this.#clientInformation = information;
  }
  tokens() {
    return this.#tokens;
  }
  saveTokens(tokens: OAuthTokens) {
    this.#tokens = tokens;
  }
  saveCodeVerifier(verifier: string) {
    this.#codeVerifier = verifier;
  }
  codeVerifier() {
    return this.#codeVerifier;
  }

  async redirectToAuthorization(url: URL): Promise<void> {
    this.authorizationUrls.push(url);
    const context = await this.browser.newContext();
    context.setDefaultTimeout(15_000);
    try {
      const page = await context.newPage();
      await page.goto(url.toString());
      const atCallback = (target: URL) => target.href.startsWith(this.callback.redirectUri);
      // Keycloak answers some requests (a scope the client may not have) straight to the callback.
      const first = await Promise.race([
        page
          .locator('#kc-form-login')
          .waitFor()
          .then(() => 'login' as const),
        page.waitForURL(atCallback).then(() => 'redirected' as const),
      ]);
      if (first === 'redirected') return;
      await page.fill('#username', this.user.username);
      await page.fill('#password', this.options.password ?? this.user.password);
      await page.click('#kc-login');
      const outcome = await Promise.race([
        page.waitForURL(atCallback).then(() => 'redirected' as const),
        page
          .locator('#kc-cancel')
          .waitFor()
          .then(() => 'consent' as const),
        page
          .locator('#input-error-username')
          .waitFor()
          .then(() => 'login error' as const),
      ]);
      if (outcome === 'login error') {
        this.loginErrors.push((await page.locator('#input-error-username').textContent())?.trim() ?? '');
        return;
      }
      if (outcome === 'consent') {
        this.consentPages.push((await page.locator('body').textContent()) ?? '');
        await page.click(this.options.consent === 'deny' ? '#kc-cancel' : '#kc-login');
        await page.waitForURL(atCallback);
      }
    } finally {
      await context.close();
    }
  }

  /** Forgets the tokens (not the registration), as a client does after a 401 it cannot refresh. */
  forgetTokens() {
    this.#tokens = undefined;
  }
}

/**
 * Connects the official SDK client to `mcpUrl` with OAuth: the first attempt discovers
 * everything from the 401 and logs in through the browser; the code from the loopback
 * redirect finishes the flow; the second attempt connects with the token.
 */
export async function connectWithOAuth(mcpUrl: string, provider: BrowserOAuthProvider): Promise<Client> {
  const client = new Client({ name: 'e2e-oauth', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
  try {
    await client.connect(transport);
    return client;
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
  }
  const params = await provider.callback.next();
  const code = params.get('code');
  if (!code) throw new Error(`the login returned no code: ${params.toString()}`);
  await transport.finishAuth(code);
  const connected = new Client({ name: 'e2e-oauth', version: '1.0.0' });
  await connected.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider }));
  return connected;
}

/** A token of Keycloak's bootstrap admin (demo credentials admin / admin), for its admin API. */
export async function keycloakAdminToken(keycloakUrl: string): Promise<string> {
  const response = await fetch(`${keycloakUrl}/realms/master/protocol/openid-connect/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'password', client_id: 'admin-cli', username: 'admin', password: 'admin' }),
  });
  return ((await response.json()) as { access_token: string }).access_token;
}

/** The Keycloak user id of a demo user: the `sub` of that user's tokens. */
export async function keycloakUserId(keycloakUrl: string, username: string): Promise<string> {
  const users = (await (
    await fetch(`${keycloakUrl}/admin/realms/mcp/users?username=${encodeURIComponent(username)}&exact=true`, {
      headers: { authorization: `Bearer ${await keycloakAdminToken(keycloakUrl)}` },
    })
  ).json()) as { id: string }[];
  if (users.length !== 1 || !users[0]) throw new Error(`expected one Keycloak user ${username}, got ${users.length}`);
  return users[0].id;
}

/** Serves a Client ID Metadata Document on loopback; its URL is the client id. */
export async function startCimdDocument(clientName: string) {
  let redirect = '';
  let fetches = 0;
  const server = createServer((_request, response) => {
    fetches++;
    response.setHeader('content-type', 'application/json');
    response.end(
      JSON.stringify({
        client_id: url,
        client_name: clientName,
        redirect_uris: [redirect],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/client.json`;
  return {
    url,
    setRedirect: (uri: string) => {
      redirect = uri;
    },
    fetches: () => fetches,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
