/**
 * End to end against the stack docker-compose.yml brings up (project `compose`, E2E_STACK=compose):
 * scripts/ci/containers.sh starts it (`docker compose --profile agent up --wait`) and then runs
 * this spec, which starts no service of the stack itself. A person's path: Chromium signs in on
 * the composed Keycloak (Dynamic Client Registration, PKCE), the official MCP SDK client calls
 * tools through the published port; the agent container is ready and answers one chat turn,
 * its model a scripted OpenAI-compatible server on this host (the only fake: no language model
 * runs here).
 *
 * E2E_LLM_HOST and E2E_LLM_PORT: where that server listens, the address the agent container was
 * given as OPENAI_BASE_URL. E2E_AGENT_CHAT_TOKEN: the agent's AGENT_CHAT_TOKEN. E2E_AGENT_URL:
 * the agent's published URL (default http://127.0.0.1:8001).
 */
import { randomUUID } from 'node:crypto';
import { audienceOf, decodeJwtPayload } from '@mcp-auth-stack/testing';
import {
  type ChatRequest,
  messageText,
  type ScriptedLlm,
  startScriptedLlm,
} from '@mcp-auth-stack/testing/scripted-llm';
import { alice, callTool, expect, ownExpenses, test } from './fixtures/test.ts';

const AGENT_URL = process.env.E2E_AGENT_URL ?? 'http://127.0.0.1:8001';

const required = (name: string) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this spec through scripts/ci/containers.sh`);
  return value;
};

let llm: ScriptedLlm;
test.beforeAll(async () => {
  llm = await startScriptedLlm([], { host: required('E2E_LLM_HOST'), port: Number(required('E2E_LLM_PORT')) });
});
test.afterAll(async () => {
  await llm?.close();
});

test('the published server answers 401 naming its metadata, which names the composed realm', async ({ stack }) => {
  const response = await fetch(stack.mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
  });
  expect(response.status).toBe(401);
  const challenge = response.headers.get('www-authenticate') ?? '';
  const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge)?.[1];
  expect(metadataUrl, challenge).toBeTruthy();
  const metadata = (await (await fetch(metadataUrl as string)).json()) as {
    resource: string;
    authorization_servers: string[];
  };
  expect(metadata.resource).toBe(stack.mcpUrl);
  expect(metadata.authorization_servers).toEqual([stack.realmUrl]);
});

test('a user signs in on the composed Keycloak in Chromium and adds and reads an expense through the published port', async ({
  stack,
  oauthClient,
  connect,
}) => {
  const oauth = await oauthClient(alice, { clientName: 'compose e2e' });
  const client = await connect(oauth);
  await test.step('one login through the browser gave a token of the composed realm for this server', async () => {
    expect(oauth.authorizationUrls, 'one login through the browser').toHaveLength(1);
    const claims = decodeJwtPayload(oauth.tokens()?.access_token ?? '');
    expect(claims.iss).toBe(stack.realmUrl);
    expect(audienceOf(claims)).toContain(stack.mcpUrl);
    expect(typeof claims.sub, 'a user token').toBe('string');
  });
  await test.step('she adds an expense through the published port and reads it back', async () => {
    const tools = (await client.listTools()).tools.map((tool) => tool.name);
    expect(tools).toEqual(expect.arrayContaining(['add_user_expense', 'get_user_expenses']));
    const description = `compose e2e ${randomUUID()}`;
    const added = await callTool(client, 'add_user_expense', {
      date: '2025-12-17',
      amount: 12.5,
      category: 'food',
      description,
      payment_method: 'visa',
    });
    expect(added.isError ?? false, JSON.stringify(added.content)).toBe(false);
    expect(await ownExpenses(client)).toContain(description);
  });
});

test('the agent container is ready and answers a chat turn with a real tool call through the composed server', async () => {
  const ready = await fetch(`${AGENT_URL}/ready`);
  expect(ready.status).toBe(200);
  expect(await ready.json()).toEqual({ status: 'ready' });

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
  expect(response.status, JSON.stringify(body)).toBe(200);
  expect(body.tool_calls.map((toolCall) => [toolCall.name, toolCall.is_error])).toEqual([['add_user_expense', false]]);
  expect(body.reply).toMatch(new RegExp(description));
  expect(llm.remaining(), 'the whole script was used').toBe(0);
  const tools = (llm.requests[0]?.body.tools ?? []).map((tool) => tool.function.name);
  expect(tools, "the model was offered the server's tools").toContain('add_user_expense');
});

test('the agent container asks its caller before a delete (202), and deletes only once the caller approves', async () => {
  const description = `agent delete e2e ${randomUUID()}`;
  let added = '';
  const echo = (request: ChatRequest) => ({
    content: `Tool said: ${messageText(request.messages.at(-1))}`,
  });
  llm.script([
    // The first turn: an add, then a delete of what it added, which waits for its caller.
    {
      toolCalls: [
        {
          name: 'add_user_expense',
          arguments: { date: '2025-12-19', amount: 4, category: 'food', description, payment_method: 'cash' },
        },
      ],
    },
    (request) => {
      added = /Added expense ([0-9a-f-]{36})/.exec(messageText(request.messages.at(-1)))?.[1] ?? '';
      return { toolCalls: [{ name: 'delete_user_expense', arguments: { id: added } }] };
    },
    // A second turn while the first waits: the expense is still there.
    { toolCalls: [{ name: 'get_user_expenses', arguments: {} }] },
    echo,
    // The first turn, once approved: the delete ran, and a read no longer finds it.
    { toolCalls: [{ name: 'get_user_expenses', arguments: {} }] },
    echo,
  ]);
  const chat = async (body: unknown) => {
    const response = await fetch(`${AGENT_URL}/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${required('E2E_AGENT_CHAT_TOKEN')}` },
      body: JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  const asked = await chat({ message: 'add a 4 euro coffee in cash, then delete it' });
  expect(asked.status, JSON.stringify(asked.body)).toBe(202);
  const { confirmation } = asked.body as { confirmation: { id: string; name: string; args: { id: string } } };
  expect([confirmation.name, confirmation.args.id]).toEqual(['delete_user_expense', added]);

  const meanwhile = await chat({ message: 'what did I spend?' });
  expect(meanwhile.status, JSON.stringify(meanwhile.body)).toBe(200);
  expect(meanwhile.body.reply, 'nothing is deleted before the answer').toContain(description);

  const answered = await chat({ confirmation: confirmation.id, approve: true });
  expect(answered.status, JSON.stringify(answered.body)).toBe(200);
  expect(
    (answered.body.tool_calls as { name: string; is_error: boolean }[]).map((call) => [call.name, call.is_error]),
  ).toEqual([
    ['add_user_expense', false],
    ['delete_user_expense', false],
    ['get_user_expenses', false],
  ]);
  expect(answered.body.reply, 'deleted once approved').not.toContain(description);
  expect(llm.remaining(), 'the whole script was used').toBe(0);
});
