import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';

export interface OriginGuardOptions {
  /** Host names (optionally with a port) the server answers to, e.g. `localhost`, `mcp.example.com`. */
  allowedHosts: string[];
  /** Exact origins a browser may call from, e.g. `http://localhost:6274`. Requests without `Origin` pass. */
  allowedOrigins: string[];
  /** Response headers a page of an allowed origin may read (default `WWW-Authenticate`, for its 401 and 403). */
  exposeHeaders?: string[] | undefined;
}

/**
 * What an MCP client in a browser sends: the credential (a Bearer token, or a key in `X-API-Key`),
 * the JSON-RPC body and the protocol's headers.
 */
const CORS_REQUEST_HEADERS =
  'Authorization, X-API-Key, Content-Type, Accept, MCP-Protocol-Version, Mcp-Method, Mcp-Name';

/**
 * Protection against DNS rebinding (required by the MCP transport specification): a page on
 * an attacker's domain that resolves to 127.0.0.1 still sends its own `Host` and `Origin`,
 * which are refused here with 403. A page of an allowed origin gets CORS: its preflight is
 * answered here (before any credential check, which a preflight never carries), and every
 * answer names its origin and exposes `WWW-Authenticate`, so a browser client can read the
 * challenge and find the metadata. Requests without `Origin` (every non-browser client) get none.
 */
export function originGuard(options: OriginGuardOptions) {
  const hosts = new Set(options.allowedHosts.map((host) => host.toLowerCase()));
  const origins = new Set(options.allowedOrigins.map((origin) => origin.toLowerCase()));
  const exposed = (options.exposeHeaders ?? ['WWW-Authenticate']).join(', ');
  return createMiddleware(async (c, next) => {
    const host = c.req.header('host')?.toLowerCase();
    if (!host || !(hosts.has(host) || hosts.has(hostname(host)))) {
      return forbidden(c, `Host ${host ?? '(missing)'} is not allowed.`);
    }
    const origin = c.req.header('origin');
    if (origin === undefined) return next();
    if (!origins.has(origin.toLowerCase())) return forbidden(c, `Origin ${origin} is not allowed.`);
    if (c.req.method === 'OPTIONS' && c.req.header('access-control-request-method') !== undefined) {
      return c.body(null, 204, {
        'Access-Control-Allow-Origin': origin,
        'Access-Control-Allow-Methods': 'POST',
        'Access-Control-Allow-Headers': CORS_REQUEST_HEADERS,
        'Access-Control-Max-Age': '600',
        Vary: 'Origin',
      });
    }
    await next();
    c.res.headers.set('Access-Control-Allow-Origin', origin);
    c.res.headers.set('Access-Control-Expose-Headers', exposed);
    c.res.headers.append('Vary', 'Origin');
  });
}

function hostname(host: string): string {
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1);
  const colon = host.lastIndexOf(':');
  return colon === -1 ? host : host.slice(0, colon);
}

function forbidden(c: Context, message: string): Response {
  return c.json({ jsonrpc: '2.0', id: null, error: { code: -32000, message: `Forbidden: ${message}` } }, 403);
}
