import assert from 'node:assert/strict';
import { type AddressInfo, connect } from 'node:net';
import { describe, test } from 'node:test';
import { serve } from '@hono/node-server';
import type { ConfirmDestructive, ExpensesAgent, TurnEvents } from '../src/agent.ts';
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

/** What `createAgentApp` hands a turn: the fakes below read these. */
type FakeRunOptions = { signal?: AbortSignal; events?: TurnEvents; confirmDestructive?: ConfirmDestructive };

describe('AGENT_DESTRUCTIVE_TOOLS=ask: a call that may delete data is put to the caller', () => {
  /**
   * An agent whose turn asks about one delete per id in `deletes`, runs each confirmed one
   * (`deleted`), and replies with what it did; it stops when told to.
   */
  function deletingAgent(deletes: string[]) {
    const deleted: string[] = [];
    let stoppedWith: unknown;
    const fake = {
      toolNames: ['delete_user_expense'],
      run: async (_message: string, options: FakeRunOptions = {}) => {
        for (const id of deletes) {
          const confirmed =
            (await options.confirmDestructive?.({ name: 'delete_user_expense', args: { id } })) ?? false;
          if (options.signal?.aborted) {
            stoppedWith = options.signal.reason;
            throw options.signal.reason;
          }
          if (confirmed) deleted.push(id);
          options.events?.onToolResult?.({
            id: `call-${id}`,
            name: 'delete_user_expense',
            args: { id },
            result: confirmed ? `Deleted ${id}` : 'Not done: not confirmed by the user',
            isError: !confirmed,
          });
        }
        return { reply: `Deleted: ${deleted.join(', ') || 'nothing'}`, toolCalls: [], history: [] };
      },
    } as unknown as ExpensesAgent;
    return { fake, deleted, stopped: () => stoppedWith !== undefined };
  }

  const post = (app: ReturnType<typeof createAgentApp>, body: unknown) =>
    app.request(
      'http://localhost:8001/chat',
      {
        method: 'POST',
        headers: { host: 'localhost:8001', 'content-type': 'application/json' },
        body: JSON.stringify(body),
      },
      { incoming: { socket: { remoteAddress: '127.0.0.1' } } },
    );
  type Question = { confirmation: { id: string; name: string; args: Record<string, unknown>; expires_in: number } };

  test('202 names the call; approved, it runs and the reply comes; refused, nothing is done', async () => {
    const { fake, deleted } = deletingAgent(['e1', 'e2']);
    const app = createAgentApp({ agent: () => fake, logger: createLogger('error'), askForConfirmation: true });
    const first = await post(app, { message: 'delete my phone and my lunch' });
    assert.equal(first.status, 202);
    const asked = (await first.json()) as Question & { tool_calls: unknown[] };
    assert.deepEqual(
      { ...asked.confirmation, id: typeof asked.confirmation.id },
      { id: 'string', name: 'delete_user_expense', args: { id: 'e1' }, expires_in: 300 },
    );
    assert.ok(asked.confirmation.id.length >= 20, 'an id nobody guesses');
    assert.deepEqual(asked.tool_calls, []);
    assert.deepEqual(deleted, [], 'nothing runs before the answer');

    const second = await post(app, { confirmation: asked.confirmation.id, approve: true });
    assert.equal(second.status, 202, 'the next delete is its own question');
    const askedAgain = (await second.json()) as Question & { tool_calls: { name: string; is_error: boolean }[] };
    assert.deepEqual(askedAgain.confirmation.args, { id: 'e2' });
    assert.deepEqual(deleted, ['e1']);
    assert.deepEqual(
      askedAgain.tool_calls.map((call) => call.is_error),
      [false],
    );

    const last = await post(app, { confirmation: askedAgain.confirmation.id, approve: false });
    assert.equal(last.status, 200);
    const done = (await last.json()) as { reply: string; tool_calls: { args: unknown; is_error: boolean }[] };
    assert.equal(done.reply, 'Deleted: e1');
    assert.deepEqual(
      done.tool_calls.map((call) => [call.args, call.is_error]),
      [
        [{ id: 'e1' }, false],
        [{ id: 'e2' }, true],
      ],
    );
    assert.deepEqual(deleted, ['e1'], 'the refused delete did not run');
  });

  test('an answer is taken once; an unknown id is 404; a body mixing message and answer is 400', async () => {
    const { fake, deleted } = deletingAgent(['e1']);
    const app = createAgentApp({ agent: () => fake, logger: createLogger('error'), askForConfirmation: true });
    const { confirmation } = (await (await post(app, { message: 'delete it' })).json()) as Question;
    for (const bad of [
      { confirmation: confirmation.id, approve: 'yes' },
      { confirmation: confirmation.id },
      { confirmation: confirmation.id, approve: true, message: 'and more' },
      { confirmation: 42, approve: true },
    ]) {
      assert.equal((await post(app, bad)).status, 400, JSON.stringify(bad));
    }
    assert.deepEqual(deleted, [], 'a bad answer is no answer');
    const [once, twice] = await Promise.all([
      post(app, { confirmation: confirmation.id, approve: true }),
      post(app, { confirmation: confirmation.id, approve: true }),
    ]);
    assert.deepEqual([once.status, twice.status].sort(), [200, 404]);
    assert.deepEqual(deleted, ['e1'], 'run once');
    const unknown = await post(app, { confirmation: 'not-an-id', approve: true });
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as { error: string }).error, 'unknown_confirmation');
  });

  test('a question nobody answers expires: the turn is stopped, nothing is done, and the id is gone', async () => {
    const { fake, deleted, stopped } = deletingAgent(['e1']);
    const lines: string[] = [];
    const app = createAgentApp({
      agent: () => fake,
      logger: createLogger('info', (line) => lines.push(line)),
      askForConfirmation: true,
      confirmationTimeoutMs: 50,
    });
    const { confirmation } = (await (await post(app, { message: 'delete it' })).json()) as Question;
    assert.equal(confirmation.expires_in, 0.05);
    while (!stopped()) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(deleted, []);
    assert.equal((await post(app, { confirmation: confirmation.id, approve: true })).status, 404);
    assert.ok(lines.some((line) => line.includes('chat confirmation expired')));
  });

  test('the process stopping refuses the questions waiting, and answers their callers 503 after', async () => {
    const { fake, deleted, stopped } = deletingAgent(['e1']);
    const shutdown = new AbortController();
    const app = createAgentApp({
      agent: () => fake,
      logger: createLogger('error'),
      askForConfirmation: true,
      shutdown: shutdown.signal,
    });
    const { confirmation } = (await (await post(app, { message: 'delete it' })).json()) as Question;
    shutdown.abort();
    while (!stopped()) await new Promise((resolve) => setTimeout(resolve, 10));
    const late = await post(app, { confirmation: confirmation.id, approve: true });
    assert.equal(late.status, 503);
    assert.equal(late.headers.get('retry-after'), null, 'its turn is gone: a retry cannot answer it');
    assert.deepEqual(deleted, []);
  });

  test('at most maxWaitingConfirmations questions wait; another is refused at once, as with nobody to ask', async () => {
    const { fake, deleted } = deletingAgent(['e1']);
    const app = createAgentApp({
      agent: () => fake,
      logger: createLogger('error'),
      askForConfirmation: true,
      maxWaitingConfirmations: 1,
    });
    assert.equal((await post(app, { message: 'delete it' })).status, 202);
    const refused = await post(app, { message: 'delete it' });
    assert.equal(refused.status, 200);
    assert.equal(((await refused.json()) as { reply: string }).reply, 'Deleted: nothing');
    assert.deepEqual(deleted, []);
  });

  test('a question asked once its turn was stopped is refused at once: it never waits, nor takes a place', async () => {
    // Two deletes asked at the same moment (the model's calls of one message): the first
    // question expires and stops the turn; the second comes after, and must not wait for 300 s.
    const asked: string[] = [];
    const fake = {
      toolNames: ['delete_user_expense'],
      run: async (_message: string, options: FakeRunOptions = {}) => {
        const ask = options.confirmDestructive as NonNullable<typeof options.confirmDestructive>;
        asked.push(String(await ask({ name: 'delete_user_expense', args: { id: 'e1' } })));
        asked.push(String(await ask({ name: 'delete_user_expense', args: { id: 'e2' } })));
        throw options.signal?.reason;
      },
    } as unknown as ExpensesAgent;
    const lines: string[] = [];
    const app = createAgentApp({
      agent: () => fake,
      logger: createLogger('info', (line) => lines.push(line)),
      askForConfirmation: true,
      confirmationTimeoutMs: 30,
      maxWaitingConfirmations: 1,
    });
    assert.equal((await post(app, { message: 'delete both' })).status, 202);
    while (asked.length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(asked, ['null', 'null'], 'withdrawn, then never asked: neither is a refusal by the caller');
    assert.equal(
      lines.filter((line) => line.includes('chat confirmation expired')).length,
      1,
      'the first question expired; the second was never put (it would have waited, and expired too)',
    );
    assert.equal((await post(app, { message: 'delete both' })).status, 202, 'the one place is free for the next turn');
  });

  test('a caller gone before its turn begins stops the turn at once and frees its place', async () => {
    let stopped = false;
    const slow = {
      toolNames: [],
      run: (_message: string, { signal }: { signal?: AbortSignal } = {}) =>
        new Promise((resolve, reject) => {
          const done = setTimeout(() => resolve({ reply: 'ran to the end', toolCalls: [], history: [] }), 2_000);
          signal?.addEventListener('abort', () => {
            clearTimeout(done);
            stopped = true;
            reject(signal.reason);
          });
        }),
    } as unknown as ExpensesAgent;
    const app = createAgentApp({ agent: () => slow, logger: createLogger('error'), maxConcurrentChats: 1 });
    const gone = AbortSignal.abort();
    const response = await app.request(
      new Request('http://localhost:8001/chat', {
        method: 'POST',
        headers: { host: 'localhost:8001', 'content-type': 'application/json' },
        body: JSON.stringify({ message: 'hi' }),
        signal: gone,
      }),
      undefined,
      { incoming: { socket: { remoteAddress: '127.0.0.1' } } },
    );
    assert.equal(response.status, 499);
    assert.ok(stopped, 'the turn was told to stop');
  });

  test('without askForConfirmation (refuse, allow) the caller is never asked', async () => {
    const { fake } = deletingAgent(['e1']);
    const app = createAgentApp({ agent: () => fake, logger: createLogger('error') });
    const response = await post(app, { message: 'delete it' });
    assert.equal(response.status, 200);
    assert.equal(((await response.json()) as { reply: string }).reply, 'Deleted: nothing');
  });
});
