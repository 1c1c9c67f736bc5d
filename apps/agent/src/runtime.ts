/**
 * Everything the CLI and the HTTP mode share: model, MCP connections, tools, agent.
 */
import type { TokenCredential } from '@azure/identity';
import type { MultiServerMCPClient } from '@langchain/mcp-adapters';
import { type ConfirmDestructive, createMcpClient, ExpensesAgent, NOT_ASKED, UNTRUSTED_ANNOTATIONS } from './agent.ts';
import { systemBrowserOpener } from './auth/browser.ts';
import type { AgentConfig } from './config.ts';
import { EXPENSES_SERVER_NAME, type PreparedConnections, prepareConnections } from './connections.ts';
import { buildChatModelOptions, createChatModel } from './model.ts';
import { forTerminal } from './terminal.ts';
import { configuredSecrets, ObtainedSecrets, secretsHider, withUrlSecretsHidden } from './url-secrets.ts';

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
  /**
   * How the person is asked before a call that may delete or overwrite data
   * (`AGENT_DESTRUCTIVE_TOOLS=ask`); without it nobody can be asked, and such calls are refused.
   */
  confirmDestructive?: ConfirmDestructive;
  /** How long connecting to the MCP servers and listing their tools may take. Default 60 s. */
  connectTimeoutMs?: number;
}

/**
 * Long enough for a server that scales from zero (a container app's cold start) and answers in
 * pages; a server that never finishes its tool listing (a next page forever) would otherwise hold
 * the start for good, its tools piling up in memory, with nothing logged.
 */
const DEFAULT_CONNECT_TIMEOUT_MS = 60_000;

/** The confirmation the agent asks for, by `AGENT_DESTRUCTIVE_TOOLS`: none when `allow`. */
function destructiveCallConfirmation(
  policy: AgentConfig['destructiveTools'],
  ask: RuntimeDependencies['confirmDestructive'],
): RuntimeDependencies['confirmDestructive'] {
  if (policy === 'allow') return undefined;
  if (policy === 'ask' && ask) return ask;
  return async () => NOT_ASKED;
}

export async function startAgent(config: AgentConfig, deps: RuntimeDependencies = {}): Promise<RunningAgent> {
  const model = createChatModel(
    buildChatModelOptions(config.model, deps.azureCredential ? { azureCredential: deps.azureCredential } : {}),
    { timeoutMs: config.modelTimeoutSeconds * 1000 },
  );
  const obtained = new ObtainedSecrets();
  const hideSecrets = secretsHider(configuredSecrets(config), obtained);
  const confirmDestructive = destructiveCallConfirmation(config.destructiveTools, deps.confirmDestructive);
  // Lines that carry what servers sent (a sign-in URL, an error, a tool's name) reach the terminal filtered.
  const print = deps.print ?? ((line: string) => process.stderr.write(`${forTerminal(line)}\n`));
  let connections: PreparedConnections;
  try {
    connections = await prepareConnections(config, {
      openBrowser: deps.openBrowser ?? systemBrowserOpener(),
      print,
      onSecret: (value) => obtained.add(value),
    });
  } catch (error) {
    throw withUrlSecretsHidden(error, hideSecrets);
  }
  const mcpClient = createMcpClient(connections.connections);
  const names = connections.connections.map(({ name }) => `"${name}"`).join(', ');
  const deadline = deadlineBesideSignIns(
    deps.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    connections.oauthProvider,
  );
  try {
    const listed = (async () => {
      await mcpClient.getTools(); // connects to every server
      return await Promise.all(
        connections.connections.map(async ({ name }) => ({ server: name, tools: await mcpClient.getTools(name) })),
      );
    })();
    // Past the deadline, the close below makes it fail with nobody waiting for it.
    listed.catch(() => {});
    const perServer = await Promise.race([
      listed,
      deadline.passed.then(() => {
        throw new Error(
          `the MCP servers (${names}) did not all connect and list their tools within ${deadline.timeoutMs / 1000} s`,
        );
      }),
    ]);
    const tools = uniquelyNamedTools(
      withAnnotationsTrusted(toolsWithinBounds(toolsTheModelCanName(perServer, print), print), config),
    );
    const agent = new ExpensesAgent({
      model,
      tools,
      authorizationEpoch: connections.authorizationEpoch,
      hideSecrets,
      ...(deps.now ? { now: deps.now } : {}),
      ...(confirmDestructive ? { confirmDestructive } : {}),
    });
    return { agent, mcpClient, connections, close: () => mcpClient.close() };
  } catch (error) {
    // Closing ends the listing still under way: its next request fails.
    await mcpClient.close().catch(() => {});
    // @langchain/mcp-adapters writes each server's URL as configured into its connect errors, and
    // an extra server's URL may carry its key (`?tavilyApiKey=…`); this message is printed by the
    // CLI, logged by the service and shown on /ready and /chat.
    throw withUrlSecretsHidden(error, hideSecrets);
  } finally {
    deadline.clear();
  }
}

/**
 * Settles `timeoutMs` after it is made, but never while a sign-in is under way, nor within
 * `timeoutMs` after one ended: a sign-in the work met (a token refused) has its own limit and a
 * person at the browser, and the work then gets a whole window again.
 */
