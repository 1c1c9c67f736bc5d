/**
 * Turns the configuration into MCP server connections: the expenses server with the chosen
 * authentication, plus any extra servers with their own headers.
 */
import type { McpServerConnection } from './agent.ts';
import type { BrowserOpener } from './auth/browser.ts';
import { ClientCredentialsTokenSource, clientCredentialsAuthProvider } from './auth/client-credentials.ts';
import { InteractiveOAuthProvider, LOGIN_TIMEOUT_MS } from './auth/oauth-provider.ts';
import type { AgentConfig } from './config.ts';

export const EXPENSES_SERVER_NAME = 'expenses';

export interface PreparedConnections {
  connections: McpServerConnection[];
  /** Moves when an interactive login completed (see `AgentOptions.authorizationEpoch`). */
  authorizationEpoch: () => number;
  /** The client-credentials token source, when that mode is on (tests look at its counters). */
  tokenSource?: ClientCredentialsTokenSource;
  oauthProvider?: InteractiveOAuthProvider;
}

/**
 * `oauth`: a step-up sign-in happens inside the tool call that needs it and may take the whole
 * login timeout; the call must outlast it, or it fails while the person is still signing in.
 */
export const OAUTH_TOOL_TIMEOUT_MS = LOGIN_TIMEOUT_MS + 60_000;

export interface ConnectionDependencies {
  openBrowser: BrowserOpener;
  print: (line: string) => void;
  /** Told every token obtained for the expenses server (`ObtainedSecrets`). */
  onSecret?: (value: string) => void;
  fetchFn?: typeof fetch;
}

export async function prepareConnections(
  config: Pick<AgentConfig, 'mcpServerUrl' | 'mcpAuth' | 'extraServers'>,
  deps: ConnectionDependencies,
): Promise<PreparedConnections> {
  const extra: McpServerConnection[] = config.extraServers.map((server) => ({
    name: server.name,
    url: server.url,
    headers: server.headers,
  }));
  const auth = config.mcpAuth;
  const url = config.mcpServerUrl;
  switch (auth.mode) {
    case 'none':
      return { connections: [{ name: EXPENSES_SERVER_NAME, url }, ...extra], authorizationEpoch: () => 0 };
    case 'key':
      return {
        connections: [
          { name: EXPENSES_SERVER_NAME, url, headers: { Authorization: `Bearer ${auth.apiKey}` } },
          ...extra,
        ],
        authorizationEpoch: () => 0,
      };
    case 'client_credentials': {
      const tokenSource = new ClientCredentialsTokenSource({
        mcpUrl: url,
        clientId: auth.clientId,
        clientSecret: auth.clientSecret,
        scope: auth.scope,
        tokenUrl: auth.tokenUrl,
        resource: auth.resource,
        onSecret: deps.onSecret,
        ...(deps.fetchFn ? { fetchFn: deps.fetchFn } : {}),
      });
      // A wrong secret or an unreachable Keycloak should stop start-up, not the first tool call.
      await tokenSource.accessToken();
      return {
        connections: [
          { name: EXPENSES_SERVER_NAME, url, authProvider: clientCredentialsAuthProvider(tokenSource, auth) },
          ...extra,
        ],
        authorizationEpoch: () => 0,
        tokenSource,
      };
    }
    case 'oauth': {
      const oauthProvider = await InteractiveOAuthProvider.create({
        mcpUrl: url,
        scope: auth.scope,
        exactScope: auth.exactScope,
        clientId: auth.clientId,
        clientSecret: auth.clientSecret,
        clientMetadataUrl: auth.clientMetadataUrl,
        redirectPort: auth.redirectPort,
        cacheDir: auth.cacheDir,
        openBrowser: deps.openBrowser,
        print: deps.print,
        onSecret: deps.onSecret,
        ...(deps.fetchFn ? { fetchFn: deps.fetchFn } : {}),
      });
      await oauthProvider.ensureAuthorized();
      return {
        connections: [
          { name: EXPENSES_SERVER_NAME, url, authProvider: oauthProvider, toolTimeoutMs: OAUTH_TOOL_TIMEOUT_MS },
          ...extra,
        ],
        authorizationEpoch: () => oauthProvider.authorizations,
        oauthProvider,
      };
    }
  }
}
