import type { Context, Handler } from 'hono';
import type { ProxyContext } from '../context.ts';
import { browserCookie } from '../cookies.ts';
import { encrypt, randomToken, sha256 } from '../crypto.ts';
import { OAuthError } from '../errors.ts';
import { failPage, headWithoutEffect, redirectToClient } from '../responses.ts';
import type { UpstreamEndpoints } from '../upstream.ts';
import { callUpstreamToken, toStored, type UpstreamTokens, upstreamUser } from '../upstream-login.ts';

/**
 * GET /auth/callback: the upstream's answer. The state is single use and bound to the browser
 * that started the login; the upstream code is exchanged, the user identified, the scopes
 * narrowed by `permittedScopes`, and the client gets the proxy's own code.
 */
export function callbackHandler(ctx: ProxyContext): Handler {
  return async (c: Context) => {
    const head = headWithoutEffect(c);
    if (head) return head;
    const query = new URL(c.req.url).searchParams;
    const state = query.get('state');
    if (!state) return failPage(c, 'Sign-in failed', 'The identity provider answered without state.');
    const browser = browserCookie(c, ctx);
    const login = await ctx.store.takeTransaction(state, browser === undefined ? undefined : sha256(browser));
    if (login === 'other browser') {
      ctx.emit('state_refused', { reason: 'other browser' });
      return failPage(c, 'Sign-in refused', 'This sign-in was started in another browser.', 403);
    }
    if (!login || login.expired) {
      ctx.emit('state_refused', { reason: login ? 'expired' : 'unknown or replayed' });
      return failPage(c, 'Sign-in link expired', 'This sign-in was already completed or has expired.');
    }
    const back = (params: Record<string, string>) =>
      redirectToClient(c, ctx.issuer, login.redirect_uri, { ...params, state: login.client_state });
    const couldNotComplete = {
      error: 'server_error',
      error_description: 'The identity provider could not complete the sign-in.',
    };
    let upstreamEndpoints: UpstreamEndpoints;
    try {
      upstreamEndpoints = await ctx.upstream.endpoints();
    } catch (error) {
      ctx.emit('upstream_failed', { message: (error as Error).message });
      return back(couldNotComplete);
    }
    // RFC 9207 2.4, for answers with a code or an error alike: an answer naming another issuer
    // (a mix-up), or none from a provider that says it always names itself, is not its answer.
    const answeredBy = query.get('iss');
    const expected = upstreamEndpoints.issuer;
    if (
      answeredBy === null
        ? upstreamEndpoints.authorizationResponseIss === true
        : typeof expected === 'string' && answeredBy !== expected
    ) {
      ctx.emit('upstream_iss_refused', { iss: answeredBy });
      return back({
        error: 'server_error',
        error_description: 'The sign-in answer did not come from the identity provider.',
      });
    }
    const upstreamError = query.get('error');
    if (upstreamError) {
      return back({
        error: upstreamError === 'access_denied' ? 'access_denied' : 'server_error',
        error_description: 'The sign-in at the identity provider did not complete.',
      });
    }
    const code = query.get('code');
    if (!code) return back({ error: 'server_error', error_description: 'The identity provider sent no code.' });
    let tokens: UpstreamTokens;
    let user: { userId: string; name: string | undefined; claims: Record<string, unknown> };
    try {
      const exchanged = await callUpstreamToken(ctx, upstreamEndpoints, {
        grant_type: 'authorization_code',
        code,
        redirect_uri: ctx.endpoints.callback,
        code_verifier: login.upstream_verifier,
      });
      if (!exchanged.ok) throw new Error(`upstream token endpoint: ${exchanged.error} (${exchanged.status})`);
      tokens = toStored(exchanged.tokens);
      user = await upstreamUser(ctx, upstreamEndpoints, tokens, login.nonce);
      if (ctx.permittedScopes) {
        const permitted = new Set(
          await ctx.permittedScopes({
            requested: login.scopes,
            userId: user.userId,
            claims: user.claims,
            upstreamScope: tokens.scope,
          }),
        );
        login.scopes = login.scopes.filter((scope) => permitted.has(scope));
      }
    } catch (error) {
      ctx.emit('upstream_failed', { message: (error as Error).message });
      // The provider signed the user in, but this server does not take them (another tenant).
      if (error instanceof OAuthError) return back({ error: error.error, error_description: error.message });
      return back(couldNotComplete);
    }
    if (login.scopes.length === 0) {
      ctx.emit('scopes_refused', { client_id: login.client_id, user_id: user.userId });
      return back({
        error: 'access_denied',
        error_description: 'None of the requested scopes is permitted for this user.',
      });
    }
    const grantId = `grant_${randomToken().slice(0, 32)}`;
    const ourCode = randomToken('mcpc_');
    await ctx.store.createGrantWithCode({
      grantId,
      code: ourCode,
      codeTtlSeconds: ctx.ttl.code,
      clientId: login.client_id,
      userId: user.userId,
      userName: user.name ?? null,
      scopes: login.scopes,
      resource: login.resource,
      sealedUpstreamTokens: encrypt(ctx.keys.upstreamTokens, JSON.stringify(tokens), grantId),
      upstreamExpiresAt: tokens.expires_at ?? null,
      redirectUri: login.redirect_uri,
      redirectUriSent: login.redirect_uri_sent,
      codeChallenge: login.code_challenge,
    });
    ctx.emit('login_completed', { client_id: login.client_id, user_id: user.userId });
    return back({ code: ourCode });
  };
}
