import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, test } from 'node:test';
import { REALM_CLIENTS, REALM_FILE, type RunningKeycloak, startKeycloak } from '@mcp-auth-stack/keycloak';
import { audienceOf, decodeJwtPayload, freePort } from '@mcp-auth-stack/testing';
import { postToken } from '@mcp-auth-stack/testing/keycloak';
import { keycloakAdminToken } from '@mcp-auth-stack/testing/mcp-oauth';
import { realmForDeployment } from '../../keycloak/realm-for-deployment.ts';

/**
 * The realm the deployed image imports (keycloak/realm-for-deployment.ts: no people, and bare
 * `${NAME}` placeholders without the demo defaults), imported by a real Keycloak 26.7.3 with a
 * deployment's values. azure.test.ts reads the file; this checks what Keycloak makes of it: each
 * value lands where the realm file says, and nothing printed in this repository signs in.
 */

const HOST = 'server.deployed.example';
const DEPLOYED: Record<string, string> = {
  MCP_SERVER_RESOURCE_URL: `https://${HOST}/mcp`,
  MCP_OAUTH_PROXY_CALLBACK_URL: `https://${HOST}/auth/callback`,
  MCP_SERVER_HOST: HOST,
  KEYCLOAK_CIMD_ALLOW_HTTP: 'false',
  KEYCLOAK_AGENT_CLIENT_SECRET: `agent-${randomBytes(12).toString('hex')}`,
  KEYCLOAK_PROXY_CLIENT_SECRET: `proxy-${randomBytes(12).toString('hex')}`,
  KEYCLOAK_MCP_SERVER_CLIENT_SECRET: `server-${randomBytes(12).toString('hex')}`,
  KEYCLOAK_JANITOR_CLIENT_SECRET: `janitor-${randomBytes(12).toString('hex')}`,
};

let keycloak: RunningKeycloak;
let realmDir: string;

before(
  async () => {
    realmDir = await mkdtemp(join(tmpdir(), 'deployed-realm-'));
    const realmFile = join(realmDir, basename(REALM_FILE));
    const deployed = realmForDeployment(JSON.parse(await readFile(REALM_FILE, 'utf8')));
    const placeholders = new Set([...JSON.stringify(deployed).matchAll(/\$\{([A-Z][A-Z0-9_]*)\}/g)].map((m) => m[1]));
    // Every placeholder gets a value here, as the Bicep gives one (azure.test.ts).
    assert.deepEqual([...placeholders].sort(), Object.keys(DEPLOYED).sort());
    await writeFile(realmFile, JSON.stringify(deployed));
    const startedAt = Date.now();
    keycloak = await startKeycloak({
      httpPort: await freePort(),
      managementPort: await freePort(),
      realmFiles: [realmFile],
      realmEnv: DEPLOYED,
    });
    console.log(`keycloak with the deployed realm started in ${Math.round((Date.now() - startedAt) / 1000)} s`);
  },
  { timeout: 600_000 },
);

after(async () => {
  await keycloak?.stop();
  if (realmDir) await rm(realmDir, { recursive: true, force: true });
});

async function adminGet<T>(path: string): Promise<T> {
  const response = await fetch(`${keycloak.url}/admin/realms/mcp/${path}`, {
    headers: { authorization: `Bearer ${await keycloakAdminToken(keycloak.url)}` },
  });
  assert.equal(response.status, 200, `${path}: ${response.status}`);
  return (await response.json()) as T;
}

