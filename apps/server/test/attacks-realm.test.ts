import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEMO_USERS, REALM_CLIENTS, type RunningKeycloak } from '@mcp-auth-stack/keycloak';
import {
  authorizeUrl,
  type CallbackServer,
  createPkce,
  decodeJwtPayload,
  freePort,
  startCallbackServer,
} from '@mcp-auth-stack/testing';
import { launchChromium, signIn } from '@mcp-auth-stack/testing/browser';
import {
  BrowserOAuthProvider,
  connectWithOAuth,
  keycloakAdminToken,
  keycloakUserId,
} from '@mcp-auth-stack/testing/mcp-oauth';
import { startKeycloakForServer } from '@mcp-auth-stack/testing-stack/keycloak';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { Browser } from 'playwright-core';
import { postMcp, startTestStack, type TestStack } from './helpers.ts';

/**
 * Adversarial tests of the trust between the realm and the server (issue 11), against a real
 * Keycloak 26.7.3 started from the repository's realm, the real server in `keycloak` mode
 * (`direct` registration), PostgreSQL and Chromium through Keycloak's login pages. Every
 * attacker request goes to loopback only. See docs/security.md for the whole attack table.
 */
const [alice] = DEMO_USERS as [(typeof DEMO_USERS)[0]];
/** A host of the stranger's that Keycloak's resolver maps to 127.0.0.1 (see before()). */
const STRANGERS_HOST = 'cb.stranger.test';

let keycloak: RunningKeycloak;
let browser: Browser;
let stack: TestStack;
let baseUrl: string;
let aliceId: string;
let bobId: string;
const callbacks: CallbackServer[] = [];
let hostsDir: string | undefined;

before(
  async () => {
    let serverPort: number;
    // Keycloak's resolver: a stranger's host that his DNS record points at 127.0.0.1 while he
    // registers (decision 74), here from a hosts file of its own.
    hostsDir = await mkdtemp(join(tmpdir(), 'attacks-realm-'));
    const hosts = join(hostsDir, 'hosts');
    await writeFile(hosts, `127.0.0.1 localhost ${STRANGERS_HOST}\n::1 localhost\n`);
    ({ keycloak, serverPort, baseUrl } = await startKeycloakForServer({
      env: { ...process.env, JAVA_OPTS_APPEND: `${process.env.JAVA_OPTS_APPEND ?? ''} -Djdk.net.hosts.file=${hosts}` },
    }));
    browser = await launchChromium();
    stack = await startTestStack({
      PORT: String(serverPort),
      MCP_SERVER_BASE_URL: baseUrl,
      MCP_AUTH_PROVIDER: 'keycloak',
      KEYCLOAK_REALM_URL: keycloak.realmUrl,
      KEYCLOAK_REGISTRATION: 'direct',
    });
    aliceId = await keycloakUserId(keycloak.url, 'alice');
    bobId = await keycloakUserId(keycloak.url, 'bob');
    await stack.sql.query(
      `INSERT INTO expenses (user_id, date, amount, category, description, payment_method)
       VALUES ($1, '2025-11-30', 42, 'food', 'Bob secret dinner', 'visa')`,
      [bobId],
    );
  },
  { timeout: 600_000 },
);

after(async () => {
  for (const callback of callbacks) await callback.close();
  await stack?.close();
  await browser?.close();
  await keycloak?.stop();
  if (hostsDir) await rm(hostsDir, { recursive: true, force: true });
});

const registrations = (provider: string) => `${keycloak.realmUrl}/clients-registrations/${provider}`;

