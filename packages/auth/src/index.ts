export { ApiKeyCache, type ApiKeyCacheOptions, type ApiKeyVerifier, type VerifiedApiKey } from './api-key-cache.ts';
export { type ApiKeyProviderOptions, apiKeyProvider } from './api-key-provider.ts';
export {
  API_KEY_PREFIX,
  API_KEYS_CHANNEL,
  API_KEYS_NAMESPACE,
  ApiKeyInputError,
  type ApiKeyRecord,
  ApiKeyStore,
  apiKeyMigrations,
  type CreatedApiKey,
  couldBeAKey,
  hashApiKey,
  holdsAKey,
  looksLikeApiKey,
  MAX_API_KEY_LIFETIME_SECONDS,
  type VerifiedKey,
} from './api-keys.ts';
export {
  type AuthOutcome,
  type AuthProvider,
  AuthUnavailableError,
  type RouteSource,
  withRoutes,
} from './auth-provider.ts';
export { bearerChallenge } from './challenge.ts';
export {
  CLIENT_GRANT_TYPES,
  checkRegistration,
  isRegisteredRedirectUri,
  MAX_REGISTRATION_DEPTH,
  showsWhereItLeads,
} from './client-metadata.ts';
export {
  MAX_UPSTREAM_ANSWER_BYTES,
  parseJsonAnswer,
  RemoteKeySet,
  type RemoteKeySetOptions,
  readAnswer,
} from './jwks.ts';
export {
  DEFAULT_JWT_ALGORITHMS,
  type JwtBearerProvider,
  type JwtBearerProviderOptions,
  jwtBearerProvider,
  type ReadinessReport,
} from './jwt.ts';
export {
  mountProtectedResourceMetadata,
  type ProtectedResourceMetadataOptions,
  parseResourceUrl,
  protectedResourceMetadata,
  protectedResourceMetadataUrl,
} from './metadata.ts';
export {
  type AuthVariables,
  authenticateRequest,
  bearerCredential,
  requireAuth,
  reverifyAfterSlowBody,
  type SlowBodyOptions,
} from './middleware.ts';
export { noAuthProvider, type RequestAuthProvider, requestAuthenticating } from './no-auth-provider.ts';
export { displayNameProblem, misleadingTextProblem } from './plain-text.ts';
export { type Principal, principalFromAuthInfo, requirePrincipal, toAuthInfo } from './principal.ts';
export { clientAddress, FixedWindowLimiter } from './rate-limit.ts';
export {
  filterToolsListResult,
  holdsScope,
  isToolAllowed,
  type McpCall,
  type McpScopeGuardOptions,
  type McpScopeRequirements,
  missingScopes,
  requireMcpScopes,
  type ScopeCheck,
  scopesRequiredFor,
} from './scopes.ts';
export { VerifiedTokenCache } from './token-cache.ts';
