export {
  API_KEY_PREFIX,
  API_KEYS_NAMESPACE,
  type ApiKeyRecord,
  ApiKeyStore,
  apiKeyMigrations,
  type CreatedApiKey,
  hashApiKey,
  looksLikeApiKey,
} from './api-keys.ts';
export { bearerChallenge } from './challenge.ts';
export { type AuthVariables, bearerCredential, requireAuth } from './middleware.ts';
export { type Principal, principalFromAuthInfo, requirePrincipal, toAuthInfo } from './principal.ts';
export type { AuthOutcome, AuthProvider } from './provider.ts';
export { type ApiKeyProviderOptions, apiKeyProvider, noAuthProvider } from './providers.ts';
