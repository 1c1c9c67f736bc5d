/**
 * One Keycloak for every local project (the realm imported from keycloak/realm-mcp.json), on
 * free ports: it is the slow part (60-120 s on two cores), and decision 19 lets one Keycloak
 * serve one server URL, so each project's `pnpm start` runs on the same server port, one after
 * the other (workers: 1), and reuses it as `pnpm start` does with a Keycloak already running.
 * The ports reach the workers as E2E_LOCAL_* variables. A Keycloak that cannot start fails the
 * run here, before any test.
 */
import { startKeycloak } from '@mcp-auth-stack/keycloak';
import { freePort } from '@mcp-auth-stack/testing';

export default async function globalSetup(): Promise<() => Promise<void>> {
  const serverPort = await freePort();
  const httpPort = await freePort();
  const managementPort = await freePort();
  const serverUrl = `http://localhost:${serverPort}`;
  const keycloak = await startKeycloak({
    httpPort,
    managementPort,
    // What `pnpm start` gives the realm for this server URL (scripts/start.ts), in every mode.
    realmEnv: {
      MCP_SERVER_RESOURCE_URL: `${serverUrl}/mcp`,
      MCP_OAUTH_PROXY_CALLBACK_URL: `${serverUrl}/auth/callback`,
      MCP_SERVER_HOST: 'localhost',
    },
    onProgress: ({ phase, message }) => {
      if (phase === 'ready' || phase === 'distribution') process.stdout.write(`keycloak: ${message}\n`);
    },
  });
  process.env.E2E_LOCAL_SERVER_PORT = String(serverPort);
  process.env.E2E_LOCAL_KEYCLOAK_PORT = String(httpPort);
  process.env.E2E_LOCAL_KEYCLOAK_MANAGEMENT_PORT = String(managementPort);
  return async () => {
    await keycloak.stop();
  };
}
