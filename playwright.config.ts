/**
 * The end-to-end login suite (`pnpm test:e2e`): Playwright Test drives Debian's Chromium through
 * Keycloak's (and the OAuth proxy's) pages while the official MCP SDK client does what a real
 * MCP client does. Each project is one stack:
 *
 * - local (default): `pnpm start` in one server mode per project (direct, workaround,
 *   preregistered, oauth-proxy), all reusing the one Keycloak e2e/global-setup.ts starts;
 * - `compose` (only with E2E_STACK=compose): the stack `docker compose --profile agent up`
 *   runs, at E2E_SERVER_URL, E2E_KEYCLOAK_URL, E2E_AGENT_URL (scripts/ci/containers.sh).
 *
 * A spec runs only in the projects whose testMatch names it; none is skipped at run time.
 * Failures keep a trace and screenshots under test-results/e2e/{local,compose}/; the HTML report
 * is written to playwright-report/{local,compose}/ (`pnpm exec playwright show-report
 * playwright-report/local` opens it). Both folders are git-ignored.
 */
import { chromiumLaunchOptions } from '@mcp-auth-stack/testing/browser';
import { defineConfig } from '@playwright/test';
import type { StackOptions } from './e2e/fixtures/test.ts';

const compose = process.env.E2E_STACK === 'compose';

export default defineConfig<StackOptions, StackOptions>({
  testDir: 'e2e',
  // Apart per stack, so the container step's run does not replace the local one's.
  outputDir: `test-results/e2e/${compose ? 'compose' : 'local'}`,
  // One browser and one stack at a time: two cores, and Keycloak alone takes much of them.
  workers: 1,
  fullyParallel: false,
  forbidOnly: Boolean(process.env.CI),
  retries: 0,
  timeout: 120_000,
  expect: { timeout: 10_000 },
  reporter: [['list'], ['html', { outputFolder: `playwright-report/${compose ? 'compose' : 'local'}`, open: 'never' }]],
  ...(compose ? {} : { globalSetup: './e2e/global-setup.ts' }),
  use: {
    browserName: 'chromium',
    launchOptions: chromiumLaunchOptions(),
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    actionTimeout: 15_000,
    navigationTimeout: 20_000,
  },
  projects: compose
    ? [{ name: 'compose', testMatch: 'compose-stack.spec.ts', use: { stackName: 'compose' } }]
    : [
        {
          name: 'direct',
          testMatch: [
            'dynamic-registration.spec.ts',
            'client-metadata-document.spec.ts',
            'scopes-and-step-up.spec.ts',
            'sign-in-failures.spec.ts',
            'refresh-and-revocation.spec.ts',
          ],
          use: { stackName: 'direct' },
        },
        { name: 'workaround', testMatch: 'workaround.spec.ts', use: { stackName: 'workaround' } },
        { name: 'preregistered', testMatch: 'pre-registered-client.spec.ts', use: { stackName: 'preregistered' } },
        { name: 'oauth-proxy', testMatch: 'oauth-proxy.spec.ts', use: { stackName: 'oauth_proxy' } },
      ],
});
