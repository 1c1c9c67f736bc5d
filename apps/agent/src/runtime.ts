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
  );
  const connections = await prepareConnections(config, {
    openBrowser: deps.openBrowser ?? systemBrowserOpener(),
    print: deps.print ?? ((line) => process.stderr.write(`${line}\n`)),
  });
  const mcpClient = createMcpClient(connections.connections);
  try {
    const tools = await mcpClient.getTools();
    const agent = new ExpensesAgent({
      model,
      tools,
      authorizationEpoch: connections.authorizationEpoch,
      ...(deps.now ? { now: deps.now } : {}),
    });
    return { agent, mcpClient, connections, close: () => mcpClient.close() };
  } catch (error) {
    await mcpClient.close().catch(() => {});
    throw error;
  }
}
