import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { DEMO_USERS, type RunningKeycloak, startKeycloak } from '@mcp-auth-stack/keycloak';
import { freePort } from '@mcp-auth-stack/keycloak/testing';
import { startTestStack } from './helpers.ts';

/**
 * mcp-remote (pinned in package.json), the stdio bridge that Claude Desktop, Cursor and other
 * stdio-only clients use, as a third-party client: its own OAuth flow (discovery, DCR, PKCE,
 * `resource`, the RFC 9207 `iss` check of the SDK client it is built on) against a real
 * Keycloak 26.7.3, with the login done by Chromium as its `$BROWSER`
 * (fixtures/chromium-login.ts), then MCP over its stdio. The same command line the README
 * gives, in each way the server can send a client to Keycloak.
 */
const [alice] = DEMO_USERS as [(typeof DEMO_USERS)[0]];
const MCP_REMOTE = join(dirname(createRequire(import.meta.url).resolve('mcp-remote/package.json')), 'dist/proxy.js');
const BROWSER_SCRIPT = fileURLToPath(new URL('./fixtures/chromium-login.ts', import.meta.url));

let keycloak: RunningKeycloak;
let serverPort: number;
let baseUrl: string;

before(
  async () => {
    serverPort = await freePort();
    baseUrl = `http://localhost:${serverPort}`;
    keycloak = await startKeycloak({
      httpPort: await freePort(),
      managementPort: await freePort(),
      realmEnv: {
        MCP_SERVER_RESOURCE_URL: `${baseUrl}/mcp`,
        MCP_OAUTH_PROXY_CALLBACK_URL: `${baseUrl}/auth/callback`,
      },
    });
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
