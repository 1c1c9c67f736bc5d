import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { test } from 'node:test';
import { createDrainingServer } from '../src/drain.ts';

test('a keep-alive connection idle for long before the drain still gets the grace: a request sent as it starts is answered 503, not cut', async () => {
  const { server, drain } = createDrainingServer((_request, response) => response.end('ok'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const get = () =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      httpRequest(url, { agent }, (response) => {
        let body = '';
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      })
        .on('error', reject)
        .end();
    });
  try {
    assert.deepEqual(await get(), { status: 200, body: 'ok' });
    // Idle longer than the grace (1 s) before the drain starts, as a load balancer's pooled connection is.
    await new Promise((resolve) => setTimeout(resolve, 1_300));
    const drained = drain(5_000);
    const next = await get();
    assert.equal(next.status, 503, 'answered on the old connection, not reset');
    assert.equal(JSON.parse(next.body).error, 'shutting_down');
    assert.deepEqual(await drained, { cut: 0, refused: 1 });
  } finally {
    agent.destroy();
  }
});

/**
 * A draining server whose requests wait for `release()`, and a raw connection to it: what the
 * client receives, and when the server closes the connection.
 */
async function gatedServerAndConnection() {
  let release: () => void = () => {};
  const gate = new Promise<void>((resolve) => (release = resolve));
  const started: string[] = [];
  const { server, drain } = createDrainingServer((request, response) => {
    started.push(request.url ?? '');
    void gate.then(() => response.end(`done ${request.url}`));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
  const connection = { received: '', socket };
  socket.on('data', (chunk) => (connection.received += chunk));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const send = (path: string) => socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  /** Waits until `count` requests reached the listener. */
  const whenStarted = async (count: number) => {
    for (let waited = 0; started.length < count; waited += 10) {
      assert.ok(waited < 5_000, `${count} requests reached the listener: ${started.join(' ')}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  return { drain, release, started, connection, closed, send, whenStarted };
}

test('requests pipelined on one connection and under way at the drain are all answered; only the last says close', async () => {
  const { drain, release, connection, closed, send, whenStarted } = await gatedServerAndConnection();
  try {
    for (const path of ['/1', '/2', '/3']) send(path);
    // Node runs each pipelined request as it is parsed and queues the responses in order.
    await whenStarted(3);
    const drained = drain(5_000);
    release();
    await closed;
    const answers = connection.received.split(/(?=HTTP\/1\.1 )/);
    assert.deepEqual(
      answers.map((answer) => [
        answer.split('\r\n')[0],
        /\r\nConnection: close\r\n/i.test(answer),
        answer.split('\r\n\r\n')[1],
      ]),
      [
        ['HTTP/1.1 200 OK', false, 'done /1'],
        ['HTTP/1.1 200 OK', false, 'done /2'],
        ['HTTP/1.1 200 OK', true, 'done /3'],
      ],
      connection.received,
    );
    assert.deepEqual(await drained, { cut: 0, refused: 0 });
  } finally {
    connection.socket.destroy();
  }
});

test('a request pipelined behind them after the drain began is refused after their answers, not cut by them', async () => {
  const { drain, release, started, connection, closed, send, whenStarted } = await gatedServerAndConnection();
  try {
    send('/1');
    send('/2');
    await whenStarted(2);
    const drained = drain(5_000);
    send('/late');
    await new Promise((resolve) => setTimeout(resolve, 200));
    release();
    await closed;
    const answers = connection.received
      .split(/(?=HTTP\/1\.1 )/)
      .map((answer) => [answer.split('\r\n')[0], /\r\nConnection: close\r\n/i.test(answer)]);
    assert.deepEqual(
      answers,
      [
        ['HTTP/1.1 200 OK', false],
        ['HTTP/1.1 200 OK', false],
        ['HTTP/1.1 503 Service Unavailable', true],
      ],
      connection.received,
    );
    assert.deepEqual(started, ['/1', '/2'], 'the late request did not run');
    assert.deepEqual(await drained, { cut: 0, refused: 1 });
  } finally {
    connection.socket.destroy();
  }
});

test('a request still running at the timeout is cut with its connection, and counted', async () => {
  const { server, drain } = createDrainingServer(() => {
    // Never answered.
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = connect((server.address() as AddressInfo).port, '127.0.0.1');
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => {});
  let received = '';
  socket.on('data', (chunk) => (received += chunk));
  socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(await drain(300), { cut: 1, refused: 0 });
  await closed;
  assert.equal(received, '', 'no answer was made up for it');
});