test("each confidential client's secret is the deployment's, none is the repository's demo secret", async () => {
  const expected: [clientId: string, variable: string, demoSecret: string][] = [
    [REALM_CLIENTS.agent.clientId, 'KEYCLOAK_AGENT_CLIENT_SECRET', REALM_CLIENTS.agent.demoSecret],
    [REALM_CLIENTS.oauthProxy.clientId, 'KEYCLOAK_PROXY_CLIENT_SECRET', REALM_CLIENTS.oauthProxy.demoSecret],
    // mcp-server has no flows; its secret only fills a required field, and is not the demo one either.
    ['mcp-server', 'KEYCLOAK_MCP_SERVER_CLIENT_SECRET', 'mcp-server-demo-secret-not-for-production'],
    [REALM_CLIENTS.janitor.clientId, 'KEYCLOAK_JANITOR_CLIENT_SECRET', REALM_CLIENTS.janitor.demoSecret],
  ];
  for (const [clientId, variable, demoSecret] of expected) {
    const [client] = await adminGet<{ id: string }[]>(`clients?clientId=${clientId}`);
    assert.ok(client, clientId);
    const { value } = await adminGet<{ value: string }>(`clients/${client.id}/client-secret`);
    assert.equal(value, DEPLOYED[variable], `${clientId}'s secret is ${variable}`);
    assert.notEqual(value, demoSecret);
  }
});

test('the agent signs in with its deployed secret, for the deployed resource; its demo secret is refused', async () => {
  const form = { grant_type: 'client_credentials', client_id: REALM_CLIENTS.agent.clientId };
  const signedIn = await postToken(keycloak.realmUrl, {
    ...form,
    client_secret: DEPLOYED.KEYCLOAK_AGENT_CLIENT_SECRET as string,
    resource: DEPLOYED.MCP_SERVER_RESOURCE_URL as string,
  });
  assert.equal(signedIn.status, 200, JSON.stringify(signedIn.body));
  assert.deepEqual(audienceOf(decodeJwtPayload(signedIn.body.access_token as string)), [
    DEPLOYED.MCP_SERVER_RESOURCE_URL,
  ]);
  const demo = await postToken(keycloak.realmUrl, { ...form, client_secret: REALM_CLIENTS.agent.demoSecret });
  assert.equal(demo.status, 401, JSON.stringify(demo.body));
  assert.equal(demo.body.access_token, undefined);
  // The janitor's secret (manage-clients) is the one whose leak would cost the most.
  const janitor = await postToken(keycloak.realmUrl, {
    grant_type: 'client_credentials',
    client_id: REALM_CLIENTS.janitor.clientId,
    client_secret: REALM_CLIENTS.janitor.demoSecret,
  });
  assert.equal(janitor.status, 401, JSON.stringify(janitor.body));
});

test("no people: the users list is empty (it leaves out service accounts), and the agent's service account is there", async () => {
  assert.deepEqual(
    (await adminGet<{ username: string }[]>('users?max=100')).map((u) => u.username),
    [],
  );
  const [agent] = await adminGet<{ id: string }[]>(`clients?clientId=${REALM_CLIENTS.agent.clientId}`);
  const serviceAccount = await adminGet<{ username: string }>(`clients/${agent?.id}/service-account-user`);
  assert.equal(serviceAccount.username, `service-account-${REALM_CLIENTS.agent.clientId}`);
});

test("the deployment's URLs and switches: proxy callback, DCR's allowed host, CIMD over https only", async () => {
  const [proxy] = await adminGet<{ redirectUris: string[] }[]>(`clients?clientId=${REALM_CLIENTS.oauthProxy.clientId}`);
  assert.deepEqual(proxy?.redirectUris, [DEPLOYED.MCP_OAUTH_PROXY_CALLBACK_URL]);
  const { profiles } = await adminGet<{
    profiles: { name: string; executors: { executor: string; configuration: Record<string, unknown> }[] }[];
  }>('client-policies/profiles');
  const executor = (name: string) =>
    profiles.flatMap((p) => p.executors).find((e) => e.executor === name)?.configuration ?? {};
  assert.equal(executor('client-id-metadata-document')['cimd-allow-http-scheme'], 'false');
  assert.ok(
    (executor('secure-redirect-uris-enforcer')['allow-permitted-domains'] as string[]).includes(`\\Q${HOST}\\E`),
    JSON.stringify(executor('secure-redirect-uris-enforcer')),
  );
});
