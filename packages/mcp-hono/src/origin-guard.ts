import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';

export interface OriginGuardOptions {
  /** Host names (optionally with a port) the server answers to, e.g. `localhost`, `mcp.example.com`. */
  allowedHosts: string[];
  /** Exact origins a browser may call from, e.g. `http://localhost:6274`. Requests without `Origin` pass. */
  allowedOrigins: string[];
}

/**
 * Protection against DNS rebinding (required by the MCP transport specification): a page on
 * an attacker's domain that resolves to 127.0.0.1 still sends its own `Host` and `Origin`,
 * which are refused here with 403.
 */
export function originGuard(options: OriginGuardOptions) {
  const hosts = new Set(options.allowedHosts.map((host) => host.toLowerCase()));
  const origins = new Set(options.allowedOrigins.map((origin) => origin.toLowerCase()));
  return createMiddleware(async (c, next) => {
    const host = c.req.header('host')?.toLowerCase();
    if (!host || !(hosts.has(host) || hosts.has(hostname(host)))) {
      return forbidden(c, `Host ${host ?? '(missing)'} is not allowed.`);
    }
    const origin = c.req.header('origin');
    if (origin !== undefined && !origins.has(origin.toLowerCase())) {
      return forbidden(c, `Origin ${origin} is not allowed.`);
    }
    await next();
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
