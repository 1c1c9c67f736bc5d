import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, createPublicKey, type JsonWebKeyInput } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEMO_USERS, type RunningKeycloak, startKeycloak } from '@mcp-auth-stack/keycloak';
import {
  type CallbackServer,
  decodeJwtPayload,
  freePort,
  launchChromium,
  startCallbackServer,
} from '@mcp-auth-stack/keycloak/testing';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { Browser } from 'playwright-core';
import { postMcp, startTestStack, type TestStack } from './helpers.ts';
import {
  BrowserOAuthProvider,
  connectWithOAuth,
  keycloakAdminToken,
  keycloakUserId,
  startCimdDocument,
} from './oauth-helpers.ts';

/**
 * The server in `keycloak` mode against a real Keycloak 26.7.3 started from the repository's
 * realm, real PostgreSQL, Chromium through Keycloak's login pages, and the official SDK client
 * doing everything a real MCP client does: discovery from a bare 401, registration, PKCE,
 * `resource`, consent, tokens, refresh, step-up.
 */
const [alice, bob, carol] = DEMO_USERS as [(typeof DEMO_USERS)[0], (typeof DEMO_USERS)[0], (typeof DEMO_USERS)[0]];

let keycloak: RunningKeycloak;
let browser: Browser;
let serverPort: number;
let baseUrl: string;
const callbacks: CallbackServer[] = [];

before(
  async () => {
    serverPort = await freePort();
    baseUrl = `http://localhost:${serverPort}`;
    keycloak = await startKeycloak({
      httpPort: await freePort(),
      managementPort: await freePort(),
      realmEnv: { MCP_SERVER_RESOURCE_URL: `${baseUrl}/mcp` },
    });
    browser = await launchChromium();
  },
  { timeout: 600_000 },
);

after(async () => {
  for (const callback of callbacks) await callback.close();
  await browser?.close();
  await keycloak?.stop();
});

async function provider(
  user: (typeof DEMO_USERS)[0],
  options: ConstructorParameters<typeof BrowserOAuthProvider>[3] = {},
) {
  const callback = await startCallbackServer();
  callbacks.push(callback);
  return new BrowserOAuthProvider(browser, callback, user, options);
}

function keycloakStack(registration: 'direct' | 'workaround' | 'off', extra: Record<string, string> = {}) {
  return startTestStack({
    PORT: String(serverPort),
    MCP_SERVER_BASE_URL: baseUrl,
    MCP_AUTH_PROVIDER: 'keycloak',
    KEYCLOAK_REALM_URL: keycloak.realmUrl,
    KEYCLOAK_REGISTRATION: registration,
    ...extra,
  });
}

const call = (client: Client, name: string, args: Record<string, unknown> = {}) =>
  client.callTool({ name, arguments: args }) as Promise<CallToolResult>;
const lunch = { date: '2025-12-17', amount: 12.5, category: 'food', description: 'Lunch', payment_method: 'visa' };

