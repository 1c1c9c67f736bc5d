import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { randomToken } from './crypto.ts';
import { NO_STORE } from './errors.ts';
import { continuePage, errorPage } from './pages.ts';

/**
 * The browser-facing answers (the consent and error pages, redirects). Built on the context, so
 * cookies set with `hono/cookie` go out with them.
 */
export function htmlPage(c: Context, body: string, nonce: string, status: ContentfulStatusCode = 200): Response {
  return c.body(body, status, {
    'Content-Type': 'text/html; charset=utf-8',
    // The consent form posts to this origin, which answers with a page (`continueTo`), never a
    // redirect: a browser checks every redirect after a form's POST against form-action.
    // The nonce admits this response's own style and script elements, nothing else.
    'Content-Security-Policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`,
    'X-Frame-Options': 'DENY',
    'X-Content-Type-Options': 'nosniff',
    // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the
    // consent form's POST, which the CSRF check then could not tell from a sandboxed frame's.
    'Referrer-Policy': 'same-origin',
    ...NO_STORE,
  });
}

/** An error shown to the user, for when there is no verified redirect URI to send the error to. */
export function failPage(
  c: Context,
  title: string,
  message: string,
  status: ContentfulStatusCode = 400,
  headers: Record<string, string> = {},
): Response {
  const nonce = randomToken().slice(0, 22);
  const page = htmlPage(c, errorPage(nonce, title, message), nonce, status);
  for (const [name, value] of Object.entries(headers)) page.headers.set(name, value);
  return page;
}

/**
 * The answer to the consent form: a page of this origin that goes on to `location`. A redirect
 * there would be checked, with every further redirect, against the consent page's form-action,
 * which cannot name every place the chain may lead: an IPv6 loopback redirect URI
 * (`http://[::1]:…`; CSP has no syntax for it) or an upstream's next hop (a single sign-on that
 * redirects on to another provider). After a page, the browser goes on as from a link.
 */
export function continueTo(c: Context, location: string, where: string): Response {
  const nonce = randomToken().slice(0, 22);
  return htmlPage(c, continuePage(nonce, location, where), nonce);
}

export function redirect(c: Context, location: string): Response {
  return c.body(null, 302, { Location: location, ...NO_STORE });
}

/** Back to the client's (verified) redirect URI, with `iss` (RFC 9207) on every answer. */
export function redirectToClient(
  c: Context,
  issuer: string,
  redirectUri: string,
  params: Record<string, string | undefined | null>,
): Response {
  return redirect(c, clientRedirect(issuer, redirectUri, params));
}

/** The client's (verified) redirect URI with `params` and `iss` (RFC 9207). */
export function clientRedirect(
  issuer: string,
  redirectUri: string,
  params: Record<string, string | undefined | null>,
): string {
  const target = new URL(redirectUri);
  for (const [name, value] of Object.entries(params)) if (value != null) target.searchParams.set(name, value);
  target.searchParams.set('iss', issuer);
  return target.toString();
}

/**
 * The answer to HEAD on a page whose GET does something (stores a consent request, takes a
 * sign-in): Hono runs the GET handler for HEAD, and a link checker or an unfurler asking only
 * for the headers would store one, or use up a sign-in, for nothing.
 */
export function headWithoutEffect(c: Context): Response | undefined {
  return c.req.method === 'HEAD' ? new Response(null, { status: 200, headers: NO_STORE }) : undefined;
}
