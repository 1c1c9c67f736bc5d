import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { freePort } from '@mcp-auth-stack/testing';
import { keycloakAdminToken } from '@mcp-auth-stack/testing/mcp-oauth';
import { type RunningKeycloak, startKeycloak } from '../src/index.ts';

/**
 * The realm's rules for anonymous Dynamic Client Registration (keycloak/README.md, "Anonymous
 * DCR"), against a real Keycloak 26.7.3 started from the repository's realm: what real MCP
 * clients send is accepted (mcp-remote's registration, its `client_uri` on GitHub dropped), and
 * each dangerous registration is refused. Each refused body differs from an accepted one
 * (`client()`) in one member only, so that member is what was refused; Keycloak answers a
 * client-policy refusal with 403 and the executor's error code only (from the realm's own
 * `mcp-client-uri-hosts`: `invalid_redirect_uri` for a URL, `unsupported_registration_endpoint`
 * at the `default` provider; `invalid_client_metadata` for client types and grants;
 * `invalid_request` from the `refuse` profile), naming the refused field in its log.
 */
let keycloak: RunningKeycloak;
const SERVER_HOST = 'mcp.example.com';
const SERVER_CALLBACK = `https://${SERVER_HOST}/auth/callback`;

before(
  async () => {
    keycloak = await startKeycloak({
      httpPort: await freePort(),
      managementPort: await freePort(),
      // A deployed server's callback (workaround mode registers clients with it).
      realmEnv: { MCP_SERVER_HOST: SERVER_HOST },
    });
  },
  { timeout: 600_000 },
);

after(async () => {
  await keycloak?.stop();
});

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

