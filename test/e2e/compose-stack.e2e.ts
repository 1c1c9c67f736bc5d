/**
 * End to end against the stack docker-compose.yml brings up: scripts/ci/containers.sh starts it
 * (`docker compose --profile agent up --wait`) and then runs this file, which starts no service
 * of the stack itself. A person's path: Chromium signs in on the composed Keycloak (Dynamic
 * Client Registration, PKCE), the official MCP SDK client calls tools through the published
 * port; the agent container is ready and answers one chat turn, its model a scripted
 * OpenAI-compatible server on this host (the only fake: no language model runs here).
 *
 * E2E_LLM_HOST and E2E_LLM_PORT: where that server listens, the address the agent container was
 * given as OPENAI_BASE_URL. E2E_AGENT_CHAT_TOKEN: the agent's AGENT_CHAT_TOKEN.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { DEMO_USERS } from '@mcp-auth-stack/keycloak';
import { audienceOf, decodeJwtPayload, launchChromium, startCallbackServer } from '@mcp-auth-stack/keycloak/testing';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { messageText, type ScriptedLlm, startScriptedLlm } from '../../apps/agent/test/helpers/scripted-llm.ts';
import { BrowserOAuthProvider, connectWithOAuth } from '../../apps/server/test/oauth-helpers.ts';

// What docker-compose.yml publishes, as its header and the README say.
const SERVER_URL = process.env.E2E_SERVER_URL ?? 'http://localhost:8000';
const REALM_URL = `${process.env.E2E_KEYCLOAK_URL ?? 'http://localhost:8080'}/realms/mcp`;
const AGENT_URL = process.env.E2E_AGENT_URL ?? 'http://127.0.0.1:8001';
const MCP_URL = `${SERVER_URL}/mcp`;
const [alice] = DEMO_USERS as [(typeof DEMO_USERS)[0]];

const required = (name: string) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this file through scripts/ci/containers.sh`);
  return value;
};

// The root package has no playwright-core of its own: the type comes from the launcher.
let browser: Awaited<ReturnType<typeof launchChromium>>;
let llm: ScriptedLlm;
const clients: Client[] = [];

before(async () => {
  [browser, llm] = await Promise.all([
    launchChromium(),
    startScriptedLlm([], { host: required('E2E_LLM_HOST'), port: Number(required('E2E_LLM_PORT')) }),
  ]);
});

after(async () => {
  for (const client of clients) await client.close();
  await llm?.close();
  await browser?.close();
});

const call = (client: Client, name: string, args: Record<string, unknown> = {}) =>
  client.callTool({ name, arguments: args }) as Promise<CallToolResult>;

test('the published server answers 401 naming its metadata, which names the composed realm', async () => {
  const response = await fetch(MCP_URL, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
  });
  assert.equal(response.status, 401);
  const challenge = response.headers.get('www-authenticate') ?? '';
  const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge)?.[1];
  assert.ok(metadataUrl, challenge);
  const metadata = (await (await fetch(metadataUrl)).json()) as { resource: string; authorization_servers: string[] };
  assert.equal(metadata.resource, MCP_URL);
  assert.deepEqual(metadata.authorization_servers, [REALM_URL]);
});

test('a user signs in on the composed Keycloak in Chromium and adds and reads an expense through the published port', async () => {
  const callback = await startCallbackServer();
  try {
    const provider = new BrowserOAuthProvider(browser, callback, alice, { clientName: 'compose e2e' });
    const client = await connectWithOAuth(MCP_URL, provider);
    clients.push(client);
    assert.equal(provider.authorizationUrls.length, 1, 'one login through the browser');
    const claims = decodeJwtPayload(provider.tokens()?.access_token ?? '');
    assert.equal(claims.iss, REALM_URL);
    assert.ok(audienceOf(claims).includes(MCP_URL), `aud ${JSON.stringify(claims.aud)}`);
    assert.equal(typeof claims.sub, 'string', 'a user token');

    const tools = (await client.listTools()).tools.map((tool) => tool.name);
    assert.ok(tools.includes('add_user_expense') && tools.includes('get_user_expenses'), tools.join(', '));
    const description = `compose e2e ${randomUUID()}`;
    const added = await call(client, 'add_user_expense', {
      date: '2025-12-17',
      amount: 12.5,
      category: 'food',
      description,
      payment_method: 'visa',
    });
    assert.equal(added.isError ?? false, false, JSON.stringify(added.content));
    const { expenses } = (await call(client, 'get_user_expenses')).structuredContent as {
      expenses: { description: string }[];
    };
    assert.ok(expenses.some((expense) => expense.description === description));
  } finally {
    await callback.close();
  }
});

test('the agent container is ready and answers a chat turn with a real tool call through the composed server', async () => {
  const ready = await fetch(`${AGENT_URL}/ready`);
  assert.equal(ready.status, 200);
  assert.deepEqual(await ready.json(), { status: 'ready' });

  const description = `agent e2e ${randomUUID()}`;
  llm.script([
    {
      toolCalls: [
        {
          name: 'add_user_expense',
          arguments: { date: '2025-12-18', amount: 30, category: 'transport', description, payment_method: 'amex' },
        },
      ],
    },
    (request) => ({ content: `Saved: ${messageText(request.messages.at(-1))}` }),
  ]);
  const response = await fetch(`${AGENT_URL}/chat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${required('E2E_AGENT_CHAT_TOKEN')}` },
    body: JSON.stringify({ message: 'I paid 30 euros for a taxi with my amex yesterday' }),
  });
  const body = (await response.json()) as {
    reply: string;
    tool_calls: { name: string; is_error: boolean; result: unknown }[];
  };
  assert.equal(response.status, 200, JSON.stringify(body));
  assert.deepEqual(
    body.tool_calls.map((toolCall) => [toolCall.name, toolCall.is_error]),
    [['add_user_expense', false]],
  );
  assert.match(body.reply, new RegExp(description));
  assert.equal(llm.remaining(), 0, 'the whole script was used');
  const tools = (llm.requests[0]?.body.tools ?? []).map((tool) => tool.function.name);
  assert.ok(tools.includes('add_user_expense'), `the model was offered the server's tools: ${tools.join(', ')}`);
});
