import { isLoopbackRedirectHost } from '@mcp-auth-stack/loopback';
import type { Context, Handler } from 'hono';
import { parameterProblem, resolveClient } from '../client-auth.ts';
import { isRegisteredRedirectUri, type ProxyClient } from '../clients.ts';
import type { ProxyContext } from '../context.ts';
import { consentRemembered, ensureBrowserId } from '../cookies.ts';
import { PKCE_CHALLENGE, randomToken } from '../crypto.ts';
import { OAuthError } from '../errors.ts';
import { consentPage } from '../pages.ts';
import { failPage, headWithoutEffect, htmlPage, redirect, redirectToClient } from '../responses.ts';
import { startUpstreamLogin, upstreamUnavailablePage } from '../upstream-login.ts';

const UNKNOWN_CLIENT =
  'This application is not registered here. If it was before, its registration was removed after going unused: remove the sign-in it saved for this server, and it registers again (VS Code: the command "Authentication: Remove Dynamic Authentication Providers"; mcp-remote: its ~/.mcp-auth folder).';

/** RFC 6749 A.5's VSCHAR: the characters of `state`. */
const VSCHAR = /^[\x20-\x7e]+$/;

/** The requested scopes (all known, no duplicates), or the default scopes when none are asked for. */
function parseScopes(ctx: ProxyContext, requested: string | undefined): string[] {
  if (requested === undefined || requested.trim() === '') return ctx.scopes.defaults;
  const scopes = [...new Set(requested.split(' ').filter(Boolean))];
  const unknown = scopes.filter((scope) => !ctx.scopes.supported.includes(scope));
  // The scopes there are, not the one asked for: the answer may be this origin's own page, which
  // must not show a link's words as its own.
  if (unknown.length > 0) {
    throw new OAuthError('invalid_scope', `Unknown scope; the scopes here are ${ctx.scopes.supported.join(', ')}.`);
  }
  return scopes;
}

/**
 * GET /authorize: checks the client and its redirect URI first (errors before that are shown
 * here, never redirected), then the request; answers with the consent page, or goes straight
 * upstream when this browser remembers the consent.
 */
