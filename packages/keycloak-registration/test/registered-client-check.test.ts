import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AuthUnavailableError } from '@mcp-auth-stack/auth';
import { keycloakRegisteredClientCheck } from '../src/index.ts';

/**
 * The check of a token's registered client against a stand-in for Keycloak's admin API (the
 * lookup by client id and the service account's token). The attack it answers, with a real
 * Keycloak whose resolver maps a stranger's host to 127.0.0.1, is attacks-realm's.
 */
interface StandInClient {
  clientId: string;
  consentRequired?: boolean;
  redirectUris?: string[];
  rootUrl?: string;
  protocolMappers?: { protocolMapper: string }[];
}

function standInKeycloak(clients: StandInClient[]) {
  const lookups: string[] = [];
  let down = false;
  const fetch = async (input: string | URL | Request) => {
    const url = new URL(String(input));
    if (down) throw new TypeError('fetch failed');
    if (url.pathname.endsWith('/protocol/openid-connect/token')) {
      return Response.json({ access_token: 'admin-token', expires_in: 300 });
    }
    assert.equal(url.pathname, '/admin/realms/mcp/clients');
    assert.equal(url.searchParams.get('search'), 'false', 'an exact match, not a search');
    const clientId = url.searchParams.get('clientId') ?? '';
    lookups.push(clientId);
    return Response.json(clients.filter((client) => client.clientId === clientId));
  };
  return {
    fetch: fetch as typeof globalThis.fetch,
    lookups,
    setDown(value: boolean) {
      down = value;
    },
  };
}

function checkWith(keycloak: ReturnType<typeof standInKeycloak>, clock = { now: 0 }) {
  return keycloakRegisteredClientCheck({
    baseUrl: 'http://keycloak.test',
    realm: 'mcp',
    clientId: 'mcp-client-janitor',
    clientSecret: 'secret',
    keep: ['vscode-mcp-client'],
    redirectHosts: ['vscode.dev', 'mcp.example.com'],
    fetch: keycloak.fetch,
    now: () => clock.now,
  });
}

const REFUSED = 'The access token was issued to a client whose redirect URIs name a host this resource does not trust.';

test('registered clients whose redirect URIs name loopback or an allowed https host, as written, are taken', async () => {
  const keycloak = standInKeycloak([
    {
      clientId: 'mcp-remote',
      consentRequired: true,
      redirectUris: ['http://localhost:33418/oauth/callback', 'http://127.0.0.1/cb', 'http://[::1]:8080/'],
    },
    { clientId: 'vscode-web', consentRequired: true, redirectUris: ['https://vscode.dev/redirect'] },
    { clientId: 'workaround', consentRequired: true, redirectUris: ['https://mcp.example.com/auth/callback'] },
  ]);
  const check = checkWith(keycloak);
  for (const clientId of ['mcp-remote', 'vscode-web', 'workaround']) assert.equal(await check(clientId), undefined);
});

test("a host that is only a name (Keycloak asked DNS), plain http off loopback, user info, a root URL outside or a wildcard: the client's tokens are refused", async () => {
  const keycloak = standInKeycloak([
    { clientId: 'dns', consentRequired: true, redirectUris: ['http://127.0.0.1/cb', 'https://cb.attacker.test/cb'] },
    { clientId: 'http', consentRequired: true, redirectUris: ['http://vscode.dev/redirect'] },
    { clientId: 'userinfo', consentRequired: true, redirectUris: ['http://localhost@cb.attacker.test/cb'] },
    { clientId: 'lookalike', consentRequired: true, redirectUris: ['https://vscode.dev.attacker.test/redirect'] },
    { clientId: 'root', consentRequired: true, rootUrl: 'https://cb.attacker.test', redirectUris: ['/cb'] },
    { clientId: 'scheme', consentRequired: true, redirectUris: ['myapp://127.0.0.1/cb'] },
    { clientId: 'backslash', consentRequired: true, redirectUris: ['http://localhost\\@cb.attacker.test/cb'] },
    // Keycloak matches every page of vscode.dev against it.
    { clientId: 'wildcard', consentRequired: true, redirectUris: ['https://vscode.dev/*'] },
  ]);
  const check = checkWith(keycloak);
  for (const clientId of ['dns', 'http', 'userinfo', 'lookalike', 'root', 'scheme', 'backslash', 'wildcard']) {
    assert.equal(await check(clientId), REFUSED, clientId);
  }
});

test('a client an administrator made (no consent required), a kept one and a built-in one are taken; an unknown one or none is refused', async () => {
  const keycloak = standInKeycloak([
    { clientId: 'partner', consentRequired: false, redirectUris: ['https://partner.example/cb'] },
  ]);
  const check = checkWith(keycloak);
  assert.equal(await check('partner'), undefined);
  assert.equal(await check('vscode-mcp-client'), undefined);
  assert.equal(await check('account-console'), undefined);
  assert.deepEqual(keycloak.lookups, ['partner'], 'kept and built-in clients are not looked up');
  assert.equal(await check('gone'), 'The access token was issued to a client the realm does not have.');
  assert.equal(await check(undefined), 'The access token names no client (azp).');
});

