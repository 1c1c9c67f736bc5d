import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnServe } from './helpers/agent.ts';

/**
 * How `serve.ts` stops, as a process. No MCP server answers (port 9): the agent listens and
 * keeps retrying, which is all a stop needs.
 */
const env = { API_HOST: 'ollama', MCP_AUTH: 'none', MCP_SERVER_URL: 'http://127.0.0.1:9/mcp' };

test('SIGTERM: clients that sent half a request do not hold the exit; an answer during the stop closes its connection', async () => {
  const agent = await spawnServe(env, { ready: false });
  const sockets: Socket[] = [];
  const open = (sent: string) => {
    const socket = connect(Number(new URL(agent.url).port), '127.0.0.1');
    socket.on('error', () => {});
    socket.write(sent);
    sockets.push(socket);
    return socket;
  };
  try {
    const body = JSON.stringify({ message: 'hi' });
    const chat = `POST /chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    // Headers that never end, a body that never ends: Node stops its request timeouts at close().
    open('POST /chat HTTP/1.1\r\nHost: localhost\r\nContent-Ty');
    open(`${chat}{"mess`);
    // A request that completes once the stop has begun.
    const late = open(`${chat}${body.slice(0, 5)}`);
    let answer = '';
    late.on('data', (chunk) => {
      answer += chunk;
    });
    const lateClosed = once(late, 'close');
    await sleep(300); // what was sent has arrived

    const exited = agent.stop();
    while (!agent.output().includes('"msg":"shutting down"')) await sleep(20);
    late.write(body.slice(5));
    const outcome = await Promise.race([exited, sleep(30_000, 'still running 30 s after SIGTERM', { ref: false })]);
    assert.equal(outcome, 0, agent.output());
    // The two that never finished their requests, one of them without even its headers.
    assert.match(agent.output(), /"connections_cut":2/);
    assert.match(answer, /^HTTP\/1\.1 503 /);
    assert.match(answer, /\r\nconnection: close\r\n/i, 'no keep-alive: the client does not hold the connection');
    assert.match(answer, /"error":"shutting_down"/);
    await lateClosed;
  } finally {
    for (const socket of sockets) socket.destroy();
    agent.kill();
  }
});
