import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { launchChromium } from '@mcp-auth-stack/testing/browser';
import type { Browser } from 'playwright-core';
import { startTestStack, type TestStack } from './helpers.ts';

/**
 * A browser-based MCP client (the Inspector's direct connection, a web app) calls /mcp from a
 * page of another origin: real Chromium, so the CORS rules are the browser's own, not our
 * reading of them. The server in `key` mode allows one page origin (ALLOWED_ORIGINS).
 */
let stack: TestStack;
let key: string;
let browser: Browser;
const pages: Server[] = [];

/** A page server on 127.0.0.1: its origin is what the browser sends as `Origin`. */
async function pageOrigin(): Promise<string> {
  const server = createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>client</title>');
  });
  pages.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

let allowed: string;
let foreign: string;
before(async () => {
  allowed = await pageOrigin();
  foreign = await pageOrigin();
  stack = await startTestStack({ ALLOWED_ORIGINS: allowed });
  key = (await stack.keys.create({ userId: 'browser-user' })).secret;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await stack?.close();
  for (const server of pages) server.close();
});

/** `fetch` of /mcp from a page of `origin`, with or without the key: what the page can read of the answer. */
async function fetchFrom(origin: string, withKey: boolean, url = stack.mcpUrl) {
  const page = await browser.newPage();
  try {
    await page.goto(origin);
    return await page.evaluate(
      async ({ url, key }) => {
        try {
          const response = await fetch(url, {
            method: 'POST',
            headers: {
              ...(key ? { authorization: `Bearer ${key}` } : {}),
              'content-type': 'application/json',
              accept: 'application/json, text/event-stream',
              'mcp-protocol-version': '2025-11-25',
            },
            body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
          });
          const body = (await response.json()) as { result?: { tools: { name: string }[] } };
          return {
            status: response.status,
            challenge: response.headers.get('www-authenticate'),
            tools: body.result?.tools.map((tool) => tool.name) ?? [],
          };
        } catch (error) {
          return { failed: String(error) };
        }
      },
      { url, key: withKey ? key : undefined },
    );
  } finally {
    await page.close();
  }
}

test('a page of an allowed origin calls /mcp with its key, and reads the 401 challenge without one', async () => {
  const listed = await fetchFrom(allowed, true);
  assert.equal('status' in listed && listed.status, 200, JSON.stringify(listed));
  assert.ok('tools' in listed && listed.tools.includes('get_user_expenses'), JSON.stringify(listed));
  const challenged = await fetchFrom(allowed, false);
  assert.equal('status' in challenged && challenged.status, 401, JSON.stringify(challenged));
  assert.match(
    ('challenge' in challenged && challenged.challenge) || '',
    /^Bearer /,
    'WWW-Authenticate is readable, so the page can find the metadata',
  );
});

test("an allowed page may read Retry-After, which the server's 503 answers carry", async () => {
  const response = await fetch(stack.mcpUrl, {
    method: 'POST',
    headers: { origin: allowed, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  });
  assert.equal(response.headers.get('access-control-allow-origin'), allowed);
  const exposed = (response.headers.get('access-control-expose-headers') ?? '').split(/,\s*/);
  assert.deepEqual(exposed.sort(), ['Retry-After', 'WWW-Authenticate', 'X-Request-Id']);
});

test('a page of another origin gets nothing: the browser refuses the preflight', async () => {
  const refused = await fetchFrom(foreign, true);
  assert.ok('failed' in refused, JSON.stringify(refused));
  assert.match(refused.failed, /Failed to fetch/);
});

test('the endpoint written with a trailing slash: an allowed page follows the redirect, another gets nothing', async () => {
  const listed = await fetchFrom(allowed, true, `${stack.mcpUrl}/`);
  assert.equal('status' in listed && listed.status, 200, JSON.stringify(listed));
  assert.ok('tools' in listed && listed.tools.includes('get_user_expenses'), JSON.stringify(listed));
  const refused = await fetchFrom(foreign, true, `${stack.mcpUrl}/`);
  assert.ok('failed' in refused, JSON.stringify(refused));
});
