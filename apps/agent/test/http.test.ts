import assert from 'node:assert/strict';
import { type AddressInfo, connect } from 'node:net';
import { test } from 'node:test';
import { serve } from '@hono/node-server';
import type { ExpensesAgent } from '../src/agent.ts';
import { createAgentApp } from '../src/http.ts';
import { createLogger } from '../src/logger.ts';

/**
 * Who `/chat` answers without AGENT_CHAT_TOKEN, decided on what the connection is (its remote
 * address, as @hono/node-server hands it in) rather than on headers the caller writes. The
 * process-level tests (agent-key-mode.test.ts) cover the headers over a real socket.
 */
const agent = {
  toolNames: [],
  run: async () => ({ reply: 'ok', toolCalls: [] }),
} as unknown as ExpensesAgent;

function chat(app: ReturnType<typeof createAgentApp>, remoteAddress: string, headers: Record<string, string> = {}) {
  return app.request(
    'http://localhost:8001/chat',
    {
      method: 'POST',
      headers: { host: 'localhost:8001', 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ message: 'hi' }),
    },
    { incoming: { socket: { remoteAddress } } },
  );
}

test('without a token: a loopback connection is answered; another address is refused whatever its Host says', async () => {
  const app = createAgentApp({ agent: () => agent, logger: createLogger('error') });
  for (const local of ['127.0.0.1', '::1', '::ffff:127.0.0.1'])
    assert.equal((await chat(app, local)).status, 200, local);
  for (const remote of ['192.0.2.2', '::ffff:192.0.2.2', '2001:db8::2', '']) {
    const response = await chat(app, remote);
    assert.equal(response.status, 403, remote);
    assert.match(await response.text(), /answers local callers only/);
  }
});

test('without a token: a request that came through a reverse proxy on this machine is refused', async () => {
  const app = createAgentApp({ agent: () => agent, logger: createLogger('error') });
  for (const header of [
    { 'x-forwarded-for': '198.51.100.7' },
    { forwarded: 'for=198.51.100.7' },
    { 'x-real-ip': '198.51.100.7' },
  ]) {
    assert.equal((await chat(app, '127.0.0.1', header)).status, 403, JSON.stringify(header));
  }
});

test('AGENT_CHAT_UNAUTHENTICATED: any address, still no web page and no foreign Host', async () => {
  const app = createAgentApp({ agent: () => agent, logger: createLogger('error'), chatUnauthenticated: true });
  assert.equal((await chat(app, '10.89.0.1')).status, 200, "compose's gateway");
  assert.equal((await chat(app, '10.89.0.1', { origin: 'https://attacker.example' })).status, 403);
  assert.equal((await chat(app, '10.89.0.1', { host: 'attacker.example:8001' })).status, 403);
});

test('with a token, the token decides, from any address', async () => {
  const app = createAgentApp({ agent: () => agent, logger: createLogger('error'), chatToken: 'chat-secret' });
  assert.equal((await chat(app, '192.0.2.2', { authorization: 'Bearer chat-secret' })).status, 200);
  assert.equal((await chat(app, '127.0.0.1')).status, 401);
  for (const guess of ['chat', 'chat-secre', 'chat-secret-and-more', 'CHAT-SECRET']) {
    assert.equal((await chat(app, '127.0.0.1', { authorization: `Bearer ${guess}` })).status, 401, guess);
  }
});

test('a turn that outlives its deadline is stopped and answered 504, freeing its slot', async () => {
  let stopped = false;
  const stalling = {
    toolNames: [],
    run: (_message: string, { signal }: { signal?: AbortSignal } = {}) =>
      new Promise((_resolve, reject) =>
        signal?.addEventListener('abort', () => {
          stopped = true;
          reject(signal.reason);
        }),
      ),
  } as unknown as ExpensesAgent;
  const app = createAgentApp({
    agent: () => stalling,
    logger: createLogger('error'),
    maxConcurrentChats: 1,
    turnTimeoutMs: 50,
  });
  // AbortSignal.timeout does not keep a process alive (a server's socket does, in real use).
  const keepAlive = setInterval(() => {}, 1000);
  try {
    const response = await chat(app, '127.0.0.1');
    assert.equal(response.status, 504);
    assert.deepEqual(await response.json(), {
      error: 'timeout',
      error_description: 'The turn took longer than 0.05 s.',
    });
    assert.ok(stopped, 'the agent was told to stop');
    assert.equal((await chat(app, '127.0.0.1')).status, 504, 'the slot was freed: the next turn ran (and stalled) too');
  } finally {
    clearInterval(keepAlive);
  }
});

test('a caller who disconnects mid-turn stops the turn, and is logged as a disconnect, not as a failure', async () => {
  let turnStarted = () => {};
  const started = new Promise<void>((resolve) => {
    turnStarted = resolve;
  });
  let stopped = false;
  const stalling = {
    toolNames: [],
    run: (_message: string, { signal }: { signal?: AbortSignal } = {}) => {
      turnStarted();
      return new Promise((_resolve, reject) =>
        signal?.addEventListener('abort', () => {
          stopped = true;
          reject(signal.reason);
        }),
      );
    },
  } as unknown as ExpensesAgent;
  const lines: string[] = [];
  const app = createAgentApp({ agent: () => stalling, logger: createLogger('info', (line) => lines.push(line)) });
  // A real socket: the request's signal is aborted when its connection closes.
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 });
  try {
    await new Promise((resolve) => server.once('listening', resolve));
    const body = JSON.stringify({ message: 'hi' });
    const caller = connect((server.address() as AddressInfo).port, '127.0.0.1');
    caller.write(
      `POST /chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    await started;
    caller.destroy(); // curl's Ctrl-C, a proxy's timeout
    for (let waited = 0; lines.length === 0 && waited < 10_000; waited += 20) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(stopped, 'the agent was told to stop');
    assert.deepEqual(
      lines.map((line) => {
        const { level, msg } = JSON.parse(line) as { level: string; msg: string };
        return `${level} ${msg}`;
      }),
      ['info chat abandoned: the caller disconnected'],
    );
  } finally {
    server.close();
  }
});
