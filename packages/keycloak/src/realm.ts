import { resolve } from 'node:path';
import { defaultServerBaseUrl, type Env, httpUrl, integer, text } from '@mcp-auth-stack/config';

/** The Keycloak release the realm file and the runner are written and tested against. */
export const KEYCLOAK_VERSION = '26.7.3';

/**
 * SHA-1 of `keycloak-quarkus-dist-<version>.zip` (the same bytes as the release zip), as Maven
 * Central published it when the version was pinned here. Checked before any published `.sha1`:
 * that one comes from where the zip comes from, and whoever can change the one can change both.
 */
export const KEYCLOAK_DISTRIBUTION_SHA1: Readonly<Record<string, string>> = {
  '26.7.3': '1e21a7f572581692aacb379dbba8413f99b67208',
};

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

/**
 * The hosts Keycloak may send requests to: the public ones the realm loads Client ID Metadata
 * Documents from. A stranger's registration could make Keycloak fetch URLs he names
 * (`sector_identifier_uri`, which none of Keycloak 26.7.3's own executors refuses without also
 * refusing metadata-document clients; the realm's executor does): this stands behind the realm, for one imported without it. Everything else is
 * refused before it leaves (docs/security.md).
 */
export const KEYCLOAK_EGRESS_HOSTS = ['vscode.dev', 'insiders.vscode.dev', 'code.visualstudio.com'] as const;

/** Added to the egress hosts for a Keycloak on this machine, where CIMD documents are served on loopback. */
export const LOOPBACK_EGRESS_HOSTS = ['localhost', '127.0.0.1'] as const;

/**
 * The egress allow-list as the value of Keycloak's `spi-connections-http-client--default--proxy-mappings`
 * (env `KC_SPI_CONNECTIONS_HTTP_CLIENT__DEFAULT__PROXY_MAPPINGS`): the allowed hosts go direct
 * (`NO_PROXY`), every other host through a proxy at 127.0.0.1:9, where nothing listens, so the
 * request fails at once and reaches nobody. Keycloak has no other outbound filter.
 */
export function keycloakEgressProxyMappings(options: { loopback: boolean }): string {
  const hosts = [...(options.loopback ? LOOPBACK_EGRESS_HOSTS : []), ...KEYCLOAK_EGRESS_HOSTS];
  const direct = hosts.map((host) => `^${host.replaceAll('.', '\\.')}$;NO_PROXY`);
  return [...direct, '.*;http://127.0.0.1:9'].join(',');
}

/** What the realm file's `${MCP_SERVER_RESOURCE_URL:...}` placeholder falls back to. */
export const DEFAULT_MCP_RESOURCE_URL = 'http://localhost:8000/mcp';

export interface DemoUser {
  /**
   * The user's id, pinned in the realm file: it is the `sub` of the user's tokens, which the
   * server stores expenses under, so it must survive a re-import (`pnpm keycloak --fresh`).
   */
  id: string;
  username: string;
  password: string;
  /** Members of the `expenses-admin` group may be granted the `expenses:admin` scope. */
  admin: boolean;
}

/** Demo-only accounts seeded by the realm file. Never reuse these passwords anywhere real. */
export const DEMO_USERS: readonly DemoUser[] = [
  { id: '080eb1fe-3cab-4cfb-9156-866c8c7706d6', username: 'alice', password: 'alice-password', admin: false },
  { id: '37b2faed-3a4f-466f-a273-d644b5988674', username: 'bob', password: 'bob-password', admin: false },
  { id: '7aa415c8-7cbb-4838-ad61-2b6be5432e20', username: 'carol', password: 'carol-password', admin: true },
];

/** Clients the realm pre-registers, with the demo secrets their placeholders default to. */
export const REALM_CLIENTS = {
  editor: 'vscode-mcp-client',
  agent: { clientId: 'expenses-agent', demoSecret: 'expenses-agent-demo-secret-not-for-production' },
  oauthProxy: { clientId: 'mcp-oauth-proxy', demoSecret: 'mcp-oauth-proxy-demo-secret-not-for-production' },
  janitor: { clientId: 'mcp-client-janitor', demoSecret: 'mcp-client-janitor-demo-secret-not-for-production' },
  resourceServer: 'mcp-server',
} as const;

export const MCP_SCOPES = {
  access: 'mcp:access',
  read: 'expenses:read',
  write: 'expenses:write',
  admin: 'expenses:admin',
} as const;

/**
 * The server URLs the realm is imported (or updated) for: the ones the MCP server started
 * with the same environment will serve, by the server's own rule (MCP_SERVER_BASE_URL, else
 * `defaultServerBaseUrl` of HOST and PORT: http://localhost:8000 by default). Explicit realm
 * variables win.
 */
export function servedUrls(env: Env): Record<string, string> {
  const port = integer(env, 'PORT', 8000, 1, 65_535);
  const base = httpUrl(env, 'MCP_SERVER_BASE_URL', defaultServerBaseUrl(text(env, 'HOST', '127.0.0.1'), port));
  return {
    MCP_SERVER_RESOURCE_URL: httpUrl(env, 'MCP_SERVER_RESOURCE_URL', `${base}/mcp`),
    MCP_OAUTH_PROXY_CALLBACK_URL: httpUrl(env, 'MCP_OAUTH_PROXY_CALLBACK_URL', `${base}/auth/callback`),
    // Anonymously registered clients may redirect to this host (the workaround way's callback).
    MCP_SERVER_HOST: env.MCP_SERVER_HOST?.trim() || new URL(base).hostname,
  };
}