test('a client with a pairwise sub mapper (registered with subject_type pairwise, or made so), however made: its tokens are refused, for good', async () => {
  const pairwise = [{ protocolMapper: 'oidc-sha256-pairwise-sub-mapper' }];
  const keycloak = standInKeycloak([
    { clientId: 'registered', consentRequired: true, redirectUris: ['http://127.0.0.1/cb'], protocolMappers: pairwise },
    {
      clientId: 'made',
      consentRequired: false,
      redirectUris: ['https://partner.example/cb'],
      protocolMappers: pairwise,
    },
    {
      clientId: 'audience',
      consentRequired: false,
      redirectUris: ['https://partner.example/cb'],
      protocolMappers: [{ protocolMapper: 'oidc-audience-mapper' }],
    },
  ]);
  const clock = { now: 0 };
  const check = checkWith(keycloak, clock);
  const refusal = 'The access token was issued to a client whose sub is pairwise, not the user id.';
  assert.equal(await check('registered'), refusal);
  assert.equal(await check('made'), refusal);
  assert.equal(await check('audience'), undefined, "another mapper of an administrator's client is its own business");
  clock.now = 3_600_000;
  keycloak.setDown(true);
  assert.equal(await check('registered'), refusal, 'kept without asking again');
});

test('a verdict is used for a minute: a client that moves its redirect URI outside is refused once it is read again', async () => {
  const client: StandInClient = { clientId: 'mover', consentRequired: true, redirectUris: ['http://127.0.0.1/cb'] };
  const keycloak = standInKeycloak([client]);
  const clock = { now: 0 };
  const check = checkWith(keycloak, clock);
  const [first, second] = await Promise.all([check('mover'), check('mover')]);
  assert.equal(first, undefined);
  assert.equal(second, undefined);
  assert.deepEqual(keycloak.lookups, ['mover'], 'concurrent checks share one lookup');
  client.redirectUris = ['https://cb.attacker.test/cb']; // its registration access token's update
  clock.now += 59_000;
  assert.equal(await check('mover'), undefined, 'within the minute');
  clock.now += 2_000;
  assert.equal(await check('mover'), REFUSED);
  assert.deepEqual(keycloak.lookups, ['mover', 'mover']);
  // A refusal is kept: a client cannot change itself in this realm, so one seen outside once
  // shows what it was made for.
  client.redirectUris = ['http://127.0.0.1/cb'];
  clock.now += 10 * 60_000;
  assert.equal(await check('mover'), REFUSED);
  assert.deepEqual(keycloak.lookups, ['mover', 'mover']);
});

test('a client that was gone and is made again under its id (a metadata document URL) is taken once read again', async () => {
  // The janitor deletes a metadata document's client; a token of it is refused meanwhile; the
  // next sign-in makes the client again under the same id (the document's URL), for everyone.
  const id = 'https://vscode.dev/oauth/client-metadata.json';
  const clients: StandInClient[] = [];
  const keycloak = standInKeycloak(clients);
  const clock = { now: 0 };
  const check = checkWith(keycloak, clock);
  assert.equal(await check(id), 'The access token was issued to a client the realm does not have.');
  clients.push({ clientId: id, consentRequired: true, redirectUris: ['http://127.0.0.1:33418/'] });
  clock.now += 30_000;
  assert.equal(
    await check(id),
    'The access token was issued to a client the realm does not have.',
    'within the minute',
  );
  clock.now += 31_000;
  assert.equal(await check(id), undefined, 'read again: there, and taken');
  assert.deepEqual(keycloak.lookups, [id, id]);
});

test('an answer about the client that cannot be read (past 4 MB) keeps no old verdict standing: 503', async () => {
  const client: StandInClient = { clientId: 'bloated', consentRequired: true, redirectUris: ['http://127.0.0.1/cb'] };
  const keycloak = standInKeycloak([client]);
  const clock = { now: 0 };
  const check = checkWith(keycloak, clock);
  assert.equal(await check('bloated'), undefined);
  client.redirectUris = ['http://127.0.0.1/cb', `http://127.0.0.1/${'x'.repeat(5 * 1024 * 1024)}`];
  clock.now += 61_000;
  await assert.rejects(check('bloated'), AuthUnavailableError);
});

test('Keycloak unreachable: a verdict up to an hour old stands; without one the answer is 503, not a refusal', async () => {
  const keycloak = standInKeycloak([
    { clientId: 'known', consentRequired: true, redirectUris: ['http://127.0.0.1/cb'] },
  ]);
  const clock = { now: 0 };
  const check = checkWith(keycloak, clock);
  assert.equal(await check('known'), undefined);
  keycloak.setDown(true);
  clock.now += 30 * 60_000;
  assert.equal(await check('known'), undefined, 'the last verdict, half an hour old');
  await assert.rejects(check('new'), AuthUnavailableError);
  clock.now += 31 * 60_000;
  await assert.rejects(check('known'), AuthUnavailableError);
});
