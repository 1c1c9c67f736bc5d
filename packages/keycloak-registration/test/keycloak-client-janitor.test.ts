import assert from 'node:assert/strict';
import { test } from 'node:test';
import { keycloakClientJanitor } from '../src/index.ts';

/**
 * The janitor against a Keycloak gone wrong: a 16 MB admin answer is refused at 4 MB, not read
 * to its end. (A Keycloak that answers as it should is the attacks-realm test's: a real
 * one, flooded.)
 */
test('an admin answer past 4 MB fails the pass, read no further than the limit', async () => {
  let pulled = 0;
  const huge = () =>
    new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled >= 16 * 1024 * 1024) return controller.close();
        pulled += 64 * 1024;
        controller.enqueue(new Uint8Array(64 * 1024).fill(0x20)); // JSON whitespace
      },
    });
  const janitor = keycloakClientJanitor({
    baseUrl: 'http://keycloak.test',
    realm: 'mcp',
    clientId: 'mcp-client-janitor',
    clientSecret: 'secret',
    intervalSeconds: 0,
    fetch: async (input) =>
      String(input).endsWith('/protocol/openid-connect/token')
        ? Response.json({ access_token: 'admin-token' })
        : new Response(huge(), { headers: { 'content-type': 'application/json' } }),
  });
  await assert.rejects(janitor.runOnce(), /GET \/clients\?first=0&max=100 is larger than 4194304 bytes/);
  assert.ok(pulled < 5 * 1024 * 1024, `read ${pulled} bytes`);
});
