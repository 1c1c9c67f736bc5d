import { createMiddleware } from 'hono/factory';
import { type AuthOutcome, type AuthProvider, AuthUnavailableError } from './auth-provider.ts';
import { bearerChallenge } from './challenge.ts';
import type { Principal } from './principal.ts';

export interface AuthVariables {
  principal: Principal;
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
    let outcome: AuthOutcome;
    try {
      outcome = await authenticateRequest(provider, c.req.raw);
    } catch (error) {
      if (!(error instanceof AuthUnavailableError)) throw error;
      return c.json(
        { error: 'temporarily_unavailable', error_description: 'Credentials cannot be verified right now.' },
        503,
        { 'Retry-After': String(error.retryAfterSeconds), 'Cache-Control': 'no-store' },
      );
    }
    if (outcome.ok) {
      c.set('principal', outcome.principal);
      await next();
      return;
    }
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
  });
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
  if (fromHeader && fromBearer && fromHeader !== fromBearer) {
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
    return /^Bearer\s+\S/i.test(header)
      ? { ok: false, error: 'invalid_request', description }
      : { ok: false, description };
  }
  return { ok: false };
}

/** Reads the credential of `Authorization: Bearer <credential>`; undefined when absent or not Bearer. */
export function bearerCredential(request: Request): string | undefined {
  const header = request.headers.get('authorization');
  if (!header) return undefined;
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  return match?.[1];
}
