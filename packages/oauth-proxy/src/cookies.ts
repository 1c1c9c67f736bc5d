import { isRegisteredRedirectUri } from '@mcp-auth-stack/auth';
import type { Context } from 'hono';
import { getCookie, setCookie } from 'hono/cookie';
import type { CookieOptions } from 'hono/utils/cookie';
import type { ProxyContext } from './context.ts';
import { randomToken, sign, verifySigned } from './crypto.ts';

// Cookies: `__Host-` (Secure, Path=/, no Domain) over https. Browsers refuse Secure cookies
// (and so the prefix) on plain http, so a development issuer on http uses the bare names.
const BROWSER_COOKIE = 'mcp_oauth_browser';
const CONSENT_COOKIE = 'mcp_oauth_consent';
/** At most this many remembered clients per browser (the oldest go first). */
const MAX_REMEMBERED = 20;
/**
 * And at most this long, signed: browsers drop a cookie whose name and value pass 4096 bytes
 * (RFC 6265bis 5.6), and the approval it would have remembered with it, every time after.
 */
const MAX_CONSENT_COOKIE_BYTES = 3800;

function prefixOf(ctx: ProxyContext): 'host' | undefined {
  return ctx.secure ? 'host' : undefined;
}
function cookieOptions(ctx: ProxyContext, maxAge?: number): CookieOptions {
  return {
    path: '/',
    httpOnly: true,
    secure: ctx.secure,
    sameSite: 'Lax',
    ...(maxAge === undefined ? {} : { maxAge }),
    ...(ctx.secure ? { prefix: 'host' as const } : {}),
  };
}

/** The browser's id (binds a consent and a login to the browser that started them), or undefined. */
export function browserCookie(c: Context, ctx: ProxyContext): string | undefined {
  return getCookie(c, BROWSER_COOKIE, prefixOf(ctx));
}

/** The browser's id, set as a session cookie when it has none (or a malformed one). */
export function ensureBrowserId(c: Context, ctx: ProxyContext): string {
  const existing = browserCookie(c, ctx);
  if (existing && /^[A-Za-z0-9_-]{43}$/.test(existing)) return existing;
  const value = randomToken();
  setCookie(c, BROWSER_COOKIE, value, cookieOptions(ctx));
  return value;
}

interface RememberedConsent {
  /** client id */
  c: string;
  /**
   * The redirect URI the consent page showed: a client may register several, and an approval
   * seen for a loopback one must not send codes to another.
   */
  r: string;
  /** scopes */
  s: string[];
  /** expiry, seconds since the epoch */
  x: number;
}

/** Version 1 entries had no redirect URI; they are read as none (ask again). */
const CONSENT_COOKIE_VERSION = 2;

function rememberedConsents(c: Context, ctx: ProxyContext): RememberedConsent[] {
  const raw = getCookie(c, CONSENT_COOKIE, prefixOf(ctx));
  if (!raw) return [];
  const payload = verifySigned(ctx.keys.cookies, raw) as { v?: number; e?: RememberedConsent[] } | undefined;
  if (payload?.v !== CONSENT_COOKIE_VERSION || !Array.isArray(payload.e)) return [];
  const now = Math.floor(Date.now() / 1000);
  return payload.e.filter(
    (entry) => typeof entry?.c === 'string' && typeof entry.r === 'string' && Array.isArray(entry.s) && entry.x > now,
  );
}

/**
 * This browser approved this client, sending to this redirect URI (a loopback one on any port,
 * as at `/authorize`), for at least these scopes, and the approval is still current.
 */
export function consentRemembered(
  c: Context,
  ctx: ProxyContext,
  clientId: string,
  redirectUri: string,
  scopes: readonly string[],
): boolean {
  return rememberedConsents(c, ctx).some(
    (entry) =>
      entry.c === clientId &&
      isRegisteredRedirectUri([entry.r], redirectUri) &&
      scopes.every((scope) => entry.s.includes(scope)),
  );
}

/** Remembers the approval in a signed cookie (replacing an older one for the same client and redirect URI). */
export function rememberConsent(
  c: Context,
  ctx: ProxyContext,
  clientId: string,
  redirectUri: string,
  scopes: string[],
): void {
  const now = Math.floor(Date.now() / 1000);
  const entries = rememberedConsents(c, ctx).filter((entry) => entry.c !== clientId || entry.r !== redirectUri);
  entries.push({ c: clientId, r: redirectUri, s: scopes, x: now + ctx.ttl.rememberConsent });
  let kept = entries.slice(-MAX_REMEMBERED);
  let value = sign(ctx.keys.cookies, { v: CONSENT_COOKIE_VERSION, e: kept });
  while (value.length > MAX_CONSENT_COOKIE_BYTES && kept.length > 1) {
    kept = kept.slice(1);
    value = sign(ctx.keys.cookies, { v: CONSENT_COOKIE_VERSION, e: kept });
  }
  // One approval too large alone (a redirect URI of kilobytes) is not remembered: the browser
  // would drop the cookie, and the cookie it has keeps what it remembered.
  if (value.length > MAX_CONSENT_COOKIE_BYTES) return;
  setCookie(c, CONSENT_COOKIE, value, cookieOptions(ctx, ctx.ttl.rememberConsent));
}
