/**
 * The agent against the real MCP server in `keycloak` mode (direct registration) and a real
 * Keycloak with the repository's realm (one start per file), real PostgreSQL, and the scripted
 * model: client credentials with the service-account client, and the interactive login of
 * `pnpm agent` itself, its `$BROWSER` driven through Keycloak's login page with Chromium,
 * including the step-up the server asks for with a real HTTP 403.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { DEMO_USERS, REALM_CLIENTS, type RunningKeycloak } from '@mcp-auth-stack/keycloak';
import { audienceOf, decodeJwtPayload, scopesOf } from '@mcp-auth-stack/testing';
import { launchChromium } from '@mcp-auth-stack/testing/browser';
import { verifyRs256 } from '@mcp-auth-stack/testing/keycloak';
import {
  type ChatRequest,
  messageText,
  type ScriptEntry,
  type ScriptedLlm,
  startScriptedLlm,
} from '@mcp-auth-stack/testing/scripted-llm';
import { startKeycloakForServer } from '@mcp-auth-stack/testing-stack/keycloak';
import type { Browser } from 'playwright-core';
import { systemBrowserOpener } from '../src/auth/browser.ts';
import {
  ClientCredentialsTokenSource,
  clientCredentialsAuthProvider,
  TokenRequestError,
} from '../src/auth/client-credentials.ts';
import { InteractiveOAuthProvider } from '../src/auth/oauth-provider.ts';
import { type StoredSession, TokenStore } from '../src/auth/token-store.ts';
import { DEFAULT_MCP_SCOPE, loadConfig } from '../src/config.ts';
import { startAgent } from '../src/runtime.ts';
import { runCli, scriptedModelEnv, spawnServe } from './helpers/agent.ts';
import { type BrowserHook, type Login, startBrowserHook } from './helpers/browser-hook.ts';
import { startTestStack, type TestStack } from './helpers/server.ts';

const AGENT_SECRET = 'agent-secret-for-this-test';
const [alice] = DEMO_USERS as [(typeof DEMO_USERS)[0]];

let keycloak: RunningKeycloak;
let stack: TestStack;
let mcpUrl: string;
let browser: Browser;
let hook: BrowserHook;
let llm: ScriptedLlm;
let cacheRoot: string;

before(
  async () => {
    // The server's canonical URL (and so the token audience) is http://localhost:<port>/mcp.
    let serverPort: number;
    let baseUrl: string;
    ({ keycloak, serverPort, baseUrl, mcpUrl } = await startKeycloakForServer({
      realmEnv: { KEYCLOAK_AGENT_CLIENT_SECRET: AGENT_SECRET },
      onProgress: ({ phase, message, elapsedMs }) => {
        if (phase !== 'waiting') console.log(`keycloak ${Math.round(elapsedMs / 1000)} s ${phase}: ${message}`);
      },
    }));
    cacheRoot = await mkdtemp(join(tmpdir(), 'agent-oauth-'));
    [stack, browser, llm] = await Promise.all([
      startTestStack({
        PORT: String(serverPort),
        MCP_SERVER_BASE_URL: baseUrl,
        MCP_AUTH_PROVIDER: 'keycloak',
        KEYCLOAK_REALM_URL: keycloak.realmUrl,
        KEYCLOAK_REGISTRATION: 'direct',
      }),
      launchChromium(),
      startScriptedLlm(),
    ]);
    hook = await startBrowserHook(browser, cacheRoot);
  },
  { timeout: 600_000 },
);

after(async () => {
  await hook?.close();
  await browser?.close();
  await llm?.close();
  await stack?.close();
  await keycloak?.stop();
  if (cacheRoot) await rm(cacheRoot, { recursive: true, force: true });
});

beforeEach(() => {
  llm.requests.length = 0;
});

/** The model's script: add the expense, read the list back, answer quoting what came back. */
function addAndReadBack(description: string): ScriptEntry[] {
  return [
    {
      toolCalls: [
        {
          name: 'add_user_expense',
          arguments: { date: '2025-12-17', amount: 1200, category: 'gadget', description, payment_method: 'visa' },
        },
      ],
    },
    { toolCalls: [{ name: 'get_user_expenses', arguments: { category: 'gadget' } }] },
    (request: ChatRequest) => ({ content: `Done. Your gadget expenses: ${messageText(request.messages.at(-1))}` }),
  ];
}

