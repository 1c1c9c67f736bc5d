/**
 * The agent's two OAuth clients against a real Keycloak (one per file) with the repository's
 * realm: client credentials with the service-account client, and the interactive login driven
 * through Keycloak's login page with Chromium. The MCP server's Keycloak mode is not there yet,
 * so a stand-in protected resource answers the discovery requests (helpers/protected-resource.ts).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import type { Browser } from 'playwright-core';
import {
  DEMO_USERS,
  REALM_CLIENTS,
  type RunningKeycloak,
  startKeycloak,
} from '../../../packages/keycloak/src/index.ts';
import {
  audienceOf,
  decodeJwtPayload,
  freePort,
  launchChromium,
  scopesOf,
  signIn,
  verifyRs256,
} from '../../../packages/keycloak/test/helpers.ts';
import {
  ClientCredentialsTokenSource,
  clientCredentialsAuthProvider,
  TokenRequestError,
} from '../src/auth/client-credentials.ts';
import { InteractiveOAuthProvider } from '../src/auth/oauth-provider.ts';
import { DEFAULT_MCP_SCOPE } from '../src/config.ts';
import { type ProtectedResource, startProtectedResource } from './helpers/protected-resource.ts';

const AGENT_SECRET = REALM_CLIENTS.agent.demoSecret;
const [alice] = DEMO_USERS as [(typeof DEMO_USERS)[0]];

let keycloak: RunningKeycloak;
let resource: ProtectedResource;
let browser: Browser;
let cacheRoot: string;

before(
  async () => {
    const resourcePort = await freePort();
    const mcpUrl = `http://127.0.0.1:${resourcePort}/mcp`;
    keycloak = await startKeycloak({
      httpPort: await freePort(),
      managementPort: await freePort(),
      realmEnv: { MCP_SERVER_RESOURCE_URL: mcpUrl },
      onProgress: ({ phase, message, elapsedMs }) => {
        if (phase !== 'waiting') console.log(`keycloak ${Math.round(elapsedMs / 1000)} s ${phase}: ${message}`);
      },
    });
    resource = await startProtectedResource(resourcePort, keycloak.realmUrl, DEFAULT_MCP_SCOPE.split(' '));
    browser = await launchChromium();
    cacheRoot = await mkdtemp(join(tmpdir(), 'agent-oauth-'));
  },
  { timeout: 600_000 },
);

after(async () => {
  await browser?.close();
  await resource?.close();
  await keycloak?.stop();
  if (cacheRoot) await rm(cacheRoot, { recursive: true, force: true });
});

describe('client credentials (the headless agent acts as its own service account)', () => {
  const source = (overrides: Partial<ConstructorParameters<typeof ClientCredentialsTokenSource>[0]> = {}) =>
    new ClientCredentialsTokenSource({
      mcpUrl: resource.mcpUrl,
      clientId: REALM_CLIENTS.agent.clientId,
      clientSecret: AGENT_SECRET,
      scope: DEFAULT_MCP_SCOPE,
      ...overrides,
    });

  test('discovers the token endpoint from the 401 and gets a token whose audience is the MCP URL', async () => {
    const tokens = source();
    assert.deepEqual(await tokens.endpoint(), {
      tokenEndpoint: `${keycloak.realmUrl}/protocol/openid-connect/token`,
      resource: resource.mcpUrl,
    });
    const token = await tokens.accessToken();
    assert.ok(await verifyRs256(keycloak.realmUrl, token), 'signed by the realm');
    const claims = decodeJwtPayload(token);
    assert.ok(audienceOf(claims).includes(resource.mcpUrl), `aud ${JSON.stringify(claims.aud)}`);
    assert.equal(claims.azp, REALM_CLIENTS.agent.clientId);
    assert.equal(claims.preferred_username, `service-account-${REALM_CLIENTS.agent.clientId}`);
    assert.equal(claims.iss, keycloak.realmUrl);
    for (const scope of ['mcp:access', 'expenses:read', 'expenses:write']) {
      assert.ok(scopesOf(claims).includes(scope), `scope ${claims.scope} has ${scope}`);
    }
  });

  test('caches the token until shortly before expiry, then asks again', async () => {
    let now = Date.now();
    const tokens = source({ now: () => now });
    const first = await tokens.accessToken();
    const [second, third] = await Promise.all([tokens.accessToken(), tokens.accessToken()]);
    assert.equal(second, first);
    assert.equal(third, first);
    assert.equal(tokens.tokenRequests, 1, 'one token request for three calls');

    const lifetime = ((decodeJwtPayload(first).exp as number) - (decodeJwtPayload(first).iat as number)) * 1000;
    now += lifetime - 60_000; // still a minute left: the cached token is used
    assert.equal(await tokens.accessToken(), first);
    assert.equal(tokens.tokenRequests, 1);
    now += 45_000; // within the last 30 s: renewed
    const renewed = await tokens.accessToken();
    assert.equal(tokens.tokenRequests, 2);
    assert.notEqual(renewed, first);
  });

  test('MCP_TOKEN_URL skips discovery; a wrong secret is a clear error', async () => {
    const direct = source({
      mcpUrl: 'http://127.0.0.1:9/unreachable',
      tokenUrl: `${keycloak.realmUrl}/protocol/openid-connect/token`,
    });
    // Resource-indicators: the token must be for an MCP URL the realm knows, so use the known one.
    const configured = source({ tokenUrl: `${keycloak.realmUrl}/protocol/openid-connect/token` });
    assert.ok(audienceOf(decodeJwtPayload(await configured.accessToken())).includes(resource.mcpUrl));
    await assert.rejects(
      direct.accessToken(),
      (error: Error) => error instanceof TokenRequestError && error.status === 400,
    );
    await assert.rejects(
      source({ clientSecret: 'wrong' }).accessToken(),
      (error: Error) => error instanceof TokenRequestError && error.status === 401,
    );
  });

  test('as the MCP SDK’s auth provider it hands the cached token to every request', async () => {
    const tokens = source();
    const provider = clientCredentialsAuthProvider(tokens, {
      clientId: REALM_CLIENTS.agent.clientId,
      clientSecret: AGENT_SECRET,
      scope: DEFAULT_MCP_SCOPE,
    });
    const a = await provider.tokens();
    const b = await provider.tokens();
    assert.equal(a?.access_token, b?.access_token);
    assert.equal(a?.token_type, 'Bearer');
    assert.equal(tokens.tokenRequests, 1);
    assert.equal(provider.redirectUrl, undefined, 'non-interactive for the SDK');
  });
});

describe('interactive OAuth (a person at a browser)', () => {
  /** Plays the person: signs in as alice on Keycloak's page and accepts the consent for the DCR client. */
  const signInAs = (user: typeof alice, opened: string[]) => async (url: string) => {
    opened.push(url);
    const context = await browser.newContext();
    context.setDefaultTimeout(15_000);
    const page = await context.newPage();
    // The login runs in the background, as a real browser would; the provider waits on its loopback listener.
    void signIn(page, url, user, { expectClientName: 'Expenses agent (mcp-auth-stack)' })
      .then(() => page.waitForURL(/127\.0\.0\.1:\d+\/callback/))
      .catch(() => {}) // a failed login shows as the provider's timeout, with its message
      .finally(() => context.close());
    return true;
  };

  test('first run: discovery from the 401, DCR, PKCE, resource, loopback redirect; cached 0600; second run needs no browser', async () => {
    const cacheDir = join(cacheRoot, 'first');
    const opened: string[] = [];
    const printed: string[] = [];
    const provider = await InteractiveOAuthProvider.create({
      mcpUrl: resource.mcpUrl,
      scope: DEFAULT_MCP_SCOPE,
      redirectPort: 0,
      cacheDir,
      openBrowser: signInAs(alice, opened),
      print: (line) => printed.push(line),
      loginTimeoutMs: 60_000,
    });
    await provider.ensureAuthorized();

    assert.equal(opened.length, 1);
    const authorize = new URL(opened[0] ?? '');
    assert.equal(authorize.origin + authorize.pathname, `${keycloak.realmUrl}/protocol/openid-connect/auth`);
    assert.equal(authorize.searchParams.get('code_challenge_method'), 'S256');
    assert.equal(authorize.searchParams.get('resource'), resource.mcpUrl);
    assert.match(authorize.searchParams.get('redirect_uri') ?? '', /^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    assert.ok(
      printed.some((line) => line.includes(authorize.href)),
      'the URL is printed too',
    );

    const tokens = await provider.tokens();
    assert.ok(tokens?.access_token);
    assert.equal(tokens.refresh_token, undefined, 'the refresh token is never handed to the SDK');
    const claims = decodeJwtPayload(tokens.access_token);
    assert.ok(await verifyRs256(keycloak.realmUrl, tokens.access_token));
    assert.deepEqual(audienceOf(claims), [resource.mcpUrl]);
    assert.equal(claims.sub, await userId(alice.username), 'the token is alice’s');
    assert.ok(scopesOf(claims).includes('expenses:write'), `scope ${claims.scope}`);

    assert.equal((await stat(provider.cacheFile)).mode & 0o777, 0o600, 'token cache file is owner-only');
    assert.equal((await stat(cacheDir)).mode & 0o777, 0o700, 'cache directory is owner-only');

    const again = await InteractiveOAuthProvider.create({
      mcpUrl: resource.mcpUrl,
      scope: DEFAULT_MCP_SCOPE,
      redirectPort: 0,
      cacheDir,
      openBrowser: async () => assert.fail('the second run must not open a browser'),
      print: () => {},
    });
    await again.ensureAuthorized();
    assert.equal((await again.tokens())?.access_token, tokens.access_token);
    assert.equal(again.redirectUrl, provider.redirectUrl, 'the registered redirect URI is reused');

    // An hour later the access token has expired: the refresh token renews it, still without a browser.
    const later = await InteractiveOAuthProvider.create({
      mcpUrl: resource.mcpUrl,
      scope: DEFAULT_MCP_SCOPE,
      redirectPort: 0,
      cacheDir,
      openBrowser: async () => assert.fail('a refresh must not open a browser'),
      print: () => {},
      now: () => Date.now() + 3_600_000,
    });
    const refreshed = await later.tokens();
    assert.equal(later.refreshes, 1);
    assert.ok(refreshed?.access_token && refreshed.access_token !== tokens.access_token);
    assert.deepEqual(audienceOf(decodeJwtPayload(refreshed.access_token)), [resource.mcpUrl]);
  });

  test('step-up: a read-only login gains expenses:write when the server asks for it', async () => {
    const opened: string[] = [];
    const provider = await InteractiveOAuthProvider.create({
      mcpUrl: resource.mcpUrl,
      scope: 'mcp:access expenses:read',
      redirectPort: 0,
      cacheDir: join(cacheRoot, 'step-up'),
      openBrowser: signInAs(alice, opened),
      print: () => {},
      loginTimeoutMs: 60_000,
    });
    await provider.ensureAuthorized();
    const before = scopesOf(decodeJwtPayload((await provider.tokens())?.access_token ?? ''));
    assert.ok(before.includes('expenses:read') && !before.includes('expenses:write'), `scope ${before.join(' ')}`);

    // As the SDK transport calls it after a 403 insufficient_scope naming only the missing scope.
    const result = await auth(provider, { serverUrl: resource.mcpUrl, scope: 'expenses:write' });
    assert.equal(result, 'REDIRECT', 'the SDK sees a redirect; the provider finished the login inside it');
    assert.equal(provider.authorizations, 2);
    assert.equal(
      new URL(opened[1] ?? '').searchParams.get('scope')?.split(' ').sort().join(' '),
      'expenses:read expenses:write mcp:access',
    );
    const after = scopesOf(decodeJwtPayload((await provider.tokens())?.access_token ?? ''));
    assert.ok(after.includes('expenses:write') && after.includes('expenses:read'), `scope ${after.join(' ')}`);
  });
});

/** A user's id (the `sub` of their tokens), from the admin API with the demo bootstrap admin. */
async function userId(username: string): Promise<string> {
  const token = (await (
    await fetch(`${keycloak.url}/realms/master/protocol/openid-connect/token`, {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'password',
        client_id: 'admin-cli',
        username: 'admin',
        password: 'admin',
      }),
    })
  ).json()) as { access_token: string };
  const users = (await (
    await fetch(`${keycloak.url}/admin/realms/mcp/users?exact=true&username=${username}`, {
      headers: { authorization: `Bearer ${token.access_token}` },
    })
  ).json()) as { id: string }[];
  if (!users[0]) throw new Error(`no user ${username}`);
  return users[0].id;
}
