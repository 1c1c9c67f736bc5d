import { createMiddleware } from 'hono/factory';
import { bearerChallenge } from './challenge.ts';
import type { Principal } from './principal.ts';
import type { AuthProvider } from './provider.ts';

export interface AuthVariables {
  principal: Principal;
}

/**
 * Lets a request through only with credentials the provider accepts, and puts the principal
 * on the context (`c.get('principal')`). Every failure is a 401 with a Bearer challenge; the
 * body says what failed in general terms, never whether a particular credential exists.
 */
export function requireAuth(provider: AuthProvider) {
  return createMiddleware<{ Variables: AuthVariables }>(async (c, next) => {
    const outcome = await provider.authenticate(c.req.raw);
    if (outcome.ok) {
      c.set('principal', outcome.principal);
      await next();
      return;
    }
    const challenge = bearerChallenge({
      ...provider.challengeParameters(),
      error: outcome.error,
      error_description: outcome.description,
    });
    return c.json(
      {
        error: outcome.error ?? 'unauthorized',
        error_description: outcome.description ?? 'This endpoint needs credentials.',
      },
      401,
      { 'WWW-Authenticate': challenge, 'Cache-Control': 'no-store' },
    );
  });
}

/** Reads the credential of `Authorization: Bearer <credential>`; undefined when absent or not Bearer. */
export function bearerCredential(request: Request): string | undefined {
  const header = request.headers.get('authorization');
  if (!header) return undefined;
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  return match?.[1];
}
