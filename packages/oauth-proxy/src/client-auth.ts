import { readBodyWithin } from '@mcp-auth-stack/mcp-hono';
import type { Context } from 'hono';
import type { ProxyClient } from './clients.ts';
import type { ProxyContext } from './context.ts';
import { safeEqual, sha256 } from './crypto.ts';
import { OAuthError } from './errors.ts';

/** Largest form body at /consent, /token and /revoke. */
const MAX_FORM_BYTES = 16 * 1024;

/** Most parameters in a request to the authorization server: its requests carry about ten. */
export const MAX_PARAMETERS = 100;

/**
 * Why the parameters cannot be read: too many of them, or one given twice other than
 * `repeatable` ones (RFC 6749 3.1, 3.2). In one pass: a check per name over the whole list
 * took a second of CPU for every ten requests of 3,000 names, before any rate limit.
 */
export function parameterProblem(params: URLSearchParams, repeatable: readonly string[]): string | undefined {
  if (params.size > MAX_PARAMETERS) return `More than ${MAX_PARAMETERS} parameters.`;
  const seen = new Set<string>();
  for (const [name] of params) {
    if (seen.has(name) && !repeatable.includes(name)) return `Parameter ${name} is repeated.`;
    seen.add(name);
  }
  return undefined;
}

/**
 * A form-encoded body, at most 16 KB, no parameter twice (RFC 6749 3.1, 3.2) but those named
 * `repeatable` (RFC 8707's `resource`), and without the parameters sent with no value, which
 * count as omitted (3.1).
 */
export async function readForm(c: Context, repeatable: readonly string[] = []): Promise<URLSearchParams> {
  const type = c.req.header('content-type') ?? '';
  if (!type.toLowerCase().startsWith('application/x-www-form-urlencoded')) {
    throw new OAuthError('invalid_request', 'Send application/x-www-form-urlencoded.');
  }
  const text = await readBodyWithin(c.req.raw, MAX_FORM_BYTES);
  if (text === undefined) throw new OAuthError('invalid_request', 'The request is too large.');
  const sent = new URLSearchParams(text);
  const problem = parameterProblem(sent, repeatable);
  if (problem) throw new OAuthError('invalid_request', problem);
  const form = new URLSearchParams();
  for (const [name, value] of sent) if (value !== '') form.append(name, value);
  return form;
}

/** Client authentication at /token and /revoke: `none` by client_id, secrets by Basic or form. */
export async function authenticateClient(ctx: ProxyContext, c: Context, form: URLSearchParams): Promise<ProxyClient> {
  let clientId = form.get('client_id') ?? undefined;
  let secret = form.get('client_secret') ?? undefined;
  const header = c.req.header('authorization');
  if (header?.toLowerCase().startsWith('basic ')) {
    // RFC 6749 2.3: one authentication method per request; the form's secret was ignored.
    if (secret !== undefined) {
      throw new OAuthError('invalid_request', 'Use one client authentication method: Basic or client_secret.', 400);
    }
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new OAuthError('invalid_client', 'Malformed Basic credentials.', 401);
    // RFC 6749 2.3.1: both halves are form-encoded; bad escapes are bad credentials, not a 500.
    const formDecode = (part: string) => {
      try {
        return decodeURIComponent(part.replace(/\+/g, ' '));
      } catch {
        throw new OAuthError('invalid_client', 'Malformed Basic credentials.', 401);
      }
    };
    const basicId = formDecode(decoded.slice(0, colon));
    if (clientId !== undefined && clientId !== basicId) {
      throw new OAuthError('invalid_request', 'Two different client ids.', 400);
    }
    clientId = basicId;
    secret = formDecode(decoded.slice(colon + 1));
  }
  if (!clientId) throw new OAuthError('invalid_client', 'client_id is required.', 401);
  // The same per-address limit as at /authorize: /token and /revoke take URL client ids too.
  const client = await resolveClient(ctx, c, clientId).catch((error: unknown) => {
    if (error instanceof OAuthError) throw new OAuthError('invalid_client', error.message, 401);
    throw error;
  });
  if (!client) throw new OAuthError('invalid_client', 'Unknown client.', 401);
  if (client.secretSha256) {
    if (secret === undefined || !safeEqual(sha256(secret).toString('hex'), client.secretSha256.toString('hex'))) {
      throw new OAuthError('invalid_client', 'Client authentication failed.', 401);
    }
  } else if (secret) {
    // RFC 6749 3.2.1: authentication that is included is checked; a public client has no secret
    // it could pass with (an empty Basic password, which some libraries send, is none).
    throw new OAuthError('invalid_client', 'This client has no secret: authenticate with client_id alone.', 401);
  }
  return client;
}

/** A registered client, or a metadata document fetched within the caller's per-address limit. */
export function resolveClient(ctx: ProxyContext, c: Context, clientId: string): Promise<ProxyClient | undefined> {
  return ctx.clients.resolve(clientId, { mayFetch: () => ctx.limits.documentFetches.allow(ctx.addressOf(c)) });
}
