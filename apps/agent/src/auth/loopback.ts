/**
 * The redirect target of a native OAuth client (RFC 8252 §7.3): an HTTP listener on 127.0.0.1,
 * up only while one authorization is pending. It accepts the callback only with the `state` the
 * authorization request carried, so another page cannot inject a code.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export const CALLBACK_PATH = '/callback';

export function redirectUrlFor(port: number): string {
  return `http://127.0.0.1:${port}${CALLBACK_PATH}`;
}

/** A port nobody listens on right now (the listener itself starts only when a login begins). */
export async function findFreePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export class AuthorizationCallbackError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthorizationCallbackError';
  }
}

/**
 * Who must have sent the answer (RFC 9207): its `iss` must be `issuer`; without one it is
 * refused when the authorization server said it always sends one (`required`).
 */
export interface ExpectedIssuer {
  issuer: string;
  required: boolean;
}

/** A redirect listener that is bound: `code` settles with the one callback it waits for. */
export interface PendingAuthorizationCode {
  /** The code of the callback with the expected `state` (rejected on a refusal, a mix-up, the timeout). */
  code: Promise<string>;
}

/**
 * Listens on `port` for one callback with `state`. Resolves once the port is bound, and rejects
 * when it cannot be (EADDRINUSE): the browser is sent to the sign-in page only after that, or
 * the code would go to whoever holds the port. The listener closes when `code` settles.
 */
export async function listenForAuthorizationCode(
  port: number,
  state: string,
  timeoutMs: number,
  expectedIssuer?: ExpectedIssuer,
): Promise<PendingAuthorizationCode> {
  let settle: { resolve(code: string): void; reject(error: Error): void } | undefined;
  const result = new Promise<string>((resolve, reject) => {
    settle = { resolve, reject };
  });
  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== CALLBACK_PATH) {
      response.writeHead(404).end();
      return;
    }
    const params = url.searchParams;
    // The page's own URL holds the code and state: kept out of caches and of any Referer, and
    // the page may load nothing.
    response.setHeader('content-type', 'text/html; charset=utf-8');
    response.setHeader('cache-control', 'no-store');
    response.setHeader('referrer-policy', 'no-referrer');
    response.setHeader('content-security-policy', "default-src 'none'");
    if (params.get('state') !== state) {
      // Not our request (or a replay): refuse without ending the wait.
      response.writeHead(400).end('<p>Unexpected sign-in response (state mismatch). You may close this window.</p>');
      return;
    }
    const iss = params.get('iss');
    if (expectedIssuer && (iss === null ? expectedIssuer.required : iss !== expectedIssuer.issuer)) {
      // A mix-up: the answer of another authorization server (or of someone posing as one).
      response.writeHead(400).end('<p>Sign-in refused: the answer did not come from the expected server.</p>');
      settle?.reject(
        new AuthorizationCallbackError(
          iss === null
            ? `the authorization answer names no issuer, though ${expectedIssuer.issuer} always sends it (RFC 9207)`
            : `the authorization answer came from ${iss}, not ${expectedIssuer.issuer} (RFC 9207)`,
        ),
      );
      return;
    }
    const error = params.get('error');
    const code = params.get('code');
    if (error || !code) {
      response.writeHead(400).end('<p>Sign-in failed. You may close this window and check the terminal.</p>');
      settle?.reject(
        new AuthorizationCallbackError(
          `the authorization server refused: ${error ?? 'no code'}${params.get('error_description') ? ` (${params.get('error_description')})` : ''}`,
        ),
      );
      return;
    }
    response.writeHead(200).end('<p>Signed in to the expenses agent. You may close this window.</p>');
    settle?.resolve(code);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'EADDRINUSE'
          ? new AuthorizationCallbackError(
              `port ${port} on 127.0.0.1 is in use; set MCP_OAUTH_REDIRECT_PORT to a free port for the sign-in redirect`,
            )
          : error,
      ),
    );
    server.listen(port, '127.0.0.1', resolve);
  });
  const timer = setTimeout(
    () => settle?.reject(new AuthorizationCallbackError(`no sign-in within ${Math.round(timeoutMs / 1000)} s`)),
    timeoutMs,
  );
  const code = (async () => {
    try {
      return await result;
    } finally {
      clearTimeout(timer);
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  })();
  return { code };
}
