import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { processStartTicks } from '@mcp-auth-stack/pid-lock';
import { audienceOf, decodeJwtPayload, freePort } from '@mcp-auth-stack/testing';
import { postToken } from '@mcp-auth-stack/testing/keycloak';
import { keycloakAdminToken } from '@mcp-auth-stack/testing/mcp-oauth';
import { DEMO_USERS, REALM_CLIENTS, REALM_FILE, type RunningKeycloak, startKeycloak } from '../src/index.ts';
import { addMissingAccountConsoleParts, addMissingClientPolicies } from '../src/kept-realm.ts';

/**
 * What `pnpm start` and then `PORT=8117 pnpm start` do to the kept Keycloak folder: the second
 * start finds the realm imported for another server URL. It used to stop with "imported with
 * other values", and `--fresh` gave the demo users new ids, so their data vanished from view.
 */
const realmEnvFor = (port: number, host = 'localhost') => ({
  MCP_SERVER_RESOURCE_URL: `http://${host}:${port}/mcp`,
  MCP_OAUTH_PROXY_CALLBACK_URL: `http://${host}:${port}/auth/callback`,
  MCP_SERVER_HOST: host,
});

async function adminGet(keycloak: RunningKeycloak, path: string): Promise<unknown> {
  const token = await postToken(`${keycloak.url}/realms/master`, {
    grant_type: 'password',
    client_id: 'admin-cli',
    username: 'admin',
    password: 'admin',
  });
  const response = await fetch(`${keycloak.url}/admin/realms/mcp/${path}`, {
    headers: { authorization: `Bearer ${token.body.access_token as string}` },
  });
  assert.equal(response.status, 200, path);
  return await response.json();
}

async function agentToken(keycloak: RunningKeycloak, resource: string) {
  return await postToken(keycloak.realmUrl, {
    grant_type: 'client_credentials',
    client_id: REALM_CLIENTS.agent.clientId,
    client_secret: REALM_CLIENTS.agent.demoSecret,
    resource,
  });
}