async function post(url: string, body: unknown, headers: Record<string, string> = {}, method = 'POST') {
  const response = await fetch(url, {
    method,
    headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {}
  return { status: response.status, json, text };
}

/** Mappers that copy what alice may edit about herself into the claims the server reads. */
function forgingMappers(type: string, claims: { sub?: string; scp?: string; scope?: string } = {}) {
  const mapper = (attribute: string, claim: string) => ({
    name: `${attribute} to ${claim}`,
    protocol: 'openid-connect',
    protocolMapper: type,
    config: {
      'user.attribute': attribute,
      'claim.name': claim,
      'jsonType.label': 'String',
      'access.token.claim': 'true',
      'id.token.claim': 'true',
      'introspection.token.claim': 'true',
    },
  });
  return [
    mapper('lastName', claims.sub ?? 'sub'),
    mapper('firstName', claims.scp ?? 'scp'),
    ...(claims.scope ? [{ ...mapper('firstName', claims.scope), name: `firstName to ${claims.scope}` }] : []),
  ];
}

/** The realm's admin API as its administrator, the answer as it comes (a refusal included). */
async function adminFetch(path: string, init: { method?: string; body?: unknown } = {}) {
  return fetch(`${keycloak.url}/admin/realms/mcp${path}`, {
    method: init.method ?? 'GET',
    headers: {
      authorization: `Bearer ${await keycloakAdminToken(keycloak.url)}`,
      'content-type': 'application/json',
    },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
}

async function adminApi(path: string, init: { method?: string; body?: unknown } = {}) {
  const response = await adminFetch(path, init);
  if (!response.ok) throw new Error(`admin API ${path}: ${response.status} ${await response.text()}`);
  const text = await response.text();
  return text ? (JSON.parse(text) as unknown) : undefined;
}

/** The realm's clients named `name` (a registration through `default` may not choose its client id). */
async function clientsNamed(name: string) {
  return ((await adminApi('/clients?max=2000')) as { name?: string }[]).filter((client) => client.name === name);
}

/** What alice could write about herself (her names), done here through the admin API. */
async function setAliceNames(firstName: string, lastName: string) {
  const user = (await adminApi(`/users/${aliceId}`)) as Record<string, unknown>;
  await adminApi(`/users/${aliceId}`, { method: 'PUT', body: { ...user, firstName, lastName } });
}

/** alice logs in through Chromium with the given client and connects the SDK client to the server. */
async function aliceThrough(
  clientId: string,
  callback: CallbackServer,
): Promise<{ client?: Client; token?: string | undefined; error?: unknown }> {
  const oauth = new BrowserOAuthProvider(browser, callback, alice);
  oauth.saveClientInformation({ client_id: clientId });
  try {
    const client = await connectWithOAuth(`${baseUrl}/mcp`, oauth);
    return { client, token: oauth.tokens()?.access_token };
  } catch (error) {
    return { error, token: oauth.tokens()?.access_token };
  }
}

const bobsRows = async () =>
  (await stack.sql.query('SELECT description FROM expenses WHERE user_id = $1 ORDER BY description', [bobId])).rows;

/** Everything the attack is after, tried with alice's token; what came back. */
async function tryEverything(token: string) {
  const callTool = (name: string, args: Record<string, unknown> = {}) =>
    postMcp(
      `${baseUrl}/mcp`,
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } },
      { authorization: `Bearer ${token}` },
    );
  const read = await callTool('get_user_expenses');
  const stats = await callTool('get_expense_stats');
  const write = await callTool('add_user_expense', {
    date: '2025-12-01',
    amount: 1,
    category: 'food',
    description: 'Planted by alice',
    payment_method: 'cash',
  });
  return { read: { status: read.status, text: await read.text() }, stats, write };
}

describe('broken 1: no realm user becomes another user or an administrator', () => {
  // A client as Keycloak's default provider takes it (the realm keeps that provider closed to
  // anonymous callers; the admin API makes the clients the server-layer tests need). The name,
  // unique per body, finds what was created.
  const clientBody = (redirect: string, extra: Record<string, unknown> = {}) => ({
    name: `Innocent looking client ${Math.random().toString(36).slice(2, 10)}`,
    publicClient: true,
    redirectUris: [redirect],
    standardFlowEnabled: true,
    implicitFlowEnabled: false,
    ...extra,
  });

  for (const type of [
    'oidc-usermodel-property-mapper',
    'oidc-usermodel-attribute-mapper',
    'oidc-full-name-mapper',
    'oidc-address-mapper',
    'oidc-hardcoded-claim-mapper',
  ]) {
    // Keycloak's default provider takes mappers as they come; the realm keeps it closed to
    // anonymous callers (mcp-client-uri-hosts), and its Allowed Protocol Mapper Types policy (no
    // type at all) stands behind that.
    test(`anonymous registration on the default provider with a ${type} is refused`, async () => {
      const body = clientBody('http://127.0.0.1:9/callback', { protocolMappers: forgingMappers(type) });
      const registered = await post(registrations('default'), body);
      assert.equal(registered.status, 403, registered.text);
      assert.deepEqual(registered.json, {
        error: 'insufficient_scope',
        error_description: 'unsupported_registration_endpoint',
      });
      assert.deepEqual(await clientsNamed(body.name), [], 'no client was created');
    });
  }

  test('a client registered without mappers cannot add them later with its registration access token', async () => {
    const oidc = await post(registrations('openid-connect'), {
      client_name: 'Plain client',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      token_endpoint_auth_method: 'none',
    });
    assert.equal(oidc.status, 201, oidc.text);
    const clientId = oidc.json.client_id as string;
    const token = oidc.json.registration_access_token as string;
    const current = (await (
      await fetch(`${registrations('default')}/${clientId}`, { headers: { authorization: `Bearer ${token}` } })
    ).json()) as Record<string, unknown>;
    // As sent first, and each mapper with an id of its own (what the Allowed Protocol Mapper
    // Types policy's refusals told an attacker to try). Since 2026-12-06 the realm refuses every
    // change a registration access token asks for (registered-clients-stay-as-registered), before
    // the mapper policy, which refuses these too.
    for (const protocolMappers of [
      forgingMappers('oidc-usermodel-property-mapper'),
      forgingMappers('oidc-usermodel-property-mapper').map((mapper) => ({ ...mapper, id: randomUUID() })),
    ]) {
      const updated = await post(
        `${registrations('default')}/${clientId}`,
        { ...current, protocolMappers },
        { authorization: `Bearer ${token}` },
        'PUT',
      );
      assert.equal(updated.status, 403, updated.text);
      assert.deepEqual(updated.json, { error: 'insufficient_scope', error_description: 'invalid_request' });
    }
    const mappers = (await adminApi(
      `/clients/${((await adminApi(`/clients?clientId=${clientId}`)) as { id: string }[])[0]?.id}/protocol-mappers/models`,
    )) as { protocolMapper: string }[];
    assert.deepEqual(
      mappers.filter((m) => m.protocolMapper.startsWith('oidc-usermodel')),
      [],
      'no mapper was added',
    );
  });

  test("end to end: alice's client with name mappers is refused, and renamed bob/admin she gets nothing of his through a client of the realm", async () => {
    const callback = await startCallbackServer();
    callbacks.push(callback);
    const registered = await post(
      registrations('default'),
      clientBody(callback.redirectUri, { protocolMappers: forgingMappers('oidc-usermodel-property-mapper') }),
    );
    assert.equal(registered.status, 403, registered.text);
    assert.match(registered.text, /unsupported_registration_endpoint/);
    // She renames herself anyway and signs in through the pre-registered editor client.
    await setAliceNames('expenses:admin', bobId);
    try {
      const outcome = await aliceThrough('vscode-mcp-client', callback);
      await outcome.client?.close();
      assert.ok(outcome.token, `Keycloak issued alice a token (${String(outcome.error)})`);
      assert.equal(decodeJwtPayload(outcome.token as string).sub, aliceId, 'her own id, whatever her names');
      const { read, stats } = await tryEverything(outcome.token as string);
      assert.equal(read.status, 200, read.text);
      assert.doesNotMatch(read.text, /Bob secret dinner/, "alice never reads bob's expenses");
      assert.equal(stats.status, 403, 'a first name of expenses:admin is no scope');
      // Her write (tryEverything adds one) is hers: nothing stored in his name.
      assert.deepEqual(await bobsRows(), [{ description: 'Bob secret dinner' }]);
    } finally {
      await setAliceNames('Alice', 'Demo');
    }
  });

  test('anonymous registration with subject_type pairwise: Keycloak gives the client a sub of its own per user, and the server takes none of its tokens', async () => {
    const callback = await startCallbackServer();
    callbacks.push(callback);
    const registered = await post(registrations('openid-connect'), {
      client_name: 'Pairwise client',
      redirect_uris: [callback.redirectUri],
      token_endpoint_auth_method: 'none',
      subject_type: 'pairwise',
    });
    // Keycloak 26.7.3 adds its pairwise sub mapper after the realm's registration policies ran
    // (none of them sees it): the realm cannot refuse this; the server refuses the tokens.
    assert.equal(registered.status, 201, registered.text);
    const before = (await stack.sql.query<{ n: number }>('SELECT count(*)::int AS n FROM expenses')).rows[0]?.n;
    const outcome = await aliceThrough(registered.json.client_id as string, callback);
    await outcome.client?.close();
    assert.ok(outcome.token, `Keycloak issued alice a token (${String(outcome.error)})`);
    const sub = decodeJwtPayload(outcome.token as string).sub as string;
    assert.notEqual(sub, aliceId, 'a pairwise sub, not her id');
    const { read, stats, write } = await tryEverything(outcome.token as string);
    assert.equal(read.status, 401, read.text);
    assert.equal(stats.status, 401);
    assert.equal(write.status, 401);
    const after = (await stack.sql.query<{ n: number }>('SELECT count(*)::int AS n FROM expenses')).rows[0]?.n;
    assert.equal(after, before, 'nothing stored under the pairwise id');
  });

  // The server's own defence, for a realm whose registration policy is weaker than this one's
  // (or a realm administrator's mistake): the malicious clients are created through the admin
  // API, bypassing the registration policies. What the server cannot tell apart is a `sub` copied
  // from a value that has the form of a Keycloak id (docs/security.md): the realm's policy is
  // what excludes it, tested above.
  async function adminCreatedClient(callback: CallbackServer, extra: Record<string, unknown>) {
    const clientId = `attacker-${Math.random().toString(36).slice(2, 10)}`;
    const body = clientBody(callback.redirectUri, {
      clientId,
      consentRequired: false,
      attributes: { 'pkce.code.challenge.method': 'S256' },
      ...extra,
    });
    await adminApi('/clients', { method: 'POST', body });
    return clientId;
  }

  test('server layer: a sub a mapper copied from a name (not a Keycloak id) is refused', async () => {
    const callback = await startCallbackServer();
    callbacks.push(callback);
    const clientId = await adminCreatedClient(callback, {
      protocolMappers: forgingMappers('oidc-usermodel-property-mapper'),
    });
    await setAliceNames('Alice', 'bob');
    try {
      const outcome = await aliceThrough(clientId, callback);
      await outcome.client?.close();
      assert.ok(outcome.token, `alice got a token from Keycloak (${String(outcome.error)})`);
      assert.equal(decodeJwtPayload(outcome.token as string).sub, 'bob', 'Keycloak signed the mapped sub');
      const { read, stats, write } = await tryEverything(outcome.token as string);
      assert.equal(read.status, 401, read.text);
      assert.equal(stats.status, 401);
      assert.equal(write.status, 401);
      assert.deepEqual(await bobsRows(), [{ description: 'Bob secret dinner' }]);
    } finally {
      await setAliceNames('Alice', 'Demo');
    }
  });

  test('server layer: scp or scope written by a mapper does not make alice an administrator', async () => {
    const callback = await startCallbackServer();
    callbacks.push(callback);
    const clientId = await adminCreatedClient(callback, {
      // lastName goes to a harmless claim; firstName to scp and to scope.
      protocolMappers: forgingMappers('oidc-usermodel-property-mapper', { sub: 'nickname', scope: 'scope' }),
    });
    await setAliceNames('expenses:admin', 'Demo');
    try {
      const outcome = await aliceThrough(clientId, callback);
      await outcome.client?.close();
      assert.ok(outcome.token, String(outcome.error));
      const claims = decodeJwtPayload(outcome.token as string);
      assert.equal(claims.scp, 'expenses:admin', 'Keycloak signed the mapped scp');
      assert.equal(claims.sub, aliceId);
      assert.doesNotMatch(String(claims.scope), /expenses:admin/, 'Keycloak writes scope after the mappers');
      const { read, stats } = await tryEverything(outcome.token as string);
      assert.equal(read.status, 200, 'alice still reads her own');
      assert.equal(stats.status, 403, 'insufficient_scope: scp is not where this server reads scopes');
      assert.match(stats.headers.get('www-authenticate') ?? '', /error="insufficient_scope"/);
    } finally {
      await setAliceNames('Alice', 'Demo');
    }
  });

  test('server layer: a client that gave itself day-long access tokens gets them refused', async () => {
    const callback = await startCallbackServer();
    callbacks.push(callback);
    // Keycloak's default provider took client attributes as they came from anyone; the realm
    // keeps it closed to anonymous callers now, so the client is made through the admin API.
    const clientId = await adminCreatedClient(callback, { attributes: { 'access.token.lifespan': '86400' } });
    const outcome = await aliceThrough(clientId, callback);
    await outcome.client?.close();
    assert.ok(outcome.token, String(outcome.error));
    const claims = decodeJwtPayload(outcome.token as string);
    assert.ok((claims.exp as number) - (claims.iat as number) > 3600, 'Keycloak issued a token for hours');
    const { read } = await tryEverything(outcome.token as string);
    assert.equal(read.status, 401, read.text);
  });

  test('an ID token or a refresh token of the realm is not an access token here (typ)', async () => {
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: 'expenses-agent',
      client_secret: 'expenses-agent-demo-secret-not-for-production',
      scope: 'openid',
    });
    const tokens = (await (
      await fetch(`${keycloak.realmUrl}/protocol/openid-connect/token`, { method: 'POST', body: form })
    ).json()) as { access_token: string; refresh_token?: string; id_token?: string };
    assert.equal(decodeJwtPayload(tokens.access_token).typ, 'Bearer', 'what Keycloak 26.7.3 puts in typ');
    const list = (token: string) =>
      postMcp(`${baseUrl}/mcp`, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { authorization: `Bearer ${token}` });
    assert.equal((await list(tokens.access_token)).status, 200);
    // Both are issued here (refresh tokens are on for this client, `openid` asks for an ID token).
    assert.ok(tokens.refresh_token && tokens.id_token, Object.keys(tokens).join(' '));
    for (const other of [tokens.refresh_token, tokens.id_token]) {
      assert.equal((await list(other)).status, 401, String(decodeJwtPayload(other).typ));
    }
  });

  test("alice's password at the realm's own admin-cli (password grant on, as Keycloak makes it): no token the server takes", async () => {
    const token = (extra: Record<string, string>) =>
      fetch(`${keycloak.realmUrl}/protocol/openid-connect/token`, {
        method: 'POST',
        body: new URLSearchParams({
          grant_type: 'password',
          client_id: 'admin-cli',
          username: alice.username,
          password: alice.password,
          ...extra,
        }),
      });
    // Keycloak gives every realm an admin-cli that takes passwords: alice gets a token there.
    const plain = (await (await token({})).json()) as { access_token?: string };
    assert.ok(plain.access_token, 'Keycloak issues it');
    const claims = decodeJwtPayload(plain.access_token);
    assert.deepEqual([claims.aud, claims.scope], [undefined, ''], 'no audience, no scope');
    const listed = await postMcp(
      `${baseUrl}/mcp`,
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { authorization: `Bearer ${plain.access_token}` },
    );
    assert.equal(listed.status, 401, 'not a token for this server');
    // Nor can she ask admin-cli for this server's scopes or name it as the resource.
    for (const extra of [{ scope: 'mcp:access expenses:read' }, { resource: `${baseUrl}/mcp` }]) {
      const asked = (await (await token(extra)).json()) as { access_token?: string; error?: string };
      assert.equal(asked.access_token, undefined, `${JSON.stringify(extra)}: ${asked.error}`);
    }
  });
});

