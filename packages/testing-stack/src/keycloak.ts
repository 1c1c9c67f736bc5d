/** A Keycloak started for an MCP server that is to listen on a free port. */
import { type KeycloakProgress, type RunningKeycloak, startKeycloak } from '@mcp-auth-stack/keycloak';
import { freePort } from '@mcp-auth-stack/testing';

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
  options: {
    realmEnv?: Record<string, string>;
    onProgress?: (progress: KeycloakProgress) => void;
    /** Keycloak's environment (default this process's), e.g. JAVA_OPTS_APPEND for its JVM. */
    env?: NodeJS.ProcessEnv;
  } = {},
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
    ...(options.env ? { env: options.env } : {}),
  });
  return { keycloak, serverPort, baseUrl, mcpUrl };
}
