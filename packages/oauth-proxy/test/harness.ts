import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { type AuthVariables, requireAuth } from '@mcp-auth-stack/auth';
import { type Database, migrate, openDatabase } from '@mcp-auth-stack/database';
import { createPkce } from '@mcp-auth-stack/testing';
import { Hono } from 'hono';
import type { JWK } from 'jose';
import {
  OAUTH_PROXY_NAMESPACE,
  type OAuthProxy,
  type OAuthProxyOptions,
  oauthProxy,
  oauthProxyMigrations,
  oidcUpstream,
} from '../src/index.ts';
import type { FakeUpstream } from './fake-upstream.ts';

export const ISSUER = 'http://localhost:8000';
export const RESOURCE = `${ISSUER}/mcp`;
export const REDIRECT = 'http://127.0.0.1:33418/callback';

export async function openMigrated(url: string): Promise<Database> {
  const database = await openDatabase({ url, maxConnections: 5 });
  await migrate(database.pool, OAUTH_PROXY_NAMESPACE, oauthProxyMigrations);
  return database;
}

export interface Instance {
  proxy: OAuthProxy;
  app: Hono<{ Variables: AuthVariables }>;
}

export function instance(
  database: Database,
  idp: FakeUpstream,
  keys: { signingKey: JWK; encryptionKey: string },
  overrides: Partial<OAuthProxyOptions> = {},
): Instance {
  const proxy = oauthProxy({
    issuer: ISSUER,
    resource: RESOURCE,
    pool: database.pool,
    upstream: oidcUpstream({ discoveryUrl: idp.discoveryUrl, clientId: idp.clientId, clientSecret: idp.clientSecret }),
    scopesSupported: ['mcp:access', 'expenses:read', 'expenses:write'],
    defaultScopes: ['mcp:access'],
    scopeDescriptions: { 'expenses:read': 'Read your expenses' },
    resourceName: 'Test Server',
    cleanupIntervalSeconds: 0,
    // Every request of a test comes from the same (unknown) address.
    registrationsPerMinute: 10_000,
    authorizationsPerMinute: 10_000,
    // The form is posted as soon as it is read; attacks.test.ts checks the gate with its own value.
    consentMinimumViewMs: 0,
    ...keys,
    ...overrides,
  });
  const app = new Hono<{ Variables: AuthVariables }>();
  proxy.mount(app);
  app.use('/mcp', requireAuth(proxy));
  app.post('/mcp', (c) => c.json(c.get('principal')));
  return { proxy, app };
}

export function newEncryptionKey(): string {
  return randomBytes(32).toString('base64');
}

// The one PKCE helper of the tests, under the name these tests use.
export { createPkce as pkce } from '@mcp-auth-stack/testing';

/** A cookie jar that plays the user's browser (one per user agent). */
export class Browser {
  readonly cookies = new Map<string, string>();

  header(): Record<string, string> {
    if (this.cookies.size === 0) return {};
    return { cookie: [...this.cookies].map(([name, value]) => `${name}=${value}`).join('; ') };
  }

  absorb(response: Response): Response {
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const index = (pair ?? '').indexOf('=');
      this.cookies.set((pair ?? '').slice(0, index), (pair ?? '').slice(index + 1));
    }
    return response;
  }

  async get(app: Hono<{ Variables: AuthVariables }>, url: string): Promise<Response> {
    return this.absorb(await app.request(url, { headers: this.header() }));
  }

  async post(app: Hono<{ Variables: AuthVariables }>, url: string, form: Record<string, string>): Promise<Response> {
    return this.absorb(
      await app.request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...this.header() },
        body: new URLSearchParams(form).toString(),
      }),
    );
  }
}

