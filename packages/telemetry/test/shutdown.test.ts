import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { test } from 'node:test';
import { trace } from '@opentelemetry/api';
import { setupTelemetry } from '../src/index.ts';

/**
 * A stop with a collector that accepts connections and never answers (a network black hole, a
 * collector hung): the exporter would wait 10 s for it, and then fail the stop. In a process of
 * its own: telemetry is set up once per process.
 */
test('shutdown with a collector that never answers: bounded, resolves with why, never rejects', async () => {
  const sockets: Socket[] = [];
  const silent = createServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const { port } = silent.address() as { port: number };
  try {
    // The OTLP exporter reads its endpoint from the process's environment itself.
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${port}`;
    const telemetry = setupTelemetry({ serviceName: 'shutdown-test', instrumentPg: false });
    assert.equal(telemetry.destination, 'otlp');
    trace.getTracer('shutdown-test').startSpan('pending').end();
    const reason = await telemetry.shutdown(300);
    assert.match(reason ?? '', /did not finish within 300 ms/);
    assert.ok(sockets.length > 0, 'the exporter reached the silent collector');
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
  }
});
