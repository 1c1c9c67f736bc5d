import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { type ServerType, serve } from '@hono/node-server';
import type { Database } from '@mcp-auth-stack/database';
import { createTestDatabase, type TestDatabase } from '@mcp-auth-stack/testing';
import { approveProxyConsent, launchChromium } from '@mcp-auth-stack/testing/browser';
import type { Browser, Page } from 'playwright-core';
import { generateSigningKey } from '../src/index.ts';
import { FakeUpstream } from './fake-upstream.ts';
import {
  authorizeUrl,
  type Instance,
  ISSUER,
  instance,
  newEncryptionKey,
  openMigrated,
  pkce,
  register,
} from './harness.ts';

/**
 * The consent page in real Chromium: what its script does with a click the page did not see
 * coming (double-clickjacking). The server's own minimum reading time is off here
 * (`consentMinimumViewMs: 0`), so what is refused is the page's doing.
 */
let testDb: TestDatabase;
let db: Database;
let idp: FakeUpstream;
let proxy: Instance;
let server: ServerType;
let origin: string;
let browser: Browser;

before(async () => {
  testDb = await createTestDatabase();
  db = await openMigrated(testDb.url);
  idp = await FakeUpstream.start();
  const keys = { signingKey: await generateSigningKey('ES256'), encryptionKey: newEncryptionKey() };
  // The proxy's URLs must be the ones the browser reaches: listen first, then make it.
  server = serve({ fetch: (request) => proxy.app.fetch(request), hostname: '127.0.0.1', port: 0 });
  await new Promise((resolve) => server.once('listening', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy = instance(db, idp, keys, { issuer: origin, resource: `${origin}/mcp` });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await new Promise((resolve) => server?.close(resolve));
  await db?.close();
  await idp?.close();
  await testDb?.drop();
});

/** A consent page for a newly registered client, opened in a fresh context. */
async function consentPage(): Promise<Page> {
  const client = await register(proxy.app);
  const url = authorizeUrl({
    client_id: client.client_id,
    code_challenge: pkce().challenge,
    resource: `${origin}/mcp`,
  });
  const page = await (await browser.newContext()).newPage();
  await page.goto(url.replace(ISSUER, origin));
  await page.locator('button[value="approve"]').waitFor();
  return page;
}

/**
 * A mouse press and release where Approve is, as Chromium gets them from the system; `jitter`
 * first moves the pointer by a pixel or two, as a hand does between the clicks of a double-click.
 */
async function clickOnApprove(page: Page, jitter = false): Promise<void> {
  const box = await page.locator('button[value="approve"]').boundingBox();
  assert.ok(box);
  const cdp = await page.context().newCDPSession(page);
  const at = { x: box.x + box.width / 2, y: box.y + box.height / 2, button: 'left' as const, clickCount: 1 };
  if (jitter) {
    for (const dx of [-2, -1, 0]) {
      await cdp.send('Input.dispatchMouseEvent', { type: 'mouseMoved', x: at.x + dx, y: at.y, button: 'none' });
    }
  }
  await cdp.send('Input.dispatchMouseEvent', { type: 'mousePressed', ...at });
  await cdp.send('Input.dispatchMouseEvent', { type: 'mouseReleased', ...at });
}

describe('the consent page in Chromium', () => {
  test('a click on Approve with the pointer still, or moving only a moment before, is not sent; after moving over the page it is', async () => {
    const page = await consentPage();
    const upstreamLogins = idp.authorizeRequests.length;
    // The second click of a double-click, landing where a popup closed under it: with the
    // pointer still, and with the jitter of a hand between the two clicks.
    for (const jitter of [false, true]) {
      await clickOnApprove(page, jitter);
      await page.locator('#unseen-click').waitFor({ state: 'visible' });
      assert.equal(new URL(page.url()).pathname, '/authorize', 'still on the consent page');
      assert.equal(idp.authorizeRequests.length, upstreamLogins, `no sign-in upstream (jitter: ${jitter})`);
      await page.locator('#unseen-click').evaluate((note) => note.setAttribute('hidden', ''));
    }
    // A person moves the pointer, then clicks: the approval goes on to the upstream's sign-in.
    const upstream = page.waitForResponse((response) => response.url().startsWith(idp.base));
    await approveProxyConsent(page);
    await upstream;
    assert.equal(idp.authorizeRequests.length, upstreamLogins + 1);
    await page.context().close();
  });

  test('by keyboard alone (Tab to Approve, Enter) the approval is sent', async () => {
    const page = await consentPage();
    const upstreamLogins = idp.authorizeRequests.length;
    const approve = page.locator('button[value="approve"]');
    for (let i = 0; i < 10 && !(await approve.evaluate((button) => button.matches(':focus'))); i++) {
      await page.keyboard.press('Tab');
    }
    assert.ok(await approve.evaluate((button) => button.matches(':focus')), 'Tab reaches Approve');
    const upstream = page.waitForResponse((response) => response.url().startsWith(idp.base));
    await page.keyboard.press('Enter');
    await upstream;
    assert.equal(idp.authorizeRequests.length, upstreamLogins + 1);
    await page.context().close();
  });

  test('a Deny needs no move: refusing is never the click to guard', async () => {
    const page = await consentPage();
    const deny = await page.locator('button[value="deny"]').boundingBox();
    assert.ok(deny);
    const cdp = await page.context().newCDPSession(page);
    const at = { x: deny.x + deny.width / 2, y: deny.y + deny.height / 2, button: 'left' as const, clickCount: 1 };
    const leaving = page.waitForRequest((request) => request.method() === 'POST' && request.url().endsWith('/consent'));
    await cdp.send('Input.dispatchMouseEvent', { type: 'mousePressed', ...at });
    await cdp.send('Input.dispatchMouseEvent', { type: 'mouseReleased', ...at });
    await leaving;
    await page.context().close();
  });
});
