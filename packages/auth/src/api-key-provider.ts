import type { ApiKeyVerifier } from './api-key-cache.ts';
import { type AuthOutcome, type AuthProvider, AuthUnavailableError } from './auth-provider.ts';

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