describe('direct: clients register at Keycloak itself', () => {
  let stack: TestStack;
  before(async () => {
    stack = await keycloakStack('direct');
  });
  after(async () => {
    await stack?.close();
  });

  test('a bare request gets 401 with the resource metadata and the scopes to ask for', async () => {
    const response = await postMcp(`${baseUrl}/mcp`, { jsonrpc: '2.0', id: 1, method: 'tools/list' });
    assert.equal(response.status, 401);
    const challenge = response.headers.get('www-authenticate') ?? '';
    assert.match(challenge, new RegExp(`resource_metadata="${baseUrl}/.well-known/oauth-protected-resource/mcp"`));
    assert.match(challenge, /scope="mcp:access expenses:read expenses:write"/);
    const metadata = (await (await fetch(`${baseUrl}/.well-known/oauth-protected-resource/mcp`)).json()) as Record<
      string,
      unknown
    >;
    assert.equal(metadata.resource, `${baseUrl}/mcp`);
    assert.deepEqual(metadata.authorization_servers, [keycloak.realmUrl]);
  });

  test('the SDK client discovers, registers (DCR), logs in with PKCE and resource, adds and reads back', async () => {
    const oauth = await provider(alice, { clientName: 'DCR e2e client' });
    const client = await connectWithOAuth(`${baseUrl}/mcp`, oauth);
    try {
      const authorizeUrl = oauth.authorizationUrls[0] as URL;
      assert.ok(authorizeUrl.href.startsWith(`${keycloak.realmUrl}/protocol/openid-connect/auth`));
      assert.equal(authorizeUrl.searchParams.get('code_challenge_method'), 'S256');
      assert.equal(authorizeUrl.searchParams.get('resource'), `${baseUrl}/mcp`);
      assert.match(oauth.consentPages[0] ?? '', /DCR e2e client/, 'the consent page names the client');
      const registered = oauth.clientInformation();
      assert.ok(registered?.client_id, 'registered dynamically');

      const token = decodeJwtPayload(oauth.tokens()?.access_token as string);
      assert.deepEqual([token.aud].flat(), [`${baseUrl}/mcp`]);

      const added = await call(client, 'add_user_expense', lunch);
      assert.equal(added.isError, undefined);
      const { expenses } = (await call(client, 'get_user_expenses')).structuredContent as {
        expenses: { description: string }[];
      };
      assert.deepEqual(
        expenses.map((e) => e.description),
        ['Lunch'],
      );
      const rows = (await stack.sql.query('SELECT user_id FROM expenses')).rows;
      assert.deepEqual(rows, [{ user_id: token.sub }], 'stored under the token subject');
    } finally {
      await client.close();
    }
  });

  test('the same through a Client ID Metadata Document instead of registration', async () => {
    const cimd = await startCimdDocument('CIMD e2e client');
    try {
      // The SDK's clientMetadataUrl option insists on https; a loopback http document (which
      // the realm allows for development) is given to it as the client id it already has.
      const oauth = await provider(bob, { clientName: 'CIMD e2e client' });
      cimd.setRedirect(oauth.callback.redirectUri);
      oauth.saveClientInformation({ client_id: cimd.url });
      const client = await connectWithOAuth(`${baseUrl}/mcp`, oauth);
      try {
        assert.equal((oauth.authorizationUrls[0] as URL).searchParams.get('client_id'), cimd.url);
        assert.ok(cimd.fetches() > 0, 'Keycloak fetched the document');
        assert.match(oauth.consentPages[0] ?? '', /CIMD e2e client/, "the consent page names the document's client");
        assert.equal(decodeJwtPayload(oauth.tokens()?.access_token as string).azp, cimd.url);
        await call(client, 'add_user_expense', { ...lunch, description: 'Bob lunch' });
        const { expenses } = (await call(client, 'get_user_expenses')).structuredContent as {
          expenses: { description: string }[];
        };
        assert.deepEqual(
          expenses.map((e) => e.description),
          ['Bob lunch'],
          "bob sees only his own expense, never alice's",
        );
      } finally {
        await client.close();
      }
    } finally {
      await cimd.close();
    }
  });

  test('the admin sees statistics; alice gets 403 insufficient_scope, and stepping up does not help her', async () => {
    const aliceAuth = await provider(alice);
    const aliceClient = await connectWithOAuth(`${baseUrl}/mcp`, aliceAuth);
    try {
      assert.ok(!(await aliceClient.listTools()).tools.some((tool) => tool.name === 'get_expense_stats'));
      const raw = await postMcp(
        `${baseUrl}/mcp`,
        { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'get_expense_stats', arguments: {} } },
        { authorization: `Bearer ${aliceAuth.tokens()?.access_token}` },
      );
      assert.equal(raw.status, 403);
      assert.match(raw.headers.get('www-authenticate') ?? '', /error="insufficient_scope", scope="[^"]*expenses:admin/);
      assert.match(raw.headers.get('www-authenticate') ?? '', /resource_metadata="/);
    } finally {
      await aliceClient.close();
    }

    // carol asks for the admin scope, which Keycloak grants to members of expenses-admin only.
    const carolAuth = await provider(carol);
    await authorize(carolAuth, 'mcp:access expenses:read expenses:write expenses:admin');
    const carolClient = await connectWithOAuth(`${baseUrl}/mcp`, carolAuth);
    try {
      const stats = (await call(carolClient, 'get_expense_stats')).structuredContent as {
        users: number;
        count: number;
      };
      const expected = (
        await stack.sql.query('SELECT count(*)::int AS count, count(DISTINCT user_id)::int AS users FROM expenses')
      ).rows[0];
      assert.deepEqual([stats.count, stats.users], [expected.count, expected.users]);
      assert.ok(stats.users >= 2, "alice's and bob's expenses, across users");
    } finally {
      await carolClient.close();
    }

    // alice asking for it gets a token without it: still 403.
    const aliceAgain = await provider(alice);
    await authorize(aliceAgain, 'mcp:access expenses:read expenses:admin');
    assert.doesNotMatch(String(decodeJwtPayload(aliceAgain.tokens()?.access_token as string).scope), /expenses:admin/);
  });

  test('step-up fails here: Keycloak limits a client registered with `scope` to that scope', async () => {
    // The SDK registers with the scope it is about to ask for (mcp:access expenses:read); Keycloak
    // 26.7.3 then lets the client have only those (issue 50807), so asking for expenses:write later
    // is refused with invalid_scope. The workaround way below repairs the registration.
    const outcome = await stepUp(stack);
    assert.equal(outcome.error, 'invalid_scope');
  });

  test('an independent client, the MCP Inspector CLI, logs in through the browser and calls a tool', async () => {
    // It logs in as the realm's pre-registered editor client (--client-id), the way a client
    // without registration does.
    // Something of alice's to read back: her Keycloak user id is the `sub` of her tokens.
    const aliceId = await keycloakUserId(keycloak.url, 'alice');
    await stack.sql.query(
      `INSERT INTO expenses (user_id, date, amount, category, description, payment_method)
       VALUES ($1, '2025-11-30', 3.2, 'food', 'Inspector coffee', 'cash')`,
      [aliceId],
    );
    const run = await inspectorLogin(alice, { consent: false, clientId: 'vscode-mcp-client' });
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.ok(run.loginUrl.startsWith(`${keycloak.realmUrl}/protocol/openid-connect/auth`), run.loginUrl);
    assert.equal(new URL(run.loginUrl).searchParams.get('code_challenge_method'), 'S256');
    assert.equal(new URL(run.loginUrl).searchParams.get('resource'), `${baseUrl}/mcp`);
    const result = JSON.parse(run.stdout) as { structuredContent: { expenses: { description: string }[] } };
    assert.ok(
      result.structuredContent.expenses.some((e) => e.description === 'Lunch'),
      run.stdout,
    );
  });

  test('a wrong password shows the error and issues nothing; a denied consent stores nothing', async () => {
    const wrong = await provider(bob, { password: 'not-bobs-password' });
    await assert.rejects(connectWithOAuth(`${baseUrl}/mcp`, wrong), /callback was never called/);
    assert.match(wrong.loginErrors[0] ?? '', /Invalid username or password/i);
    assert.equal(wrong.tokens(), undefined);
    assert.equal(wrong.callback.received.length, 0, 'no code reached the client');

    const denied = await provider(bob, { consent: 'deny', clientName: 'Denied client' });
    await assert.rejects(connectWithOAuth(`${baseUrl}/mcp`, denied), /no code: .*error=access_denied/);
    assert.equal(denied.tokens(), undefined);
  });

  test('tokens that must fail, forged from a real one of this realm: each 401 invalid_token, the real one 200', async () => {
    const issued = await postTokenForm(`${keycloak.realmUrl}/protocol/openid-connect/token`, {
      grant_type: 'client_credentials',
      client_id: 'expenses-agent',
      client_secret: 'expenses-agent-demo-secret-not-for-production',
      resource: `${baseUrl}/mcp`,
    });
    const real = issued.access_token;
    const [header, payload, signature] = real.split('.') as [string, string, string];
    const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    const headerOf = JSON.parse(Buffer.from(header, 'base64url').toString()) as Record<string, unknown>;
    // The realm's own public key, as a PEM: what an HS256 confusion attack would use as the secret.
    const jwks = (await (await fetch(`${keycloak.realmUrl}/protocol/openid-connect/certs`)).json()) as {
      keys: (JsonWebKeyInput['key'] & { kid: string })[];
    };
    const rsaKey = jwks.keys.find((key) => key.kid === headerOf.kid) as JsonWebKeyInput['key'];
    const publicPem = createPublicKey({ key: rsaKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const hsHeader = encode({ ...headerOf, alg: 'HS256' });
    const hsSignature = createHmac('sha256', publicPem).update(`${hsHeader}.${payload}`).digest('base64url');
    const flipped = `${signature.slice(0, -2)}${signature.endsWith('AA') ? 'BB' : 'AA'}`;

    const forged: [string, string][] = [
      ['a bad signature', `${header}.${payload}.${flipped}`],
      ['alg none without a signature', `${encode({ ...headerOf, alg: 'none' })}.${payload}.`],
      ['HS256 signed with the realm public key', `${hsHeader}.${payload}.${hsSignature}`],
      ['an unknown kid', `${encode({ ...headerOf, kid: 'not-a-key-of-this-realm' })}.${payload}.${signature}`],
      ['another issuer, no audience for this server (master realm admin)', await keycloakAdminToken(keycloak.url)],
      [
        'a claim changed after signing (sub)',
        `${header}.${encode({ ...decodeJwtPayload(real), sub: 'someone-else' })}.${signature}`,
      ],
    ];
    const list = (token: string) =>
      postMcp(`${baseUrl}/mcp`, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { authorization: `Bearer ${token}` });
    assert.equal((await list(real)).status, 200, 'the real token is accepted');
    for (const [what, token] of forged) {
      const response = await list(token);
      assert.equal(response.status, 401, what);
      const challenge = response.headers.get('www-authenticate') ?? '';
      assert.match(challenge, /^Bearer /, what);
      assert.match(challenge, /error="invalid_token"/, what);
      assert.match(
        challenge,
        /resource_metadata="http:\/\/localhost:\d+\/\.well-known\/oauth-protected-resource\/mcp"/,
        what,
      );
    }
    assert.equal((await list(real)).status, 200, 'and the server still takes the real one');
  });

  test('an expired access token is refreshed by the client, which goes on', async () => {
    const oauth = await provider(alice);
    const client = await connectWithOAuth(`${baseUrl}/mcp`, oauth);
    try {
      const first = oauth.tokens();
      assert.ok(first?.refresh_token);
      // Make the stored access token one that has expired: Keycloak issued it, the signature is
      // good, only time has passed. The server answers 401 and the SDK refreshes.
      const expired = await expiredAccessToken(oauth);
      oauth.saveTokens({ ...(first as NonNullable<typeof first>), access_token: expired });
      const result = await call(client, 'get_user_expenses');
      assert.equal(result.isError, undefined);
      assert.notEqual(oauth.tokens()?.access_token, expired, 'a new access token came from the refresh');
    } finally {
      await client.close();
    }
  });
});

describe('workaround: registration goes through this server, which repairs it', () => {
  let stack: TestStack;
  before(async () => {
    stack = await keycloakStack('workaround');
  });
  after(async () => {
    await stack?.close();
  });

  test("protected resource metadata names this server, which presents Keycloak's endpoints", async () => {
    const metadata = (await (await fetch(`${baseUrl}/.well-known/oauth-protected-resource/mcp`)).json()) as Record<
      string,
      unknown
    >;
    assert.deepEqual(metadata.authorization_servers, [baseUrl]);
    const as = (await (await fetch(`${baseUrl}/.well-known/oauth-authorization-server`)).json()) as Record<
      string,
      string
    >;
    assert.equal(as.issuer, baseUrl);
    assert.equal(as.registration_endpoint, `${baseUrl}/register`);
    // Logins and code exchanges pass through this server, which answers with its own `iss`.
    assert.equal(as.authorization_endpoint, `${baseUrl}/authorize`);
    assert.equal(as.token_endpoint, `${baseUrl}/token`);
    assert.equal(as.authorization_response_iss_parameter_supported, true);
    assert.equal(as.jwks_uri, `${keycloak.realmUrl}/protocol/openid-connect/certs`);
  });

  test('the SDK client registers through the server and works end to end', async () => {
    const oauth = await provider(alice, { clientName: 'Workaround e2e client' });
    const client = await connectWithOAuth(`${baseUrl}/mcp`, oauth);
    try {
      assert.ok(oauth.clientInformation()?.client_id);
      await call(client, 'add_user_expense', { ...lunch, description: 'Via workaround' });
      const { expenses } = (await call(client, 'get_user_expenses')).structuredContent as {
        expenses: { description: string }[];
      };
      assert.deepEqual(
        expenses.map((e) => e.description),
        ['Via workaround'],
      );
    } finally {
      await client.close();
    }
  });

  test('step-up: a read-only token gets 403 on add_user_expense; re-authorizing with write succeeds', async () => {
    const outcome = await stepUp(stack);
    assert.equal(outcome.error, undefined);
    assert.equal(outcome.added, true);
  });

  test('a strict client, the MCP Inspector CLI, checks RFC 9207 `iss` and succeeds: the answer names this server', async () => {
    // The login passes through this server, whose callback answers the client with its own issuer.
    const run = await inspectorLogin(alice, { consent: true });
    assert.doesNotMatch(run.stdout + run.stderr, /Issuer mismatch/);
    assert.equal(run.code, 0, run.stderr + run.stdout);
    assert.ok(run.loginUrl.startsWith(`${baseUrl}/authorize?`), run.loginUrl);
    const result = JSON.parse(run.stdout) as { structuredContent: { expenses: { description: string }[] } };
    assert.ok(
      result.structuredContent.expenses.some((e) => e.description === 'Via workaround'),
      run.stdout,
    );
  });

  test('a home page on the client’s own site registers, at Keycloak and through the server', async () => {
    // What the MCP Inspector sends: its GitHub page as client_uri. The realm used to refuse it
    // (Trusted Hosts checked every URI); it now accepts https display URIs anywhere.
    const body = {
      client_name: 'client with a home page',
      redirect_uris: ['http://127.0.0.1:45679/callback'],
      token_endpoint_auth_method: 'none',
      client_uri: 'https://github.com/modelcontextprotocol/inspector',
    };
    const direct = await registerAt(`${keycloak.realmUrl}/clients-registrations/openid-connect`, body);
    assert.equal(direct.status, 201, JSON.stringify(direct.body));
    const repaired = await registerAt(`${baseUrl}/register`, body);
    assert.equal(repaired.status, 201);
  });

  test('repair: a `resource` member, refused by Keycloak, registers through the server', async () => {
    const body = {
      client_name: 'resource member',
      redirect_uris: ['http://127.0.0.1:45678/callback'],
      token_endpoint_auth_method: 'none',
      resource: `${baseUrl}/mcp`,
    };
    const direct = await registerAt(`${keycloak.realmUrl}/clients-registrations/openid-connect`, body);
    assert.equal(direct.status, 400, 'Keycloak 26.7.3 refuses it');
    const repaired = await registerAt(`${baseUrl}/register`, body);
    assert.equal(repaired.status, 201);
  });

  test('repair: a `scope` member no longer strips the audience scope from the client', async () => {
    const body = (redirect: string) => ({
      client_name: 'scope member',
      redirect_uris: [redirect],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      scope: 'expenses:read',
    });
    // Each client then asks for expenses:read only, as it registered.
    for (const [where, expectAudience] of [
      [`${keycloak.realmUrl}/clients-registrations/openid-connect`, false],
      [`${baseUrl}/register`, true],
    ] as const) {
      const oauth = await provider(alice, { clientName: 'scope member' });
      const registered = await registerAt(where, body(oauth.callback.redirectUri));
      assert.equal(registered.status, 201);
      oauth.saveClientInformation(registered.body as { client_id: string });
      // Each client logs in at the endpoints of the authorization server it registered at.
      const tokens = await loginWithoutResource(
        oauth,
        'expenses:read',
        where.startsWith(baseUrl) ? baseUrl : undefined,
      );
      const audience = [decodeJwtPayload(tokens.access_token).aud].flat();
      assert.equal(audience.includes(`${baseUrl}/mcp`), expectAudience, `${where}: aud ${JSON.stringify(audience)}`);
      const response = await postMcp(
        `${baseUrl}/mcp`,
        { jsonrpc: '2.0', id: 1, method: 'tools/list' },
        { authorization: `Bearer ${tokens.access_token}` },
      );
      assert.equal(response.status, expectAudience ? 200 : 401);
    }
  });

  test('registration requests are checked before Keycloak sees them', async () => {
    const custom = await registerAt(`${baseUrl}/register`, { redirect_uris: ['myapp://callback'] });
    assert.equal(custom.status, 400);
    assert.equal((custom.body as { error: string }).error, 'invalid_redirect_uri');
  });
});

describe('off: only pre-registered clients', () => {
  let stack: TestStack;
  before(async () => {
    stack = await keycloakStack('off', { ALLOWED_CLIENT_IDS: 'vscode-mcp-client' });
  });
  after(async () => {
    await stack?.close();
  });

  test("the realm's editor client works; a dynamically registered client's token is refused", async () => {
    const editor = await provider(alice);
    editor.saveClientInformation({ client_id: 'vscode-mcp-client' });
    const client = await connectWithOAuth(`${baseUrl}/mcp`, editor);
    try {
      assert.equal(decodeJwtPayload(editor.tokens()?.access_token as string).azp, 'vscode-mcp-client');
      assert.equal(editor.consentPages.length, 0, 'a pre-registered client has no consent page');
      assert.ok((await client.listTools()).tools.length > 0);
    } finally {
      await client.close();
    }

    const registered = await provider(alice, { clientName: 'Not on the list' });
    await authorize(registered, 'mcp:access expenses:read');
    const response = await postMcp(
      `${baseUrl}/mcp`,
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { authorization: `Bearer ${registered.tokens()?.access_token}` },
    );
    assert.equal(response.status, 401);
    assert.match(response.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
  });
});

/**
 * A read-only client meets a tool that needs write: the server answers 403 with the scope to
 * ask for, the SDK's own retry (a refresh) cannot add it, and the client authorizes again with
 * the challenged scope. Returns how that ended.
 */
async function stepUp(stack: TestStack): Promise<{ error?: string; added?: boolean }> {
  const mcpUrl = `${baseUrl}/mcp`;
  const oauth = await provider(alice);
  await authorize(oauth, 'mcp:access expenses:read');
  const client = await connectWithOAuth(mcpUrl, oauth);
  const count = async () => (await stack.sql.query('SELECT count(*)::int AS n FROM expenses')).rows[0].n as number;
  const before = await count();
  try {
    const raw = await postMcp(
      mcpUrl,
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'add_user_expense', arguments: lunch } },
      { authorization: `Bearer ${oauth.tokens()?.access_token}` },
    );
    assert.equal(raw.status, 403);
    const scope = /scope="([^"]+)"/.exec(raw.headers.get('www-authenticate') ?? '')?.[1] ?? '';
    // Everything the call needs plus what the token already holds, so stepping up loses nothing.
    for (const needed of ['mcp:access', 'expenses:read', 'expenses:write'])
      assert.ok(scope.split(' ').includes(needed));
    await assert.rejects(call(client, 'add_user_expense', lunch), /403/);
    assert.equal(await count(), before, 'nothing stored');

    oauth.forgetTokens();
    const started = await auth(oauth, { serverUrl: mcpUrl, scope });
    assert.equal(started, 'REDIRECT');
    const params = await oauth.callback.next();
    const error = params.get('error');
    if (error) return { error };
    const code = params.get('code');
    assert.ok(code, `the login returned a code: ${params.toString()}`);
    assert.equal(await auth(oauth, { serverUrl: mcpUrl, authorizationCode: code }), 'AUTHORIZED');
    assert.match(String(decodeJwtPayload(oauth.tokens()?.access_token as string).scope), /expenses:write/);
    const added = await call(client, 'add_user_expense', lunch);
    assert.equal(added.isError, undefined);
    assert.equal(await count(), before + 1);
    return { added: true };
  } finally {
    await client.close();
  }
}

