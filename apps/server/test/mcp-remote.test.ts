import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEMO_USERS, type RunningKeycloak } from '@mcp-auth-stack/keycloak';
import { type CallbackServer, createPkce, freePort, startCallbackServer } from '@mcp-auth-stack/testing';
import { launchChromium } from '@mcp-auth-stack/testing/browser';
import { BrowserOAuthProvider } from '@mcp-auth-stack/testing/mcp-oauth';
import { startKeycloakForServer } from '@mcp-auth-stack/testing-stack/keycloak';
import type { Browser } from 'playwright-core';
import { startTestStack, type TestStack } from './helpers.ts';

/**
 * mcp-remote (pinned in package.json), the stdio bridge that Claude Desktop, Cursor and other
 * stdio-only clients use, as a third-party client: its own OAuth flow (discovery, DCR, PKCE,
 * `resource`, the RFC 9207 `iss` check of the SDK client it is built on) against a real
 * Keycloak 26.7.3, with the login done by Chromium as its `$BROWSER`
 * (fixtures/chromium-login.ts), then MCP over its stdio. The same command line the README
 * gives, in each way the server can send a client to Keycloak. Then the checks of the workaround
 * way's pass-through that a client cannot get around (same Keycloak, Chromium in this process).
 */
const [alice] = DEMO_USERS as [(typeof DEMO_USERS)[0]];
const MCP_REMOTE = join(dirname(createRequire(import.meta.url).resolve('mcp-remote/package.json')), 'dist/proxy.js');
const BROWSER_SCRIPT = fileURLToPath(new URL('./fixtures/chromium-login.ts', import.meta.url));

let keycloak: RunningKeycloak;
let serverPort: number;
let baseUrl: string;

before(
  async () => {
    ({ keycloak, serverPort, baseUrl } = await startKeycloakForServer());
  },
  { timeout: 600_000 },
);

after(async () => {
  await keycloak?.stop();
});

interface JsonRpcResponse {
  id: number;
  result?: Record<string, unknown>;
  error?: { code: number; message: string };
}

/** mcp-remote as a desktop client starts it, talking JSON-RPC on its stdin and stdout. */
class McpRemote {
  readonly child: ChildProcessWithoutNullStreams;
  stderr = '';
  #buffer = '';
  #waiting = new Map<number, (response: JsonRpcResponse) => void>();
  #nextId = 1;
  readonly exited: Promise<number | null>;

