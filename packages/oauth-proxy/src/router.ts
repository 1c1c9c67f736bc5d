import { mountProtectedResourceMetadata } from '@mcp-auth-stack/auth';
import { isDatabaseUnavailable } from '@mcp-auth-stack/database';
import { type Context, type Env, Hono } from 'hono';
import type { ProxyContext } from './context.ts';
import { CORS, OAuthError, oauthErrorResponse } from './errors.ts';
import { authorizeHandler } from './handlers/authorize.ts';
import { callbackHandler } from './handlers/callback.ts';
import { consentHandler } from './handlers/consent.ts';
import { registerHandler } from './handlers/register.ts';
import { revokeHandler } from './handlers/revoke.ts';
import { tokenHandler } from './handlers/token.ts';
import { failPage } from './responses.ts';
import { publicJwks } from './tokens.ts';

const PUBLIC_CACHE = { 'Cache-Control': 'public, max-age=300', ...CORS };
const preflight = () => new Response(null, { status: 204, headers: CORS });

/** RFC 8414 metadata document of the proxy. */
export function authorizationServerMetadata(ctx: ProxyContext): Record<string, unknown> {
  return {
    issuer: ctx.issuer,
    authorization_endpoint: ctx.endpoints.authorize,
    token_endpoint: ctx.endpoints.token,
    registration_endpoint: ctx.endpoints.register,
    revocation_endpoint: ctx.endpoints.revoke,
    jwks_uri: ctx.endpoints.jwks,
    scopes_supported: ctx.scopes.supported,
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_methods_supported: ['none', 'client_secret_post', 'client_secret_basic'],
    revocation_endpoint_auth_methods_supported: ['none', 'client_secret_post', 'client_secret_basic'],
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true,
    client_id_metadata_document_supported: ctx.cimdEnabled,
    protected_resources: [ctx.resource],
  };
}

const JSON_ENDPOINTS = ['/register', '/token', '/revoke'];
const RETRY_AFTER = { 'Retry-After': '5' };

/**
 * A database that cannot be reached, or a statement it cancelled (its timeout), is an outage to
 * wait out: 503 with the OAuth error a client retries on (the browser endpoints: a page saying
 * so), not a 500. Anything else goes to the app's own error handler.
 */
function storageOutageAnswer(error: Error, c: Context): Response {
  if (!isDatabaseUnavailable(error)) throw error;
  if (c.req.method === 'POST' && JSON_ENDPOINTS.some((path) => c.req.path.endsWith(path))) {
    return oauthErrorResponse(
      new OAuthError('temporarily_unavailable', 'The authorization server cannot reach its storage.', 503, RETRY_AFTER),
    );
  }
  return failPage(
    c,
    'Try again shortly',
    'Sign-in is not available for a moment. Try again shortly.',
    503,
    RETRY_AFTER,
  );
}

/** The authorization server's endpoints, relative to the issuer's path. */
export function authorizationServerRoutes(ctx: ProxyContext): Hono {
  const routes = new Hono();
  routes.get('/.well-known/jwks.json', async () => Response.json(await publicJwks(ctx), { headers: PUBLIC_CACHE }));
  routes.get('/authorize', authorizeHandler(ctx));
  routes.post('/consent', consentHandler(ctx));
  routes.get('/auth/callback', callbackHandler(ctx));
  routes.post('/register', registerHandler(ctx));
  routes.post('/token', tokenHandler(ctx));
  routes.post('/revoke', revokeHandler(ctx));
  for (const path of JSON_ENDPOINTS) routes.options(path, preflight);
  routes.onError(storageOutageAnswer);
  return routes;
}

/**
 * Everything the proxy serves on the app: the Protected Resource Metadata of the MCP resource
 * and the RFC 8414 document at the root (RFC 8414 3: the issuer's path goes after the
 * well-known name), the endpoints as a sub-app below the issuer's path.
 */
export function mountAuthorizationServer<E extends Env>(app: Hono<E>, ctx: ProxyContext): void {
  mountProtectedResourceMetadata(app, {
    resource: ctx.resource,
    authorizationServers: [ctx.issuer],
    scopesSupported: ctx.scopes.supported,
    resourceName: ctx.resourceName,
  });
  const metadataPath = `/.well-known/oauth-authorization-server${ctx.prefix}`;
  app.get(metadataPath, () => Response.json(authorizationServerMetadata(ctx), { headers: PUBLIC_CACHE }));
  app.options(metadataPath, preflight);
  app.route(ctx.prefix || '/', authorizationServerRoutes(ctx));
}
