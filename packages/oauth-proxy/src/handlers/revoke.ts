import type { Context, Handler } from 'hono';
import { authenticateClient, readForm } from '../client-auth.ts';
import type { ProxyContext } from '../context.ts';
import { CORS, NO_STORE, OAuthError, oauthErrorResponse } from '../errors.ts';
import { verifyAccessToken } from '../tokens.ts';

/** POST /revoke (RFC 7009): a refresh or access token of the authenticated client ends its whole grant. */
export function revokeHandler(ctx: ProxyContext): Handler {
  return async (c: Context) => {
    try {
      const form = await readForm(c);
      const client = await authenticateClient(ctx, c, form);
      const presented = form.get('token');
      if (!presented) throw new OAuthError('invalid_request', 'token is required.');
      let grantId: string | undefined;
      if (presented.startsWith('mcpr_')) {
        const owner = await ctx.store.refreshTokenOwner(presented);
        if (owner?.client_id === client.clientId) grantId = owner.grant_id;
      } else {
        const verified = await verifyAccessToken(ctx, presented);
        if (verified.ok && verified.principal.clientId === client.clientId) grantId = verified.grantId;
      }
      if (grantId !== undefined) await ctx.store.revokeGrant(ctx.store.pool, grantId, 'revoked by the client');
      // RFC 7009 2.2: 200 whether or not the token was known.
      return new Response(null, { status: 200, headers: { ...NO_STORE, ...CORS } });
    } catch (error) {
      if (error instanceof OAuthError) return oauthErrorResponse(error);
      throw error;
    }
  };
}