export async function register(
  app: Hono<{ Variables: AuthVariables }>,
  body: Record<string, unknown> = {},
): Promise<{ client_id: string; client_secret?: string }> {
  const response = await app.request(`${ISSUER}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: 'Test Client', redirect_uris: [REDIRECT], ...body }),
  });
  assert.equal(response.status, 201, await response.clone().text());
  return (await response.json()) as { client_id: string };
}

export function authorizeUrl(params: Record<string, string | undefined>): string {
  const url = new URL(`${ISSUER}/authorize`);
  const all: Record<string, string | undefined> = {
    response_type: 'code',
    redirect_uri: REDIRECT,
    code_challenge_method: 'S256',
    state: 'client-state-1',
    resource: RESOURCE,
    ...params,
  };
  for (const [name, value] of Object.entries(all)) if (value !== undefined) url.searchParams.set(name, value);
  return url.toString();
}

/** The hidden fields of the consent form. */
export function consentFields(html: string): { request: string; csrf: string } {
  const request = /name="request" value="([^"]+)"/.exec(html)?.[1];
  const csrf = /name="csrf" value="([^"]+)"/.exec(html)?.[1];
  assert.ok(request && csrf, 'the consent page has the form fields');
  return { request, csrf };
}

/** Follows the upstream login (the fake IdP redirects at once) and returns the proxy callback URL. */
export async function upstreamLogin(location: string): Promise<string> {
  const response = await fetch(location, { redirect: 'manual' });
  assert.equal(response.status, 302, 'the upstream redirects back');
  const back = response.headers.get('location') as string;
  assert.ok(back.startsWith(`${ISSUER}/auth/callback?`), back);
  return back;
}

/** A new client's login at `proxy` up to the proxy's callback URL, which the upstream sent the browser to. */
export async function loginUntilCallback(
  proxy: Instance,
): Promise<{ browser: Browser; callback: string; clientId: string }> {
  const client = await register(proxy.app);
  const browser = new Browser();
  const page = await browser.get(
    proxy.app,
    authorizeUrl({ client_id: client.client_id, code_challenge: createPkce().challenge }),
  );
  const approved = await browser.post(proxy.app, `${ISSUER}/consent`, {
    ...consentFields(await page.text()),
    decision: 'approve',
  });
  return {
    browser,
    callback: await upstreamLogin(await continuedTo(approved)),
    clientId: client.client_id,
  };
}

/**
 * Where the consent form's answer goes on to: it must be a page of the proxy (not a redirect,
 * which the browser would check against the form-action of the consent page) that refreshes to
 * one URL and links to the same, under a policy whose form-action is the proxy alone.
 */
export async function continuedTo(response: Response): Promise<string> {
  const html = await response.text();
  assert.equal(response.status, 200, html);
  assert.equal(response.headers.get('location'), null);
  assert.match(response.headers.get('content-security-policy') ?? '', /form-action 'self';/);
  const unescapeHtml = (text: string) =>
    text.replace(/&#(\d+);/g, (_, code: string) => String.fromCharCode(Number(code)));
  const refresh = /<meta http-equiv="refresh" content="([^"]*)">/.exec(html)?.[1];
  const target = /^0; url='([^']*)'$/.exec(unescapeHtml(refresh ?? ''))?.[1];
  assert.ok(target, `a refresh to one URL: ${refresh}`);
  const link = /<a href="([^"]*)">Continue<\/a>/.exec(html)?.[1];
  assert.equal(unescapeHtml(link ?? '').replaceAll("'", '%27'), target, 'the link goes where the refresh does');
  return target;
}

export interface LoginResult {
  code: string;
  redirect: URL;
}

/**
 * The whole browser part: authorize, consent approve, upstream login, callback. `via` may differ
 * per step to show that replicas share the state.
 */
export async function browserLogin(
  steps: { authorize: Instance; consent?: Instance; callback?: Instance },
  browser: Browser,
  clientId: string,
  challenge: string,
  extra: { remember?: boolean; scope?: string } = {},
): Promise<LoginResult> {
  const page = await browser.get(
    steps.authorize.app,
    authorizeUrl({ client_id: clientId, code_challenge: challenge, scope: extra.scope }),
  );
  let upstream: string;
  if (page.status === 302) {
    upstream = page.headers.get('location') as string;
  } else {
    assert.equal(page.status, 200, await page.clone().text());
    const fields = consentFields(await page.text());
    const approved = await browser.post((steps.consent ?? steps.authorize).app, `${ISSUER}/consent`, {
      ...fields,
      decision: 'approve',
      ...(extra.remember ? { remember: '1' } : {}),
    });
    upstream = await continuedTo(approved);
  }
  const callbackUrl = await upstreamLogin(upstream);
  const done = await browser.get((steps.callback ?? steps.authorize).app, callbackUrl);
  assert.equal(done.status, 302, await done.clone().text());
  const redirect = new URL(done.headers.get('location') as string);
  assert.equal(redirect.origin + redirect.pathname, REDIRECT);
  const code = redirect.searchParams.get('code');
  assert.ok(code, `a code in ${redirect}`);
  return { code, redirect };
}

/**
 * A client's whole login at `proxy`: registration (unless `clientId` is given), the browser part
 * and the code exchanged for tokens with its verifier (asserted to succeed).
 */
export async function loginForTokens(
  proxy: Instance,
  extra: { remember?: boolean; browser?: Browser; clientId?: string; scope?: string } = {},
) {
  const clientId = extra.clientId ?? (await register(proxy.app)).client_id;
  const { verifier, challenge } = createPkce();
  const browser = extra.browser ?? new Browser();
  const { code } = await browserLogin({ authorize: proxy }, browser, clientId, challenge, extra);
  const tokens = await tokenRequest(proxy.app, {
    grant_type: 'authorization_code',
    code,
    code_verifier: verifier,
    client_id: clientId,
    redirect_uri: REDIRECT,
    resource: RESOURCE,
  });
  assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  return { clientId, code, verifier, browser, tokens: tokens.body as { access_token: string; refresh_token: string } };
}

export async function tokenRequest(
  app: Hono<{ Variables: AuthVariables }>,
  form: Record<string, string | undefined>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const body = new URLSearchParams();
  for (const [name, value] of Object.entries(form)) if (value !== undefined) body.set(name, value);
  const response = await app.request(`${ISSUER}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: body.toString(),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** A code exchange at /token with the test's redirect URI: `code` with `verifier`, as `clientId`. */
export function codeRequest(
  app: Hono<{ Variables: AuthVariables }>,
  code: string,
  clientId: string,
  verifier: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  return tokenRequest(app, {
    grant_type: 'authorization_code',
    redirect_uri: REDIRECT,
    code,
    client_id: clientId,
    code_verifier: verifier,
  });
}

/** A refresh at /token: `refresh_token` as `clientId`, with any other parameters (`scope`, `resource`). */
export function refreshRequest(
  app: Hono<{ Variables: AuthVariables }>,
  refreshToken: string,
  clientId: string,
  extra: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  return tokenRequest(app, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId, ...extra });
}

export async function callMcp(app: Hono<{ Variables: AuthVariables }>, accessToken: string): Promise<Response> {
  return app.request(`${ISSUER}/mcp`, { method: 'POST', headers: { authorization: `Bearer ${accessToken}` } });
}
