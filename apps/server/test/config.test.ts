import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { TELEMETRY_VARIABLES } from '@mcp-auth-stack/telemetry';
import { CONFIG_VARIABLES, ConfigError, loadConfig } from '../src/config.ts';

/** Runs loadConfig on an environment that records which variables it reads. */
function variablesRead(env: Record<string, string> = {}): Set<string> {
  const read = new Set<string>();
  const recording = new Proxy(env, {
    get(target, name) {
      if (typeof name === 'string') read.add(name);
      return target[name as string];
    },
  });
  loadConfig(recording);
  return read;
}

/** entra_proxy on a developer's machine (generated proxy keys), every variable it needs. */
const ENTRA = {
  MCP_AUTH_PROVIDER: 'entra_proxy',
  ENTRA_PROXY_AZURE_CLIENT_ID: '11111111-2222-3333-4444-555555555555',
  ENTRA_PROXY_AZURE_CLIENT_SECRET: 'demo-secret',
  AZURE_TENANT_ID: '72f988bf-86f1-41af-91ab-2d7cd011db47',
};

const KEYCLOAK = { MCP_AUTH_PROVIDER: 'keycloak', KEYCLOAK_REALM_URL: 'http://localhost:8080/realms/mcp' };

/** oauth_proxy on a developer's machine: the local realm's demo client, generated keys. */
const LOCAL_PROXY = { MCP_AUTH_PROVIDER: 'oauth_proxy', KEYCLOAK_REALM_URL: 'http://localhost:8080/realms/mcp' };

/** oauth_proxy on a public URL, every variable it needs (the keys are throwaway test values). */
const PUBLIC_PROXY = {
  ...LOCAL_PROXY,
  MCP_SERVER_BASE_URL: 'https://mcp.example.com',
  OAUTH_PROXY_UPSTREAM_CLIENT_SECRET: 'test-secret',
  OAUTH_PROXY_SIGNING_KEY: JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x: 'test', d: 'test' }),
  OAUTH_PROXY_ENCRYPTION_KEY: 'ab'.repeat(32),
};