test("a kept realm started for another server URL is updated in place, even after a first start cut short once the realm was imported: new audience and redirect URI, same user ids; another folder's start reuses it only for the addresses it serves", async () => {
  const instanceDir = await mkdtemp(join(tmpdir(), 'kc-instance-'));
  const ports = { httpPort: await freePort(), managementPort: await freePort() };
  const [alice] = DEMO_USERS;
  assert.ok(alice);
  let keycloak: RunningKeycloak | undefined;
  try {
    // The first start is stopped right after the import, before Keycloak is ready, as Ctrl-C
    // during a first `pnpm keycloak` stops it.
    let stopped = false;
    await assert.rejects(
      startKeycloak({
        instanceDir,
        ...ports,
        realmEnv: realmEnvFor(8000, 'first.example'),
        onProgress: ({ message }) => {
          if (stopped || !message.includes('realm mcp imported')) return;
          stopped = true;
          void readFile(join(instanceDir, 'keycloak.pid'), 'utf8').then((content) =>
            process.kill(-Number(content.split(' ')[0]), 'SIGTERM'),
          );
        },
      }),
    );
    assert.ok(stopped, 'the realm was imported before the start was cut short');
    // Keycloak's database (password hashes, client secrets) is its owner's alone.
    assert.equal((await stat(join(instanceDir, 'data'))).mode & 0o777, 0o700);
    // The record as starts before host placeholders were kept wrote it: URLs only. The host it
    // was imported with is the one of its URLs.
    const recordFile = join(instanceDir, 'data', 'realm-env.json');
    const { MCP_SERVER_HOST: recordedHost, ...urlsOnly } = JSON.parse(await readFile(recordFile, 'utf8')) as Record<
      string,
      string
    >;
    assert.equal(recordedHost, 'first.example');
    await writeFile(recordFile, JSON.stringify(urlsOnly));

    const phases: string[] = [];
    keycloak = await startKeycloak({
      instanceDir,
      ...ports,
      // Another port and another host (a tunnel's, say), as MCP_SERVER_BASE_URL would give.
      realmEnv: realmEnvFor(8117, 'tunnel.example'),
      onProgress: ({ message }) => phases.push(message),
    });
    // The pid file says when its process started: after a crash, a live process that was given
    // the same pid (a reboot) is not taken for this Keycloak, and nothing is refused for it.
    const [pid, started] = (await readFile(join(instanceDir, 'keycloak.pid'), 'utf8')).split(' ');
    assert.equal(started, await processStartTicks(Number(pid)));
    assert.ok(
      phases.some((message) =>
        message.includes('MCP_SERVER_RESOURCE_URL: http://first.example:8000/mcp → http://tunnel.example:8117/mcp'),
      ),
      phases.join('\n'),
    );
    const moved = await agentToken(keycloak, 'http://tunnel.example:8117/mcp');
    assert.equal(moved.status, 200, JSON.stringify(moved.body));
    assert.deepEqual(audienceOf(decodeJwtPayload(moved.body.access_token as string)), [
      'http://tunnel.example:8117/mcp',
    ]);
    const old = await agentToken(keycloak, 'http://localhost:8000/mcp');
    assert.equal(old.status, 400, 'the old resource URL is no longer the server');
    assert.equal(old.body.error, 'invalid_target');

    const [proxy] = (await adminGet(keycloak, `clients?clientId=${REALM_CLIENTS.oauthProxy.clientId}`)) as {
      redirectUris: string[];
    }[];
    assert.deepEqual(proxy?.redirectUris, ['http://tunnel.example:8117/auth/callback']);
    // Anonymous registrations may now redirect to the new host (the workaround way's callback)
    // and no longer to the old one; the profile's other hosts stay.
    const { profiles } = (await adminGet(keycloak, 'client-policies/profiles')) as {
      profiles: { name: string; executors: { executor: string; configuration: Record<string, unknown> }[] }[];
    };
    const permitted = profiles
      .find((profile) => profile.name === 'anonymous-registration-safe-clients')
      ?.executors.find((executor) => executor.executor === 'secure-redirect-uris-enforcer')?.configuration[
      'allow-permitted-domains'
    ] as string[];
    assert.ok(permitted.includes('\\Qtunnel.example\\E'), JSON.stringify(permitted));
    assert.ok(!permitted.includes('\\Qfirst.example\\E'), JSON.stringify(permitted));
    assert.ok(permitted.includes('vscode\\.dev'), JSON.stringify(permitted));
    // What the workaround way does: an anonymous registration redirecting to the server's callback.
    const registerFor = async (host: string) =>
      await fetch(`${(keycloak as RunningKeycloak).realmUrl}/clients-registrations/openid-connect`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          client_name: 'kept realm test client',
          redirect_uris: [`https://${host}/auth/callback`],
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          token_endpoint_auth_method: 'none',
        }),
      });
    assert.equal((await registerFor('tunnel.example')).status, 201, 'the new host is allowed');
    assert.equal((await registerFor('elsewhere.example')).status, 403, 'another host is not');
    const after = (await adminGet(keycloak, 'users?username=alice&exact=true')) as { id: string }[];
    assert.equal(after[0]?.id, alice.id, 'the users were kept, with the id pinned in the realm file');
    assert.deepEqual(
      JSON.parse(await readFile(join(instanceDir, 'data', 'realm-env.json'), 'utf8')),
      realmEnvFor(8117, 'tunnel.example'),
      'the new values are recorded',
    );

    // Another checkout's start on these ports (its own KEYCLOAK_DATA_DIR, so not this Keycloak's
    // folder) uses this Keycloak only while its realm serves that start's addresses.
    const otherCheckout = join(instanceDir, 'another-checkout');
    const reused = await startKeycloak({
      instanceDir: otherCheckout,
      ...ports,
      ifRunning: 'reuse',
      realmEnv: realmEnvFor(8117, 'tunnel.example'),
    });
    assert.equal(reused.reused, true);
    await assert.rejects(
      startKeycloak({
        instanceDir: otherCheckout,
        ...ports,
        ifRunning: 'reuse',
        realmEnv: realmEnvFor(8118, 'other.example'),
      }),
      (error: Error) => {
        assert.match(
          error.message,
          /runs from another folder than .*another-checkout, and its realm is not set up for this start's addresses/,
        );
        assert.match(
          error.message,
          /included\.custom\.audience: http:\/\/tunnel\.example:8117\/mcp, not http:\/\/other\.example:8118\/mcp/,
        );
        assert.match(
          error.message,
          /resource_url: http:\/\/tunnel\.example:8117\/mcp, not http:\/\/other\.example:8118\/mcp/,
        );
        assert.match(
          error.message,
          /client mcp-oauth-proxy: redirect URIs: http:\/\/other\.example:8118\/auth\/callback missing/,
        );
        assert.match(error.message, /allow-permitted-domains: \\Qother\.example\\E missing/);
        assert.match(error.message, /KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT and KEYCLOAK_DATA_DIR/);
        return true;
      },
    );
    // A realm that lacks what the realm file fills with addresses (here a client of another
    // name) cannot serve them: refused too, not used as it is.
    const renamedClients = join(instanceDir, 'realm-renamed-client.json');
    await writeFile(
      renamedClients,
      (await readFile(REALM_FILE, 'utf8')).replace('"clientId": "mcp-server"', '"clientId": "mcp-server-elsewhere"'),
    );
    await assert.rejects(
      startKeycloak({
        instanceDir: otherCheckout,
        ...ports,
        ifRunning: 'reuse',
        realmFiles: [renamedClients],
        realmEnv: realmEnvFor(8117, 'tunnel.example'),
      }),
      /it could not be compared with the realm file \(client mcp-server-elsewhere is missing from realm mcp\)/,
    );
    // Its admin someone else's (the password changed in the console, say): not comparable, said, and used.
    const said: string[] = [];
    const notCompared = await startKeycloak({
      instanceDir: otherCheckout,
      ...ports,
      ifRunning: 'reuse',
      admin: { username: 'admin', password: 'not-this-one' },
      realmEnv: realmEnvFor(8118, 'other.example'),
      onProgress: ({ message }) => said.push(message),
    });
    assert.equal(notCompared.reused, true);
    assert.ok(
      said.some((message) =>
        /could not be compared .*bootstrap admin admin could not sign in \(HTTP 400\)/.test(message),
      ),
      said.join('\n'),
    );
    // Refused, not updated: the realm still serves the start that owns it.
    assert.equal((await agentToken(keycloak, 'http://tunnel.example:8117/mcp')).status, 200);
    assert.equal((await agentToken(keycloak, 'http://other.example:8118/mcp')).body.error, 'invalid_target');
  } finally {
    await keycloak?.stop();
    await rm(instanceDir, { recursive: true, force: true });
  }
});

