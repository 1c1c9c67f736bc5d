/**
 * One Keycloak for every local project (the realm imported from keycloak/realm-mcp.json), on
 * free ports: it is the slow part (60-120 s on two cores), and decision 19 lets one Keycloak
 * serve one server URL, so each project's `pnpm start` runs on the same server port, one after
 * the other (workers: 1), and reuses it as `pnpm start` does with a Keycloak already running.
 * The ports reach the workers as E2E_LOCAL_* variables. A Keycloak that cannot start fails the
 * run here, before any test.
 */
import { startKeycloakForServer } from '@mcp-auth-stack/testing-stack/keycloak';

export default async function globalSetup(): Promise<() => Promise<void>> {
  const { keycloak, serverPort } = await startKeycloakForServer({
    // The realm as `pnpm start` imports it for this server URL (scripts/start.ts), in every mode:
    // the helper sets the resource and callback URLs, and the host is `pnpm start`'s too.
    realmEnv: { MCP_SERVER_HOST: 'localhost' },
    onProgress: ({ phase, message }) => {
      if (phase === 'ready' || phase === 'distribution') process.stdout.write(`keycloak: ${message}\n`);
    },
  });
  process.env.E2E_LOCAL_SERVER_PORT = String(serverPort);
  process.env.E2E_LOCAL_KEYCLOAK_PORT = new URL(keycloak.url).port;
  process.env.E2E_LOCAL_KEYCLOAK_MANAGEMENT_PORT = new URL(keycloak.managementUrl).port;
  return async () => {
    await keycloak.stop();
  };
}