describe('configuration', () => {
  test('entra_proxy: the Entra preset from its three variables', () => {
    const config = loadConfig(ENTRA);
    assert.equal(config.authMode, 'entra_proxy');
    assert.deepEqual(config.oauthProxy?.upstream, {
      kind: 'entra',
      clientId: ENTRA.ENTRA_PROXY_AZURE_CLIENT_ID,
      clientSecret: ENTRA.ENTRA_PROXY_AZURE_CLIENT_SECRET,
      tenantId: ENTRA.AZURE_TENANT_ID,
      allowedTenantIds: undefined,
    });
  });

  test('entra_proxy with a multi-tenant authority: the tenants whose users may sign in', () => {
    const allowed = ['72f988bf-86f1-41af-91ab-2d7cd011db47', '9188040d-6c67-4c5b-b112-36a304b66dad'];
    // `common`: an organization's users and personal Microsoft accounts (their own tenant).
    const config = loadConfig({
      ...ENTRA,
      AZURE_TENANT_ID: 'common',
      ENTRA_PROXY_ALLOWED_TENANT_IDS: ` ${allowed[0]}, ${allowed[1]} `,
    });
    assert.deepEqual(config.oauthProxy?.upstream, {
      kind: 'entra',
      clientId: ENTRA.ENTRA_PROXY_AZURE_CLIENT_ID,
      clientSecret: ENTRA.ENTRA_PROXY_AZURE_CLIENT_SECRET,
      tenantId: 'common',
      allowedTenantIds: allowed,
    });
    // One tenant under each narrower authority: an organization's, and the personal accounts'.
    for (const [authority, tenant] of [
      ['organizations', allowed[0]],
      ['consumers', allowed[1]],
    ] as const) {
      const upstream = loadConfig({ ...ENTRA, AZURE_TENANT_ID: authority, ENTRA_PROXY_ALLOWED_TENANT_IDS: tenant })
        .oauthProxy?.upstream;
      assert.deepEqual(upstream?.kind === 'entra' && [upstream.tenantId, upstream.allowedTenantIds], [
        authority,
        [tenant],
      ]);
    }
  });

  test('DATA_DIR is an absolute path, resolved against the working directory when relative', () => {
    assert.equal(loadConfig({}).dataDir, join(process.cwd(), '.data'));
    assert.equal(loadConfig({ DATA_DIR: 'var/db' }).dataDir, join(process.cwd(), 'var/db'));
    assert.equal(loadConfig({ DATA_DIR: '/srv/data' }).dataDir, '/srv/data');
  });

  test('CONFIG_VARIABLES is exactly what loadConfig reads, and the README documents each', async () => {
    assert.deepEqual([...variablesRead()].sort(), [...CONFIG_VARIABLES].sort());
    const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
    for (const variable of CONFIG_VARIABLES) assert.match(readme, new RegExp(`\\| \`${variable}\` +\\|`), variable);
    // The telemetry package's too, in the same table: the server reads them at start (a bad one stops it).
    const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('Logs are JSON lines'));
    for (const variable of TELEMETRY_VARIABLES) assert.ok(table.includes(`\`${variable}\``), variable);
  });

  test("defaults: loopback, key mode, embedded database, the base URL's host allowed", () => {
    const config = loadConfig({});
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.authMode, 'key');
    assert.equal(config.databaseUrl, undefined);
    assert.equal(config.baseUrl, 'http://localhost:8000');
    assert.deepEqual(config.allowedOrigins, ['http://localhost:8000', 'http://127.0.0.1:8000', 'http://[::1]:8000']);
    assert.ok(config.allowedHosts.includes('localhost:8000') && config.allowedHosts.includes('127.0.0.1'));
  });

  test('the default origins are the base URL, under every loopback name only when it is a loopback one', () => {
    const origins = (env: Record<string, string>) => loadConfig(env).allowedOrigins;
    assert.deepEqual(origins({ MCP_SERVER_BASE_URL: 'http://127.0.0.1' }), [
      'http://127.0.0.1',
      'http://localhost',
      'http://[::1]',
    ]);
    assert.deepEqual(origins({ MCP_SERVER_BASE_URL: 'https://mcp.example.com' }), ['https://mcp.example.com']);
    assert.deepEqual(origins({ ALLOWED_ORIGINS: 'http://localhost:6274' }), ['http://localhost:6274']);
  });

  test('a DATABASE_URL pg cannot read is refused without quoting it (it may hold a password)', () => {
    assert.throws(
      () => loadConfig({ DATABASE_URL: 'postgres://app:S3cret-Pw@db.example.com:70000/app' }),
      (error: unknown) => error instanceof ConfigError && !error.message.includes('S3cret-Pw'),
    );
    // What pg reads but a URL parser alone would not: a socket folder, an empty host.
    assert.equal(
      loadConfig({ DATABASE_URL: 'postgres://u:p@/db?host=/var/run/postgresql' }).databaseUrl,
      'postgres://u:p@/db?host=/var/run/postgresql',
    );
  });

  const invalid: [Record<string, string>, RegExp][] = [
    [{ PORT: 'eighty' }, /PORT must be a whole number/],
    [{ PORT: '70000' }, /PORT must be between 0 and 65535/],
    [{ MCP_SERVER_BASE_URL: '/relative' }, /MCP_SERVER_BASE_URL must be an absolute URL/],
    [{ MCP_SERVER_BASE_URL: 'localhost:8000' }, /MCP_SERVER_BASE_URL must be http or https/],
    [{ MCP_SERVER_BASE_URL: 'ftp://x' }, /MCP_SERVER_BASE_URL must be http or https/],
    [{ MCP_SERVER_BASE_URL: 'http://x/?a=1' }, /MCP_SERVER_BASE_URL must not have a query/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL must be a postgres/],
    // Read as pg reads it: pg's own parser would say only "Invalid URL" at the first connection.
    [
      { DATABASE_URL: 'postgres://u:p@127.0.0.1:99999/db' },
      /DATABASE_URL is not a URL pg can read: check its host, its port/,
    ],
    [{ DATABASE_URL: 'postgres://u:p@[bad/db' }, /DATABASE_URL is not a URL pg can read/],
    [{ DATABASE_URL: 'postgres://u:p@db.example.com:0/db' }, /DATABASE_URL names port 0/],
    [
      { DATABASE_URL: 'postgres://u:p@db.example.com/db?sslmode=require&sslrootcert=/nonexistent/ca.pem' },
      /DATABASE_URL names a file pg cannot read \(ENOENT\): \/nonexistent\/ca\.pem/,
    ],
    // Compared as text with what browsers and clients send: these would match no request.
    [
      { ALLOWED_ORIGINS: 'http://localhost:6274/' },
      /ALLOWED_ORIGINS lists "http:\/\/localhost:6274\/", .* write http:\/\/localhost:6274$/,
    ],
    [{ ALLOWED_ORIGINS: '*' }, /ALLOWED_ORIGINS lists "\*": name each origin/],
    [{ ALLOWED_ORIGINS: ' , ,' }, /ALLOWED_ORIGINS lists no origin/],
    [
      { ALLOWED_HOSTS: 'http://localhost:18302' },
      /ALLOWED_HOSTS lists "http:\/\/localhost:18302", a URL: write its host, localhost:18302$/,
    ],
    [{ ALLOWED_HOSTS: 'mcp.example.com/mcp' }, /ALLOWED_HOSTS lists "mcp.example.com\/mcp", which is not a host name/],
    [{ ALLOWED_HOSTS: '*' }, /ALLOWED_HOSTS lists "\*": name each host in full/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL must be one of debug, info, warn, error/],
    [{ ALLOW_UNAUTHENTICATED_REMOTE: 'yes' }, /ALLOW_UNAUTHENTICATED_REMOTE must be true or false/],
    [{ MCP_AUTH_PROVIDER: 'none', HOST: '0.0.0.0' }, /HOST is 0\.0\.0\.0/],
    [{ ...ENTRA, ENTRA_PROXY_AZURE_CLIENT_ID: '' }, /ENTRA_PROXY_AZURE_CLIENT_ID is required when/],
    [{ ...ENTRA, ENTRA_PROXY_AZURE_CLIENT_SECRET: '' }, /ENTRA_PROXY_AZURE_CLIENT_SECRET is required when/],
    [{ ...ENTRA, AZURE_TENANT_ID: '' }, /AZURE_TENANT_ID is required when/],
    // Entra's tokens name the tenant GUID in iss: a domain would fail every login later.
    [{ ...ENTRA, AZURE_TENANT_ID: 'contoso.onmicrosoft.com' }, /AZURE_TENANT_ID must be the directory \(tenant\) id/],
    // Any tenant's users, and any tenant's administrator assigning the app's roles to themselves.
    [
      { ...ENTRA, AZURE_TENANT_ID: 'common' },
      /ENTRA_PROXY_ALLOWED_TENANT_IDS is required when AZURE_TENANT_ID is common/,
    ],
    [
      { ...ENTRA, AZURE_TENANT_ID: 'organizations', ENTRA_PROXY_ALLOWED_TENANT_IDS: ' , ' },
      /ENTRA_PROXY_ALLOWED_TENANT_IDS is required when/,
    ],
    [
      { ...ENTRA, AZURE_TENANT_ID: 'consumers', ENTRA_PROXY_ALLOWED_TENANT_IDS: 'contoso.com' },
      /ENTRA_PROXY_ALLOWED_TENANT_IDS must list tenant GUIDs, not "contoso.com"/,
    ],
    // Lists under which nobody could ever sign in.
    [
      {
        ...ENTRA,
        AZURE_TENANT_ID: 'consumers',
        ENTRA_PROXY_ALLOWED_TENANT_IDS: '72f988bf-86f1-41af-91ab-2d7cd011db47',
      },
      /ENTRA_PROXY_ALLOWED_TENANT_IDS lists an organization's tenant, but AZURE_TENANT_ID=consumers/,
    ],
    [
      {
        ...ENTRA,
        AZURE_TENANT_ID: 'organizations',
        ENTRA_PROXY_ALLOWED_TENANT_IDS: '9188040d-6c67-4c5b-b112-36a304b66dad',
      },
      /ENTRA_PROXY_ALLOWED_TENANT_IDS lists the personal accounts' tenant .* AZURE_TENANT_ID=organizations never signs in/,
    ],
    [
      { ...ENTRA, AZURE_TENANT_ID: 'common', ENTRA_PROXY_ALLOWED_TENANT_IDS: 'common' },
      /ENTRA_PROXY_ALLOWED_TENANT_IDS must list tenant GUIDs, not "common"/,
    ],
    [
      { ...ENTRA, ENTRA_PROXY_ALLOWED_TENANT_IDS: ENTRA.AZURE_TENANT_ID },
      /ENTRA_PROXY_ALLOWED_TENANT_IDS is for a multi-tenant AZURE_TENANT_ID/,
    ],
    [{ MCP_AUTH_PROVIDER: 'keycloak' }, /KEYCLOAK_REALM_URL is required when MCP_AUTH_PROVIDER=keycloak/],
    // Without registration only the listed clients' tokens are taken: an empty list would take any.
    [{ ...KEYCLOAK, KEYCLOAK_REGISTRATION: 'off' }, /ALLOWED_CLIENT_IDS must list the pre-registered client ids/],
    [
      {
        ...ENTRA,
        MCP_SERVER_BASE_URL: 'https://a.example.com',
        ENTRA_PROXY_MCP_SERVER_BASE_URL: 'https://b.example.com',
      },
      /ENTRA_PROXY_MCP_SERVER_BASE_URL is https:\/\/b\.example\.com but MCP_SERVER_BASE_URL is https:\/\/a\.example\.com/,
    ],
    [
      { MCP_AUTH_PROVIDER: 'oauth_proxy' },
      /OAUTH_PROXY_UPSTREAM_DISCOVERY_URL is required when MCP_AUTH_PROVIDER=oauth_proxy/,
    ],
    // The realm's demo secret is a default on a developer's machine only, and for its own client only.
    [
      { ...PUBLIC_PROXY, OAUTH_PROXY_UPSTREAM_CLIENT_SECRET: '' },
      /OAUTH_PROXY_UPSTREAM_CLIENT_SECRET is required when/,
    ],
    [
      { ...LOCAL_PROXY, OAUTH_PROXY_UPSTREAM_CLIENT_ID: 'my-app' },
      /OAUTH_PROXY_UPSTREAM_CLIENT_SECRET is required when/,
    ],
    [
      { ...LOCAL_PROXY, OAUTH_PROXY_SIGNING_KEY: '{"kty": "EC", "d": ' },
      /OAUTH_PROXY_SIGNING_KEY must be a private JWK as JSON/,
    ],
    [
      { ...LOCAL_PROXY, OAUTH_PROXY_SIGNING_KEY: '{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}' },
      /OAUTH_PROXY_SIGNING_KEY must be a private JWK \(with "kty" and "d"\)/,
    ],
    [{ ...LOCAL_PROXY, OAUTH_PROXY_ENCRYPTION_KEY: 'c2hvcnQ' }, /OAUTH_PROXY_ENCRYPTION_KEY must be 32 bytes/],
    // The user of none mode: as an API key's (the expenses table takes 1 to 255 characters, and it is logged).
    [
      { MCP_AUTH_PROVIDER: 'none', LOCAL_USER_ID: 'u'.repeat(256) },
      /LOCAL_USER_ID must be at most 255 characters, got 256/,
    ],
    [{ MCP_AUTH_PROVIDER: 'none', LOCAL_USER_ID: 'admin\u202Eresu' }, /LOCAL_USER_ID must not contain/],
    // A free port leaves the OAuth modes no URL to name as the resource and audience.
    [{ ...KEYCLOAK, PORT: '0' }, /PORT is 0 .*MCP_AUTH_PROVIDER=keycloak .*MCP_SERVER_BASE_URL/],
    [{ ...LOCAL_PROXY, PORT: '0' }, /PORT is 0 .*MCP_AUTH_PROVIDER=oauth_proxy/],
    [{ ...ENTRA, PORT: '0' }, /PORT is 0 .*MCP_AUTH_PROVIDER=entra_proxy/],
    [
      { ...LOCAL_PROXY, OAUTH_PROXY_SIGNING_KEY: '{"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}' },
      /OAUTH_PROXY_SIGNING_KEY must be an EC P-256 \(ES256\) or OKP Ed25519 \(EdDSA\) key/,
    ],
    // Off loopback, generated keys would differ per replica and live in a container's disk.
    [
      { ...PUBLIC_PROXY, OAUTH_PROXY_SIGNING_KEY: '' },
      /OAUTH_PROXY_SIGNING_KEY is required when MCP_AUTH_PROVIDER=oauth_proxy and the base URL is not loopback/,
    ],
    [
      { ...PUBLIC_PROXY, OAUTH_PROXY_ENCRYPTION_KEY: '' },
      /OAUTH_PROXY_ENCRYPTION_KEY is required when MCP_AUTH_PROVIDER=oauth_proxy and the base URL is not loopback/,
    ],
  ];
  for (const [env, message] of invalid) {
    test(`refuses ${JSON.stringify(env)} naming the variable`, () => {
      assert.throws(
        () => loadConfig(env),
        (error: unknown) => error instanceof ConfigError && message.test(error.message),
      );
    });
  }

  test('the proxy variables above are complete: each refused environment differs by one variable', () => {
    assert.equal(loadConfig(LOCAL_PROXY).authMode, 'oauth_proxy');
    assert.equal(loadConfig(PUBLIC_PROXY).oauthProxy?.loopbackBaseUrl, false);
    assert.deepEqual(
      loadConfig({ ...KEYCLOAK, KEYCLOAK_REGISTRATION: 'off', ALLOWED_CLIENT_IDS: 'vscode-mcp-client' }).authMode,
      'keycloak',
    );
  });

  test("oauth_proxy's upstream scopes: the realm's three; another provider's left to the package, which reads its discovery", () => {
    const scopes = (env: Record<string, string>) => {
      const upstream = loadConfig(env).oauthProxy?.upstream;
      return upstream?.kind === 'oidc' ? upstream.scopes : 'not oidc';
    };
    const { KEYCLOAK_REALM_URL: _realm, ...generic } = PUBLIC_PROXY;
    // undefined: oidcUpstream's default, with offline_access where the provider lists it.
    assert.equal(scopes({ ...generic, OAUTH_PROXY_UPSTREAM_DISCOVERY_URL: 'https://id.example.com' }), undefined);
    // Keycloak gives refresh tokens without offline_access; with it they would be offline tokens.
    assert.deepEqual(scopes(PUBLIC_PROXY), ['openid', 'profile', 'expenses:admin']);
    assert.deepEqual(
      scopes({
        ...generic,
        OAUTH_PROXY_UPSTREAM_DISCOVERY_URL: 'https://id.example.com',
        OAUTH_PROXY_UPSTREAM_SCOPES: 'openid,email',
      }),
      ['openid', 'email'],
    );
  });

  test('PORT=0 takes a base URL in the OAuth modes, and needs none in key and none modes', () => {
    assert.equal(
      loadConfig({ ...KEYCLOAK, PORT: '0', MCP_SERVER_BASE_URL: 'http://localhost:8117' }).baseUrl,
      'http://localhost:8117',
    );
    assert.equal(
      loadConfig({ ...ENTRA, PORT: '0', ENTRA_PROXY_MCP_SERVER_BASE_URL: 'http://localhost:8117' }).baseUrl,
      'http://localhost:8117',
    );
    assert.equal(loadConfig({ PORT: '0' }).port, 0);
    assert.equal(loadConfig({ MCP_AUTH_PROVIDER: 'none', PORT: '0' }).port, 0);
  });

  test('none mode on a public address is allowed only when asked for', () => {
    const config = loadConfig({ MCP_AUTH_PROVIDER: 'none', HOST: '0.0.0.0', ALLOW_UNAUTHENTICATED_REMOTE: 'true' });
    assert.equal(config.allowUnauthenticatedRemote, true);
  });

  test('without MCP_SERVER_BASE_URL, a HOST of one address is the URL: localhost would not reach it', () => {
    assert.equal(loadConfig({ HOST: '192.0.2.2', PORT: '8117' }).baseUrl, 'http://192.0.2.2:8117');
    assert.equal(loadConfig({ HOST: '127.0.0.2' }).baseUrl, 'http://127.0.0.2:8000');
    assert.equal(loadConfig({ HOST: 'fd00::5' }).baseUrl, 'http://[fd00::5]:8000');
    // An IPv6 zone cannot be written in a URL: localhost, as before, not an error about a URL nobody set.
    assert.equal(loadConfig({ HOST: 'fe80::1%eth0' }).baseUrl, 'http://localhost:8000');
    for (const host of ['0.0.0.0', '::', '127.0.0.1', '::1', 'localhost', '0', '0:0:0:0:0:0:0:0', '::ffff:127.0.0.1']) {
      assert.equal(loadConfig({ HOST: host }).baseUrl, 'http://localhost:8000', host);
    }
    assert.equal(
      loadConfig({ HOST: '192.0.2.2', MCP_SERVER_BASE_URL: 'https://mcp.example.com' }).baseUrl,
      'https://mcp.example.com',
    );
  });

  test('LOCAL_USER_ID is taken as written, its length counted in characters', () => {
    const emoji = '\u{1F600}'.repeat(200); // 400 UTF-16 units, 200 characters
    assert.equal(loadConfig({ MCP_AUTH_PROVIDER: 'none', LOCAL_USER_ID: emoji }).localUserId, emoji);
    assert.equal(loadConfig({ MCP_AUTH_PROVIDER: 'none', LOCAL_USER_ID: 'jose\u0301' }).localUserId, 'jose\u0301');
    assert.throws(
      () => loadConfig({ MCP_AUTH_PROVIDER: 'none', LOCAL_USER_ID: '\u{1F600}'.repeat(256) }),
      /LOCAL_USER_ID must be at most 255 characters, got 256/,
    );
  });

  test('the base URL loses its trailing slash; a path is refused, naming the variable', () => {
    assert.equal(loadConfig({ MCP_SERVER_BASE_URL: 'https://mcp.example.com/' }).baseUrl, 'https://mcp.example.com');
    // The resource would be …/expenses/mcp, while the server answers at /mcp only.
    assert.throws(
      () => loadConfig({ MCP_SERVER_BASE_URL: 'https://mcp.example.com/expenses/' }),
      (error: Error) =>
        error instanceof ConfigError &&
        /MCP_SERVER_BASE_URL is https:\/\/mcp\.example\.com\/expenses, which has a path; give the URL without it \(e\.g\. https:\/\/mcp\.example\.com\)/.test(
          error.message,
        ),
    );
  });
});
