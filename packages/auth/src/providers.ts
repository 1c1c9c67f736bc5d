import type { ApiKeyVerifier } from './api-key-cache.ts';
import { authenticateRequest } from './middleware.ts';
import { type AuthOutcome, type AuthProvider, AuthUnavailableError } from './provider.ts';

export interface ApiKeyProviderOptions {
  /** An ApiKeyStore, or an ApiKeyCache in front of one. */
  store: Pick<ApiKeyVerifier, 'verify'>;
  /** The `realm` of the Bearer challenge. */
  realm?: string;
  /** Header that may carry the key instead of `Authorization: Bearer` (as in the talk). */
  headerName?: string;
}

/** Key-based access: a key registered with the server, sent as a Bearer credential or in `x-api-key`. */
export function apiKeyProvider(options: ApiKeyProviderOptions): AuthProvider {
  const headerName = options.headerName ?? 'x-api-key';
  const realm = options.realm ?? 'mcp';
  const rejected: AuthOutcome = {
    ok: false,
    error: 'invalid_token',
    description: 'The API key is not valid.',
  };
  return {
    name: 'key',
    challengeParameters: () => ({ realm }),
    credentialHeader: headerName,
    credentialName: 'key',
    async verify(credential) {
      let key: Awaited<ReturnType<ApiKeyVerifier['verify']>>;
      try {
        key = await options.store.verify(credential);
      } catch (error) {
        // The database, not the key, failed: 503 and a retry, not a 401 or a 500.
        throw new AuthUnavailableError('The key store cannot be reached.', { cause: error });
      }
      if (!key) return rejected;
      return { ok: true, principal: { userId: key.userId, scopes: key.scopes, method: 'api_key', clientId: key.id } };
    },
  };
}

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
  const principal = { userId: options.userId, scopes: options.scopes ?? [], method: 'none' as const };
  const outcome = async (): Promise<AuthOutcome> => ({ ok: true, principal });
  return requestAuthenticating({
    name: 'none',
    challengeParameters: () => ({}),
    verify: outcome,
    withoutCredential: outcome,
  });
}
