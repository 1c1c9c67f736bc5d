import { readBodyWithin } from '@mcp-auth-stack/mcp-hono';
import type { Context, Handler } from 'hono';
import { registerClient } from '../clients.ts';
import type { ProxyContext } from '../context.ts';
import { CORS, NO_STORE, OAuthError, oauthErrorResponse } from '../errors.ts';

/** POST /register (RFC 7591): anonymous registration, limited per client address and in size. */
export function registerHandler(ctx: ProxyContext): Handler {
  return async (c: Context) => {
    // Here too: a replica that only takes registrations (a flood) removes the unused ones.
    ctx.store.maybeCleanup();
    try {
      if (!ctx.limits.registrations.allow(ctx.addressOf(c))) {
        ctx.emit('registration_limited', {});
        throw new OAuthError('invalid_client_metadata', 'Too many registrations; try again in a minute.', 429, {
          'Retry-After': String(ctx.limits.registrations.retryAfterSeconds()),
        });
      }
      const text = await readBodyWithin(c.req.raw, ctx.maxRegistrationBytes);
      if (text === undefined) {
        throw new OAuthError(
          'invalid_client_metadata',
          `Registration larger than ${ctx.maxRegistrationBytes} bytes.`,
          413,
        );
      }
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        throw new OAuthError('invalid_client_metadata', 'The registration is not valid JSON.');
      }
      const document = await registerClient(ctx.store.pool, body);
      ctx.emit('client_registered', { client_id: document.client_id });
      return Response.json(document, { status: 201, headers: { ...NO_STORE, ...CORS } });
    } catch (error) {
      if (error instanceof OAuthError) return oauthErrorResponse(error);
      throw error;
    }
  };
}
