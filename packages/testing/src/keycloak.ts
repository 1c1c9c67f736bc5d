/** Keycloak for the tests: a realm's OIDC endpoints as they use them, and a Keycloak started for a server. */
import { createPublicKey, verify } from 'node:crypto';
import { type KeycloakProgress, type RunningKeycloak, startKeycloak } from '@mcp-auth-stack/keycloak';
import { freePort } from './oauth.ts';

export interface TokenResponse {
  status: number;
  body: Record<string, unknown>;
}

/** A request to the realm's token endpoint, answered as it came: refusals are what some tests check. */
export async function postToken(realmUrl: string, form: Record<string, string>): Promise<TokenResponse> {
  const response = await fetch(`${realmUrl}/protocol/openid-connect/token`, {
    method: 'POST',
    body: new URLSearchParams(form),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** Checks an RS256 signature against the realm's JWKS, so the tests read tokens Keycloak really signed. */
export async function verifyRs256(realmUrl: string, jwt: string): Promise<boolean> {
  const [header, payload, signature] = jwt.split('.');
  if (!header || !payload || !signature) return false;
  const { kid, alg } = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { kid: string; alg: string };
  if (alg !== 'RS256') return false;
  const jwks = (await (await fetch(`${realmUrl}/protocol/openid-connect/certs`)).json()) as {
    keys: (Record<string, unknown> & { kid: string })[];
  };
  const jwk = jwks.keys.find((key) => key.kid === kid);
  if (!jwk) return false;
  const key = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  return verify('sha256', Buffer.from(`${header}.${payload}`), key, Buffer.from(signature, 'base64url'));
}

export interface KeycloakForServer {
  keycloak: RunningKeycloak;
  /** A free port for the MCP server, which the realm was imported for. */
  serverPort: number;
  /** The server's public base URL, `http://localhost:<serverPort>`. */
  baseUrl: string;
  /** `<baseUrl>/mcp`: the resource (token audience) the realm's tokens are for. */
  mcpUrl: string;
}

/**
 * A real Keycloak (packages/keycloak) with the repository's realm imported for an MCP server
 * that is to listen on a free port, the way `pnpm start` imports it for its server: the
 * tokens' audience is the server's `/mcp`, the OAuth proxy's callback its `/auth/callback`.
 * Keycloak's two ports are free ports too. `realmEnv` adds realm values (e.g. a client secret);
 * the caller starts the server on `serverPort` and stops Keycloak with `keycloak.stop()`.
 */
export async function startKeycloakForServer(
  options: { realmEnv?: Record<string, string>; onProgress?: (progress: KeycloakProgress) => void } = {},
): Promise<KeycloakForServer> {
  const serverPort = await freePort();
  const baseUrl = `http://localhost:${serverPort}`;
  const mcpUrl = `${baseUrl}/mcp`;
  const keycloak = await startKeycloak({
    httpPort: await freePort(),
    managementPort: await freePort(),
    realmEnv: {
      MCP_SERVER_RESOURCE_URL: mcpUrl,
      MCP_OAUTH_PROXY_CALLBACK_URL: `${baseUrl}/auth/callback`,
      ...options.realmEnv,
    },
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  return { keycloak, serverPort, baseUrl, mcpUrl };
}