  constructor(child: ChildProcessWithoutNullStreams) {
    this.child = child;
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      this.#buffer += chunk;
      for (let newline = this.#buffer.indexOf('\n'); newline >= 0; newline = this.#buffer.indexOf('\n')) {
        const line = this.#buffer.slice(0, newline).trim();
        this.#buffer = this.#buffer.slice(newline + 1);
        if (!line) continue;
        const message = JSON.parse(line) as JsonRpcResponse;
        this.#waiting.get(message.id)?.(message);
        this.#waiting.delete(message.id);
      }
    });
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  request(method: string, params: Record<string, unknown> = {}, timeoutMs = 120_000): Promise<JsonRpcResponse> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no answer to ${method} within ${timeoutMs} ms; mcp-remote said:\n${this.stderr}`)),
        timeoutMs,
      );
      this.#waiting.set(id, (response) => {
        clearTimeout(timer);
        resolve(response);
      });
      this.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`mcp-remote exited (${code}) before answering ${method}:\n${this.stderr}`));
      });
      this.child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
    });
  }

  notify(method: string): void {
    this.child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', method })}\n`);
  }

  async close(): Promise<void> {
    this.child.stdin.end();
    this.child.kill('SIGTERM');
    await Promise.race([this.exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

interface BrowserRun {
  opened: string;
  pages: string[];
  callback?: { iss: string | null; code: string | null; error: string | null };
  callbackPage?: string;
  error?: string;
}

/**
 * Runs `mcp-remote <server>/mcp <port>` with a fresh token folder and the Chromium script as its
 * browser, then initialize, tools/list, add_user_expense and get_user_expenses over stdio.
 */
async function connectThroughMcpRemote(description: string): Promise<{ browser: BrowserRun[]; stderr: string }> {
  const configDir = await mkdtemp(join(tmpdir(), 'mcp-remote-'));
  const browserLog = join(configDir, 'browser.log');
  const callbackPort = await freePort();
  // What a desktop client's configuration runs: `npx mcp-remote http://localhost:8000/mcp 33418`.
  const child = spawn(process.execPath, [MCP_REMOTE, `${baseUrl}/mcp`, String(callbackPort), '--auth-timeout', '120'], {
    env: {
      PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`,
      HOME: configDir,
      MCP_REMOTE_CONFIG_DIR: configDir,
      BROWSER: BROWSER_SCRIPT,
      MCP_TEST_LOGIN_USER: alice.username,
      MCP_TEST_LOGIN_PASSWORD: alice.password,
      MCP_TEST_CALLBACK_PORT: String(callbackPort),
      MCP_TEST_BROWSER_LOG: browserLog,
      ...(process.env.CHROMIUM_PATH ? { CHROMIUM_PATH: process.env.CHROMIUM_PATH } : {}),
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const remote = new McpRemote(child);
  try {
    const initialized = await remote.request('initialize', {
      protocolVersion: '2025-06-18',
      capabilities: {},
      clientInfo: { name: 'mcp-remote-e2e', version: '1.0.0' },
    });
    assert.equal(initialized.error, undefined, JSON.stringify(initialized.error));
    assert.equal((initialized.result?.serverInfo as { name: string } | undefined)?.name !== undefined, true);
    remote.notify('notifications/initialized');

    const listed = await remote.request('tools/list');
    const names = ((listed.result?.tools ?? []) as { name: string }[]).map((tool) => tool.name);
    for (const tool of ['add_user_expense', 'get_user_expenses']) assert.ok(names.includes(tool), names.join(', '));

    const added = await remote.request('tools/call', {
      name: 'add_user_expense',
      arguments: { date: '2025-12-18', amount: 4.2, category: 'food', description, payment_method: 'cash' },
    });
    assert.equal(added.error, undefined, JSON.stringify(added.error));
    assert.notEqual(added.result?.isError, true, JSON.stringify(added.result));

    const read = await remote.request('tools/call', { name: 'get_user_expenses', arguments: {} });
    const content = read.result?.structuredContent as
      | { expenses: { description: string; amount: string }[] }
      | undefined;
    const expenses = content?.expenses ?? [];
    assert.ok(
      expenses.some((expense) => expense.description === description && Number(expense.amount) === 4.2),
      JSON.stringify(expenses),
    );
    return { browser: await browserRuns(browserLog), stderr: remote.stderr };
  } finally {
    await remote.close();
    await rm(configDir, { recursive: true, force: true });
  }
}

/**
 * What the browser script reported. It writes after closing Chromium, which may be after
 * mcp-remote has already gone on with the code: wait a little for the line.
 */
async function browserRuns(file: string): Promise<BrowserRun[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.endsWith('\n') || Date.now() > deadline) {
      return text
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as BrowserRun);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function keycloakStack(registration: 'direct' | 'workaround') {
  return startTestStack({
    PORT: String(serverPort),
    MCP_SERVER_BASE_URL: baseUrl,
    MCP_AUTH_PROVIDER: 'keycloak',
    KEYCLOAK_REALM_URL: keycloak.realmUrl,
    KEYCLOAK_REGISTRATION: registration,
  });
}

describe('mcp-remote, out of the box', () => {
  test('workaround: registers through the server, logs in through its pass-through, `iss` is the server', async () => {
    const stack = await keycloakStack('workaround');
    try {
      const { browser, stderr } = await connectThroughMcpRemote('mcp-remote via workaround');
      assert.equal(browser.length, 1, `one login: ${JSON.stringify(browser)}\n${stderr}`);
      const [login] = browser as [BrowserRun];
      assert.equal(login.error, undefined, JSON.stringify(login));
      assert.ok(login.opened.startsWith(`${baseUrl}/authorize?`), login.opened);
      const opened = new URL(login.opened);
      assert.equal(opened.searchParams.get('code_challenge_method'), 'S256');
      assert.equal(opened.searchParams.get('resource'), `${baseUrl}/mcp`);
      assert.deepEqual(login.pages, ['login', 'keycloak consent', 'callback']);
      assert.deepEqual(login.callback, { iss: baseUrl, code: 'present', error: null });
      assert.doesNotMatch(stderr, /IssuerMismatch|Issuer mismatch/);
      const rows = (
        await stack.sql.query("SELECT count(*)::int AS n FROM expenses WHERE description = 'mcp-remote via workaround'")
      ).rows;
      assert.deepEqual(rows, [{ n: 1 }]);
    } finally {
      await stack.close();
    }
  });

  test('direct: registers at Keycloak itself (client_uri on its own site accepted), logs in there', async () => {
    const stack = await keycloakStack('direct');
    try {
      const { browser, stderr } = await connectThroughMcpRemote('mcp-remote via direct');
      assert.equal(browser.length, 1, `one login: ${JSON.stringify(browser)}\n${stderr}`);
      const [login] = browser as [BrowserRun];
      assert.equal(login.error, undefined, JSON.stringify(login));
      assert.ok(login.opened.startsWith(`${keycloak.realmUrl}/protocol/openid-connect/auth?`), login.opened);
      assert.deepEqual(login.pages, ['login', 'keycloak consent', 'callback']);
      assert.deepEqual(login.callback, { iss: keycloak.realmUrl, code: 'present', error: null });
      const rows = (
        await stack.sql.query("SELECT count(*)::int AS n FROM expenses WHERE description = 'mcp-remote via direct'")
      ).rows;
      assert.deepEqual(rows, [{ n: 1 }]);
    } finally {
      await stack.close();
    }
  });

  test('oauth_proxy: registers at the proxy, approves its consent page, signs in at Keycloak', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'mcp-remote-proxy-data-'));
    const stack = await startTestStack({
      PORT: String(serverPort),
      MCP_SERVER_BASE_URL: baseUrl,
      MCP_AUTH_PROVIDER: 'oauth_proxy',
      KEYCLOAK_REALM_URL: keycloak.realmUrl,
      DATA_DIR: dataDir,
    });
    try {
      const { browser, stderr } = await connectThroughMcpRemote('mcp-remote via oauth_proxy');
      assert.equal(browser.length, 1, `one login: ${JSON.stringify(browser)}\n${stderr}`);
      const [login] = browser as [BrowserRun];
      assert.equal(login.error, undefined, JSON.stringify(login));
      assert.ok(login.opened.startsWith(`${baseUrl}/authorize?`), login.opened);
      assert.deepEqual(login.pages, ['proxy consent', 'login', 'callback']);
      assert.deepEqual(login.callback, { iss: baseUrl, code: 'present', error: null });
      const rows = (
        await stack.sql.query(
          "SELECT count(*)::int AS n FROM expenses WHERE description = 'mcp-remote via oauth_proxy'",
        )
      ).rows;
      assert.deepEqual(rows, [{ n: 1 }]);
    } finally {
      await stack.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('the workaround pass-through refuses what it must', () => {
  let stack: TestStack;
  let browser: Browser;
  let callback: CallbackServer;
  before(async () => {
    stack = await keycloakStack('workaround');
    browser = await launchChromium();
    callback = await startCallbackServer();
  });
  after(async () => {
    await callback?.close();
    await browser?.close();
    await stack?.close();
  });

  async function registerClient(name: string): Promise<string> {
    const response = await fetch(`${baseUrl}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: name,
        redirect_uris: [callback.redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      }),
    });
    const body = (await response.json()) as Record<string, unknown>;
    assert.equal(response.status, 201, JSON.stringify(body));
    assert.deepEqual(body.redirect_uris, [callback.redirectUri], "the answer names the client's own redirect URI");
    assert.equal(body.registration_access_token, undefined);
    return body.client_id as string;
  }

  function authorizeUrl(clientId: string, state: string, challenge: string, redirectUri = callback.redirectUri): URL {
    const url = new URL(`${baseUrl}/authorize`);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: clientId,
      redirect_uri: redirectUri,
      scope: 'mcp:access expenses:read',
      state,
      code_challenge: challenge,
      code_challenge_method: 'S256',
      resource: `${baseUrl}/mcp`,
    }).toString();
    return url;
  }

  /** A login by alice in Chromium; returns what reached the client's callback and the verifier. */
  async function login(clientId: string, name: string, state: string, withRedirectUri = true) {
    const pkce = createPkce();
    const url = authorizeUrl(clientId, state, pkce.challenge);
    if (!withRedirectUri) url.searchParams.delete('redirect_uri');
    await new BrowserOAuthProvider(browser, callback, alice, { clientName: name }).redirectToAuthorization(url);
    return { params: await callback.next(), verifier: pkce.verifier };
  }

  async function exchange(form: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> {
    const response = await fetch(`${baseUrl}/token`, { method: 'POST', body: new URLSearchParams(form) });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  test('a redirect_uri the client did not register gets a 400 page, never a redirect', async () => {
    const clientId = await registerClient('redirect check');
    const { challenge } = createPkce();
    for (const other of [
      'http://127.0.0.1:9/elsewhere',
      `${callback.redirectUri}/more`,
      'https://evil.example.com/cb',
    ]) {
      const response = await fetch(authorizeUrl(clientId, 's', challenge, other), { redirect: 'manual' });
      assert.equal(response.status, 400, other);
      assert.equal(response.headers.get('location'), null, other);
    }
    // RFC 8252: another port on a loopback IP literal is the same redirect URI.
    const otherPort = new URL(callback.redirectUri);
    otherPort.port = String(Number(otherPort.port) === 65535 ? 65534 : Number(otherPort.port) + 1);
    const allowed = await fetch(authorizeUrl(clientId, 'client-state', challenge, otherPort.href), {
      redirect: 'manual',
    });
    assert.equal(allowed.status, 302);
    const upstream = new URL(allowed.headers.get('location') ?? '');
    assert.equal(`${upstream.origin}${upstream.pathname}`, `${keycloak.realmUrl}/protocol/openid-connect/auth`);
    assert.equal(upstream.searchParams.get('redirect_uri'), `${baseUrl}/auth/callback`);
    assert.notEqual(upstream.searchParams.get('state'), 'client-state');
    assert.equal(upstream.searchParams.get('code_challenge'), challenge);
    assert.equal(upstream.searchParams.get('resource'), `${baseUrl}/mcp`);

    // A request object would carry its own redirect_uri and state to Keycloak: refused, with iss.
    const withRequestUri = authorizeUrl(clientId, 'client-state', challenge);
    withRequestUri.searchParams.set('request_uri', 'https://evil.example.com/request.jwt');
    const refused = await fetch(withRequestUri, { redirect: 'manual' });
    assert.equal(refused.status, 302);
    const answer = new URL(refused.headers.get('location') ?? '');
    assert.equal(`${answer.origin}${answer.pathname}`, callback.redirectUri);
    assert.equal(answer.searchParams.get('error'), 'request_uri_not_supported');
    assert.equal(answer.searchParams.get('state'), 'client-state');
    assert.equal(answer.searchParams.get('iss'), baseUrl);
  });

  test('registration: redirect URIs only on loopback or the allowed hosts, as the realm has it', async () => {
    const response = await fetch(`${baseUrl}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: 'outside redirect',
        redirect_uris: ['https://evil.example.com/callback'],
        token_endpoint_auth_method: 'none',
      }),
    });
    assert.equal(response.status, 400);
    assert.equal(((await response.json()) as { error: string }).error, 'invalid_redirect_uri');
  });

  test('a client it did not register goes to Keycloak unchanged; a forged state at the callback is refused', async () => {
    const { challenge } = createPkce();
    const direct = await fetch(authorizeUrl('vscode-mcp-client', 'x', challenge), { redirect: 'manual' });
    assert.equal(direct.status, 302);
    const location = new URL(direct.headers.get('location') ?? '');
    assert.equal(`${location.origin}${location.pathname}`, `${keycloak.realmUrl}/protocol/openid-connect/auth`);
    assert.equal(location.search, authorizeUrl('vscode-mcp-client', 'x', challenge).search);

    const forged = await fetch(`${baseUrl}/auth/callback?state=forged&code=whatever`, { redirect: 'manual' });
    assert.equal(forged.status, 400);
    assert.equal(forged.headers.get('location'), null);
  });

  test('a code goes back with the client state and iss, and is exchanged once, by its client, for its redirect_uri', async () => {
    const clientId = await registerClient('code check');
    const otherClient = await registerClient('another client');
    const base = (code: string, verifier: string) => ({
      grant_type: 'authorization_code',
      code,
      client_id: clientId,
      redirect_uri: callback.redirectUri,
      code_verifier: verifier,
      resource: `${baseUrl}/mcp`,
    });

    // A wrong redirect_uri: refused, and the code stays its owner's (anyone who saw it could
    // otherwise end the login); the right request then gets tokens from real Keycloak, once.
    const first = await login(clientId, 'code check', 'state-1');
    assert.equal(first.params.get('state'), 'state-1');
    assert.equal(first.params.get('iss'), baseUrl);
    const code1 = first.params.get('code') as string;
    assert.ok(code1);
    const wrongRedirect = await exchange({
      ...base(code1, first.verifier),
      redirect_uri: 'http://127.0.0.1:9/callback',
    });
    assert.equal(wrongRedirect.status, 400);
    assert.equal(wrongRedirect.body.error, 'invalid_grant');
    const rightful = await exchange(base(code1, first.verifier));
    assert.equal(rightful.status, 200, JSON.stringify(rightful.body));
    assert.equal((await exchange(base(code1, first.verifier))).body.error, 'invalid_grant', 'single use');

    // Another client presenting the code: refused; its owner still redeems it.
    const second = await login(clientId, 'code check', 'state-2');
    const code2 = second.params.get('code') as string;
    const stolen = await exchange({ ...base(code2, second.verifier), client_id: otherClient });
    assert.equal(stolen.status, 400);
    assert.equal(stolen.body.error, 'invalid_grant');
    assert.equal((await exchange(base(code2, second.verifier))).status, 200, 'the owner redeems it');

    // The rightful exchange works once; a replay is refused.
    const third = await login(clientId, 'code check', 'state-3');
    const code3 = third.params.get('code') as string;
    const tokens = await exchange(base(code3, third.verifier));
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
    assert.equal(typeof tokens.body.access_token, 'string');
    assert.equal(typeof tokens.body.refresh_token, 'string');
    const replay = await exchange(base(code3, third.verifier));
    assert.equal(replay.status, 400);
    assert.equal(replay.body.error, 'invalid_grant');

    // Refresh goes through unchanged.
    const refreshed = await exchange({
      grant_type: 'refresh_token',
      refresh_token: tokens.body.refresh_token as string,
      client_id: clientId,
    });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.notEqual(refreshed.body.access_token, tokens.body.access_token);
  });

  test('without redirect_uri (one registered), the login goes to it and the token request needs none', async () => {
    const clientId = await registerClient('no redirect_uri');
    const { params, verifier } = await login(clientId, 'no redirect_uri', 'state-4', false);
    assert.equal(params.get('iss'), baseUrl);
    const tokens = await exchange({
      grant_type: 'authorization_code',
      code: params.get('code') as string,
      client_id: clientId,
      code_verifier: verifier,
      resource: `${baseUrl}/mcp`,
    });
    assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  });
});