const ownersOf = async (description: string) =>
  (await stack.sql.query('SELECT user_id FROM expenses WHERE description = $1', [description])).rows.map(
    (row: { user_id: string }) => row.user_id,
  );

/** The server's request log lines for POST /mcp, as `status` numbers, from index `from` on. */
const mcpStatuses = (from = 0) =>
  stack.logs
    .slice(from)
    .map((line) => JSON.parse(line) as { msg: string; method?: string; path?: string; status?: number })
    .filter((entry) => entry.msg === 'request' && entry.method === 'POST' && entry.path === '/mcp')
    .map((entry) => entry.status);

const session = async (cacheDir: string) =>
  JSON.parse(await readFile(new TokenStore(cacheDir, mcpUrl).file, 'utf8')) as StoredSession;

const oauthEnv = (cacheDir: string, extra: Record<string, string> = {}): Record<string, string> => ({
  ...scriptedModelEnv(llm.baseUrl),
  MCP_AUTH: 'oauth',
  MCP_SERVER_URL: mcpUrl,
  MCP_CACHE_DIR: cacheDir,
  ...extra,
});

const scopesAsked = (login: Login | undefined) =>
  (login?.url.searchParams.get('scope') ?? '').split(' ').sort().join(' ');

describe('client credentials (the headless agent acts as its own service account)', () => {
  const source = (overrides: Partial<ConstructorParameters<typeof ClientCredentialsTokenSource>[0]> = {}) =>
    new ClientCredentialsTokenSource({
      mcpUrl,
      clientId: REALM_CLIENTS.agent.clientId,
      clientSecret: AGENT_SECRET,
      scope: DEFAULT_MCP_SCOPE,
      ...overrides,
    });
  const agentEnv = () => ({
    ...scriptedModelEnv(llm.baseUrl),
    MCP_AUTH: 'client_credentials',
    MCP_CLIENT_SECRET: AGENT_SECRET,
    MCP_SERVER_URL: mcpUrl,
  });

  test('discovers the token endpoint from the server’s 401 and gets a token whose audience is the MCP URL', async () => {
    const tokens = source();
    assert.deepEqual(await tokens.endpoint(), {
      tokenEndpoint: `${keycloak.realmUrl}/protocol/openid-connect/token`,
      resource: mcpUrl,
    });
    const token = await tokens.accessToken();
    assert.ok(await verifyRs256(keycloak.realmUrl, token), 'signed by the realm');
    const claims = decodeJwtPayload(token);
    assert.ok(audienceOf(claims).includes(mcpUrl), `aud ${JSON.stringify(claims.aud)}`);
    assert.equal(claims.azp, REALM_CLIENTS.agent.clientId);
    assert.equal(claims.preferred_username, `service-account-${REALM_CLIENTS.agent.clientId}`);
    assert.equal(claims.iss, keycloak.realmUrl);
    for (const scope of ['mcp:access', 'expenses:read', 'expenses:write']) {
      assert.ok(scopesOf(claims).includes(scope), `scope ${claims.scope} has ${scope}`);
    }
  });

  test('caches the token until shortly before expiry, then asks again', async () => {
    let now = Date.now();
    const tokens = source({ now: () => now });
    const first = await tokens.accessToken();
    const [second, third] = await Promise.all([tokens.accessToken(), tokens.accessToken()]);
    assert.equal(second, first);
    assert.equal(third, first);
    assert.equal(tokens.tokenRequests, 1, 'one token request for three calls');

    const lifetime = ((decodeJwtPayload(first).exp as number) - (decodeJwtPayload(first).iat as number)) * 1000;
    now += lifetime - 60_000; // still a minute left: the cached token is used
    assert.equal(await tokens.accessToken(), first);
    assert.equal(tokens.tokenRequests, 1);
    now += 45_000; // within the last 30 s: renewed
    const renewed = await tokens.accessToken();
    assert.equal(tokens.tokenRequests, 2);
    assert.notEqual(renewed, first);
  });

  test('MCP_TOKEN_URL skips discovery; a wrong secret is a clear error', async () => {
    // The scripted model's server publishes no protected resource metadata: the token would
    // name that URL, which the realm does not know.
    const direct = source({
      mcpUrl: `${llm.baseUrl}/mcp`,
      tokenUrl: `${keycloak.realmUrl}/protocol/openid-connect/token`,
    });
    // Resource indicators: the token must be for an MCP URL the realm knows, so use the known one.
    const configured = source({ tokenUrl: `${keycloak.realmUrl}/protocol/openid-connect/token` });
    assert.ok(audienceOf(decodeJwtPayload(await configured.accessToken())).includes(mcpUrl));
    await assert.rejects(
      direct.accessToken(),
      (error: Error) => error instanceof TokenRequestError && error.status === 400,
    );
    await assert.rejects(
      source({ clientSecret: REALM_CLIENTS.agent.demoSecret }).accessToken(),
      (error: Error) => error instanceof TokenRequestError && error.status === 401,
      'the realm took KEYCLOAK_AGENT_CLIENT_SECRET, not the demo secret',
    );
  });

  test('reached by an internal URL (compose: http://server:8000/mcp) with MCP_TOKEN_URL and MCP_RESOURCE, the token names the public resource the server’s metadata names', async () => {
    // Same server, another name for it, as the agent's container sees the server's.
    const internalUrl = mcpUrl.replace('//localhost:', '//127.0.0.1:');
    assert.notEqual(internalUrl, mcpUrl);
    const tokenUrl = `${keycloak.realmUrl}/protocol/openid-connect/token`;
    // Without MCP_RESOURCE the metadata names another server than the one called (RFC 9728 3.3).
    await assert.rejects(source({ mcpUrl: internalUrl, tokenUrl }).accessToken(), /set MCP_RESOURCE/);
    const tokens = source({ mcpUrl: internalUrl, tokenUrl, resource: mcpUrl });
    assert.deepEqual(await tokens.endpoint(), { tokenEndpoint: tokenUrl, resource: mcpUrl });
    assert.ok(audienceOf(decodeJwtPayload(await tokens.accessToken())).includes(mcpUrl));

    const running = await startAgent(
      loadConfig({ ...agentEnv(), MCP_SERVER_URL: internalUrl, MCP_TOKEN_URL: tokenUrl, MCP_RESOURCE: mcpUrl }),
      { print: () => {} },
    );
    try {
      assert.ok(running.agent.toolNames.includes('add_user_expense'), running.agent.toolNames.join(', '));
    } finally {
      await running.close();
    }
  });

  test('as the MCP SDK’s auth provider it hands the cached token to every request', async () => {
    const tokens = source();
    const provider = clientCredentialsAuthProvider(tokens, {
      clientId: REALM_CLIENTS.agent.clientId,
      scope: DEFAULT_MCP_SCOPE,
    });
    const a = await provider.tokens();
    const b = await provider.tokens();
    assert.equal(a?.access_token, b?.access_token);
    assert.equal(a?.token_type, 'Bearer');
    assert.equal(tokens.tokenRequests, 1);
    assert.equal(provider.redirectUrl, undefined, 'non-interactive for the SDK');
  });

  test('the agent adds an expense through the real server and reads it back; the row is the service account’s', async () => {
    const running = await startAgent(loadConfig(agentEnv()));
    try {
      llm.script(addAndReadBack('Service laptop'));
      const turn = await running.agent.run('yesterday I bought a laptop for $1200 using my visa');
      assert.equal(llm.remaining(), 0, 'the whole script was used');
      assert.deepEqual(
        turn.toolCalls.map((call) => [call.name, call.isError]),
        [
          ['add_user_expense', false],
          ['get_user_expenses', false],
        ],
      );
      assert.match(turn.reply, /^Done\. Your gadget expenses: .*Service laptop/s);

      const serviceAccount = await serviceAccountUser(REALM_CLIENTS.agent.clientId);
      assert.equal(serviceAccount.username, `service-account-${REALM_CLIENTS.agent.clientId}`);
      assert.deepEqual(await ownersOf('Service laptop'), [serviceAccount.id]);
      const token = await running.connections.tokenSource?.accessToken();
      assert.equal(decodeJwtPayload(token ?? '').sub, serviceAccount.id, 'the token’s sub is that user');
      assert.equal(running.connections.tokenSource?.tokenRequests, 1, 'one token for start-up and all the calls');
    } finally {
      await running.close();
    }
  });

  test('HTTP mode (the container’s configuration) chats with the real server as the service account', async () => {
    const agent = await spawnServe(agentEnv());
    try {
      assert.deepEqual(await (await fetch(`${agent.url}/health`)).json(), { status: 'ok', ready: true, tools: 4 });
      llm.script(addAndReadBack('Served laptop'));
      const response = await fetch(`${agent.url}/chat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ message: 'yesterday I bought a laptop for $1200 using my visa' }),
      });
      assert.equal(response.status, 200);
      assert.match(((await response.json()) as { reply: string }).reply, /Served laptop/);
      assert.deepEqual(await ownersOf('Served laptop'), [(await serviceAccountUser(REALM_CLIENTS.agent.clientId)).id]);
      assert.doesNotMatch(agent.output(), new RegExp(AGENT_SECRET), 'no secret in the logs');
    } finally {
      assert.equal(await agent.stop(), 0);
    }
  });

  test('a wrong secret stops start-up with Keycloak’s refusal', async () => {
    await assert.rejects(
      startAgent(loadConfig({ ...agentEnv(), MCP_CLIENT_SECRET: 'wrong' })),
      (error: Error) => error instanceof TokenRequestError && error.status === 401,
    );
  });
});

describe('interactive OAuth: pnpm agent signs in through the browser ($BROWSER)', () => {
  const cliEnv = (cacheDir: string) => ({ ...oauthEnv(cacheDir), BROWSER: hook.program });

  test('first run: DCR, PKCE, resource, login on Keycloak’s page, the tool call works; cached 0600; second run needs no browser', async () => {
    const cacheDir = join(cacheRoot, 'cli');
    hook.as(alice);
    const logins = hook.logins.length;
    llm.script(addAndReadBack('OAuth laptop'));
    const first = await runCli(['yesterday I bought a laptop for $1200 using my visa'], cliEnv(cacheDir));
    assert.equal(first.code, 0, first.stderr);
    assert.equal(hook.logins.length, logins + 1, 'the browser opened once');
    const login = hook.logins[logins] as Login;
    assert.equal(login.error, undefined);

    const authorize = login.url;
    assert.equal(authorize.origin + authorize.pathname, `${keycloak.realmUrl}/protocol/openid-connect/auth`);
    assert.equal(authorize.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(authorize.searchParams.get('resource'), mcpUrl);
    assert.match(authorize.searchParams.get('redirect_uri') ?? '', /^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    assert.match(login.consent ?? '', /Expenses agent \(mcp-auth-stack\)/, 'the consent page names the agent');
    assert.ok(first.stderr.includes(authorize.href), 'the URL is printed too');
    assert.match(first.stdout, /← add_user_expense: .*OAuth laptop/);
    assert.match(first.stdout, /Done\. Your gadget expenses: .*OAuth laptop/s);

    const aliceId = await userId(alice.username);
    assert.deepEqual(await ownersOf('OAuth laptop'), [aliceId], 'stored as alice');
    const cached = await session(cacheDir);
    const token = cached.tokens?.access_token ?? '';
    assert.ok(await verifyRs256(keycloak.realmUrl, token));
    assert.deepEqual(audienceOf(decodeJwtPayload(token)), [mcpUrl]);
    assert.equal(decodeJwtPayload(token).sub, aliceId);
    assert.ok(cached.tokens?.refresh_token, 'the refresh token is kept on disk');
    assert.equal(cached.clientInformation?.client_id, authorize.searchParams.get('client_id'));
    assert.equal((await stat(new TokenStore(cacheDir, mcpUrl).file)).mode & 0o777, 0o600, 'cache file owner-only');
    assert.equal((await stat(cacheDir)).mode & 0o777, 0o700, 'cache directory owner-only');

    // Second run: the cached token; a browser opening now would be refused at once (and counted).
    hook.as('deny');
    llm.script([{ toolCalls: [{ name: 'get_user_expenses', arguments: {} }] }, { content: 'Listed.' }]);
    const from = stack.logs.length;
    const second = await runCli(['what did I buy?'], cliEnv(cacheDir));
    assert.equal(second.code, 0, second.stderr);
    assert.equal(hook.logins.length, logins + 1, 'no browser on the second run');
    assert.match(second.stdout, /← get_user_expenses: .*OAuth laptop/);
    assert.ok(mcpStatuses(from).length > 0 && mcpStatuses(from).every((status) => status === 200 || status === 202));
    assert.equal((await session(cacheDir)).tokens?.access_token, token, 'the same token');

    // An hour later the access token has expired: the refresh token renews it, still without a browser.
    const later = await InteractiveOAuthProvider.create({
      mcpUrl,
      scope: '',
      redirectPort: 0,
      cacheDir,
      openBrowser: async () => assert.fail('a refresh must not open a browser'),
      print: () => {},
      now: () => Date.now() + 3_600_000,
    });
    const refreshed = await later.tokens();
    assert.equal(later.refreshes, 1);
    assert.ok(refreshed?.access_token && refreshed.access_token !== token);
    assert.equal(refreshed.refresh_token, undefined, 'the refresh token is never handed to the SDK');
    assert.deepEqual(audienceOf(decodeJwtPayload(refreshed.access_token)), [mcpUrl]);
  });

  test('step-up through the server’s 403: the agent signs in again with the challenged scope and retries the call once', async () => {
    hook.as(alice);
    const logins = hook.logins.length;
    const printed: string[] = [];
    // The agent's real browser step: $BROWSER started with the URL.
    const deps = {
      openBrowser: systemBrowserOpener({ BROWSER: hook.program }),
      print: (line: string) => printed.push(line),
    };

    // MCP_SCOPE set: the first login asks for exactly that, not for what the 401 names. The
    // server then lists only the tools that token may call, so no write tool reaches the model
    // (see the report: step-up cannot start from a tool the agent never saw).
    const readOnly = await startAgent(
      loadConfig(oauthEnv(join(cacheRoot, 'read-only'), { MCP_SCOPE: 'mcp:access expenses:read' })),
      deps,
    );
    try {
      assert.equal(scopesAsked(hook.logins[logins]), 'expenses:read mcp:access');
      assert.deepEqual(readOnly.agent.toolNames.sort(), ['get_spending_summary', 'get_user_expenses']);
    } finally {
      await readOnly.close();
    }

    // An agent that listed the write tools and then holds a read-only token: narrowed here with
    // a refresh grant that asks for less (RFC 6749 §6), as a shorter-lived policy could.
    const cacheDir = join(cacheRoot, 'step-up');
    const running = await startAgent(loadConfig(oauthEnv(cacheDir)), deps);
    try {
      assert.equal(running.agent.toolNames.length, 4);
      const provider = running.connections.oauthProvider as InteractiveOAuthProvider;
      assert.equal(provider.authorizations, 1);
      const stored = await session(cacheDir);
      const narrowed = await fetch(`${keycloak.realmUrl}/protocol/openid-connect/token`, {
        method: 'POST',
        body: new URLSearchParams({
          grant_type: 'refresh_token',
          client_id: stored.clientInformation?.client_id ?? '',
          refresh_token: stored.tokens?.refresh_token ?? '',
          scope: 'mcp:access expenses:read',
          resource: mcpUrl,
        }),
      });
      assert.equal(narrowed.status, 200);
      const readOnlyTokens = (await narrowed.json()) as { access_token: string; expires_in: number; scope: string };
      assert.deepEqual(scopesOf(decodeJwtPayload(readOnlyTokens.access_token)).sort(), ['expenses:read', 'mcp:access']);
      await provider.saveTokens({ ...readOnlyTokens, token_type: 'Bearer' });

      const from = stack.logs.length;
      llm.script(addAndReadBack('Step-up laptop'));
      const turn = await running.agent.run('yesterday I bought a laptop for $1200 using my visa');

      const statuses = mcpStatuses(from);
      assert.equal(statuses.filter((status) => status === 403).length, 1, `statuses ${statuses.join(' ')}`);
      assert.equal(hook.logins.length, logins + 3, 'the browser opened again for the step-up');
      const stepUp = hook.logins.at(-1) as Login;
      assert.equal(stepUp.error, undefined);
      assert.equal(scopesAsked(stepUp), 'expenses:read expenses:write mcp:access');
      assert.equal(provider.authorizations, 2);
      assert.ok(
        printed.some((line) => line.includes(stepUp.url.href)),
        'the step-up URL is printed too',
      );

      // The one-time retry: the model saw one tool result, the successful one.
      assert.deepEqual(
        turn.toolCalls.map((call) => [call.name, call.isError]),
        [
          ['add_user_expense', false],
          ['get_user_expenses', false],
        ],
      );
      const toolResults = llm.requests[1]?.body.messages.filter((message) => message.role === 'tool') ?? [];
      assert.equal(toolResults.length, 1);
      assert.match(messageText(toolResults[0]), /Step-up laptop/);
      assert.deepEqual(await ownersOf('Step-up laptop'), [await userId(alice.username)]);
      const granted = scopesOf(decodeJwtPayload((await provider.tokens())?.access_token ?? ''));
      assert.ok(granted.includes('expenses:write'), `scope ${granted.join(' ')}`);
    } finally {
      await running.close();
    }
  });
});

async function adminToken(): Promise<string> {
  const response = await fetch(`${keycloak.url}/realms/master/protocol/openid-connect/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'password', client_id: 'admin-cli', username: 'admin', password: 'admin' }),
  });
  return ((await response.json()) as { access_token: string }).access_token;
}

async function admin<T>(path: string): Promise<T> {
  const response = await fetch(`${keycloak.url}/admin/realms/mcp${path}`, {
    headers: { authorization: `Bearer ${await adminToken()}` },
  });
  assert.equal(response.status, 200, `GET ${path}`);
  return (await response.json()) as T;
}

/** A user's id (the `sub` of their tokens), from the admin API with the demo bootstrap admin. */
async function userId(username: string): Promise<string> {
  const users = await admin<{ id: string }[]>(`/users?exact=true&username=${encodeURIComponent(username)}`);
  if (!users[0]) throw new Error(`no user ${username}`);
  return users[0].id;
}

/** The user a client's client-credentials tokens stand for. */
async function serviceAccountUser(clientId: string): Promise<{ id: string; username: string }> {
  const [client] = await admin<{ id: string }[]>(`/clients?clientId=${encodeURIComponent(clientId)}`);
  if (!client) throw new Error(`no client ${clientId}`);
  return await admin<{ id: string; username: string }>(`/clients/${client.id}/service-account-user`);
}
