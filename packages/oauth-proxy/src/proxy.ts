import { type AuthOutcome, type AuthProvider, authenticateRequest } from '@mcp-auth-stack/auth';
import type { Env, Hono } from 'hono';
import type { JWK } from 'jose';
import { type OAuthProxyOptions, resolveContext } from './context.ts';
import { authorizationServerMetadata, mountAuthorizationServer } from './router.ts';
import { publicJwks, verifyAccessToken } from './tokens.ts';

export type { OAuthProxyOptions } from './context.ts';
export { generateSigningKey, loadSigningKey } from './keys.ts';

export interface OAuthProxy extends AuthProvider {
  /** `authenticateRequest` with the proxy, for callers that hold a request. */
  authenticate(request: Request): Promise<AuthOutcome>;
  readonly issuer: string;
  readonly resource: string;
  readonly resourceMetadataUrl: string;
  mount<E extends Env>(app: Hono<E>): void;
  /** RFC 8414 metadata document of the proxy. */
  metadata(): Record<string, unknown>;
  /** The public JWK Set (also served at `jwks_uri`), for verifiers in other processes. */
  jwks(): Promise<{ keys: JWK[] }>;
  /** Deletes expired and long-revoked rows; returns how many of each. */
  cleanupExpired(): Promise<Record<string, number>>;
  ready(): Promise<{ ok: boolean; checks: Record<string, string> }>;
}

/**
 * An OAuth 2.1 authorization server for MCP clients in front of an OIDC provider that has no
 * Dynamic Client Registration (Entra ID): clients register here (DCR or CIMD), the user consents
 * here, logs in upstream with the proxy's one fixed client, and the client gets the proxy's own
 * short-lived JWTs for the MCP resource. Upstream tokens stay sealed in Postgres.
 *
 * The parts: context.ts (options resolved once), store.ts (all SQL), tokens.ts and keys.ts,
 * cookies.ts, upstream-login.ts, client-auth.ts, handlers/ (one file per endpoint), router.ts.
 */
export function oauthProxy(options: OAuthProxyOptions): OAuthProxy {
  const ctx = resolveContext(options);
  const check = (probe: Promise<unknown>) =>
    probe.then(
      () => 'ok',
      () => 'unreachable',
    );
  const proxy: OAuthProxy = {
    name: options.name ?? 'oauth_proxy',
    issuer: ctx.issuer,
    resource: ctx.resource,
    resourceMetadataUrl: ctx.resourceMetadataUrl,
    metadata: () => authorizationServerMetadata(ctx),
    cleanupExpired: () => ctx.store.cleanupExpired(),
    challengeParameters() {
      const parameters: Record<string, string> = { resource_metadata: ctx.resourceMetadataUrl };
      if (ctx.scopes.challenge.length > 0) parameters.scope = ctx.scopes.challenge.join(' ');
      return parameters;
    },
    async verify(credential) {
      const { grantId: _grant, ...outcome } = await verifyAccessToken(ctx, credential);
      return outcome as AuthOutcome;
    },
    authenticate: (request) => authenticateRequest(proxy, request),
    jwks: () => publicJwks(ctx),
    async ready() {
      const [upstream, database] = await Promise.all([check(ctx.upstream.endpoints()), check(ctx.store.ping())]);
      const checks = { upstream, database };
      return { ok: upstream === 'ok' && database === 'ok', checks };
    },
    mount: (app) => mountAuthorizationServer(app, ctx),
  };
  return proxy;
}