test('a kept realm imported before a client policy and an executor existed gets both at its next start, filled for this server', async () => {
  const instanceDir = await mkdtemp(join(tmpdir(), 'kc-instance-'));
  const ports = { httpPort: await freePort(), managementPort: await freePort() };
  // The realm file as it was before those two rules (decision 75's executor, the device grant's policy).
  const older = JSON.parse(await readFile(REALM_FILE, 'utf8')) as {
    clientPolicies: { policies: { name: string }[] };
    clientProfiles: { profiles: { name: string; executors: { executor: string }[] }[] };
  };
  older.clientPolicies.policies = older.clientPolicies.policies.filter((policy) => policy.name !== 'no-device-grant');
  const profileOf = (profiles: { name: string; executors: { executor: string; configuration?: unknown }[] }[]) =>
    profiles.find((profile) => profile.name === 'anonymous-registration-safe-clients');
  const anonymous = profileOf(older.clientProfiles.profiles);
  assert.ok(anonymous);
  anonymous.executors = anonymous.executors.filter((executor) => executor.executor !== 'mcp-client-uri-hosts');
  const olderFile = join(instanceDir, 'realm-mcp.json');
  let keycloak: RunningKeycloak | undefined;
  try {
    await writeFile(olderFile, JSON.stringify(older));
    keycloak = await startKeycloak({ instanceDir, ...ports, realmFiles: [olderFile], realmEnv: realmEnvFor(8000) });
    await keycloak.stop();
    const phases: string[] = [];
    keycloak = await startKeycloak({
      instanceDir,
      ...ports,
      realmEnv: realmEnvFor(8000, 'tunnel.example'),
      onProgress: ({ message }) => phases.push(message),
    });
    for (const piece of [
      'executor mcp-client-uri-hosts of client profile anonymous-registration-safe-clients',
      'client policy no-device-grant',
    ]) {
      assert.ok(phases.includes(`${piece}: added to the kept realm from the realm file`), phases.join('\n'));
    }
    const { profiles } = (await adminGet(keycloak, 'client-policies/profiles')) as {
      profiles: { name: string; executors: { executor: string; configuration?: Record<string, unknown> }[] }[];
    };
    const [first] = profileOf(profiles)?.executors ?? [];
    // Where the file has it (first), its host placeholder filled for this server (moved since).
    assert.deepEqual(first, {
      executor: 'mcp-client-uri-hosts',
      configuration: {
        'https-hosts': ['vscode.dev', 'insiders.vscode.dev', 'code.visualstudio.com', 'tunnel.example'],
      },
    });
    const { policies } = (await adminGet(keycloak, 'client-policies/policies')) as { policies: { name: string }[] };
    assert.ok(policies.some((policy) => policy.name === 'no-device-grant'));
    // And it refuses what it is for: a loopback address that is only a name to DNS.
    const registered = await fetch(`${keycloak.realmUrl}/clients-registrations/openid-connect`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: ['http://127.1:9/cb'], token_endpoint_auth_method: 'none' }),
    });
    assert.deepEqual(
      [registered.status, ((await registered.json()) as { error_description?: string }).error_description],
      [403, 'invalid_redirect_uri'],
    );
    // Nothing is missing any more.
    assert.deepEqual(await addMissingClientPolicies(keycloak.url, {}, realmEnvFor(8000, 'tunnel.example')), []);
    // A start whose admin cannot sign in (its password changed in the console) still starts, and says so.
    await keycloak.stop();
    const told: string[] = [];
    keycloak = await startKeycloak({
      instanceDir,
      ...ports,
      realmEnv: realmEnvFor(8000, 'tunnel.example'),
      admin: { username: 'admin', password: 'changed-in-the-console' },
      onProgress: ({ message }) => told.push(message),
    });
    assert.ok(
      told.some((message) => message.startsWith("the kept realm's client policies could not be compared")),
      told.join('\n'),
    );
  } finally {
    await keycloak?.stop();
    await rm(instanceDir, { recursive: true, force: true });
  }
});

