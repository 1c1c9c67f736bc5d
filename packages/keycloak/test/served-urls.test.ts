import assert from 'node:assert/strict';
import { test } from 'node:test';
import { servedUrls } from '../src/index.ts';

test('the realm is imported for the URL the server will serve: MCP_SERVER_BASE_URL, else PORT, else 8000', () => {
  assert.deepEqual(servedUrls({}), {
    MCP_SERVER_RESOURCE_URL: 'http://localhost:8000/mcp',
    MCP_OAUTH_PROXY_CALLBACK_URL: 'http://localhost:8000/auth/callback',
    MCP_SERVER_HOST: 'localhost',
  });
  assert.equal(servedUrls({ PORT: '8117' }).MCP_SERVER_RESOURCE_URL, 'http://localhost:8117/mcp');
  // The server's rule for a HOST of one address (packages/config): the realm follows it.
  assert.equal(servedUrls({ HOST: '192.0.2.2', PORT: '8117' }).MCP_SERVER_RESOURCE_URL, 'http://192.0.2.2:8117/mcp');
  assert.equal(servedUrls({ HOST: '0.0.0.0' }).MCP_SERVER_RESOURCE_URL, 'http://localhost:8000/mcp');
  assert.deepEqual(servedUrls({ PORT: '8117', MCP_SERVER_BASE_URL: 'https://mcp.example.com/' }), {
    MCP_SERVER_RESOURCE_URL: 'https://mcp.example.com/mcp',
    MCP_OAUTH_PROXY_CALLBACK_URL: 'https://mcp.example.com/auth/callback',
    MCP_SERVER_HOST: 'mcp.example.com',
  });
  assert.equal(
    servedUrls({ PORT: '8117', MCP_SERVER_RESOURCE_URL: 'http://127.0.0.1:9999/mcp' }).MCP_SERVER_RESOURCE_URL,
    'http://127.0.0.1:9999/mcp',
    'an explicit realm variable wins',
  );
  assert.throws(() => servedUrls({ PORT: 'eighty' }), /PORT must be a whole number/);
});