async function register(
  body: Record<string, unknown>,
  token?: string,
  url?: string,
  createAt = `${keycloak.realmUrl}/clients-registrations/openid-connect`,
): Promise<Answer> {
  const response = await fetch(url ?? createAt, {
    method: url ? 'PUT' : 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as Record<string, unknown> };
}

/** A public loopback client as MCP clients register it, with `changes` applied. */
function client(changes: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    client_name: 'policy test client',
    redirect_uris: ['http://127.0.0.1:33418/callback'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    ...changes,
  };
}

/**
 * Runs `attempt`, expecting a refusal with `description` (Keycloak answers a client-policy refusal
 * with 403 `insufficient_scope` and the policy's error code as the description).
 */
async function assertRefused(
  what: string,
  attempt: () => Promise<Answer>,
  description: string | RegExp,
): Promise<void> {
  const answer = await attempt();
  assert.ok([400, 403].includes(answer.status), `${what}: HTTP ${answer.status} ${JSON.stringify(answer.body)}`);
  assert.equal(answer.body.client_id, undefined, `${what}: no client`);
  if (typeof description === 'string') {
    assert.equal(answer.body.error_description, description, `${what}: ${JSON.stringify(answer.body)}`);
  } else {
    assert.match(String(answer.body.error_description), description, `${what}: ${JSON.stringify(answer.body)}`);
  }
}

/** What the realm's own executor (keycloak/provider) answers for a URL on a host it does not allow. */
const REDIRECT_REFUSED = 'invalid_redirect_uri';
const METADATA_REFUSED = 'invalid_client_metadata';

describe('accepted: what real clients register', () => {
  test("mcp-remote's registration, client_uri on GitHub included", async () => {
    // What mcp-remote 0.15.1 sends (NodeOAuthClientProvider.clientMetadata).
    const answer = await register({
      redirect_uris: ['http://localhost:33418/oauth/callback'],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      client_name: 'MCP CLI Client',
      client_uri: 'https://github.com/modelcontextprotocol/mcp-cli',
      software_id: '2e6dc280-f3c3-4e01-99a7-8181dbd1d23d',
      software_version: '0.15.1',
    });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    // Dropped (the realm's executor): Keycloak's clients/{id}/redirect would send browsers there.
    assert.equal(answer.body.client_uri, undefined);
    assert.equal(answer.body.token_endpoint_auth_method, 'none');
  });

  test('logo, terms and policy on the client’s own https site; VS Code’s web redirect; a home page there is dropped', async () => {
    const answer = await register(
      client({
        redirect_uris: ['http://localhost:33418/callback', 'https://vscode.dev/redirect'],
        client_uri: 'https://client.example.com/',
        logo_uri: 'https://cdn.client.example.com/logo.png',
        tos_uri: 'https://client.example.com/terms',
        policy_uri: 'https://client.example.com/privacy',
      }),
    );
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.equal(answer.body.client_uri, undefined);
  });

  test('a home page (client_uri) outside loopback and the allowed hosts is dropped: the realm redirects nobody there', async () => {
    // Keycloak answers realms/{realm}/clients/{id}/redirect, without a session, with a 303 to the
    // client's home page: an open redirect on the sign-in domain for whoever registers one.
    const redirectOf = (clientId: string) =>
      fetch(`${keycloak.realmUrl}/clients/${encodeURIComponent(clientId)}/redirect`, { redirect: 'manual' });
    const outside = await register(client({ client_uri: 'https://evil.example.com/phish' }));
    assert.equal(outside.status, 201, JSON.stringify(outside.body));
    assert.equal(outside.body.client_uri, undefined);
    const sent = await redirectOf(outside.body.client_id as string);
    assert.equal(sent.headers.get('location'), null, `${sent.status}`);
    const script = await register(client({ client_uri: 'javascript:alert(1)' }));
    assert.deepEqual([script.status, script.body.client_uri], [201, undefined], JSON.stringify(script.body));
    // On loopback it is kept, and followed.
    const own = await register(client({ client_uri: 'http://127.0.0.1:33418/' }));
    assert.equal(own.body.client_uri, 'http://127.0.0.1:33418/', JSON.stringify(own.body));
    const followed = await redirectOf(own.body.client_id as string);
    assert.deepEqual([followed.status, followed.headers.get('location')], [303, 'http://127.0.0.1:33418/']);
  });

  test("the MCP server's own callback (host MCP_SERVER_HOST), what the workaround way registers", async () => {
    const answer = await register(client({ redirect_uris: [SERVER_CALLBACK] }));
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
  });

  test('http on each loopback name, with and without a port (RFC 8252 7.3)', async () => {
    const answer = await register(
      client({
        redirect_uris: [
          'http://127.0.0.1/callback',
          'http://127.0.0.1:53682/callback',
          'http://localhost:6274/oauth/callback/debug',
          'http://[::1]:8080/',
        ],
      }),
    );
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
  });

  test('IPv6 loopback and a registration without grant_types (authorization code by default)', async () => {
    const answer = await register(client({ redirect_uris: ['http://[::1]:33418/callback'], grant_types: undefined }));
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.deepEqual(answer.body.grant_types, ['authorization_code', 'refresh_token']);
  });
});

describe('refused: redirect URIs a code must never go to', () => {
  for (const [what, uri] of [
    ['plain http to another host', 'http://evil.example.com/callback'],
    ['https to a host that is not on the list', 'https://evil.example.com/callback'],
    ['a host that starts like localhost', 'http://localhost.evil.example.com/callback'],
    ['user info before an outside host', 'http://localhost@evil.example.com/callback'],
    ['a custom scheme any app can claim', 'myapp://callback'],
    ['a wildcard', 'http://127.0.0.1/*'],
    ['a fragment', 'http://127.0.0.1:33418/callback#x'],
    ["the MCP server's callback on another host", 'https://mcp.example.com.evil.example.com/auth/callback'],
    // Look-alikes: the realm's executor compares hosts as text; Keycloak's enforcer behind it reads
    // its allowed hosts as regular expressions, where a dot left unescaped, or a missing anchor,
    // would admit a domain anyone can buy.
    ['a look-alike of code.visualstudio.com (a dash for a dot)', 'https://code-visualstudio.com/callback'],
    ['a look-alike of insiders.vscode.dev (a dash for a dot)', 'https://insiders-vscode.dev/redirect'],
    ['a domain that ends like vscode.dev', 'https://evilvscode.dev/redirect'],
    ["a look-alike of the MCP server's host (a dash for a dot)", 'https://mcp-example.com/auth/callback'],
    ["a domain that ends like the MCP server's host", 'https://evilmcp.example.com/auth/callback'],
  ] as const) {
    test(what, async () => {
      await assertRefused(what, () => register(client({ redirect_uris: [uri] })), REDIRECT_REFUSED);
    });
  }
  test('a post-logout redirect to an outside host', async () => {
    await assertRefused(
      'post_logout_redirect_uris',
      () => register(client({ post_logout_redirect_uris: ['https://evil.example.com/bye'] })),
      REDIRECT_REFUSED,
    );
  });
});

describe('refused: hosts compared as text, whatever the flows (mcp-client-uri-hosts)', () => {
  // Keycloak's own enforcer asks DNS and checks only clients with a redirect flow (decisions 72
  // and 74); the realm's executor reads each URL's host as written.
  for (const [what, uri] of [
    ['loopback written short (127.1, which resolves to 127.0.0.1)', 'http://127.1:33418/callback'],
    ['a backslash, which a browser reads as a slash', 'http://localhost\\@evil.example.com/callback'],
    ['localhost with a trailing dot', 'http://localhost.:33418/callback'],
    // Keycloak's enforcer has one http switch, for loopback and the allowed hosts alike.
    ['plain http to an allowed https host', 'http://vscode.dev/redirect'],
    ['a relative redirect URI', '/callback'],
  ] as const) {
    test(what, async () => {
      await assertRefused(what, () => register(client({ redirect_uris: [uri] })), REDIRECT_REFUSED);
    });
  }
  test('a client without a redirect flow and an outside post-logout redirect (the open redirect of decision 72)', async () => {
    await assertRefused(
      'refresh_token only',
      () =>
        register({
          client_name: 'no flow',
          grant_types: ['refresh_token'],
          token_endpoint_auth_method: 'none',
          post_logout_redirect_uris: ['https://evil.example.com/bye'],
        }),
      REDIRECT_REFUSED,
    );
  });
  test('a front-channel logout URL on an outside host', async () => {
    await assertRefused(
      'frontchannel_logout_uri',
      () => register(client({ frontchannel_logout_uri: 'https://evil.example.com/logout' })),
      REDIRECT_REFUSED,
    );
  });
  test('accepted: post-logout and front-channel logout URLs on loopback', async () => {
    const answer = await register(
      client({
        post_logout_redirect_uris: ['http://127.0.0.1:33418/bye'],
        frontchannel_logout_uri: 'http://localhost:33418/logout',
      }),
    );
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
  });
});

describe('refused: URLs Keycloak itself would request, whatever the host (mcp-client-uri-hosts)', () => {
  // Keycloak fetches a sector URI at registration, a JWKS to check a request object or encrypt a
  // token, request objects at sign-in, and posts logout tokens and CIBA notifications: a stranger
  // naming them aims Keycloak's own requests (decision 75). Loopback and vscode.dev are hosts its
  // egress allow-list lets through, so only the realm stands in the way there.
  for (const [member, value] of [
    ['sector_identifier_uri', 'http://127.0.0.1:33418/sector'],
    ['jwks_uri', 'http://localhost:33418/jwks'],
    ['jwks_uri', 'https://vscode.dev/jwks'],
    ['request_uris', ['http://127.0.0.1:33418/request']],
    ['backchannel_logout_uri', 'http://127.0.0.1:33418/logout'],
    ['backchannel_client_notification_endpoint', 'https://vscode.dev/ciba'],
  ] as const) {
    test(`${member} ${JSON.stringify(value)}`, async () => {
      const answer = await register(client({ [member]: value }));
      // 403 is the executor's (Keycloak's own checks of these answer 400 or accept them).
      assert.equal(answer.status, 403, JSON.stringify(answer.body));
      assert.equal(answer.body.error_description, METADATA_REFUSED);
      assert.equal(answer.body.client_id, undefined);
    });
  }
  test('accepted: the same client without them, its keys given by value (jwks)', async () => {
    const answer = await register(client({ jwks: { keys: [] } }));
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.equal(answer.body.jwks_uri, undefined);
  });
});
describe("Keycloak's default provider is closed to anonymous callers", () => {
  // It takes a whole client representation: a client id of the caller's choosing (a metadata
  // document's URL, or the id of a client he just deleted), a root URL under which Keycloak adds
  // the redirect URI `<root>/*`, default roles every user then holds, any attribute. No MCP
  // client registers there; RFC 7591's endpoint maps only what the specification names.
  const registerDefault = (body: Record<string, unknown>) =>
    register(body, undefined, undefined, `${keycloak.realmUrl}/clients-registrations/default`);
  const name = `default provider client ${Math.random().toString(36).slice(2, 10)}`;
  const plain = (changes: Record<string, unknown> = {}) => ({
    name,
    publicClient: true,
    standardFlowEnabled: true,
    implicitFlowEnabled: false,
    redirectUris: ['http://127.0.0.1:33418/callback'],
    ...changes,
  });
  for (const [what, changes] of [
    ['a plain loopback client', {}],
    ['a client id of its choosing', { clientId: 'https://vscode.dev/oauth/client-metadata.json' }],
    ['default roles for every user of the realm', { defaultRoles: ['chosen-default-role'] }],
    [
      'a root URL and no redirect URI (Keycloak would add <root>/*)',
      { rootUrl: 'https://vscode.dev', redirectUris: [], standardFlowEnabled: false, directGrantsOnly: false },
    ],
    ['a ten-year access token', { attributes: { 'access.token.lifespan': '315360000' } }],
  ] as const) {
    test(`refused: ${what}`, async () => {
      const answer = await registerDefault(plain(changes));
      assert.equal(answer.status, 403, JSON.stringify(answer.body));
      assert.deepEqual(answer.body, {
        error: 'insufficient_scope',
        error_description: 'unsupported_registration_endpoint',
      });
    });
  }
  test('nothing of them is in the realm: no such client, no such default role', async () => {
    const admin = async (path: string) =>
      (await (
        await fetch(`${keycloak.url}/admin/realms/mcp${path}`, {
          headers: { authorization: `Bearer ${await keycloakAdminToken(keycloak.url)}` },
        })
      ).json()) as { name?: string }[];
    assert.deepEqual(
      (await admin('/clients?max=2000')).filter((registered) => registered.name === name),
      [],
    );
    const composites = await admin('/roles/default-roles-mcp/composites');
    assert.ok(composites.length > 0, JSON.stringify(composites));
    assert.deepEqual(
      composites.filter((role) => role.name === 'chosen-default-role'),
      [],
    );
  });
});

describe('refused: display URIs with a script or data scheme (Keycloak’s own validation)', () => {
  // Logo, terms and policy are shown, never sent codes: any https (or http) site is accepted,
  // what a browser would run is not. (A client_uri outside loopback and the allowed hosts, a
  // javascript: one included, is dropped before: above.)
  for (const [member, uri, description] of [
    ['logo_uri', 'javascript:alert(1)', /illegal scheme/],
    ['tos_uri', 'data:text/html,hello', 'Terms of service URL uses an illegal scheme'],
    ['policy_uri', 'javascript:alert(1)', /illegal scheme/],
  ] as const) {
    test(`${member} ${uri}`, async () => {
      await assertRefused(member, () => register(client({ [member]: uri })), description);
    });
  }
});

describe('refused: confidential clients and grants other than authorization code and refresh', () => {
  for (const method of ['client_secret_basic', 'client_secret_post', 'private_key_jwt']) {
    test(`token_endpoint_auth_method ${method}`, async () => {
      const changes: Record<string, unknown> = { token_endpoint_auth_method: method };
      if (method === 'private_key_jwt') changes.jwks_uri = 'https://client.example.com/jwks';
      await assertRefused(method, () => register(client(changes)), METADATA_REFUSED);
    });
  }
  test('no token_endpoint_auth_method (RFC 7591 default client_secret_basic)', async () => {
    await assertRefused(
      'default auth method',
      () => register(client({ token_endpoint_auth_method: undefined })),
      METADATA_REFUSED,
    );
  });
  test('password (resource owner password credentials)', async () => {
    await assertRefused(
      'password',
      () => register(client({ grant_types: ['authorization_code', 'password'] })),
      METADATA_REFUSED,
    );
  });
  test('implicit (response_type token)', async () => {
    await assertRefused(
      'implicit',
      () => register(client({ grant_types: ['implicit'], response_types: ['token'] })),
      METADATA_REFUSED,
    );
  });
  test('CIBA (its authentication endpoint would tell a login hint naming a user from one naming nobody)', async () => {
    await assertRefused(
      'ciba',
      () =>
        register(
          client({
            grant_types: ['authorization_code', 'urn:openid:params:grant-type:ciba'],
            backchannel_token_delivery_mode: 'poll',
          }),
        ),
      METADATA_REFUSED,
    );
  });
  test('client_credentials: the client is public, so it gets no token for itself', async () => {
    // No client-policy executor of 26.7.3 refuses the grant at registration; a public client
    // cannot authenticate, and Keycloak gives a service-account token only to one that does.
    const answer = await register(client({ grant_types: ['authorization_code', 'client_credentials'] }));
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.equal(answer.body.token_endpoint_auth_method, 'none');
    const token = await fetch(`${keycloak.realmUrl}/protocol/openid-connect/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: answer.body.client_id as string }),
    });
    const body = (await token.json()) as Record<string, unknown>;
    assert.equal(token.status, 401, JSON.stringify(body));
    assert.equal(body.access_token, undefined);
    assert.equal(body.error, 'unauthorized_client', JSON.stringify(body));
  });
});

describe('a client cannot change itself (RFC 7592)', () => {
  // The MCP server reads a client's redirect URIs when its token arrives (decision 74): a client
  // that could change them would show clean ones by then. Its registration access token reads
  // its registration and changes nothing, harmless or not.
  test('its registration access token reads it, and is refused an outside redirect URI, a confidential client and a new name alike', async () => {
    const registered = await register(client());
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    const token = registered.body.registration_access_token as string;
    const url = registered.body.registration_client_uri as string;
    const clientId = registered.body.client_id as string;
    const read = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(read.status, 200);
    // Each refused by the first policy that sees it: the redirect rule, the client authenticator
    // rule, or, for a change no other rule minds, registered-clients-stay-as-registered.
    for (const [what, changes, refusal] of [
      ['an outside redirect', { redirect_uris: ['https://evil.example.com/update'] }, REDIRECT_REFUSED],
      ['confidential', { token_endpoint_auth_method: 'client_secret_basic' }, METADATA_REFUSED],
      ['a new name', { client_name: 'renamed' }, 'invalid_request'],
    ] as const) {
      await assertRefused(what, () => register(client({ client_id: clientId, ...changes }), token, url), refusal);
    }
  });
});
