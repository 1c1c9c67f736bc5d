import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type {
  OAuthClientInformationMixed,
  OAuthClientMetadata,
  OAuthTokens,
} from '@modelcontextprotocol/sdk/shared/auth.js';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { approveProxyConsent } from './browser.ts';
import type { CallbackServer } from './oauth.ts';

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
  /**
   * Runs each part of the browser login as a named step: Playwright Test's `test.step`, so its
   * report and trace show "sign in at Keycloak as alice" rather than a list of clicks.
   */
  step?: <T>(title: string, body: () => Promise<T>) => Promise<T>;
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
    const step = this.options.step ?? (<T>(_title: string, body: () => Promise<T>) => body());
    const context = await this.browser.newContext();
    context.setDefaultTimeout(15_000);
    let opened: Page | undefined;
    try {
      const page = await context.newPage();
      opened = page;
      const atCallback = (target: URL) => target.href.startsWith(this.callback.redirectUri);
      // Keycloak answers some requests (a scope the client may not have) straight to the callback.
      const first = await step(`open the authorization page of ${url.origin}`, async () => {
        await page.goto(url.toString());
        return await Promise.race([
          page
            .locator('#kc-form-login')
            .waitFor()
            .then(() => 'login' as const),
          page.waitForURL(atCallback).then(() => 'redirected' as const),
        ]);
      });
      if (first === 'redirected') return;
      const outcome = await step(`sign in at Keycloak as ${this.user.username}`, async () => {
        await page.fill('#username', this.user.username);
        await page.fill('#password', this.options.password ?? this.user.password);
        await page.click('#kc-login');
        return await Promise.race([
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
      });
      if (outcome === 'login error') {
        this.loginErrors.push((await page.locator('#input-error-username').textContent())?.trim() ?? '');
        return;
      }
      if (outcome === 'consent') {
        const decision = this.options.consent === 'deny' ? 'deny' : 'accept';
        await step(`${decision} the consent page`, async () => {
          this.consentPages.push((await page.locator('body').textContent()) ?? '');
          await page.click(decision === 'deny' ? '#kc-cancel' : '#kc-login');
          await page.waitForURL(atCallback);
        });
      }
    } catch (error) {
      // A wait that timed out says only what it waited for: where the browser was says why.
      if (error instanceof Error && opened) error.message += `\n${await whereThePageIs(opened)}`;
      throw error;
    } finally {
      await context.close();
    }
  }

  /** Forgets the tokens (not the registration), as a client does after a 401 it cannot refresh. */
  forgetTokens() {
    this.#tokens = undefined;
  }
}

/** The page's URL and the start of its text, for a failed login's message. */
async function whereThePageIs(page: Page): Promise<string> {
  const text = await page
    .locator('body')
    .textContent({ timeout: 2_000 })
    .catch(() => null);
  return `the browser was at ${page.url()}: ${(text ?? '(no page text)').replace(/\s+/g, ' ').trim().slice(0, 300)}`;
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

export interface ProxyLoginOptions {
  clientName?: string;
  /** What the user does on the proxy's consent page (default approve). */
  decision?: 'approve' | 'deny';
  /** Ticks "Remember my decision for this application". */
  remember?: boolean;
  /** A browser context kept across logins (its cookies: remembered consent, Keycloak's session). */
  context?: BrowserContext;
  step?: BrowserOAuthOptions['step'];
}

/**
 * The SDK client's OAuth side with the server's OAuth proxy in between: the browser first sees
 * the proxy's consent page (approve or deny), then, when approved, Keycloak's login page.
 */
export class ProxyOAuthProvider extends BrowserOAuthProvider {
  readonly proxy: ProxyLoginOptions;
  /** Text of each of the proxy's consent pages shown. */
  readonly proxyConsentPages: string[] = [];
  /** How many times Keycloak's login form was filled in. */
  keycloakLogins = 0;

  constructor(browser: Browser, callback: CallbackServer, user: LoginUser, options: ProxyLoginOptions = {}) {
    super(browser, callback, user, {
      ...(options.clientName ? { clientName: options.clientName } : {}),
      ...(options.step ? { step: options.step } : {}),
    });
    this.proxy = options;
  }

  override async redirectToAuthorization(url: URL): Promise<void> {
    this.authorizationUrls.push(url);
    const step = this.proxy.step ?? (<T>(_title: string, body: () => Promise<T>) => body());
    const context = this.proxy.context ?? (await this.browser.newContext());
    context.setDefaultTimeout(15_000);
    let opened: Page | undefined;
    try {
      const page = await context.newPage();
      opened = page;
      const atCallback = (target: URL) => target.href.startsWith(this.callback.redirectUri);
      const next = () =>
        Promise.race([
          page
            .locator('form[action$="/consent"]')
            .waitFor()
            .then(() => 'consent' as const),
          page
            .locator('#kc-form-login')
            .waitFor()
            .then(() => 'login' as const),
          page.waitForURL(atCallback).then(() => 'redirected' as const),
        ]);
      let current = await step(`open the authorization page of ${url.origin}`, async () => {
        await page.goto(url.toString());
        return await next();
      });
      if (current === 'consent') {
        const decision = this.proxy.decision ?? 'approve';
        current = await step(`${decision} the proxy's consent page`, async () => {
          this.proxyConsentPages.push((await page.locator('main').textContent()) ?? '');
          if (this.proxy.remember) await page.check('input[name="remember"]');
          // Wait until the form's page is gone, or the race below would find the form again.
          await Promise.all([
            page.waitForURL((target) => !target.href.startsWith(`${url.origin}${url.pathname}`)),
            decision === 'approve' ? approveProxyConsent(page) : page.click('button[name="decision"][value="deny"]'),
          ]);
          return await next();
        });
      }
      if (current === 'login') {
        await step(`sign in at Keycloak as ${this.user.username}`, async () => {
          this.keycloakLogins++;
          await page.fill('#username', this.user.username);
          await page.fill('#password', this.user.password);
          await page.click('#kc-login');
          await page.waitForURL(atCallback);
        });
      }
    } catch (error) {
      if (error instanceof Error && opened) error.message += `\n${await whereThePageIs(opened)}`;
      throw error;
    } finally {
      await opened?.close();
      if (!this.proxy.context) await context.close();
    }
  }
}