test('a taken management port is refused before anything starts, naming the variable that moves it', async () => {
  const holder = createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => holder.once('listening', resolve));
  const taken = (holder.address() as { port: number }).port;
  try {
    await assert.rejects(
      startKeycloak({
        httpPort: await freePort(),
        managementPort: taken,
        portVariables: { http: 'KEYCLOAK_PORT', management: 'KEYCLOAK_MANAGEMENT_PORT' },
      }),
      new RegExp(
        `Management port ${taken} on 127\\.0\\.0\\.1 is in use\\. Stop that program, or set KEYCLOAK_MANAGEMENT_PORT to another port`,
      ),
    );
  } finally {
    holder.close();
  }
});

test('a program on [::1] at the HTTP port is refused before anything starts: localhost may reach it first', async () => {
  const httpPort = await freePort();
  // This machine has IPv6 loopback: the program holds the port there only.
  const holder = createServer().listen(httpPort, '::1');
  await new Promise((resolve, reject) => {
    holder.once('listening', resolve);
    holder.once('error', reject);
  });
  try {
    await assert.rejects(
      startKeycloak({
        httpPort,
        managementPort: await freePort(),
        portVariables: { http: 'KEYCLOAK_PORT', management: 'KEYCLOAK_MANAGEMENT_PORT' },
      }),
      new RegExp(
        `Port ${httpPort} on ::1 is in use, and localhost may reach that program first\\. Stop that program, or set KEYCLOAK_PORT to another port`,
      ),
    );
  } finally {
    holder.close();
  }
});