describe('broken 2: no blind SSRF through sector_identifier_uri', () => {
  const REDIRECT = 'http://127.0.0.1:9/callback';
  /** A sector document listing `REDIRECT`, served on `host`, counting the requests it gets. */
  function sectorDocument(host: string) {
    const served = { hits: 0, url: '' };
    const listener = createServer((_request, response) => {
      served.hits++;
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify([REDIRECT]));
    });
    before(async () => {
      await new Promise<void>((resolve) => listener.listen(0, host, resolve));
      listener.unref(); // never what keeps the test process alive
      served.url = `http://${host}:${(listener.address() as AddressInfo).port}/sector`;
    });
    after(async () => {
      // Keycloak's HTTP client keeps its connection open: close it too, or close() waits for it.
      listener.closeAllConnections();
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    });
    return served;
  }
  // 127.0.0.2: a loopback address outside the realm's Trusted Hosts and Keycloak's egress
  // allow-list, standing for an internal host. 127.0.0.1: a host the allow-list lets through on
  // a developer's machine (as it lets the CIMD hosts through everywhere).
  const internal = sectorDocument('127.0.0.2');
  const reachable = sectorDocument('127.0.0.1');
  const pairwise = (sector: string) => ({
    client_name: 'Pairwise client',
    redirect_uris: [REDIRECT],
    token_endpoint_auth_method: 'none',
    subject_type: 'pairwise',
    sector_identifier_uri: sector,
  });

  test('a pairwise mapper with a sector URI on the default provider is refused and nothing is fetched', async () => {
    internal.hits = 0;
    const registered = await post(registrations('default'), {
      publicClient: true,
      implicitFlowEnabled: false,
      redirectUris: [REDIRECT],
      protocolMappers: [
        {
          name: 'pairwise',
          protocol: 'openid-connect',
          protocolMapper: 'oidc-sha256-pairwise-sub-mapper',
          config: { sectorIdentifierUri: internal.url, pairwiseSubAlgorithmSalt: 'x' },
        },
      ],
    });
    assert.ok(registered.status === 403 || registered.status === 400, `${registered.status} ${registered.text}`);
    assert.equal(internal.hits, 0, 'Keycloak fetched nothing from the address the attacker named');
  });

  test('workaround mode: the registration facade refuses it before Keycloak sees it', async () => {
    internal.hits = 0;
    const facadeStack = await startTestStack(
      {
        MCP_SERVER_BASE_URL: `http://localhost:${await freePort()}`,
        MCP_AUTH_PROVIDER: 'keycloak',
        KEYCLOAK_REALM_URL: keycloak.realmUrl,
        KEYCLOAK_REGISTRATION: 'workaround',
      },
      { sharedDatabase: stack.database },
    );
    try {
      const registered = await post(`${facadeStack.url}/register`, pairwise(internal.url));
      assert.equal(registered.status, 400, registered.text);
      assert.equal(registered.json.error, 'invalid_client_metadata');
      assert.equal(internal.hits, 0);
    } finally {
      await facadeStack.close();
    }
  });

  // Keycloak 26.7.3 fetches a registration's sector URI after it created the client, and none of
  // its own policies looks at it: the realm's executor refuses the member (decision 75), on any
  // host, before the client exists.
  for (const [where, served] of [
    ['outside the egress allow-list', internal],
    ['on a host Keycloak reaches (loopback)', reachable],
  ] as const) {
    test(`direct mode: the realm refuses a sector_identifier_uri ${where} and nothing is fetched`, async () => {
      served.hits = 0;
      const registered = await post(registrations('openid-connect'), pairwise(served.url));
      assert.equal(registered.status, 403, registered.text);
      assert.equal(registered.json.error_description, 'invalid_client_metadata');
      assert.equal(served.hits, 0, 'Keycloak fetched nothing from the address the attacker named');
    });
  }

  // Behind the executor stands Keycloak's egress allow-list (decisions 31, 75), for a realm
  // imported without it. An administrator's client is not under the anonymous rules, so a
  // pairwise mapper added through the admin API shows where Keycloak's own requests go.
  test("the egress allow-list behind it: Keycloak's sector fetch reaches loopback, which the allow-list lets through, and nothing outside it", async () => {
    const clientId = `egress-${randomUUID()}`;
    await adminApi('/clients', {
      method: 'POST',
      body: {
        clientId,
        publicClient: true,
        redirectUris: [REDIRECT],
        attributes: { 'pkce.code.challenge.method': 'S256' },
      },
    });
    const [created] = (await adminApi(`/clients?clientId=${clientId}`)) as { id: string }[];
    assert.ok(created);
    const addMapper = (sector: string) =>
      adminFetch(`/clients/${created.id}/protocol-mappers/models`, {
        method: 'POST',
        body: {
          name: `pairwise ${sector}`,
          protocol: 'openid-connect',
          protocolMapper: 'oidc-sha256-pairwise-sub-mapper',
          config: { sectorIdentifierUri: sector, pairwiseSubAlgorithmSalt: 'x' },
        },
      });
    try {
      internal.hits = 0;
      reachable.hits = 0;
      const outside = await addMapper(internal.url);
      assert.equal(outside.status, 400, await outside.text());
      assert.equal(internal.hits, 0, 'nothing left Keycloak for a host outside the allow-list');
      // The same request to a host the allow-list lets through is fetched: what the test can see.
      const inside = await addMapper(reachable.url);
      assert.equal(inside.status, 201, await inside.text());
      assert.equal(reachable.hits, 1);
    } finally {
      await adminApi(`/clients/${created.id}`, { method: 'DELETE' });
    }
  });

  test('direct mode: a registration without subject_type pairwise still works', async () => {
    const registered = await post(registrations('openid-connect'), {
      client_name: 'Plain client',
      redirect_uris: [REDIRECT],
      token_endpoint_auth_method: 'none',
    });
    assert.equal(registered.status, 201, registered.text);
  });
});

