import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
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
