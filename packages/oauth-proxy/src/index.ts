/** Re-exported from @mcp-auth-stack/loopback: the SSRF guard's notion of a loopback address. */
export { isLoopbackAddress } from '@mcp-auth-stack/loopback';
export {
  ClientError,
  isMetadataDocumentUrl,
  isRegisteredRedirectUri,
  type ProxyClient,
  validateClientMetadata,
} from './clients.ts';
export { OAuthError } from './errors.ts';
export { OAUTH_PROXY_NAMESPACE, oauthProxyMigrations } from './migrations.ts';
export {
  generateSigningKey,
  loadSigningKey,
  type OAuthProxy,
  type OAuthProxyOptions,
  oauthProxy,
} from './proxy.ts';
export { isPrivateAddress, SafeFetchError, safeFetchJson } from './ssrf.ts';
export {
  DEFAULT_UPSTREAM_SCOPES,
  type EntraUpstreamOptions,
  entraUpstream,
  isEntraMultiTenant,
  isEntraTenant,
  type OidcUpstreamOptions,
  oidcUpstream,
  type Upstream,
  type UpstreamEndpoints,
  UpstreamUnavailableError,
} from './upstream.ts';
