/**
 * `$BROWSER` for an agent running as its own process: an executable that hands the sign-in URL
 * to this test process, which plays the person at the browser with Chromium on Keycloak's real
 * login page (or refuses, when no browser should have opened at all).
 */
import { chmod, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';

export interface Login {
  url: URL;
  /** The consent page's text, when Keycloak showed one. */
  consent?: string;
  /** Why the scripted person could not finish, if they could not. */
  error?: string;
  /** Resolves when the browser has reached the agent's loopback callback (or gave up). */
  done: Promise<void>;
}

export interface BrowserHook {
  /** The program to put in `$BROWSER`. */
  program: string;
  logins: Login[];
  /** Who signs in next; `deny` answers the agent's callback with `access_denied` without a login. */
  as(user: { username: string; password: string } | 'deny'): void;
  close(): Promise<void>;
}

const CALLBACK = /^http:\/\/127\.0\.0\.1:\d+\/callback/;

export async function startBrowserHook(browser: Browser, directory: string): Promise<BrowserHook> {
  const logins: Login[] = [];
  let user: { username: string; password: string } | 'deny' = 'deny';

  const play = async (login: Login, who: typeof user): Promise<void> => {
    const redirect = login.url.searchParams.get('redirect_uri') ?? '';
    const state = login.url.searchParams.get('state') ?? '';
    if (who === 'deny') {
      await fetch(`${redirect}?${new URLSearchParams({ error: 'access_denied', state })}`).catch(() => {});
      return;
    }
    const context = await browser.newContext();
    context.setDefaultTimeout(20_000);
    try {
      const page = await context.newPage();
      await page.goto(login.url.href);
      await page.locator('#kc-form-login').waitFor();
      await page.fill('#username', who.username);
      await page.fill('#password', who.password);
      await page.click('#kc-login');
      // Keycloak asks for consent when the client wants scopes the user has not granted it yet.
      await Promise.race([page.waitForURL(CALLBACK), page.locator('#kc-cancel').waitFor()]);
      if (!CALLBACK.test(page.url())) {
        login.consent = (await page.locator('body').textContent()) ?? '';
        await page.click('#kc-login');
        await page.waitForURL(CALLBACK);
      }
    } catch (error) {
      login.error = (error as Error).message;
    } finally {
      await context.close();
    }
  };

  const server: Server = createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk: string) => (body += chunk));
    request.on('end', () => {
      const login = { url: new URL(body) } as Login;
      login.done = play(login, user);
      logins.push(login);
      response.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  // Started by the agent as `$BROWSER <url>`, like any browser would be.
  const program = join(directory, 'open-browser');
  await writeFile(
    program,
    `#!${process.execPath}\nfetch('http://127.0.0.1:${port}/', { method: 'POST', body: process.argv[2] }).then(() => process.exit(0), () => process.exit(1));\n`,
  );
  await chmod(program, 0o755);

  return {
    program,
    logins,
    as(next) {
      user = next;
    },
    async close() {
      await Promise.all(logins.map((login) => login.done));
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
