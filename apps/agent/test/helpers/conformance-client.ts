/**
 * The agent as the client under test of the official MCP conformance suite
 * (`conformance client --command "node conformance-client.ts" --scenario auth/…`). The suite
 * starts its own MCP server and authorization server for the scenario, appends the server's
 * URL to the command and names the scenario in `MCP_CONFORMANCE_SCENARIO` (with credentials,
 * when the scenario has some, in `MCP_CONFORMANCE_CONTEXT`).
 *
 * What runs is the agent itself: its configuration, its OAuth client (discovery, registration,
 * PKCE, the loopback redirect, the token store), the LangChain MCP adapters and the agent loop
 * with its retry after a login. Only two parts stand in for what cannot run here: the model
 * (the scripted one, which asks for `test-tool` once) and the person at the browser, who is an
 * HTTP client that follows the authorization server's redirect to the agent's loopback listener,
 * as a browser does after the person approves.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startScriptedLlm } from '@mcp-auth-stack/testing/scripted-llm';
import { loadConfig } from '../../src/config.ts';
import { startAgent } from '../../src/runtime.ts';
import { CONFORMANCE_TOOL_CALLED, scriptedModelEnv } from './agent.ts';

/** The fixed Client ID Metadata Document URL the suite's `auth/basic-cimd` expects as `client_id`. */
const CONFORMANCE_CLIENT_METADATA_URL = 'https://conformance-test.local/client-metadata.json';

const serverUrl = process.argv.at(-1) ?? '';
const scenario = process.env.MCP_CONFORMANCE_SCENARIO ?? '';
const context = JSON.parse(process.env.MCP_CONFORMANCE_CONTEXT ?? '{}') as Record<string, string>;

/** The person who approves: follows the authorization server's answer to the agent's own listener. */
async function approvingBrowser(url: string): Promise<boolean> {
  const answer = await fetch(url, { redirect: 'manual' });
  const location = answer.headers.get('location');
  if (!location) throw new Error(`the authorization endpoint answered ${answer.status} without a redirect`);
  // Not awaited as a promise the agent waits on: a browser shows the page and moves on.
  void fetch(new URL(location, url))
    .then((page) => page.text())
    .catch(() => {});
  return true;
}

function mcpAuthEnv(): Record<string, string> {
  switch (scenario) {
    case 'auth/client-credentials-basic':
      return {
        MCP_AUTH: 'client_credentials',
        MCP_CLIENT_ID: context.client_id ?? '',
        MCP_CLIENT_SECRET: context.client_secret ?? '',
      };
    case 'auth/pre-registration':
      return {
        MCP_AUTH: 'oauth',
        MCP_CLIENT_ID: context.client_id ?? '',
        MCP_CLIENT_SECRET: context.client_secret ?? '',
      };
    case 'auth/basic-cimd':
      return { MCP_AUTH: 'oauth', MCP_CLIENT_METADATA_URL: CONFORMANCE_CLIENT_METADATA_URL };
    default:
      return { MCP_AUTH: 'oauth' };
  }
}

const cacheDir = mkdtempSync(join(tmpdir(), 'agent-conformance-'));
const model = await startScriptedLlm([
  { toolCalls: [{ name: 'test-tool', arguments: {} }] },
  { content: 'Called test-tool.' },
]);
let exitCode = 1;
try {
  const config = loadConfig({
    ...scriptedModelEnv(model.baseUrl),
    MCP_SERVER_URL: serverUrl,
    MCP_CACHE_DIR: cacheDir,
    ...mcpAuthEnv(),
  });
  const running = await startAgent(config, {
    openBrowser: approvingBrowser,
    print: (line) => process.stderr.write(`${line}\n`),
    // The suite's test-tool has no annotations, so it may be destructive (MCP): the person confirms.
    confirmDestructive: async () => true,
  });
  try {
    const turn = await running.agent.run('Call test-tool.');
    const failed = turn.toolCalls.filter((call) => call.isError);
    if (turn.toolCalls.length === 0 || failed.length > 0) {
      process.stderr.write(`tool calls failed: ${JSON.stringify(turn.toolCalls)}\n`);
    } else {
      process.stdout.write(`${CONFORMANCE_TOOL_CALLED}\n`);
      exitCode = 0;
    }
  } finally {
    await running.close();
  }
} catch (error) {
  process.stderr.write(`${(error as Error).stack ?? error}\n`);
} finally {
  await model.close();
  rmSync(cacheDir, { recursive: true, force: true });
}
process.exit(exitCode);
