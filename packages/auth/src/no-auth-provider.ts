import type { AuthOutcome, AuthProvider } from './auth-provider.ts';
import { authenticateRequest } from './middleware.ts';

/** A provider that can also decide on a whole request (tests, callers outside `requireAuth`). */
export type RequestAuthProvider<P extends AuthProvider = AuthProvider> = P & {
  authenticate(request: Request): Promise<AuthOutcome>;
};

/** Adds `authenticate(request)`: `authenticateRequest` with this provider. */
export function requestAuthenticating<P extends AuthProvider>(provider: P): RequestAuthProvider<P> {
  return Object.assign(provider, { authenticate: (request: Request) => authenticateRequest(provider, request) });
}

/** No authentication: every request acts as one local user, credentials or not. For development on loopback only. */
export function noAuthProvider(options: { userId: string; scopes?: string[] }): RequestAuthProvider {
  // One principal serves every request (and is handed to tools): frozen, as a cached one is.
  const principal = Object.freeze({
    userId: options.userId,
    scopes: Object.freeze([...(options.scopes ?? [])]),
    method: 'none' as const,
  });
  const outcome = async (): Promise<AuthOutcome> => ({ ok: true, principal });
  return requestAuthenticating({
    name: 'none',
    challengeParameters: () => ({}),
    verify: outcome,
    withoutCredential: outcome,
  });
}
