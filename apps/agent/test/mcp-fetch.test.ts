import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { createMcpClient } from '../src/agent.ts';
import { MAX_MCP_RESPONSE_BYTES, McpResponseTooLargeError, mcpConnectionFetch } from '../src/mcp-fetch.ts';

/**
 * A hostile MCP server: it answers `initialize` and `tools/list` as a server does, then answers
 * that never end: `lookup`'s is JSON whose text goes on, `stream`'s and the listening stream's
 * (`GET /mcp`) one server-sent event, `data: ` and then bytes without a line break. It stops on
 * its own after STOP_AFTER bytes, so a client without a limit reads them all (and the test
 * fails) instead of running forever.
 */
const STOP_AFTER = 4 * MAX_MCP_RESPONSE_BYTES;
const CHUNK = Buffer.alloc(64 * 1024, 'x');

interface Endless {
  /** Bytes written to each response before its connection closed or the server stopped. */
  written: number[];
  requests: string[];
}

const endless: Endless = { written: [], requests: [] };
let server: Server;
let url: string;

function writeEndless(res: ServerResponse, contentType: string, start: string): Promise<void> {
  res.writeHead(200, { 'content-type': contentType });
  res.write(start);
  let written = 0;
  return new Promise((resolve) => {
    const finish = () => {
      endless.written.push(written);
      resolve();
    };
    res.once('close', finish);
    const pump = () => {
      while (written < STOP_AFTER) {
        written += CHUNK.length;
        if (!res.write(CHUNK)) {
          res.once('drain', pump);
          return;
        }
      }
      res.removeListener('close', finish);
      res.end(finish);
    };
    pump();
  });
}

async function handle(req: IncomingMessage, res: ServerResponse) {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const message = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
  endless.requests.push(`${req.method} ${message?.method ?? ''}`.trim());
  if (req.method === 'GET') return writeEndless(res, 'text/event-stream', 'data: ');
  if (message?.id === undefined) return res.writeHead(202).end();
  const reply = (result: unknown) =>
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ jsonrpc: '2.0', id: message.id, result }));
  switch (message.method) {
    case 'initialize':
      return reply({
        protocolVersion: message.params.protocolVersion,
        capabilities: { tools: {} },
        serverInfo: { name: 'endless', version: '1.0.0' },
      });
    case 'tools/list':
      return reply({
        tools: ['lookup', 'stream'].map((name) => ({
          name,
          description: 'Looks things up.',
          inputSchema: { type: 'object', properties: {} },
        })),
      });
    default:
      return message.params?.name === 'stream'
        ? writeEndless(res, 'text/event-stream', 'data: ')
        : writeEndless(
            res,
            'application/json',
            `{"jsonrpc":"2.0","id":${JSON.stringify(message.id)},"result":{"content":[{"type":"text","text":"`,
          );
  }
}

before(async () => {
  server = createServer((req, res) => void handle(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
});

after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

test('the agent does not open an MCP server’s listening stream, and stops reading an answer past the limit', async () => {
  endless.requests.length = 0;
  endless.written.length = 0;
  const client = createMcpClient([{ name: 'endless', url, toolTimeoutMs: 5_000 }]);
  try {
    const tools = await client.getTools();
    assert.deepEqual(
      tools.map((tool) => tool.name),
      ['lookup', 'stream'],
    );
    const [lookup, stream] = tools as [(typeof tools)[0], (typeof tools)[0]];
    await assert.rejects(lookup.invoke({}), (error: Error) => {
      assert.match(
        String(error),
        /MCP server at http:\/\/127\.0\.0\.1:\d+ is larger than 16777216 bytes; the agent stopped reading it/,
      );
      return true;
    });
    // The SDK reports a broken event stream to the client's onerror only; the call then ends at
    // its timeout, with the memory the cut answer held freed.
    await assert.rejects(stream.invoke({}), /timeout/i);
  } finally {
    await client.close();
  }
  // Both answers were cut at the limit (a few socket buffers past it, not STOP_AFTER).
  assert.equal(endless.written.length, 2, JSON.stringify(endless));
  for (const written of endless.written) assert.ok(written < 2 * MAX_MCP_RESPONSE_BYTES, `${written} bytes written`);
  assert.ok(!endless.requests.some((request) => request.startsWith('GET')), endless.requests.join(', '));
  assert.deepEqual(
    endless.requests.filter((request) => !request.includes('notifications/')),
    ['POST initialize', 'POST tools/list', 'POST tools/call', 'POST tools/call'],
  );
});

test('mcpConnectionFetch: answers within the limit pass whole, with status, headers and URL', async () => {
  const seen: string[] = [];
  const fetchFn = async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    seen.push(`${init?.method ?? 'GET'} ${String(input)}`);
    const response = new Response('{"ok":true}', { status: 201, headers: { 'x-kept': 'yes' } });
    Object.defineProperty(response, 'url', { value: String(input) });
    return response;
  };
  const bounded = mcpConnectionFetch('https://mcp.example/mcp', { fetchFn, maxResponseBytes: 11 });
  const response = await bounded('https://mcp.example/mcp', { method: 'POST', body: '{}' });
  assert.equal(response.status, 201);
  assert.equal(response.headers.get('x-kept'), 'yes');
  assert.equal(response.url, 'https://mcp.example/mcp');
  assert.equal(await response.text(), '{"ok":true}');

  // One byte more than the limit is refused.
  const tight = mcpConnectionFetch('https://mcp.example/mcp', { fetchFn, maxResponseBytes: 10 });
  await assert.rejects((await tight('https://mcp.example/mcp', { method: 'POST' })).text(), McpResponseTooLargeError);
  seen.length = 0;

  // Discovery GETs (OAuth metadata) go out; the endpoint's own GET does not.
  const listening = await bounded('https://mcp.example/mcp', { method: 'GET' });
  assert.equal(listening.status, 405);
  await bounded('https://mcp.example/.well-known/oauth-protected-resource/mcp');
  assert.deepEqual(seen, ['GET https://mcp.example/.well-known/oauth-protected-resource/mcp']);
});

test('mcpConnectionFetch: an OAuth request of the SDK that brings no signal has a deadline; the endpoint’s requests keep their own', async () => {
  const waited: string[] = [];
  // Answers only when aborted, as a server that never answers.
  const hanging = (input: Parameters<typeof fetch>[0], init?: RequestInit) =>
    new Promise<Response>((_resolve, reject) => {
      waited.push(`${init?.method ?? 'GET'} ${String(input)} ${init?.signal ? 'with a signal' : 'without'}`);
      init?.signal?.addEventListener('abort', () => reject(init.signal?.reason));
    });
  const bounded = mcpConnectionFetch('https://mcp.example/mcp', { fetchFn: hanging, authRequestTimeoutMs: 100 });
  await assert.rejects(bounded('https://as.example/.well-known/oauth-authorization-server'), { name: 'TimeoutError' });
  const call = new AbortController();
  const posted = bounded('https://mcp.example/mcp', { method: 'POST', signal: call.signal });
  // The endpoint's requests get no deadline of ours, even without a signal.
  let unsignalledSettled = false;
  bounded('https://mcp.example/mcp', { method: 'POST' }).finally(() => {
    unsignalledSettled = true;
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(unsignalledSettled, false, 'still waiting past the deadline');
  call.abort(new Error('the tool call was cancelled'));
  await assert.rejects(posted, /the tool call was cancelled/);
  assert.deepEqual(waited, [
    'GET https://as.example/.well-known/oauth-authorization-server with a signal',
    'POST https://mcp.example/mcp with a signal',
    'POST https://mcp.example/mcp without',
  ]);
});
