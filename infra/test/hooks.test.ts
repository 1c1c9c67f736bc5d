import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type AzdEnvironment, azdCli } from '../hooks/azd.ts';
import {
  ADMIN_ROLE,
  GRAPH_SCOPE,
  LOCAL_CALLBACK_URL,
  MCP_SCOPE,
  postprovision,
  preprovision,
  type TokenCredentialLike,
} from '../hooks/entra-app-registration.ts';
import {
  BEGIN,
  DEFAULT_ENV_FILE,
  deploymentSummary,
  END,
  removeBlock,
  renderEnvFile,
  writeEnvFile,
} from '../hooks/write-env.ts';
import { evaluate, moduleParams, objectProperty, parseBicep } from './bicep.ts';

const AZURE = new URL('../azure/', import.meta.url);

/**
 * What azd does with one entry of main.parameters.json (bicep_provider.go, loadParameters): the
 * entry as JSON text, `${NAME}` and `${NAME=default}` replaced by the environment's values as
 * they are, unescaped, and the text parsed again.
 */
function azdParameter(entry: unknown, env: Record<string, string | undefined>): { value?: unknown } {
  const text = JSON.stringify(entry).replace(
    /\$\{([A-Z][A-Z0-9_]*)(?:=([^}]*))?\}/g,
    (_, name: string, fallback?: string) => env[name] ?? fallback ?? '',
  );
  return JSON.parse(text) as { value?: unknown };
}

/**
 * The Entra hook against a fake Microsoft Graph (node:http on loopback) that keeps app
 * registrations in memory and records every request, with an in-memory azd environment.
 */
interface Recorded {
  method: string;
  path: string;
  body: unknown;
  authorization: string | undefined;
}
interface FakeApp {
  id: string;
  appId: string;
  displayName: string;
  uniqueName: string | null;
  identifierUris: string[];
  web: { redirectUris: string[] };
  api: { requestedAccessTokenVersion: number | null; oauth2PermissionScopes: { id: string; value: string }[] };
  appRoles: { id: string; value: string; allowedMemberTypes: string[] }[];
  passwordCredentials: { keyId: string; displayName: string; endDateTime: string }[];
}

const TOKEN = 'fake-graph-token';
const requests: Recorded[] = [];
const apps: FakeApp[] = [];
const servicePrincipals: { id: string; appId: string }[] = [];
let graph: Server;
let graphUrl = '';

async function readBody(request: IncomingMessage): Promise<unknown> {
  let text = '';
  for await (const chunk of request) text += chunk;
  return text ? JSON.parse(text) : undefined;
}

function filterValue(url: URL): [string, string] | null {
  const match = /^(\w+) eq '((?:[^']|'')*)'$/.exec(url.searchParams.get('$filter') ?? '');
  return match ? [match[1] as string, (match[2] as string).replace(/''/g, "'")] : null;
}

