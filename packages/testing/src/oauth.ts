import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Pkce } from './pkce.ts';

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

export interface AuthorizeRequest {
  clientId: string;
  redirectUri: string;
  scope: string;
  pkce?: Pkce | undefined;
  resource?: string;
  state?: string;
}

/** The authorization request URL (code flow, S256 when a PKCE pair is given) of an OIDC realm. */
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

/** A client's redirect listener on `host` (127.0.0.1 by default; `::1` for an IPv6 loopback client). */
export async function startCallbackServer(host: '127.0.0.1' | '::1' = '127.0.0.1'): Promise<CallbackServer> {
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
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as AddressInfo;
  return {
    redirectUri: `http://${host === '::1' ? '[::1]' : host}:${port}/callback`,
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