export function authorizeHandler(ctx: ProxyContext): Handler {
  return async (c: Context) => {
    const head = headWithoutEffect(c);
    if (head) return head;
    ctx.store.maybeCleanup();
    const query = new URL(c.req.url).searchParams;
    // RFC 6749 3.1: no parameter more than once. Before anything is read, so that no check and
    // the later use can each see another copy.
    // RFC 8707 2 lets `resource` repeat; each must be this server's (below).
    const problem = parameterProblem(query, ['resource']);
    if (problem !== undefined) return failPage(c, 'Invalid request', problem);
    // RFC 6749 3.1: a parameter sent without a value is treated as omitted.
    const param = (name: string) => query.get(name) || null;
    const clientId = param('client_id');
    if (!clientId) return failPage(c, 'Invalid request', 'The application did not say who it is (client_id).');
    let client: ProxyClient | undefined;
    try {
      client = await resolveClient(ctx, c, clientId);
    } catch (error) {
      if (!(error instanceof OAuthError)) throw error;
      ctx.emit('client_refused', { client_id: clientId, reason: error.message });
      return failPage(c, 'Unknown application', error.message);
    }
    // Most often a registration removed unused (store.cleanup) whose client kept its id: no
    // client we know registers again by itself, so the page says how to make it.
    if (!client) return failPage(c, 'Unknown application', UNKNOWN_CLIENT);
    let redirectUri = param('redirect_uri');
    const redirectUriSent = redirectUri !== null;
    if (redirectUri === null && client.redirectUris.length === 1) redirectUri = client.redirectUris[0] as string;
    if (redirectUri === null || !isRegisteredRedirectUri(client.redirectUris, redirectUri)) {
      ctx.emit('redirect_uri_refused', { client_id: clientId });
      return failPage(
        c,
        'Invalid redirect',
        'The redirect URI is not one this application registered, so the request was stopped here.',
      );
    }
    // From here on, errors go back to the (verified) redirect URI when it is on loopback, where a
    // native client waits for them. Anyone may register any https redirect URI (DCR, or a
    // metadata document), so sending a browser there before the user has said yes to the
    // application would make this origin an open redirector (RFC 9700 4.11.2): those errors
    // are shown here.
    // RFC 6749 A.5: state is printable ASCII (VSCHAR), stored until the callback; one that is
    // not is refused, and not sent back.
    const sentState = param('state');
    const stateValid = sentState === null || (sentState.length <= 1024 && VSCHAR.test(sentState));
    const state = stateValid ? sentState : null;
    const errorsRedirected = isLoopbackRedirectHost(new URL(redirectUri).hostname);
    const back = (error: string, description: string) =>
      errorsRedirected
        ? redirectToClient(c, ctx.issuer, redirectUri, { error, error_description: description, state })
        : failPage(c, 'Invalid request', `The application's sign-in request was refused (${error}): ${description}`);
    const responseType = param('response_type');
    // RFC 6749 4.1.2.1: a missing parameter is invalid_request; another value is unsupported.
    if (responseType === null) return back('invalid_request', 'response_type is required.');
    if (responseType !== 'code') return back('unsupported_response_type', 'Only response_type=code.');
    const challenge = param('code_challenge');
    if (!challenge || !PKCE_CHALLENGE.test(challenge)) return back('invalid_request', 'PKCE code_challenge required.');
    if (param('code_challenge_method') !== 'S256') {
      return back('invalid_request', 'code_challenge_method must be S256.');
    }
    if (query.getAll('resource').some((requested) => requested !== '' && requested !== ctx.resource)) {
      return back('invalid_target', `resource must be ${ctx.resource}.`);
    }
    if (!stateValid) return back('invalid_request', 'state must be at most 1024 printable ASCII characters.');
    let scopes: string[];
    try {
      scopes = parseScopes(ctx, param('scope') ?? undefined);
    } catch (error) {
      return back((error as OAuthError).error, (error as Error).message);
    }
    // Before the limit: a sign-in the upstream's outage refuses stores nothing, and people
    // retrying through an outage must not use up their address's sign-ins for after it.
    try {
      await ctx.upstream.endpoints();
    } catch (error) {
      return upstreamUnavailablePage(c, ctx, error, 'authorize');
    }
    // Each request past this point stores a pending login (a consent request or an upstream
    // transaction) for minutes: an address may not fill the table.
    if (!ctx.limits.authorizations.allow(ctx.addressOf(c))) {
      ctx.emit('authorization_limited', { client_id: client.clientId });
      return failPage(c, 'Too many sign-ins', 'Too many sign-ins from this address; try again in a minute.', 429, {
        'Retry-After': String(ctx.limits.authorizations.retryAfterSeconds()),
      });
    }
    const browser = ensureBrowserId(c, ctx);
    const pending = {
      clientId: client.clientId,
      redirectUri,
      redirectUriSent,
      scopes,
      clientState: state,
      codeChallenge: challenge,
    };

    if (consentRemembered(c, ctx, client.clientId, redirectUri, scopes)) {
      let location: string;
      try {
        location = await startUpstreamLogin(ctx, pending, browser);
      } catch (error) {
        return upstreamUnavailablePage(c, ctx, error, 'authorize');
      }
      ctx.emit('consent_remembered', { client_id: client.clientId });
      return redirect(c, location);
    }

    const requestId = randomToken();
    const csrf = randomToken();
    await ctx.store.createConsentRequest({
      ...pending,
      requestId,
      csrf,
      browser,
      resource: ctx.resource,
      ttlSeconds: ctx.ttl.login,
    });
    const nonce = randomToken().slice(0, 22);
    const page = consentPage({
      nonce,
      action: ctx.endpoints.consent,
      requestId,
      csrf,
      clientName: client.clientName,
      clientId: client.clientId,
      clientKind: client.kind,
      redirectUri,
      scopes: scopes.map((name) => ({ name, description: ctx.scopes.descriptions?.[name] })),
      resourceName: ctx.resourceName,
      resource: ctx.resource,
      upstreamName: ctx.upstream.displayName,
    });
    return htmlPage(c, page, nonce);
  };
}