before(async () => {
  graph = createServer(async (request, response) => {
    const url = new URL(request.url ?? '/', 'http://graph');
    const body = await readBody(request);
    requests.push({
      method: request.method ?? '',
      path: url.pathname + url.search,
      body,
      authorization: request.headers.authorization,
    });
    const send = (status: number, value?: unknown) => {
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(value === undefined ? '' : JSON.stringify(value));
    };
    if (request.headers.authorization !== `Bearer ${TOKEN}`)
      return send(401, { error: { code: 'InvalidAuthenticationToken', message: 'no' } });
    const path = url.pathname.replace(/^\/v1\.0/, '');
    if (request.method === 'GET' && path === '/applications') {
      const [key, value] = filterValue(url) ?? ['', ''];
      return send(200, { value: apps.filter((app) => (app as unknown as Record<string, unknown>)[key] === value) });
    }
    if (request.method === 'POST' && path === '/applications') {
      const input = body as Partial<FakeApp>;
      const app: FakeApp = {
        id: randomUUID(),
        appId: randomUUID(),
        displayName: input.displayName ?? '',
        uniqueName: input.uniqueName ?? null,
        identifierUris: [],
        web: { redirectUris: input.web?.redirectUris ?? [] },
        api: {
          requestedAccessTokenVersion: input.api?.requestedAccessTokenVersion ?? null,
          oauth2PermissionScopes: input.api?.oauth2PermissionScopes ?? [],
        },
        appRoles: input.appRoles ?? [],
        passwordCredentials: [],
      };
      apps.push(app);
      return send(201, app);
    }
    const appMatch = /^\/applications\/([\w-]+)(\/addPassword)?$/.exec(path);
    const app = appMatch ? apps.find((a) => a.id === appMatch[1]) : undefined;
    if (appMatch && !app) return send(404, { error: { code: 'Request_ResourceNotFound', message: 'gone' } });
    if (app && request.method === 'PATCH' && !appMatch?.[2]) {
      Object.assign(app, body);
      return send(204);
    }
    if (app && request.method === 'POST' && appMatch?.[2]) {
      const credential = {
        keyId: randomUUID(),
        displayName: (body as { passwordCredential: { displayName: string } }).passwordCredential.displayName,
        endDateTime: (body as { passwordCredential: { endDateTime: string } }).passwordCredential.endDateTime,
      };
      app.passwordCredentials.push(credential);
      return send(200, { ...credential, secretText: `secret-${credential.keyId}` });
    }
    if (path === '/servicePrincipals' && request.method === 'GET') {
      const [, appId] = filterValue(url) ?? ['', ''];
      return send(200, { value: servicePrincipals.filter((sp) => sp.appId === appId) });
    }
    if (path === '/servicePrincipals' && request.method === 'POST') {
      const principal = { id: randomUUID(), appId: (body as { appId: string }).appId };
      servicePrincipals.push(principal);
      return send(201, principal);
    }
    return send(404, { error: { code: 'NotFound', message: path } });
  });
  await new Promise<void>((resolve) => graph.listen(0, '127.0.0.1', resolve));
  const address = graph.address();
  graphUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/v1.0`;
});

after(() => new Promise<void>((resolve) => graph.close(() => resolve())));

/** An azd environment in memory; hooks get its values as their process environment. */
function memoryAzd(
  initial: Record<string, string>,
): AzdEnvironment & { store: Record<string, string>; sets: string[] } {
  const store = { ...initial };
  const sets: string[] = [];
  return {
    store,
    sets,
    async values() {
      return { ...store };
    },
    async set(name, value) {
      sets.push(name);
      store[name] = value;
    },
  };
}

const scopesAsked: (string | string[])[] = [];
const credential: TokenCredentialLike = {
  async getToken(scopes) {
    scopesAsked.push(scopes);
    return { token: TOKEN };
  },
};
const quiet = () => {};

function calls() {
  return requests.map((r) => `${r.method} ${r.path.split('?')[0]}`);
}

describe('infra/hooks/entra-app-registration.ts against a fake Microsoft Graph', () => {
  const azd = memoryAzd({ AZURE_ENV_NAME: 'dev', MCP_AUTH_PROVIDER: 'entra_proxy' });
  const options = () => ({
    graphBaseUrl: graphUrl,
    credential,
    azd,
    env: { ...azd.store },
    log: quiet,
    now: () => new Date('2026-11-26T00:00:00Z'),
  });

  test('other modes: nothing is asked of Graph or azd', async () => {
    const other = memoryAzd({ AZURE_ENV_NAME: 'dev', MCP_AUTH_PROVIDER: 'keycloak' });
    const result = await preprovision({ graphBaseUrl: graphUrl, credential, azd: other, env: other.store, log: quiet });
    assert.equal(result.skipped, true);
    assert.equal(
      (await postprovision({ graphBaseUrl: graphUrl, credential, azd: other, env: other.store, log: quiet })).skipped,
      true,
    );
    assert.equal(requests.length, 0);
    assert.deepEqual(other.sets, []);
  });

  test('first preprovision: creates the registration, scope, identifier URI, principal, secret; stores them', async () => {
    const result = await preprovision(options());
    assert.equal(result.created, true);
    assert.equal(result.secretAdded, true);
    assert.deepEqual(calls(), [
      'GET /v1.0/applications', // by uniqueName
      'GET /v1.0/applications', // by displayName
      'POST /v1.0/applications',
      `PATCH /v1.0/applications/${result.objectId}`,
      'GET /v1.0/servicePrincipals',
      'POST /v1.0/servicePrincipals',
      `POST /v1.0/applications/${result.objectId}/addPassword`,
    ]);
    assert.ok(requests.every((r) => r.authorization === `Bearer ${TOKEN}`));
    assert.deepEqual(scopesAsked.at(-1), GRAPH_SCOPE);
    const created = requests[2]?.body as {
      displayName: string;
      uniqueName: string;
      signInAudience: string;
      api: { oauth2PermissionScopes: { value: string; type: string }[] };
    };
    assert.equal(created.displayName, 'mcp-auth-stack-dev');
    assert.equal(created.uniqueName, 'mcp-auth-stack-dev');
    assert.equal(created.signInAudience, 'AzureADMyOrg');
    assert.deepEqual(
      created.api.oauth2PermissionScopes.map((s) => [s.value, s.type]),
      [[MCP_SCOPE, 'User']],
    );
    const app = apps[0] as FakeApp;
    assert.deepEqual(
      app.appRoles.map((role) => [role.value, role.allowedMemberTypes]),
      [[ADMIN_ROLE, ['User']]],
      'the app role that maps to expenses:admin',
    );
    assert.deepEqual(app.identifierUris, [`api://${app.appId}`]);
    assert.deepEqual(app.web.redirectUris, [LOCAL_CALLBACK_URL]);
    assert.equal(azd.store.ENTRA_PROXY_AZURE_CLIENT_ID, app.appId);
    assert.equal(azd.store.ENTRA_PROXY_AZURE_CLIENT_SECRET, `secret-${app.passwordCredentials[0]?.keyId}`);
    assert.equal(azd.store.ENTRA_PROXY_AZURE_CLIENT_SECRET_ID, app.passwordCredentials[0]?.keyId);
    assert.equal(app.passwordCredentials[0]?.endDateTime, '2027-05-25T00:00:00.000Z');
    assert.equal(servicePrincipals.length, 1);
    // The proxy's own keys: a private signing JWK and 32 random bytes, made once.
    // base64, so that azd can paste it into main.parameters.json (azure.test.ts).
    const encoded = azd.store.OAUTH_PROXY_SIGNING_KEY_BASE64 ?? '';
    assert.match(encoded, /^[A-Za-z0-9+/]+=*$/);
    const jwk = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8')) as { kty?: string; d?: string };
    assert.ok(jwk.kty && jwk.d, 'a private JWK');
    assert.equal(azd.store.OAUTH_PROXY_SIGNING_KEY, undefined, 'never stored as raw JSON');
    assert.equal(Buffer.from(azd.store.OAUTH_PROXY_ENCRYPTION_KEY ?? '', 'base64url').length, 32);
  });

  test('re-run: found by client id, nothing created, patched or added', async () => {
    requests.length = 0;
    const keys = [azd.store.OAUTH_PROXY_SIGNING_KEY_BASE64, azd.store.OAUTH_PROXY_ENCRYPTION_KEY];
    const result = await preprovision(options());
    assert.deepEqual(
      [azd.store.OAUTH_PROXY_SIGNING_KEY_BASE64, azd.store.OAUTH_PROXY_ENCRYPTION_KEY],
      keys,
      'keys kept',
    );
    assert.deepEqual([result.created, result.secretAdded, result.patched], [false, false, false]);
    assert.deepEqual(calls(), ['GET /v1.0/applications', 'GET /v1.0/servicePrincipals']);
    assert.match(decodeURIComponent(requests[0]?.path ?? ''), /appId eq '/);
    assert.equal(apps.length, 1);
    assert.equal(apps[0]?.passwordCredentials.length, 1);
  });

  test("its values survive azd's substitution into main.parameters.json; Key Vault gets the JWK the server reads", async () => {
    const file = JSON.parse(await readFile(new URL('main.parameters.json', AZURE), 'utf8')) as {
      parameters: Record<string, unknown>;
    };
    const values = Object.fromEntries(
      Object.entries(file.parameters).map(([name, entry]) => [name, azdParameter(entry, azd.store).value]),
    );
    const main = await parseBicep(new URL('main.bicep', AZURE).pathname);
    const keyVault = main.modules.find((m) => m.name === 'keyVault');
    assert.ok(keyVault);
    const secrets = evaluate(main, objectProperty(moduleParams(keyVault), 'secrets') as never, values) as Record<
      string,
      string
    >;
    const jwk = JSON.parse(secrets['oauth-proxy-signing-key'] ?? '') as { kty?: string; d?: string };
    assert.ok(jwk.kty && jwk.d, 'a private JWK, as OAUTH_PROXY_SIGNING_KEY takes it');
    assert.equal(secrets['entra-proxy-client-secret'], azd.store.ENTRA_PROXY_AZURE_CLIENT_SECRET);
    // The check can fail: the raw JWK, as the hook once stored it, breaks azd's parse.
    const rawJwk = Buffer.from(azd.store.OAUTH_PROXY_SIGNING_KEY_BASE64 ?? '', 'base64').toString('utf8');
    assert.throws(() => azdParameter({ value: `\${OAUTH_PROXY_SIGNING_KEY}` }, { OAUTH_PROXY_SIGNING_KEY: rawJwk }));
  });

  test('postprovision adds the deployed /auth/callback once', async () => {
    azd.store.MCP_OAUTH_CALLBACK_URL = 'https://ca-server-abc.example.azurecontainerapps.io/auth/callback';
    requests.length = 0;
    const first = await postprovision(options());
    assert.equal(first.patched, true);
    assert.deepEqual(apps[0]?.web.redirectUris, [LOCAL_CALLBACK_URL, azd.store.MCP_OAUTH_CALLBACK_URL]);
    assert.deepEqual(requests.at(-1)?.body, { web: { redirectUris: apps[0]?.web.redirectUris } });
    requests.length = 0;
    const again = await postprovision(options());
    assert.equal(again.patched, false);
    assert.deepEqual(calls(), ['GET /v1.0/applications']);
    // A later preprovision keeps the deployed callback (redirect URIs are merged, never replaced).
    await preprovision(options());
    assert.ok(apps[0]?.web.redirectUris.includes(azd.store.MCP_OAUTH_CALLBACK_URL));
  });

  test('a lost secret (azd environment recreated) gets a new one; the registration is found by name', async () => {
    const fresh = memoryAzd({ AZURE_ENV_NAME: 'dev', MCP_AUTH_PROVIDER: 'entra_proxy' });
    requests.length = 0;
    const result = await preprovision({ ...options(), azd: fresh, env: { ...fresh.store } });
    assert.equal(result.created, false);
    assert.equal(result.secretAdded, true);
    assert.equal(apps.length, 1);
    assert.equal(fresh.store.ENTRA_PROXY_AZURE_CLIENT_ID, apps[0]?.appId);
    assert.ok(!calls().includes('POST /v1.0/applications'));
  });

  test('a secret within 30 days of its end (Entra still lists an expired one) is replaced, once', async () => {
    const before = azd.store.ENTRA_PROXY_AZURE_CLIENT_SECRET_ID;
    const ends = apps[0]?.passwordCredentials.find((credential) => credential.keyId === before)?.endDateTime;
    assert.equal(ends, '2027-05-25T00:00:00.000Z');
    const at = (date: string) => ({ ...options(), env: { ...azd.store }, now: () => new Date(date) });
    assert.equal((await preprovision(at('2027-04-24T00:00:00Z'))).secretAdded, false, '31 days before: kept');
    const renewed = await preprovision(at('2027-04-26T00:00:00Z'));
    assert.equal(renewed.secretAdded, true, '29 days before: replaced');
    assert.notEqual(azd.store.ENTRA_PROXY_AZURE_CLIENT_SECRET_ID, before);
    assert.equal((await preprovision(at('2027-04-26T00:00:00Z'))).secretAdded, false, 'the new one is kept');
  });

  test('an environment holding the signing key as raw JSON (before the encoding) keeps that key, base64-encoded', async () => {
    const jwk = JSON.stringify({ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', d: 'kept' });
    const older = memoryAzd({ AZURE_ENV_NAME: 'dev', MCP_AUTH_PROVIDER: 'entra_proxy', OAUTH_PROXY_SIGNING_KEY: jwk });
    await preprovision({ ...options(), azd: older, env: { ...older.store } });
    assert.equal(Buffer.from(older.store.OAUTH_PROXY_SIGNING_KEY_BASE64 ?? '', 'base64').toString('utf8'), jwk);
  });

  test('Graph errors surface with status and code, never the token', async () => {
    const bad: TokenCredentialLike = { getToken: async () => ({ token: 'wrong-token' }) };
    await assert.rejects(preprovision({ ...options(), credential: bad }), (error: Error) => {
      assert.match(error.message, /401.*InvalidAuthenticationToken/);
      assert.doesNotMatch(error.message, /wrong-token/);
      return true;
    });
  });
});

describe('the azd CLI adapter and the .env writer', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'azd-hook-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('azdCli runs `azd env set NAME VALUE` and `azd env get-values --output json`', async () => {
    const log = join(dir, 'azd.log');
    const fake = join(dir, 'azd');
    await writeFile(
      fake,
      `#!/bin/sh\nprintf '%s\\n' "$*" >> ${JSON.stringify(log)}\nif [ "$2" = get-values ]; then echo '{"MCP_SERVER_URL":"https://s.example/mcp","AZURE_KEY_VAULT_NAME":"kv-x","KEYCLOAK_ADMIN_PASSWORD":"never-written"}'; fi\n`,
    );
    await chmod(fake, 0o755);
    const azd = azdCli(fake);
    await azd.set('ENTRA_PROXY_AZURE_CLIENT_ID', 'abc');
    const values = await azd.values();
    assert.equal(values.MCP_SERVER_URL, 'https://s.example/mcp');
    assert.deepEqual((await readFile(log, 'utf8')).trim().split('\n'), [
      'env set ENTRA_PROXY_AZURE_CLIENT_ID abc',
      'env get-values --output json',
    ]);

    // Not the `.env` docker compose reads on its own: API_HOST=azure and the deployed
    // MCP_AUTH_PROVIDER would change the local stack's agent and server.
    assert.equal(DEFAULT_ENV_FILE, join(dirname(fileURLToPath(import.meta.url)), '../../.env.azure'));
    const compose = await readFile(new URL('../../docker-compose.yml', import.meta.url), 'utf8');
    assert.match(compose, /\$\{MCP_AUTH_PROVIDER:-/, 'compose does substitute what the file holds');
    const envFile = join(dir, '.env.azure');
    await writeFile(envFile, 'MY_OWN=1\n');
    const { written, summary } = await writeEnvFile(envFile, azd);
    assert.deepEqual(written, ['MCP_SERVER_URL', 'AZURE_KEY_VAULT_NAME']);
    assert.deepEqual(summary, ['MCP server: https://s.example/mcp'], 'only the URLs that are set');
    const text = await readFile(envFile, 'utf8');
    assert.equal(
      text,
      `MY_OWN=1\n\n${BEGIN}\nAPI_HOST=azure\nMCP_SERVER_URL=https://s.example/mcp\nAZURE_KEY_VAULT_NAME=kv-x\n${END}\n`,
    );
    assert.doesNotMatch(text, /never-written/);
    // Idempotent: a second run replaces its block.
    await writeEnvFile(envFile, azd);
    assert.equal(await readFile(envFile, 'utf8'), text);
    // The block an earlier version wrote to `.env` comes out; one's own lines stay.
    const former = join(dir, '.env');
    await writeFile(former, text);
    assert.equal(await removeBlock(former), true);
    assert.equal(await readFile(former, 'utf8'), 'MY_OWN=1\n');
    assert.equal(await removeBlock(former), false);
    assert.equal(await removeBlock(join(dir, 'missing.env')), false);
    await writeFile(former, `MY_OWN=1\n${BEGIN}\nAPI_HOST=azure\n`);
    assert.equal(await removeBlock(former), false, 'a block without its end is not touched');
    assert.equal(await readFile(former, 'utf8'), `MY_OWN=1\n${BEGIN}\nAPI_HOST=azure\n`);
  });

  test('azd up ends by printing where the deployment answers', () => {
    assert.deepEqual(
      deploymentSummary({
        MCP_SERVER_URL: 'https://server.example/mcp',
        KEYCLOAK_REALM_URL: 'https://kc.example/realms/mcp',
        KEYCLOAK_ADMIN_CONSOLE_URL: 'https://kc.example/admin/mcp/console/',
        AGENT_URL: 'https://agent.example',
        AZURE_KEY_VAULT_NAME: 'kv-x',
      }),
      [
        'MCP server: https://server.example/mcp',
        'Keycloak realm: https://kc.example/realms/mcp',
        'Keycloak admin console: https://kc.example/admin/mcp/console/',
        'Agent: https://agent.example',
      ],
    );
  });

  test('values that need it are quoted', () => {
    const text = renderEnvFile('', {
      APPLICATIONINSIGHTS_CONNECTION_STRING: 'InstrumentationKey=1;IngestionEndpoint=https://x/',
    });
    assert.match(
      text,
      /^APPLICATIONINSIGHTS_CONNECTION_STRING="InstrumentationKey=1;IngestionEndpoint=https:\/\/x\/"$/m,
    );
  });
});
