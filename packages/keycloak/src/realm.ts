import { resolve } from 'node:path';

/** The Keycloak release the realm file and the runner are written and tested against. */
export const KEYCLOAK_VERSION = '26.7.3';

export const REALM_NAME = 'mcp';

/** Where `pnpm keycloak` and `pnpm start` keep Keycloak's home (KEYCLOAK_DATA_DIR), relative to the working directory. */
export const KEYCLOAK_DATA_DIR_DEFAULT = '.data/keycloak';

/** `keycloak/realm-mcp.json` at the root of the repository, the one realm every way of running Keycloak imports. */
export const REALM_FILE = resolve(import.meta.dirname, '../../../keycloak/realm-mcp.json');

/**
 * Experimental features the realm needs: `cimd` for its client profile (the import fails
 * without it, because the `client-id-metadata-document` executor does not exist), and
 * `resource-indicators` so that `resource=<MCP URL>` narrows `aud` (see keycloak/README.md for
 * the Keycloak 26.7.3 bug it brings and the workaround in the realm).
 */
export const REALM_FEATURES = ['cimd', 'resource-indicators'] as const;

/** What the realm file's `${MCP_SERVER_RESOURCE_URL:...}` placeholder falls back to. */
export const DEFAULT_MCP_RESOURCE_URL = 'http://localhost:8000/mcp';

export interface DemoUser {
  username: string;
  password: string;
  /** Members of the `expenses-admin` group may be granted the `expenses:admin` scope. */
  admin: boolean;
}

/** Demo-only accounts seeded by the realm file. Never reuse these passwords anywhere real. */
export const DEMO_USERS: readonly DemoUser[] = [
  { username: 'alice', password: 'alice-password', admin: false },
  { username: 'bob', password: 'bob-password', admin: false },
  { username: 'carol', password: 'carol-password', admin: true },
];

/** Clients the realm pre-registers, with the demo secrets their placeholders default to. */
export const REALM_CLIENTS = {
  editor: 'vscode-mcp-client',
  agent: { clientId: 'expenses-agent', demoSecret: 'expenses-agent-demo-secret-not-for-production' },
  oauthProxy: { clientId: 'mcp-oauth-proxy', demoSecret: 'mcp-oauth-proxy-demo-secret-not-for-production' },
  resourceServer: 'mcp-server',
} as const;

export const MCP_SCOPES = {
  access: 'mcp:access',
  read: 'expenses:read',
  write: 'expenses:write',
  admin: 'expenses:admin',
} as const;
