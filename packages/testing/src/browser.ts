import { existsSync } from 'node:fs';
import { type Browser, chromium, type LaunchOptions, type Page } from 'playwright-core';

/** Debian's Chromium (`apt-get install chromium`); CHROMIUM_PATH names another. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Flags that keep the browser off the network except for the pages a test opens. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
] as const;

/**
 * Launch options for Debian's Chromium, for `chromium.launch()` and for Playwright Test's
 * `use.launchOptions`: Playwright's own browser download cannot work on these machines. Throws
 * when the browser is not there, so a run without it fails at once instead of skipping.
 */
export function chromiumLaunchOptions(): LaunchOptions {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`No Chromium at ${CHROMIUM_PATH}. Install it (apt-get install -y chromium) or set CHROMIUM_PATH.`);
  }
  return { executablePath: CHROMIUM_PATH, args: [...CHROMIUM_ARGS] };
}

/** Debian's Chromium, launched for a node:test file (Playwright Test launches its own). */
export async function launchChromium(): Promise<Browser> {
  try {
    return await chromium.launch(chromiumLaunchOptions());
  } catch (error) {
    throw new Error(
      `Chromium could not start from ${CHROMIUM_PATH} (${(error as Error).message.split('\n')[0]}). Install it: apt-get install -y chromium, or set CHROMIUM_PATH.`,
    );
  }
}

/** Signs in on Keycloak's own login page (theme keycloak.v2) and, when asked, accepts the consent page. */
export async function signIn(
  page: Page,
  url: string,
  user: { username: string; password: string },
  consent?: { expectClientName: string },
): Promise<void> {
  await page.goto(url);
  await page.locator('#kc-form-login').waitFor();
  await page.fill('#username', user.username);
  await page.fill('#password', user.password);
  await page.click('#kc-login');
  if (consent) {
    await page.locator('#kc-cancel').waitFor();
    const text = (await page.locator('body').textContent()) ?? '';
    if (!text.includes(consent.expectClientName)) {
      throw new Error(`the consent page does not name the client ${consent.expectClientName}:\n${text}`);
    }
    await page.click('#kc-login');
  }
}

/**
 * The OAuth proxy refuses an approval sent sooner than a second after its consent page was made
 * (`consentMinimumViewMs`: a click meant for another page arrives sooner); a test reads the page
 * that long, as a person would, before clicking Approve.
 */
export const CONSENT_READING_MS = 1_100;

/** Clicks the proxy consent page's Approve once a reader's time has passed. */
export async function approveProxyConsent(page: Page): Promise<void> {
  // As a person does: the pointer moves over the page while it is read, then clicks (the page
  // takes no mouse approval from a pointer that was not moving over it half a second before).
  const approve = 'button[name="decision"][value="approve"]';
  await page.hover('h1');
  await page.hover(approve);
  await page.waitForTimeout(CONSENT_READING_MS);
  await page.click(approve);
}