/**
 * Runs the MCP Inspector CLI (`tools/call get_user_expenses`) against the server. It has no TTY
 * here, so MCP_AUTO_OPEN_ENABLED lets it go on and BROWSER=true makes "opening" a no-op; the
 * login URL it prints is opened by Playwright, as a person would.
 */
async function inspectorLogin(
  user: (typeof DEMO_USERS)[0],
  options: { consent: boolean; clientId?: string },
): Promise<{ code: number | null; stdout: string; stderr: string; loginUrl: string }> {
  const home = await mkdtemp(join(tmpdir(), 'inspector-'));
  const inspector = join(
    dirname(createRequire(import.meta.url).resolve('@modelcontextprotocol/inspector/package.json')),
    'clients/launcher/build/index.js',
  );
  const args = [inspector, '--cli', `${baseUrl}/mcp`, '--method', 'tools/call', '--tool-name', 'get_user_expenses'];
  if (options.clientId) args.push('--client-id', options.clientId);
  const child = spawn(process.execPath, args, {
    env: { ...process.env, HOME: home, XDG_CONFIG_HOME: home, MCP_AUTO_OPEN_ENABLED: 'true', BROWSER: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const loginUrl = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no login URL:\n${stderr}${stdout}`)), 60_000);
      child.stderr.on('data', () => {
        const match = /Please navigate to: (\S+)/.exec(stderr);
        if (match?.[1]) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      exited.then(() => reject(new Error(`the Inspector exited before asking for a login:\n${stderr}${stdout}`)));
    });
    const context = await browser.newContext();
    context.setDefaultTimeout(15_000);
    try {
      const page = await context.newPage();
      await page.goto(loginUrl);
      // The client's loopback callback: neither Keycloak nor this server (whose own callback
      // passes the answer on in the workaround way).
      const callback = (url: URL) =>
        ['127.0.0.1', 'localhost'].includes(url.hostname) &&
        url.port !== new URL(keycloak.url).port &&
        url.port !== String(serverPort);
      const first = await Promise.race([
        page
          .locator('#kc-form-login')
          .waitFor()
          .then(() => 'login' as const),
        page.waitForURL(callback).then(() => 'redirected' as const),
      ]);
      if (first === 'redirected') {
        return { code: await exited, stdout, stderr: `${stderr}\nredirected without a login: ${page.url()}`, loginUrl };
      }
      await page.fill('#username', user.username);
      await page.fill('#password', user.password);
      await page.click('#kc-login');
      if (options.consent) {
        await page.locator('#kc-cancel').waitFor();
        await page.click('#kc-login');
      }
      await page.waitForURL(callback);
    } finally {
      await context.close();
    }
    return { code: await exited, stdout, stderr, loginUrl };
  } finally {
    child.kill();
    await rm(home, { recursive: true, force: true });
  }
}

/** Runs the authorization code flow for `scope` with the SDK's own `auth()`, the browser doing the login. */
async function authorize(oauth: BrowserOAuthProvider, scope: string): Promise<void> {
  const serverUrl = `${baseUrl}/mcp`;
  const first = await auth(oauth, { serverUrl, scope });
  if (first === 'AUTHORIZED') return;
  const code = (await oauth.callback.next()).get('code');
  assert.ok(code, 'the login returned a code');
  assert.equal(await auth(oauth, { serverUrl, authorizationCode: code }), 'AUTHORIZED');
}

async function registerAt(url: string, body: unknown): Promise<{ status: number; body: unknown }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json().catch(() => ({})) };
}

/**
 * A plain authorization code + PKCE login for a registered client, asking for `scope` and no
 * `resource` (what a client that registered with a narrow scope does).
 */
async function loginWithoutResource(
  oauth: BrowserOAuthProvider,
  scope: string,
  passThrough?: string,
): Promise<{ access_token: string }> {
  const { createPkce } = await import('@mcp-auth-stack/keycloak/testing');
  const pkce = createPkce();
  const clientId = (oauth.clientInformation() as { client_id: string }).client_id;
  const url = new URL(passThrough ? `${passThrough}/authorize` : `${keycloak.realmUrl}/protocol/openid-connect/auth`);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: oauth.callback.redirectUri,
    scope,
    state: 'x',
    code_challenge: pkce.challenge,
    code_challenge_method: 'S256',
  }).toString();
  await oauth.redirectToAuthorization(url);
  const code = (await oauth.callback.next()).get('code') as string;
  const response = await fetch(
    passThrough ? `${passThrough}/token` : `${keycloak.realmUrl}/protocol/openid-connect/token`,
    {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code,
        client_id: clientId,
        redirect_uri: oauth.callback.redirectUri,
        code_verifier: pkce.verifier,
      }),
    },
  );
  assert.equal(response.status, 200);
  return (await response.json()) as { access_token: string };
}

/**
 * An access token of this client that has already expired: Keycloak's admin API shortens the
 * client's access-token lifespan to 1 s, a refresh yields a token, and the test waits it out.
 */
async function expiredAccessToken(oauth: BrowserOAuthProvider): Promise<string> {
  const admin = await keycloakAdminToken(keycloak.url);
  const clientId = (oauth.clientInformation() as { client_id: string }).client_id;
  const clients = (await (
    await fetch(`${keycloak.url}/admin/realms/mcp/clients?clientId=${encodeURIComponent(clientId)}`, {
      headers: { authorization: `Bearer ${admin}` },
    })
  ).json()) as { id: string; attributes?: Record<string, string> }[];
  const client = clients[0] as { id: string; attributes?: Record<string, string> };
  const update = await fetch(`${keycloak.url}/admin/realms/mcp/clients/${client.id}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...client, attributes: { ...client.attributes, 'access.token.lifespan': '1' } }),
  });
  assert.equal(update.status, 204);
  const refreshed = await fetch(`${keycloak.realmUrl}/protocol/openid-connect/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: oauth.tokens()?.refresh_token as string,
      client_id: clientId,
      resource: `${baseUrl}/mcp`,
    }),
  });
  const body = (await refreshed.json()) as { access_token: string; refresh_token: string };
  oauth.saveTokens({
    ...(oauth.tokens() as NonNullable<ReturnType<typeof oauth.tokens>>),
    refresh_token: body.refresh_token,
  });
  // The server allows 5 s of clock leeway.
  const expiresAt = Number(decodeJwtPayload(body.access_token).exp) * 1000;
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt + 6_500 - Date.now())));
  await fetch(`${keycloak.url}/admin/realms/mcp/clients/${client.id}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...client, attributes: { ...client.attributes, 'access.token.lifespan': '300' } }),
  });
  return body.access_token;
}

async function postTokenForm(url: string, form: Record<string, string>): Promise<{ access_token: string }> {
  const response = await fetch(url, { method: 'POST', body: new URLSearchParams(form) });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()) as { access_token: string };
}
