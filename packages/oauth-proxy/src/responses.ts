import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { randomToken } from './crypto.ts';
import { NO_STORE } from './errors.ts';
import { errorPage } from './pages.ts';

/**
 * The browser-facing answers (the consent and error pages, redirects). Built on the context, so
 * cookies set with `hono/cookie` go out with them.
 */
export function htmlPage(
  c: Context,
  body: string,
  nonce: string,
  status: ContentfulStatusCode = 200,
  formAction = '',
): Response {
  return c.body(body, status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Security-Policy': `default-src 'none'; style-src 'nonce-${nonce}'; form-action 'self' ${formAction}; frame-ancestors 'none'; base-uri 'none'`,
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
  const target = new URL(redirectUri);
  for (const [name, value] of Object.entries(params)) if (value != null) target.searchParams.set(name, value);
  target.searchParams.set('iss', issuer);
  return redirect(c, target.toString());
}