test("a kept realm imported before the file declared Keycloak's account clients gets the console's scopes, mapper and users' default role, once", async () => {
  const instanceDir = await mkdtemp(join(tmpdir(), 'kc-instance-'));
  const ports = { httpPort: await freePort(), managementPort: await freePort() };
  // The realm file as it was before decision 84: Keycloak made the account clients itself.
  const older = JSON.parse(await readFile(REALM_FILE, 'utf8')) as {
    clients: { clientId: string }[];
    roles: { realm: { name: string }[]; client?: unknown };
    defaultRole?: unknown;
    clientScopeMappings?: unknown;
    users: { realmRoles?: string[] }[];
  };
  older.clients = older.clients.filter((client) => !client.clientId.startsWith('account'));
  older.roles.realm = older.roles.realm.filter((role) => role.name !== 'default-roles-mcp');
  delete older.roles.client;
  delete older.defaultRole;
  delete older.clientScopeMappings;
  for (const user of older.users) {
    if (user.realmRoles?.includes('default-roles-mcp')) user.realmRoles = ['offline_access'];
  }
  const olderFile = join(instanceDir, 'realm-mcp.json');
  const consoleOf = async (keycloak: RunningKeycloak) =>
    (
      (await adminGet(keycloak, 'clients?clientId=account-console')) as {
        defaultClientScopes: string[];
        protocolMappers?: { name: string }[];
      }[]
    )[0];
  const aliceRoles = async (keycloak: RunningKeycloak) => {
    const [alice] = (await adminGet(keycloak, 'users?username=alice&exact=true')) as { id: string }[];
    return ((await adminGet(keycloak, `users/${alice?.id}/role-mappings/realm`)) as { name: string }[]).map(
      (role) => role.name,
    );
  };
  let keycloak: RunningKeycloak | undefined;
  try {
    await writeFile(olderFile, JSON.stringify(older));
    keycloak = await startKeycloak({ instanceDir, ...ports, realmFiles: [olderFile], realmEnv: realmEnvFor(8000) });
    assert.deepEqual((await consoleOf(keycloak))?.defaultClientScopes, [], 'the console as Keycloak made it');
    assert.ok(!(await aliceRoles(keycloak)).includes('default-roles-mcp'));
    await keycloak.stop();
    const phases: string[] = [];
    keycloak = await startKeycloak({
      instanceDir,
      ...ports,
      realmEnv: realmEnvFor(8000),
      onProgress: ({ message }) => phases.push(message),
    });
    for (const piece of [
      'default scope basic of account-console',
      'mapper "account roles" of account-console',
      'role default-roles-mcp of user alice',
    ]) {
      assert.ok(phases.includes(`${piece}: added to the kept realm from the realm file`), phases.join('\n'));
    }
    assert.ok(phases.includes('role default-roles-mcp of user bob: added to the kept realm from the realm file'));
    const fixed = await consoleOf(keycloak);
    assert.deepEqual(fixed?.defaultClientScopes.sort(), ['basic', 'email', 'profile']);
    assert.ok(fixed?.protocolMappers?.some((mapper) => mapper.name === 'account roles'));
    assert.ok((await aliceRoles(keycloak)).includes('default-roles-mcp'));
    // Nothing is missing any more.
    assert.deepEqual(await addMissingAccountConsoleParts(keycloak.url, {}), []);
    // Once: what an administrator removes afterwards stays removed (bob's role, here).
    const [bob] = (await adminGet(keycloak, 'users?username=bob&exact=true')) as { id: string }[];
    const role = (await adminGet(keycloak, 'roles/default-roles-mcp')) as { id: string; name: string };
    const token = await keycloakAdminToken(keycloak.url);
    const removed = await fetch(`${keycloak.url}/admin/realms/mcp/users/${bob?.id}/role-mappings/realm`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify([role]),
    });
    assert.equal(removed.status, 204);
    await keycloak.stop();
    phases.length = 0;
    keycloak = await startKeycloak({
      instanceDir,
      ...ports,
      realmEnv: realmEnvFor(8000),
      onProgress: ({ message }) => phases.push(message),
    });
    assert.deepEqual(
      phases.filter((message) => message.includes('added to the kept realm')),
      [],
    );
    const bobRoles = (await adminGet(keycloak, `users/${bob?.id}/role-mappings/realm`)) as { name: string }[];
    assert.ok(!bobRoles.some((held) => held.name === 'default-roles-mcp'), 'not given back');
  } finally {
    await keycloak?.stop();
    await rm(instanceDir, { recursive: true, force: true });
  }
});
