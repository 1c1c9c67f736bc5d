/**
 * The part of `pnpm start`'s summary that says how to connect, for the mode and URL it runs
 * with: `.vscode/mcp.json` names port 8000 only, and how VS Code gets a client id depends on
 * KEYCLOAK_REGISTRATION.
 */
import { REALM_CLIENTS } from '@mcp-auth-stack/keycloak';
import { type AuthMode, DEFAULT_KEYCLOAK_REGISTRATION, type KeycloakRegistration } from '@mcp-auth-stack/server/config';

/** The URL `.vscode/mcp.json` names. */
export const VSCODE_FILE_URL = 'http://localhost:8000';

export interface SummaryInput {
  authMode: AuthMode;
  baseUrl: string;
  /** Set in `keycloak` mode (the server's config has it only there). */
  keycloakRegistration?: KeycloakRegistration | undefined;
  /** Shown once, when `pnpm start` created it. */
  demoKey?: string | undefined;
  /**
   * Key mode without an active key: none ever made and none created (stdout is not a terminal),
   * or every key revoked (pnpm start does not make another). Either way, say how to make one.
   */
  missingKey?: 'never-made' | 'all-revoked' | undefined;
  demoUser?: string;
  /**
   * Where the keys CLI finds this database, as it must be told: the embedded one outside the
   * default `.data` (`DATA_DIR`), or PostgreSQL (`DATABASE_URL`, not printed: it holds a password).
   */
  keysDatabase?: { dataDir: string } | 'database-url' | undefined;
}

/** The MCP URL the agent calls unless MCP_SERVER_URL says otherwise (apps/agent/src/config.ts). */
const AGENT_DEFAULT_MCP_URL = 'http://localhost:8000/mcp';

/** A word for a POSIX shell, quoted only when it needs to be. */
function shellWord(value: string): string {
  return /^[\w./:@%+=,-]+$/.test(value) ? value : `'${value.replaceAll("'", `'\\''`)}'`;
}

/** How to connect VS Code in this mode, at this URL (`.vscode/mcp.json` names port 8000 only). */
export function connectLines(config: SummaryInput): string[] {
  const entry = config.authMode === 'key' ? 'expenses (API key)' : 'expenses';
  const mcpUrl = `${config.baseUrl}/mcp`;
  const server: Record<string, unknown> = { type: 'http', url: mcpUrl };
  // biome-ignore lint/suspicious/noTemplateCurlyInString: VS Code's input variable, as in .vscode/mcp.json
  if (config.authMode === 'key') server.headers = { Authorization: 'Bearer ${input:expenses-api-key}' };
  // The file's entry already exists: its url changes (adding another "expenses" would repeat the key).
  const where =
    config.baseUrl === VSCODE_FILE_URL
      ? `.vscode/mcp.json has "${entry}": start it`
      : `.vscode/mcp.json names port 8000; in its "servers", make "${entry}"\n              ${JSON.stringify(server)}\n            and start it`;
  const keys =
    typeof config.keysDatabase === 'object'
      ? `DATA_DIR=${shellWord(config.keysDatabase.dataDir)} pnpm keys`
      : 'pnpm keys';
  const lines: string[] = [];
  if (config.authMode === 'key') {
    if (config.demoKey) {
      lines.push(
        `  Demo key for "${config.demoUser}" (shown once; only its hash is stored):`,
        `    ${config.demoKey}`,
        '',
      );
    } else if (config.missingKey) {
      const why =
        config.missingKey === 'never-made'
          ? 'No API key yet (a key is printed only on a terminal).'
          : 'No active API key: every key is revoked or expired.';
      lines.push(`  ${why} Create one: ${keys} create --user ${config.demoUser}`, '');
    }
    lines.push(`  Keys      ${keys} create --user <id>  |  ${keys} list  |  ${keys} revoke <key-id>`);
    if (config.keysDatabase === 'database-url') lines.push('            (with the same DATABASE_URL set)');
    lines.push(`  VS Code   ${where}; paste a key when it asks.`);
  } else if (config.authMode === 'keycloak') {
    const registers = {
      direct: 'VS Code registers itself with Keycloak',
      workaround: "VS Code registers through this server's /register (KEYCLOAK_REGISTRATION=workaround)",
      off: `VS Code asks for a client id: give ${REALM_CLIENTS.editor} (KEYCLOAK_REGISTRATION=off)`,
    }[config.keycloakRegistration ?? DEFAULT_KEYCLOAK_REGISTRATION];
    lines.push(
      `  VS Code   ${where}; ${registers},`,
      '            then opens the login page (sign in as one of the demo users).',
      // The model provider is the one setting the agent has no default for (no model here).
      `  Agent     API_HOST=github GITHUB_TOKEN=… ${mcpUrl === AGENT_DEFAULT_MCP_URL ? '' : `MCP_SERVER_URL=${mcpUrl} `}MCP_AUTH=oauth pnpm agent "what did I spend this month?"  (any model provider: apps/agent/README.md)`,
    );
  } else if (config.authMode === 'oauth_proxy' || config.authMode === 'entra_proxy') {
    lines.push(
      `  VS Code   ${where}; VS Code registers itself with this server, which shows its`,
      '            consent page, then sends you to sign in upstream (see docs/oauth-proxy.md).',
    );
  } else {
    lines.push(`  VS Code   ${where} (no auth in this mode).`);
  }
  return lines;
}
