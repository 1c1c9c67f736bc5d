import { readBodyKeepingIt } from '@mcp-auth-stack/mcp-hono';
import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import { type AuthOutcome, type AuthProvider, AuthUnavailableError } from './auth-provider.ts';
import { bearerChallenge } from './challenge.ts';
import type { Principal } from './principal.ts';

export interface AuthVariables {
  principal: Principal;
  /** When `requireAuth` verified the credential (`performance.now()`), for `reverifyAfterSlowBody`. */
  credentialVerifiedAt: number;
}

/**
 * Lets a request through only with credentials the provider accepts, and puts the principal
 * on the context (`c.get('principal')`). Every failure is a 401 with a Bearer challenge (a 400
 * for a malformed Bearer header); the body says what failed in general terms, never whether a
 * particular credential exists.
 * When the provider cannot decide (`AuthUnavailableError`) the answer is 503 with
 * `Retry-After`: a 401 would send the client through a pointless new authorization.
 */
export function requireAuth(provider: AuthProvider) {
  return createMiddleware<{ Variables: AuthVariables }>(async (c, next) => {
    const outcome = await authenticateOrUnavailable(provider, c.req.raw);
    if (outcome instanceof AuthUnavailableError) return unavailable(c, outcome);
    if (!outcome.ok) return refusal(c, provider, outcome);
    c.set('principal', outcome.principal);
    c.set('credentialVerifiedAt', performance.now());
    await next();
  });
}

export interface SlowBodyOptions {
  /** Largest body read here; a larger one is left to the handler, which refuses it. Default 1 MiB. */
  maxBodyBytes?: number;
  /** How old the verification may be once the body is in; default 250 ms. */
  maxVerificationAgeMs?: number;
}

/**
 * `requireAuth` verifies the credential when the headers arrive, and a client may then take the
 * server's body timeout (30 s here) to send the body. Mounted after `requireAuth`, right before
 * the handler: reads the body (once: the MCP endpoint gets the same read, `readBodyKeepingIt`)
 * and, when it came in more than `maxVerificationAgeMs` after the verification, verifies the
 * credential again. So a key revoked, or a token expired, while its request was still being sent
 * does not run the call: a review wrote an expense 27 s after revoking the key that sent it.
 * A body that arrives at once (every client's) costs no second verification.
 */
export function reverifyAfterSlowBody(provider: AuthProvider, options: SlowBodyOptions = {}) {
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  const maxAgeMs = options.maxVerificationAgeMs ?? 250;
  return createMiddleware<{ Variables: AuthVariables }>(async (c, next) => {
    const verifiedAt = c.get('credentialVerifiedAt');
    if (verifiedAt === undefined) throw new Error('reverifyAfterSlowBody must run after requireAuth.');
    if (c.req.raw.body !== null) await readBodyKeepingIt(c.req, maxBodyBytes);
    if (performance.now() - verifiedAt > maxAgeMs) {
      const outcome = await authenticateOrUnavailable(provider, c.req.raw);
      if (outcome instanceof AuthUnavailableError) return unavailable(c, outcome);
      if (!outcome.ok) return refusal(c, provider, outcome);
      c.set('credentialVerifiedAt', performance.now());
    }
    await next();
  });
}

async function authenticateOrUnavailable(
  provider: AuthProvider,
  request: Request,
): Promise<AuthOutcome | AuthUnavailableError> {
  try {
    return await authenticateRequest(provider, request);
  } catch (error) {
    if (error instanceof AuthUnavailableError) return error;
    throw error;
  }
}

function unavailable(c: Context, error: AuthUnavailableError): Response {
  return c.json(
    { error: 'temporarily_unavailable', error_description: 'Credentials cannot be verified right now.' },
    503,
    { 'Retry-After': String(error.retryAfterSeconds), 'Cache-Control': 'no-store' },
  );
}

function refusal(c: Context, provider: AuthProvider, outcome: Extract<AuthOutcome, { ok: false }>): Response {
  // RFC 6750 3.1: no error code in the challenge for a request without a usable credential
  // (none, or another scheme), and a malformed Bearer header is a 400.
  const challenge = bearerChallenge({
    ...provider.challengeParameters(),
    ...(outcome.error ? { error: outcome.error, error_description: outcome.description } : {}),
  });
  return c.json(
    {
      error: outcome.error ?? 'unauthorized',
      error_description: outcome.description ?? 'This endpoint needs credentials.',
    },
    outcome.error === 'invalid_request' ? 400 : 401,
    { 'WWW-Authenticate': challenge, 'Cache-Control': 'no-store' },
  );
}

/**
 * Takes the credential from the request once and lets the provider verify it. No credential:
 * the provider's `withoutCredential`, else `invalid_request` when the `Authorization` header
 * says Bearer but is malformed, else the bare 401 (RFC 6750 3.1, which also covers another
 * scheme: no error code for an unsupported authentication method), with what to send in the body.
 */
export async function authenticateRequest(provider: AuthProvider, request: Request): Promise<AuthOutcome> {
  const fromHeader = provider.credentialHeader ? request.headers.get(provider.credentialHeader)?.trim() : undefined;
  const fromBearer = bearerCredential(request);
  // RFC 6750 2: one way per request. Two different credentials would leave the caller's identity
  // to whichever header this server reads first (a gateway adds one, the client sends the other).
  // A malformed Bearer header beside the other header counts as a second credential too.
  const secondBearer =
    fromBearer ?? (MALFORMED_BEARER.test(request.headers.get('authorization') ?? '') ? '' : undefined);
  if (fromHeader && secondBearer !== undefined && fromHeader !== secondBearer) {
    const name = provider.credentialName ?? 'access token';
    return {
      ok: false,
      error: 'invalid_request',
      description: `Two different credentials: send the ${name} either as Authorization: Bearer or as ${provider.credentialHeader}, not both.`,
    };
  }
  const credential = fromHeader || fromBearer;
  if (credential) return provider.verify(credential);
  if (provider.withoutCredential) return provider.withoutCredential();
  const header = request.headers.get('authorization');
  if (header !== null) {
    const name = provider.credentialName ?? 'access token';
    const placeholder = name === 'access token' ? 'token' : name;
    // Within RFC 6750's characters for error_description: no quotes, no backslash.
    const description = `Send the ${name} as Authorization: Bearer <${placeholder}>.`;
    // `Bearer` with nothing after it (an empty token; fetch trims the trailing space) carries no
    // credential: the bare 401, whose challenge starts an MCP client's sign-in.
    return MALFORMED_BEARER.test(header)
      ? { ok: false, error: 'invalid_request', description }
      : { ok: false, description };
  }
  return { ok: false };
}

/** `Bearer` and something after it: a credential, or a malformed one when `bearerCredential` finds none. */
const MALFORMED_BEARER = /^Bearer\s+\S/i;

/** Reads the credential of `Authorization: Bearer <credential>`; undefined when absent or not Bearer. */
export function bearerCredential(request: Request): string | undefined {
  const header = request.headers.get('authorization');
  if (!header) return undefined;
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  return match?.[1];
}
