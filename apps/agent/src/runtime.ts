/**
 * Everything the CLI and the HTTP mode share: model, MCP connections, tools, agent.
 */
import type { TokenCredential } from '@azure/identity';
import type { MultiServerMCPClient } from '@langchain/mcp-adapters';
import { createMcpClient, ExpensesAgent } from './agent.ts';
import { systemBrowserOpener } from './auth/browser.ts';
import type { AgentConfig } from './config.ts';
import { type PreparedConnections, prepareConnections } from './connections.ts';
import { buildChatModelOptions, createChatModel } from './model.ts';
import { forTerminal } from './terminal.ts';

export interface RunningAgent {
  agent: ExpensesAgent;
  mcpClient: MultiServerMCPClient;
  connections: PreparedConnections;
  close(): Promise<void>;
}

export interface RuntimeDependencies {
  print?: (line: string) => void;
  openBrowser?: (url: string) => Promise<boolean>;
  now?: () => Date;
  azureCredential?: () => TokenCredential;
}

export async function startAgent(config: AgentConfig, deps: RuntimeDependencies = {}): Promise<RunningAgent> {
  const model = createChatModel(
    buildChatModelOptions(config.model, deps.azureCredential ? { azureCredential: deps.azureCredential } : {}),
    { timeoutMs: config.modelTimeoutSeconds * 1000 },
  );
  const connections = await prepareConnections(config, {
    openBrowser: deps.openBrowser ?? systemBrowserOpener(),
    // Lines that carry what servers sent (a sign-in URL, an error) reach the terminal filtered.
    print: deps.print ?? ((line) => process.stderr.write(`${forTerminal(line)}\n`)),
  });
  const mcpClient = createMcpClient(connections.connections);
  try {
    await mcpClient.getTools(); // connects to every server
    const tools = uniquelyNamedTools(
      await Promise.all(
        connections.connections.map(async ({ name }) => ({ server: name, tools: await mcpClient.getTools(name) })),
      ),
    );
    const agent = new ExpensesAgent({
      model,
      tools,
      authorizationEpoch: connections.authorizationEpoch,
      ...(deps.now ? { now: deps.now } : {}),
    });
    return { agent, mcpClient, connections, close: () => mcpClient.close() };
  } catch (error) {
    await mcpClient.close().catch(() => {});
    // @langchain/mcp-adapters writes each server's URL as configured into its connect errors, and
    // an extra server's URL may carry its key (`?tavilyApiKey=…`); this message is printed by the
    // CLI, logged by the service and shown on /ready and /chat.
    throw withUrlSecretsHidden(error);
  }
}

/**
 * `error` as a new Error (its `stack` and `cause` would still carry what the message had) of the
 * same name, whose message has every URL that carries a query, a fragment or userinfo cut to
 * its origin and path (`withoutUrlSecrets`).
 */
export function withUrlSecretsHidden(error: unknown): Error {
  const original = error instanceof Error ? error : new Error(String(error));
  const hidden = new Error(withoutUrlSecrets(original.message));
  hidden.name = original.name;
  return hidden;
}

/**
 * A URL in running text: a scheme and `//`, up to white space, a double quote, `<`, `>` or a
 * backtick, less the punctuation of the sentence around it (`…?key=s, but`).
 */
const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"<>`]*[^\s"<>`.,;:!)\]]/gi;

/**
 * `text` with every URL that has a query, a fragment or userinfo written as its origin and path,
 * with markers where something was left out: `https://mcp.tavily.com/mcp/?…`, `#…`,
 * `https://…@host/`. What is left is enough to tell which server failed, and holds no key. A
 * URL that does not parse is cut after its scheme, since where its secret ends is unknown.
 */
export function withoutUrlSecrets(text: string): string {
  return text.replace(URL_IN_TEXT, (found) => {
    if (!URL.canParse(found)) return `${found.slice(0, found.indexOf('//') + 2)}…`;
    const url = new URL(found);
    if (!url.search && !url.hash && !url.username && !url.password) return found;
    const userinfo = url.username || url.password ? '…@' : '';
    return `${url.protocol}//${userinfo}${url.host}${url.pathname}${url.search ? '?…' : ''}${url.hash ? '#…' : ''}`;
  });
}

/**
 * Every server's tools, refused when two servers offer one name: tools keep their own names (the
 * model sees `get_user_expenses`, not a prefixed one), and a name twice would fail every turn
 * later with an error about middleware. Named here, with both servers, it is found at once.
 */
export function uniquelyNamedTools<Tool extends { name: string }>(
  perServer: { server: string; tools: Tool[] }[],
): Tool[] {
  const offeredBy = new Map<string, string>();
  for (const { server, tools } of perServer) {
    for (const tool of tools) {
      const other = offeredBy.get(tool.name);
      if (other === server) throw new Error(`the MCP server "${server}" lists two tools named "${tool.name}"`);
      if (other !== undefined) {
        throw new Error(
          `the MCP servers "${other}" and "${server}" both offer a tool named "${tool.name}": the agent keeps tool names as they are, so leave one of the servers out of MCP_EXTRA_SERVERS`,
        );
      }
      offeredBy.set(tool.name, server);
    }
  }
  return perServer.flatMap(({ tools }) => tools);
}