describe('broken 3: a registration flood locks registration out for a bounded time only', () => {
  test('flooded to Max Clients, registration answers 403; the janitor removes the unused clients, not used ones', async () => {
    const { keycloakClientJanitor, KEYCLOAK_JANITOR_NAMESPACE, keycloakJanitorMigrations } = await import(
      '@mcp-auth-stack/keycloak-registration'
    );
    const { migrate } = await import('@mcp-auth-stack/database');
    await migrate(stack.sql, KEYCLOAK_JANITOR_NAMESPACE, keycloakJanitorMigrations);
    const components = (await adminApi(
      '/components?type=org.keycloak.services.clientregistration.policy.ClientRegistrationPolicy',
    )) as { id: string; providerId: string; subType: string; config: Record<string, string[]> }[];
    const maxClients = components.find((c) => c.providerId === 'max-clients' && c.subType === 'anonymous');
    assert.ok(maxClients);
    // What bounds a flood (and the rows it leaves) until the janitor runs; lowered below for the test.
    assert.deepEqual(maxClients.config['max-clients'], ['200'], 'the realm caps the clients at 200');
    const count = ((await adminApi('/clients?max=1000')) as unknown[]).length;
    const register = () =>
      post(registrations('openid-connect'), {
        client_name: 'Flood',
        redirect_uris: ['http://127.0.0.1:9/callback'],
        token_endpoint_auth_method: 'none',
      });
    // A realm with room for 7 more clients, as 200 is for a flood of 200.
    await adminApi(`/components/${maxClients.id}`, {
      method: 'PUT',
      body: { ...maxClients, config: { ...maxClients.config, 'max-clients': [String(count + 7)] } },
    });
    try {
      // One real client, used: alice logs in through it.
      const callback = await startCallbackServer();
      callbacks.push(callback);
      const real = await post(registrations('openid-connect'), {
        client_name: 'Real client',
        redirect_uris: [callback.redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        token_endpoint_auth_method: 'none',
      });
      assert.equal(real.status, 201, real.text);
      const used = await aliceThrough(real.json.client_id as string, callback);
      assert.ok(used.token, String(used.error));
      await used.client?.close();
      // What the janitor's per-user share reads of Keycloak: the user of each of a client's sessions.
      const [realInternal] = (await adminApi(
        `/clients?clientId=${encodeURIComponent(real.json.client_id as string)}`,
      )) as { id: string }[];
      const sessions = (await adminApi(`/clients/${realInternal?.id}/user-sessions`)) as { userId?: string }[];
      assert.ok(
        sessions.some((session) => session.userId === aliceId),
        JSON.stringify(sessions),
      );

      // Keycloak's `default` provider takes the client id and the internal id the caller chooses;
      // the realm keeps it closed to anonymous callers (mcp-client-uri-hosts).
      const flooder = (extra: Record<string, unknown> = {}) => ({
        name: 'Flood',
        publicClient: true,
        consentRequired: true,
        redirectUris: ['http://127.0.0.1:9/callback'],
        standardFlowEnabled: true,
        implicitFlowEnabled: false,
        ...extra,
      });
      const chosenIds = [
        { clientId: `urn:flood:${Math.random().toString(36).slice(2, 10)}` },
        { id: `f/${Math.random().toString(36).slice(2, 10)}` },
      ];
      for (const chosen of chosenIds) {
        const refused = await post(registrations('default'), flooder(chosen));
        assert.equal(refused.status, 403, refused.text);
        assert.deepEqual(refused.json, {
          error: 'insufficient_scope',
          error_description: 'unsupported_registration_endpoint',
        });
      }
      // The janitor still copes with such ids, which an administrator (or a realm without this
      // project's executor) can make: here through the admin API. One that looks like a metadata
      // document's URL must not escape it, nor an internal id with a `/` or a `?`, which the admin
      // API's URLs carry (its 404 read as "no sessions" and "removed").
      const adminMade = async (extra: Record<string, unknown>) => {
        const clientId =
          (extra.clientId as string | undefined) ?? `flood-admin-${Math.random().toString(36).slice(2, 10)}`;
        await adminApi('/clients', { method: 'POST', body: flooder({ ...extra, clientId }) });
        return { status: 201, json: { clientId } as Record<string, unknown>, text: '' };
      };
      const urlLike = await adminMade({ clientId: `urn:flood:${Math.random().toString(36).slice(2, 10)}` });
      const ownIds = [
        await adminMade({ id: `f/${Math.random().toString(36).slice(2, 10)}` }),
        await adminMade({ id: `x?${Math.random().toString(36).slice(2, 10)}` }),
      ];
      // Nor a client whose attributes claim a last use in the year 5000 (the janitor keeps its own
      // record; Keycloak's `default` provider took such attributes from anyone until the realm
      // closed it to anonymous callers).
      const claimsUse = await adminMade({
        attributes: { 'mcp.janitor.last-used': '99999999999999', 'mcp.janitor.first-seen': '1e300' },
      });
      const flood = [await register(), await register(), urlLike, claimsUse, ...ownIds];
      assert.deepEqual(
        flood.map((r) => r.status),
        [201, 201, 201, 201, 201, 201],
        `${urlLike.text} ${claimsUse.text} ${ownIds.map((r) => r.text).join(' ')}`,
      );
      const clientIdOf = (registered: (typeof flood)[number]) =>
        (registered.json.client_id ?? registered.json.clientId) as string;
      const locked = await register();
      assert.equal(locked.status, 403, `the realm is full: ${locked.text}`);

      const events: Record<string, unknown>[] = [];
      const told: string[] = [];
      const janitor = keycloakClientJanitor({
        baseUrl: keycloak.url,
        realm: 'mcp',
        clientId: 'mcp-client-janitor',
        clientSecret: 'mcp-client-janitor-demo-secret-not-for-production',
        pool: stack.sql,
        keep: ['mcp-server', 'vscode-mcp-client', 'expenses-agent', 'mcp-oauth-proxy'],
        abandonedAfterSeconds: 0,
        // A flood, though a small one: Max Clients was lowered to it above.
        pressureAt: 0,
        intervalSeconds: 0,
        // Alice holds clients of this file's earlier tests in use too: no share here cuts them
        // (the share itself is the janitor's unit test; what it reads of Keycloak is pinned above).
        maxClientsPerUser: 1000,
        onEvent: (event, details) => events.push({ event, ...details }),
        // What the server wires to forgetting the pass-through's records; failing here shows
        // that a failure to forget does not fail the pass.
        onRemoved: async (clientIds) => {
          told.push(...clientIds);
          throw new Error('database down');
        },
      });
      await janitor.runOnce(); // first sight: marks them
      await new Promise((resolve) => setTimeout(resolve, 20));
      const { removed } = await janitor.runOnce();
      for (const registered of flood) assert.ok(removed.includes(clientIdOf(registered)), clientIdOf(registered));
      assert.deepEqual(told, removed, 'told which clients went');
      assert.deepEqual(
        events.filter((e) => e.event === 'forget_failed'),
        [{ event: 'forget_failed', count: removed.length, message: 'database down' }],
      );
      assert.ok(!removed.includes(real.json.client_id as string), 'the client alice uses stays');
      const ids = ((await adminApi('/clients?max=1000')) as { clientId: string }[]).map((c) => c.clientId);
      for (const registered of flood)
        assert.ok(!ids.includes(clientIdOf(registered)), `${clientIdOf(registered)} is gone`);
      for (const kept of ['vscode-mcp-client', 'expenses-agent', 'mcp-oauth-proxy', 'mcp-server', 'admin-cli']) {
        assert.ok(ids.includes(kept), kept);
      }
      assert.equal((await register()).status, 201, 'registration works again');
    } finally {
      await adminApi(`/components/${maxClients.id}`, { method: 'PUT', body: maxClients });
    }
  });
});

describe('anonymous callers without a realm account', () => {
  test('anonymous registration of a confidential client_credentials client is refused', async () => {
    // Registration is open to anyone; a confidential client would get a service account, which is
    // no person. The realm's anonymous-registration-safe-clients profile admits public clients only.
    const registered = await post(registrations('openid-connect'), {
      client_name: 'Headless stranger',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'client_secret_basic',
    });
    assert.equal(registered.status, 403, registered.text);
    assert.equal(registered.json.client_id, undefined);
  });

  test('a stranger cannot give himself an account: the realm offers no self-registration', async () => {
    // With registrationAllowed on, anyone could become a realm user, the attacker the rest of this
    // file has to stop at every other layer; accounts are made by an administrator only.
    const query = new URLSearchParams({
      client_id: 'vscode-mcp-client',
      response_type: 'code',
      redirect_uri: 'http://127.0.0.1:9/callback',
      scope: 'openid',
      code_challenge: createPkce().challenge,
      code_challenge_method: 'S256',
      state: 's1',
    });
    const page = await browser.newPage();
    try {
      await page.goto(`${keycloak.realmUrl}/protocol/openid-connect/auth?${query}`);
      await page.locator('#kc-form-login').waitFor();
      assert.equal(await page.locator('#kc-registration').count(), 0, 'the login page offers no "Register" link');
      await page.goto(`${keycloak.realmUrl}/protocol/openid-connect/registrations?${query}`);
      const form = page.locator('#kc-register-form');
      if ((await form.count()) > 0) {
        for (const [field, value] of [
          ['#username', 'mallory'],
          ['#email', 'mallory@example.com'],
          ['#firstName', 'Mallory'],
          ['#lastName', 'Stranger'],
          ['#password', 'mallory-password-1'],
          ['#password-confirm', 'mallory-password-1'],
        ] as const) {
          await page.fill(field, value);
        }
        // The form's POST answered before the account is looked for.
        await Promise.all([
          page.waitForResponse((response) => response.request().method() === 'POST'),
          page.click('#kc-form-buttons [type=submit]'),
        ]);
      }
    } finally {
      await page.close();
    }
    assert.deepEqual(await adminApi('/users?username=mallory&exact=true'), [], 'no account was created');
  });

  test("a stranger guessing bob's password is stopped after five wrong ones: then even the right one gets no code", async () => {
    // Brute-force protection (failureFactor 5, then waits): without it the login page is an
    // endless password oracle for anyone who knows a username.
    const bob = DEMO_USERS.find((user) => user.username === 'bob') as (typeof DEMO_USERS)[0];
    /** One login on the page of the VS Code client: the callback's answer, or undefined when refused. */
    const attempt = async (password: string) => {
      const callback = await startCallbackServer();
      const page = await browser.newPage();
      try {
        await page.goto(
          authorizeUrl(keycloak.realmUrl, {
            clientId: 'vscode-mcp-client',
            redirectUri: callback.redirectUri,
            scope: 'openid',
            pkce: createPkce(),
          }),
        );
        await page.locator('#kc-form-login').waitFor();
        await page.fill('#username', bob.username);
        await page.fill('#password', password);
        await page.click('#kc-login');
        // Keycloak answers with its error message, or sends the browser on with a code.
        const refused = page.locator('#input-error-username, #input-error').first();
        return await Promise.race([callback.next(15_000), refused.waitFor({ timeout: 15_000 }).then(() => undefined)]);
      } finally {
        await page.close();
        await callback.close();
      }
    };
    const status = async () =>
      (await adminApi(`/attack-detection/brute-force/users/${bobId}`)) as { disabled: boolean; numFailures: number };
    try {
      let lastGuessAt = 0;
      for (let guess = 1; guess <= 5; guess++) {
        // More than quickLoginCheckMilliSeconds (1 s) apart: the lockout must come from the count
        // of failures (failureFactor 5), not from the quick-login rule.
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, lastGuessAt + 1_500 - Date.now())));
        assert.equal(await attempt(`guess-${guess}`), undefined, `wrong password ${guess} issued no code`);
        lastGuessAt = Date.now();
        if (guess === 4) {
          const afterFour = await status();
          assert.deepEqual([afterFour.numFailures, afterFour.disabled], [4, false], JSON.stringify(afterFour));
        }
      }
      const answer = await attempt(bob.password);
      assert.equal(answer?.get('code') ?? null, null, 'the right password, after five wrong ones, gets no code');
      const afterFive = await status();
      assert.equal(afterFive.disabled, true, JSON.stringify(afterFive));
    } finally {
      await adminApi(`/attack-detection/brute-force/users/${bobId}`, { method: 'DELETE' });
    }
  });

  test('a public client registered with client_credentials gets no token at all', async () => {
    const registered = await post(registrations('openid-connect'), {
      client_name: 'Headless stranger, public',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: ['authorization_code', 'client_credentials'],
      token_endpoint_auth_method: 'none',
    });
    assert.equal(registered.status, 201, registered.text);
    const issued = await fetch(`${keycloak.realmUrl}/protocol/openid-connect/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: registered.json.client_id as string }),
    });
    const body = (await issued.json()) as { access_token?: string; error?: string };
    assert.equal(issued.status, 401, JSON.stringify(body));
    assert.equal(body.access_token, undefined);
  });

  test('the device grant: a stranger sends alice a sign-in link, alice approves, the stranger gets no token', async () => {
    // RFC 8628 section 5.4 (remote phishing): the device grant has no redirect, so whoever holds
    // the device code gets the token of whoever approves it. The realm's no-device-grant policy
    // refuses every device-code token request; registration itself cannot refuse the grant.
    const registered = await post(registrations('openid-connect'), {
      client_name: 'Totally VS Code',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'],
      token_endpoint_auth_method: 'none',
    });
    assert.equal(registered.status, 201, registered.text);
    const clientId = registered.json.client_id as string;
    const pkce = createPkce();
    const started = await fetch(`${keycloak.realmUrl}/protocol/openid-connect/auth/device`, {
      method: 'POST',
      body: new URLSearchParams({
        client_id: clientId,
        scope: 'expenses:read expenses:write',
        code_challenge: pkce.challenge,
        code_challenge_method: 'S256',
      }),
    });
    const device = (await started.json()) as { device_code?: string; verification_uri_complete?: string };
    assert.equal(started.status, 200, JSON.stringify(device));
    // alice opens the link she was sent, signs in and approves the consent page.
    const page = await browser.newPage();
    try {
      await signIn(page, device.verification_uri_complete as string, alice, { expectClientName: 'Totally VS Code' });
      await page.waitForLoadState();
    } finally {
      await page.close();
    }
    const issued = await fetch(`${keycloak.realmUrl}/protocol/openid-connect/token`, {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:device_code',
        client_id: clientId,
        device_code: device.device_code as string,
        code_verifier: pkce.verifier,
      }),
    });
    const tokens = (await issued.json()) as { access_token?: string; error?: string; error_description?: string };
    assert.equal(tokens.access_token, undefined, 'no token for the holder of the device code');
    assert.equal(issued.status, 400, JSON.stringify(tokens));
    assert.deepEqual(tokens, { error: 'invalid_grant', error_description: 'Request not allowed' });
  });

  test("a stranger's SAML client, whose sign-in link would post alice's assertion to his host, is refused: registered or turned into one", async () => {
    // Keycloak's `default` provider registers SAML clients too. A SAML client names its own
    // assertion consumer URL, which no redirect rule of the realm checks; its IdP-initiated link
    // signs the user in and posts a signed assertion naming her there, with no consent page.
    // Before the realm's anonymous-registration-openid-connect-only policy this registered (201),
    // and alice's browser posted her assertion to the stranger's host; since decision 75 the
    // default provider is closed to anonymous callers before that policy is asked.
    const urlName = `reports-${randomUUID().slice(0, 8)}`;
    const registered = await post(registrations('default'), {
      name: 'Expense reports',
      protocol: 'saml',
      publicClient: true,
      clientAuthenticatorType: 'none',
      standardFlowEnabled: false,
      implicitFlowEnabled: false,
      redirectUris: ['http://127.0.0.1:9/acs'],
      attributes: {
        saml_assertion_consumer_url_post: 'https://stranger.example.net/acs',
        saml_idp_initiated_sso_url_name: urlName,
        'saml.client.signature': 'false',
      },
    });
    assert.equal(registered.status, 403, registered.text);
    assert.deepEqual(registered.json, {
      error: 'insufficient_scope',
      error_description: 'unsupported_registration_endpoint',
    });
    // Nor can a client registered as OpenID Connect turn itself into one.
    const oidc = await post(registrations('openid-connect'), {
      client_name: 'Plain client',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      token_endpoint_auth_method: 'none',
    });
    assert.equal(oidc.status, 201, oidc.text);
    const token = oidc.json.registration_access_token as string;
    const own = `${registrations('default')}/${oidc.json.client_id as string}`;
    const current = (await (await fetch(own, { headers: { authorization: `Bearer ${token}` } })).json()) as {
      attributes?: Record<string, string>;
    };
    const updated = await post(
      own,
      {
        ...current,
        protocol: 'saml',
        attributes: {
          ...current.attributes,
          saml_assertion_consumer_url_post: 'https://stranger.example.net/acs',
          saml_idp_initiated_sso_url_name: `${urlName}-updated`,
        },
      },
      { authorization: `Bearer ${token}` },
      'PUT',
    );
    assert.equal(updated.status, 403, updated.text);
    assert.deepEqual(updated.json, { error: 'insufficient_scope', error_description: 'invalid_request' });
    // alice follows each sign-in link the stranger sent her: no page signs her in for either, and
    // her browser posts nothing to the stranger's host.
    const context = await browser.newContext();
    const posted: string[] = [];
    await context.route('https://stranger.example.net/**', async (route) => {
      posted.push(`${route.request().method()} ${route.request().url()}`);
      await route.fulfill({ status: 200, body: 'received' });
    });
    try {
      const page = await context.newPage();
      for (const name of [urlName, `${urlName}-updated`]) {
        const answer = await page.goto(`${keycloak.realmUrl}/protocol/saml/clients/${name}`);
        assert.equal(answer?.status(), 400, name);
        assert.match((await page.locator('body').textContent()) ?? '', /Client not found/);
      }
    } finally {
      await context.close();
    }
    assert.deepEqual(posted, []);
  });

  test("a stranger's host that resolves to loopback while he registers: the realm refuses it; a client made otherwise gets alice's code, and the server refuses the token it buys", async () => {
    // Keycloak 26.7.3's own enforcer asks DNS whether a redirect URI is loopback (decision 74):
    // with the stranger's DNS record at 127.0.0.1 while he registers, it let this through (201),
    // and once the record pointed at his own server the code of whoever approved the consent page
    // went there. The realm's own executor (mcp-client-uri-hosts) reads the host as text.
    const redirectUri = `https://${STRANGERS_HOST}/cb`;
    const registered = await post(registrations('openid-connect'), {
      client_name: 'Visual Studio Code',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    });
    assert.equal(registered.status, 403, registered.text);
    assert.deepEqual(registered.json, { error: 'insufficient_scope', error_description: 'invalid_redirect_uri' });
    // The server's own check, for a realm without that executor (or a client made otherwise with
    // consent required):
    // the client as an anonymous registration would have made it, through the admin API.
    const clientId = `stranger-${randomUUID().slice(0, 8)}`;
    await adminApi('/clients', {
      method: 'POST',
      body: {
        clientId,
        name: 'Visual Studio Code',
        publicClient: true,
        consentRequired: true,
        standardFlowEnabled: true,
        implicitFlowEnabled: false,
        redirectUris: [redirectUri],
        attributes: { 'pkce.code.challenge.method': 'S256' },
      },
    });
    const pkce = createPkce();
    const context = await browser.newContext();
    let code: string | null = null;
    await context.route(`https://${STRANGERS_HOST}/**`, async (route) => {
      code = new URL(route.request().url()).searchParams.get('code');
      await route.fulfill({ status: 200, body: 'received' });
    });
    try {
      const page = await context.newPage();
      const url = authorizeUrl(keycloak.realmUrl, {
        clientId,
        redirectUri,
        scope: 'openid mcp:access expenses:read expenses:write',
        pkce,
        state: 'x',
      });
      await signIn(page, url, alice, { expectClientName: 'Visual Studio Code' });
      await page.waitForURL(`https://${STRANGERS_HOST}/**`);
    } finally {
      await context.close();
    }
    assert.ok(code, "alice's code reached the stranger's host");
    const issued = await fetch(`${keycloak.realmUrl}/protocol/openid-connect/token`, {
      method: 'POST',
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        client_id: clientId,
        code: code as string,
        redirect_uri: redirectUri,
        code_verifier: pkce.verifier,
      }),
    });
    const token = ((await issued.json()) as { access_token?: string }).access_token as string;
    assert.equal(issued.status, 200);
    assert.equal(decodeJwtPayload(token).sub, aliceId);
    const readWith = (url: string) =>
      postMcp(
        `${url}/mcp`,
        { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'get_user_expenses', arguments: {} } },
        { authorization: `Bearer ${token}` },
      );
    // A server without the janitor's credential cannot tell: the token is the realm's, for it.
    assert.equal((await readWith(baseUrl)).status, 200);
    const checking = await startTestStack(
      {
        PORT: String(await freePort()),
        MCP_SERVER_BASE_URL: baseUrl,
        MCP_AUTH_PROVIDER: 'keycloak',
        KEYCLOAK_REALM_URL: keycloak.realmUrl,
        KEYCLOAK_REGISTRATION: 'direct',
        KEYCLOAK_JANITOR_CLIENT_SECRET: REALM_CLIENTS.janitor.demoSecret,
      },
      { sharedDatabase: stack.database },
    );
    try {
      const refused = await readWith(checking.url);
      assert.equal(refused.status, 401, await refused.text());
      assert.match(
        refused.headers.get('www-authenticate') ?? '',
        /error="invalid_token", error_description="The access token was issued to a client whose redirect URIs name a host this resource does not trust\."/,
      );
      // alice's own client, on loopback as written, is taken by the same server.
      const callback = await startCallbackServer();
      callbacks.push(callback);
      const own = await post(registrations('openid-connect'), {
        client_name: 'Plain client',
        redirect_uris: [callback.redirectUri],
        token_endpoint_auth_method: 'none',
      });
      assert.equal(own.status, 201, own.text);
      const outcome = await aliceThrough(own.json.client_id as string, callback);
      await outcome.client?.close();
      assert.ok(outcome.token, String(outcome.error));
      const taken = await postMcp(
        `${checking.url}/mcp`,
        { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'get_user_expenses', arguments: {} } },
        { authorization: `Bearer ${outcome.token}` },
      );
      assert.equal(taken.status, 200, await taken.text());
    } finally {
      await checking.close();
    }
  });

  test('defence in depth: a service account outside mcp-users gets no token this server takes', async () => {
    // For a realm whose registration policy is weaker than this one's (or an administrator's
    // client for something else): the realm gives mcp:access, and so the server's audience, only
    // to holders of the role mcp-user.
    const clientId = `headless-${Math.random().toString(36).slice(2, 10)}`;
    await adminApi('/clients', {
      method: 'POST',
      body: {
        clientId,
        publicClient: false,
        serviceAccountsEnabled: true,
        standardFlowEnabled: false,
        implicitFlowEnabled: false,
        directAccessGrantsEnabled: false,
        secret: 'headless-test-secret',
      },
    });
    const basic = Buffer.from(`${clientId}:headless-test-secret`).toString('base64');
    const issued = await fetch(`${keycloak.realmUrl}/protocol/openid-connect/token`, {
      method: 'POST',
      headers: { authorization: `Basic ${basic}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'mcp:access expenses:read expenses:write' }),
    });
    const tokens = (await issued.json()) as { access_token?: string };
    assert.ok(tokens.access_token, `Keycloak issues the service account a token: ${JSON.stringify(tokens)}`);
    assert.ok(![decodeJwtPayload(tokens.access_token).aud].flat().includes(`${baseUrl}/mcp`), 'not for this server');
    const response = await postMcp(
      `${baseUrl}/mcp`,
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { authorization: `Bearer ${tokens.access_token}` },
    );
    assert.equal(response.status, 401, 'a stranger without an account is not a user of this server');
  });
});
