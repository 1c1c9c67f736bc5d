import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Pkce } from '@mcp-auth-stack/testing';
import { type Browser, chromium, type Page } from 'playwright-core';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Debian's Chromium; Playwright's own browser download cannot work on these machines. */
export async function launchChromium(): Promise<Browser> {
  try {
    return await chromium.launch({
      executablePath: CHROMIUM_PATH,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  } catch (error) {
    throw new Error(
      `Chromium could not start from ${CHROMIUM_PATH} (${(error as Error).message.split('\n')[0]}). Install it: apt-get install -y chromium, or set CHROMIUM_PATH.`,
    );
  }
}

/**
 * A TCP port nobody listens on right now, below Linux's ephemeral range (32768-60999): a port
 * the OS handed out for bind(0) can be taken as the source port of an outgoing connection
 * before Keycloak, which starts seconds later, binds it.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const server = createServer();
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!bound) continue;
    await new Promise((resolve) => server.close(resolve));
    return port;
  }
  throw new Error('no free port found in 20000-32000');
}

// One PKCE helper for every test (packages/testing); re-exported for the callers of this module.
export { createPkce, type Pkce } from '@mcp-auth-stack/testing';

export interface AuthorizeRequest {
  clientId: string;
  redirectUri: string;
  scope: string;
  pkce?: Pkce | undefined;
  resource?: string;
  state?: string;
}

export function authorizeUrl(realmUrl: string, request: AuthorizeRequest): string {
  const url = new URL(`${realmUrl}/protocol/openid-connect/auth`);
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('client_id', request.clientId);
  url.searchParams.set('redirect_uri', request.redirectUri);
  url.searchParams.set('scope', request.scope);
  url.searchParams.set('state', request.state ?? randomBytes(8).toString('hex'));
  if (request.pkce) {
    url.searchParams.set('code_challenge', request.pkce.challenge);
    url.searchParams.set('code_challenge_method', 'S256');
  }
  if (request.resource) url.searchParams.set('resource', request.resource);
  return url.toString();
}

/**
 * The loopback redirect target of a native OAuth client (RFC 8252): records the query of every
 * request it receives, like VS Code's or the MCP SDK's callback listener.
 */
export interface CallbackServer {
  redirectUri: string;
  received: URLSearchParams[];
  next(timeoutMs?: number): Promise<URLSearchParams>;
  close(): Promise<void>;
}

export async function startCallbackServer(): Promise<CallbackServer> {
  const received: URLSearchParams[] = [];
  const waiters: ((params: URLSearchParams) => void)[] = [];
  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    // Browsers also ask the redirect's origin for /favicon.ico; only the callback counts.
    if (url.pathname !== '/callback') {
      response.statusCode = 404;
      response.end();
      return;
    }
    const params = url.searchParams;
    received.push(params);
    waiters.shift()?.(params);
    response.setHeader('content-type', 'text/plain');
    response.end('Signed in; you may close this window.');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    redirectUri: `http://127.0.0.1:${port}/callback`,
    received,
    next(timeoutMs = 20_000) {
      const already = received.shift();
      if (already) return Promise.resolve(already);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the callback was never called')), timeoutMs);
        waiters.push((params) => {
          clearTimeout(timer);
          received.shift();
          resolve(params);
        });
      });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Signs in on Keycloak's own login page (theme keycloak.v2) and, when asked, accepts the consent page. */
export async function signIn(
  page: Page,
  url: string,
  user: { username: string; password: string },
  consent?: { expectClientName: string },
): Promise<void> {
  await page.goto(url);
  await page.locator('#kc-form-login').waitFor();
  await page.fill('#username', user.username);
  await page.fill('#password', user.password);
  await page.click('#kc-login');
  if (consent) {
    await page.locator('#kc-cancel').waitFor();
    const text = (await page.locator('body').textContent()) ?? '';
    if (!text.includes(consent.expectClientName)) {
      throw new Error(`the consent page does not name the client ${consent.expectClientName}:\n${text}`);
    }
    await page.click('#kc-login');
  }
}

export interface TokenResponse {
  status: number;
  body: Record<string, unknown>;
}

export async function postToken(realmUrl: string, form: Record<string, string>): Promise<TokenResponse> {
  const response = await fetch(`${realmUrl}/protocol/openid-connect/token`, {
    method: 'POST',
    body: new URLSearchParams(form),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

export function decodeJwtPayload(jwt: string): Record<string, unknown> {
  const payload = jwt.split('.')[1];
  if (!payload) throw new Error(`not a JWT: ${jwt.slice(0, 20)}...`);
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** `aud` is a string or an array in JWTs (Keycloak uses both); tests compare lists. */
export function audienceOf(claims: Record<string, unknown>): string[] {
  return [claims.aud].flat().filter((value): value is string => typeof value === 'string');
}

export function scopesOf(claims: Record<string, unknown>): string[] {
  return typeof claims.scope === 'string' ? claims.scope.split(' ') : [];
}

/** Checks an RS256 signature against the realm's JWKS, so the tests read tokens Keycloak really signed. */
export async function verifyRs256(realmUrl: string, jwt: string): Promise<boolean> {
  const [header, payload, signature] = jwt.split('.');
  if (!header || !payload || !signature) return false;
  const { kid, alg } = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { kid: string; alg: string };
  if (alg !== 'RS256') return false;
  const jwks = (await (await fetch(`${realmUrl}/protocol/openid-connect/certs`)).json()) as {
    keys: (Record<string, unknown> & { kid: string })[];
  };
  const jwk = jwks.keys.find((key) => key.kid === kid);
  if (!jwk) return false;
  const key = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  return verify('sha256', Buffer.from(`${header}.${payload}`), key, Buffer.from(signature, 'base64url'));
}
