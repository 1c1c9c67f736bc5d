import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, createPublicKey, type JsonWebKeyInput } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEMO_USERS, type RunningKeycloak } from '@mcp-auth-stack/keycloak';
import { type CallbackServer, decodeJwtPayload, startCallbackServer } from '@mcp-auth-stack/testing';
import { launchChromium, signIn } from '@mcp-auth-stack/testing/browser';
import { AUTHORIZATION_SERVER_PASSES, checkAuthorizationServer, summary } from '@mcp-auth-stack/testing/conformance';
import { BrowserOAuthProvider, keycloakAdminToken, keycloakUserId } from '@mcp-auth-stack/testing/mcp-oauth';
import { startKeycloakForServer } from '@mcp-auth-stack/testing-stack/keycloak';
import type { Browser } from 'playwright-core';
import { postMcp, startTestStack, type TestStack } from './helpers.ts';

/**
 * The server in `keycloak` mode against a real Keycloak 26.7.3 started from the repository's
 * realm and real PostgreSQL: discovery from a bare 401, forged tokens, the workaround's
 * registration repairs, and the MCP Inspector CLI logging in through Chromium. The login flows
 * of an MCP client (DCR, CIMD, step-up, refresh, revocation, a wrong password, registration
 * off) are Playwright specs in e2e/, run against `pnpm start`.
 */
const [alice] = DEMO_USERS as [(typeof DEMO_USERS)[0]];

let keycloak: RunningKeycloak;
let browser: Browser;
let serverPort: number;
let baseUrl: string;
const callbacks: CallbackServer[] = [];

before(
  async () => {
    ({ keycloak, serverPort, baseUrl } = await startKeycloakForServer());
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

/** Alice in a fresh browser: signs in at Keycloak, consents for the conformance suite's client, reaches the callback. */
async function signInUntil(authorizationUrl: string, callbackPrefix: string): Promise<void> {
  const context = await browser.newContext();
  context.setDefaultTimeout(15_000);
  try {
    const page = await context.newPage();
    await signIn(page, authorizationUrl, alice, { expectClientName: 'MCP conformance suite' });
    await page.waitForURL((target) => target.href.startsWith(callbackPrefix));
  } finally {
    await context.close();
  }
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

describe('direct: clients register at Keycloak itself', () => {
  let stack: TestStack;
  before(async () => {
    stack = await keycloakStack('direct');
  });
  after(async () => {
    await stack?.close();
  });

  test('the official MCP conformance suite, as a client of the realm: metadata and the code grant pass', async () => {
    const run = await checkAuthorizationServer(keycloak.realmUrl, {
      resource: `${baseUrl}/mcp`,
      signIn: signInUntil,
    });
    assert.deepEqual(summary(run), AUTHORIZATION_SERVER_PASSES, run.output);
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
      result.structuredContent.expenses.some((e) => e.description === 'Inspector coffee'),
      run.stdout,
    );
  });

  test("a person added as the README's Azure section says (a password, the group mcp-users) logs in with the Inspector", async () => {
    // The deployed realm has no demo users (keycloak/realm-for-deployment.ts): people are made in
    // the admin console, and the group alone must let them in.
    const dana = { id: '', username: 'dana', password: 'dana-password-for-this-test', admin: false };
    const created = await fetch(`${keycloak.url}/admin/realms/mcp/users`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${await keycloakAdminToken(keycloak.url)}`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({
        username: dana.username,
        enabled: true,
        email: 'dana@example.com',
        emailVerified: true,
        firstName: 'Dana',
        lastName: 'Demo',
        credentials: [{ type: 'password', value: dana.password, temporary: false }],
        groups: ['/mcp-users'],
      }),
    });
    assert.equal(created.status, 201, await created.text());
    dana.id = await keycloakUserId(keycloak.url, dana.username);
    await stack.sql.query(
      `INSERT INTO expenses (user_id, date, amount, category, description, payment_method)
       VALUES ($1, '2025-12-01', 4.1, 'food', 'Dana tea', 'cash')`,
      [dana.id],
    );
    const run = await inspectorLogin(dana, { consent: false, clientId: 'vscode-mcp-client' });
    assert.equal(run.code, 0, run.stderr + run.stdout);
    const result = JSON.parse(run.stdout) as { structuredContent: { expenses: { description: string }[] } };
    assert.deepEqual(
      result.structuredContent.expenses.map((e) => e.description),
      ['Dana tea'],
    );
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
    // Keycloak announces metadata documents (the cimd feature); their logins would skip the
    // pass-through and come back with the realm's iss, so the presented metadata does not.
    const realmMetadata = (await (await fetch(`${keycloak.realmUrl}/.well-known/openid-configuration`)).json()) as {
      client_id_metadata_document_supported?: boolean;
    };
    assert.equal(realmMetadata.client_id_metadata_document_supported, true, 'the realm announces it');
    assert.equal((as as Record<string, unknown>).client_id_metadata_document_supported, undefined);
    // No OpenID provider under this issuer: the realm's ID tokens name the realm in `iss`, so a
    // client checking one against this document would refuse it (a review's finding).
    assert.equal((await fetch(`${baseUrl}/.well-known/openid-configuration`)).status, 404);
    const presented = as as Record<string, unknown>;
    assert.equal(presented.userinfo_endpoint, undefined);
    assert.equal(presented.id_token_signing_alg_values_supported, undefined);
    assert.ok(!(presented.scopes_supported as string[]).includes('openid'));
    assert.ok((presented.scopes_supported as string[]).includes('mcp:access'));
    assert.deepEqual(presented.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(presented.response_types_supported, ['code']);
    assert.deepEqual((presented.grant_types_supported as string[]).toSorted(), [
      'authorization_code',
      'client_credentials',
      'refresh_token',
    ]);
  });

  test('a strict client, the MCP Inspector CLI, checks RFC 9207 `iss` and succeeds: the answer names this server', async () => {
    // The login passes through this server, whose callback answers the client with its own issuer.
    await stack.sql.query(
      `INSERT INTO expenses (user_id, date, amount, category, description, payment_method)
       VALUES ($1, '2025-11-30', 4.1, 'food', 'Via workaround', 'cash')`,
      [await keycloakUserId(keycloak.url, 'alice')],
    );
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

  test('the official MCP conformance suite, as a client of this authorization server: metadata and the code grant pass', async () => {
    const run = await checkAuthorizationServer(baseUrl, { resource: `${baseUrl}/mcp`, signIn: signInUntil });
    // Metadata documents are not announced here on purpose (their logins would come back with
    // Keycloak's iss, docs/keycloak.md): the suite's CIMD check warns, and only it.
    assert.deepEqual(
      summary(run),
      AUTHORIZATION_SERVER_PASSES.map((check) =>
        check === 'authorization-server-metadata-cimd SUCCESS' ? 'authorization-server-metadata-cimd WARNING' : check,
      ),
      run.output,
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
  const { createPkce } = await import('@mcp-auth-stack/testing');
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

async function postTokenForm(url: string, form: Record<string, string>): Promise<{ access_token: string }> {
  const response = await fetch(url, { method: 'POST', body: new URLSearchParams(form) });
  assert.equal(response.status, 200, await response.clone().text());
  return (await response.json()) as { access_token: string };
}