export function deadlineBesideSignIns(
  timeoutMs: number,
  signIns: { readonly signingIn: boolean; readonly signInEndedAt: number | undefined } | undefined,
): { passed: Promise<void>; timeoutMs: number; clear(): void } {
  let timer: NodeJS.Timeout | undefined;
  const passed = new Promise<void>((resolve) => {
    const check = () => {
      if (signIns?.signingIn) {
        timer = setTimeout(check, 1_000);
        return;
      }
      const windowAfterSignIn = (signIns?.signInEndedAt ?? 0) + timeoutMs - Date.now();
      if (windowAfterSignIn > 0) {
        timer = setTimeout(check, windowAfterSignIn);
        return;
      }
      resolve();
    };
    timer = setTimeout(check, timeoutMs);
  });
  return { passed, timeoutMs, clear: () => clearTimeout(timer) };
}

/**
 * What the OpenAI API (and Azure OpenAI, GitHub Models) documents as a function's name. MCP
 * allows more (a `.`, up to 128 characters), and the API refuses a request offering such a tool:
 * one would fail every turn.
 */
const MODEL_TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Each server's tools less those the model's API cannot name, each left out with a line saying
 * so: a server's odd name costs that tool, not the agent.
 */
export function toolsTheModelCanName<Tool extends { name: string }>(
  perServer: { server: string; tools: Tool[] }[],
  print: (line: string) => void,
): { server: string; tools: Tool[] }[] {
  return perServer.map(({ server, tools }) => ({
    server,
    tools: tools.filter((tool) => {
      if (MODEL_TOOL_NAME.test(tool.name)) return true;
      print(
        `warning: the MCP server "${server}" offers a tool named ${JSON.stringify(tool.name)}, which the model's API cannot name (letters, digits, _ and -, at most 64); the agent leaves it out`,
      );
      return false;
    }),
  }));
}

/**
 * The most of a tool's description the model reads, in characters: this server's longest is 269.
 * Every description goes to the model with every call, so a server could otherwise run up each
 * turn's bill (and fill it with instructions) from its listing alone.
 */
export const MAX_TOOL_DESCRIPTION_CHARACTERS = 2_048;
/** A tool whose input schema is longer than this (as JSON) is left out: this server's largest is 1,111. */
export const MAX_TOOL_SCHEMA_CHARACTERS = 16_384;
/** The most tools offered to the model: OpenAI's API takes 128 at most, and refuses a request with more. */
export const MAX_TOOLS = 128;
/** Half of a two-unit character without its other half (what `String#toWellFormed` replaces). */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * The tools within what the model can be sent: descriptions cut (saying so), tools with an
 * oversized schema left out, and past `MAX_TOOLS` the rest left out, in the servers' order (the
 * expenses server first). Each leaving-out is printed, naming the server.
 */
export function toolsWithinBounds<Tool extends { name: string; description: string; schema?: unknown }>(
  perServer: { server: string; tools: Tool[] }[],
  print: (line: string) => void,
): { server: string; tools: Tool[] }[] {
  let offered = 0;
  return perServer.map(({ server, tools }) => {
    const kept: Tool[] = [];
    for (const tool of tools) {
      const schemaLength = JSON.stringify(tool.schema ?? {}).length;
      if (schemaLength > MAX_TOOL_SCHEMA_CHARACTERS) {
        print(
          `warning: the MCP server "${server}" offers ${JSON.stringify(tool.name)} with an input schema of ${schemaLength} characters (at most ${MAX_TOOL_SCHEMA_CHARACTERS}); the agent leaves it out`,
        );
        continue;
      }
      // A lone half of a two-unit character, anywhere, is one the model's API could refuse.
      tool.description = tool.description.replace(LONE_SURROGATE, '\uFFFD');
      if (tool.description.length > MAX_TOOL_DESCRIPTION_CHARACTERS) {
        // Not half of a character written as two UTF-16 units (the API could refuse the request).
        const shown = tool.description.slice(0, MAX_TOOL_DESCRIPTION_CHARACTERS).replace(/[\ud800-\udbff]$/, '');
        tool.description = `${shown} … [description cut at ${MAX_TOOL_DESCRIPTION_CHARACTERS} characters]`;
      }
      kept.push(tool);
    }
    const room = Math.max(0, MAX_TOOLS - offered);
    if (kept.length > room) {
      print(
        `warning: the MCP server "${server}" offers ${kept.length} tools and the model takes ${MAX_TOOLS} in all; the agent leaves out its last ${kept.length - room}`,
      );
      kept.length = room;
    }
    offered += kept.length;
    return { server, tools: kept };
  });
}

/**
 * The tools of extra servers whose annotations are not believed, marked so (`isDestructive`
 * then asks before each of their calls). An extra server is any MCP server the operator points
 * at; its `readOnlyHint` on a tool that sends data away or deletes it is its word only.
 */
export function withAnnotationsTrusted<Tool extends { metadata?: Record<string, unknown> }>(
  perServer: { server: string; tools: Tool[] }[],
  config: Pick<AgentConfig, 'extraServers'>,
): { server: string; tools: Tool[] }[] {
  const trusted = new Set(config.extraServers.filter((server) => server.trustAnnotations).map(({ name }) => name));
  trusted.add(EXPENSES_SERVER_NAME);
  for (const { server, tools } of perServer) {
    if (trusted.has(server)) continue;
    for (const tool of tools) tool.metadata = { ...tool.metadata, [UNTRUSTED_ANNOTATIONS]: true };
  }
  return perServer;
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
