import type { Context, Handler } from 'hono';
import { readForm } from '../client-auth.ts';
import type { ProxyContext } from '../context.ts';
import { browserCookie, rememberConsent } from '../cookies.ts';
import { sha256 } from '../crypto.ts';
import { clientRedirect, continueTo, failPage } from '../responses.ts';
import { startUpstreamLogin, upstreamUnavailablePage } from '../upstream-login.ts';

/**
 * POST /consent: the consent form. Same-origin, the CSRF token of the page and the browser that
 * loaded it; the request is single use. Approve goes upstream, deny back to the client, each
 * through a page of this origin (`continueTo`), not a redirect.
 */
export function consentHandler(ctx: ProxyContext): Handler {
  return async (c: Context) => {
    let form: URLSearchParams;
    try {
      form = await readForm(c);
    } catch (error) {
      return failPage(c, 'Invalid request', (error as Error).message);
    }
    const origin = c.req.header('origin');
    if (origin !== undefined && origin !== ctx.issuerOrigin) {
      ctx.emit('consent_csrf_refused', { reason: 'origin' });
      return failPage(c, 'Request refused', 'The consent form was posted from another site.', 403);
    }
    const requestId = form.get('request') ?? '';
    const csrf = form.get('csrf') ?? '';
    const browser = browserCookie(c, ctx) ?? '';
    const pending = await ctx.store.findConsentRequest(requestId);
    if (!pending) {
      return failPage(c, 'This page has expired', 'The consent request is unknown, expired or already answered.');
    }
    if (
      !csrf ||
      !browser ||
      !sha256(csrf).equals(pending.csrf_sha256) ||
      !sha256(browser).equals(pending.browser_sha256)
    ) {
      ctx.emit('consent_csrf_refused', { reason: 'token' });
      return failPage(c, 'Request refused', 'The consent form could not be verified (CSRF check failed).', 403);
    }
    if (form.get('decision') === 'approve' && pending.shown_ms < ctx.consentMinimumViewMs) {
      // Not used up: the user goes back and approves again, having read it.
      ctx.emit('consent_too_soon', { shown_ms: Math.round(pending.shown_ms) });
      return failPage(
        c,
        'Approved too soon',
        'The approval came a moment after the page was shown, sooner than anyone reads it: a click or key press meant for another page can do that. Go back, read the request, and approve it again if you started it.',
        400,
      );
    }
    if (form.get('decision') === 'approve') {
      // Before the request is used up, so that the same form can be sent again once the outage ends.
      try {
        await ctx.upstream.endpoints();
      } catch (error) {
        return upstreamUnavailablePage(c, ctx, error, 'consent');
      }
    }
    const request = await ctx.store.takeConsentRequest(requestId);
    if (!request) return failPage(c, 'This page has expired', 'The consent request was already answered.');
    if (form.get('decision') !== 'approve') {
      ctx.emit('consent_denied', { client_id: request.client_id });
      const back = clientRedirect(ctx.issuer, request.redirect_uri, {
        error: 'access_denied',
        error_description: 'The user denied the request.',
        state: request.client_state,
      });
      return continueTo(c, back, 'the application');
    }
    let location: string;
    try {
      location = await startUpstreamLogin(
        ctx,
        {
          clientId: request.client_id,
          redirectUri: request.redirect_uri,
          redirectUriSent: request.redirect_uri_sent,
          scopes: request.scopes,
          clientState: request.client_state,
          codeChallenge: request.code_challenge,
        },
        browser,
      );
    } catch (error) {
      // Reachable a moment ago (checked above), gone now: the request is used up, start again.
      return upstreamUnavailablePage(c, ctx, error, 'consent', { requestUsedUp: true });
    }
    if (form.get('remember') === '1') rememberConsent(c, ctx, request.client_id, request.redirect_uri, request.scopes);
    ctx.emit('consent_approved', { client_id: request.client_id });
    return continueTo(c, location, ctx.upstream.displayName);
  };
}
