import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { bringRealmUrlsUpToDate, REALM_ENV_FILE, updatedList } from '../src/kept-realm.ts';

/**
 * What a kept realm's record decides before any admin call: whether there is anything to update.
 * A Keycloak that does not answer (port 9) makes any update fail, so a start that should leave
 * the realm alone shows it by not failing. instance.test.ts runs the updates on a real Keycloak.
 */
const NO_KEYCLOAK = 'http://127.0.0.1:9';

async function withRecord(record: Record<string, string>, run: (instanceDir: string) => Promise<void>) {
  const instanceDir = await mkdtemp(join(tmpdir(), 'kept-realm-'));
  try {
    await mkdir(join(instanceDir, 'data'));
    await writeFile(join(instanceDir, 'data', REALM_ENV_FILE), JSON.stringify(record));
    await run(instanceDir);
  } finally {
    await rm(instanceDir, { recursive: true, force: true });
  }
}

const urls = {
  MCP_SERVER_RESOURCE_URL: 'http://tunnel.example:8000/mcp',
  MCP_OAUTH_PROXY_CALLBACK_URL: 'http://tunnel.example:8000/auth/callback',
};

test("a record from before hosts were kept, for the same server: its host is its URL's, nothing to update", async () => {
  await withRecord(urls, async (instanceDir) => {
    await bringRealmUrlsUpToDate(
      instanceDir,
      NO_KEYCLOAK,
      { ...urls, MCP_SERVER_HOST: 'tunnel.example' },
      {},
      () => {},
    );
  });
});

test('a realm file without the host placeholder: no host is made up for its record', async () => {
  await withRecord(urls, async (instanceDir) => {
    await bringRealmUrlsUpToDate(instanceDir, NO_KEYCLOAK, urls, {}, () => {});
  });
});

test('another host than the one recorded: the update is attempted (and fails here, naming the change)', async () => {
  await withRecord({ ...urls, MCP_SERVER_HOST: 'tunnel.example' }, async (instanceDir) => {
    await assert.rejects(
      bringRealmUrlsUpToDate(instanceDir, NO_KEYCLOAK, { ...urls, MCP_SERVER_HOST: 'other.example' }, {}, () => {}),
      /MCP_SERVER_HOST: tunnel\.example, now other\.example/,
    );
  });
});

test('a Keycloak already running for other URLs is not updated under whoever started it: refused, naming the way out', async () => {
  await withRecord({ ...urls, MCP_SERVER_HOST: 'tunnel.example' }, async (instanceDir) => {
    const wanted = {
      MCP_SERVER_RESOURCE_URL: 'http://tunnel.example:8117/mcp',
      MCP_OAUTH_PROXY_CALLBACK_URL: 'http://tunnel.example:8117/auth/callback',
      MCP_SERVER_HOST: 'tunnel.example',
    };
    // The refusal comes before any admin call: against no Keycloak it is this message, not a failed update.
    await assert.rejects(
      bringRealmUrlsUpToDate(instanceDir, NO_KEYCLOAK, wanted, {}, () => {}, { httpPort: 8080 }),
      (error: Error) =>
        /running from .* on port 8080 has its realm set up for other URLs/.test(error.message) &&
        error.message.includes(
          'MCP_SERVER_RESOURCE_URL: http://tunnel.example:8000/mcp, now http://tunnel.example:8117/mcp',
        ) &&
        /KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT and KEYCLOAK_DATA_DIR/.test(error.message),
    );
    // The same values: nothing to update, nothing refused.
    await bringRealmUrlsUpToDate(
      instanceDir,
      NO_KEYCLOAK,
      { ...urls, MCP_SERVER_HOST: 'tunnel.example' },
      {},
      () => {},
      { httpPort: 8080 },
    );
  });
});

test('a host placeholder nested where an update cannot reach it is refused before anything is changed', async () => {
  const realmDir = await mkdtemp(join(tmpdir(), 'kept-realm-file-'));
  const realmFile = join(realmDir, 'realm.json');
  await writeFile(
    realmFile,
    JSON.stringify({
      realm: 'mcp',
      clientProfiles: {
        profiles: [
          {
            name: 'nested',
            executors: [
              {
                executor: 'some-executor',
                configuration: { hosts: [{ host: ['$', '{MCP_SERVER_HOST:localhost}'].join('') }] },
              },
            ],
          },
        ],
      },
    }),
  );
  try {
    await withRecord({ MCP_SERVER_HOST: 'tunnel.example' }, async (instanceDir) => {
      await assert.rejects(
        bringRealmUrlsUpToDate(
          instanceDir,
          NO_KEYCLOAK,
          { MCP_SERVER_HOST: 'other.example' },
          { realmFiles: [realmFile] },
          () => {},
        ),
        /has URL or host placeholders under clientProfiles \(outside executor settings\), which cannot be updated/,
      );
    });
  } finally {
    await rm(realmDir, { recursive: true, force: true });
  }
});

test('a list after an address change: the placeholder entry moves in place; admin console removals and additions stay', () => {
  // The anonymous-registration profile's permitted hosts, as the realm file has them.
  const hostPlaceholder = ['$', '{MCP_SERVER_HOST:localhost}'].join('');
  const fromFile = [`\\Q${hostPlaceholder}\\E`, 'vscode\\.dev', 'localhost'];
  const imported = { MCP_SERVER_HOST: 'first.example' };
  const wanted = { MCP_SERVER_HOST: 'tunnel.example' };
  // In the admin console: vscode.dev removed (no registrations redirecting there), a host added.
  const current = ['localhost', '\\Qfirst.example\\E', 'intranet\\.example'];
  assert.deepEqual(updatedList(fromFile, current, wanted, imported), [
    'localhost',
    '\\Qtunnel.example\\E',
    'intranet\\.example',
  ]);
  // The placeholder's old value is gone (removed, or an older record): the new one is added, once.
  assert.deepEqual(updatedList(fromFile, ['localhost'], wanted, imported), ['localhost', '\\Qtunnel.example\\E']);
  assert.deepEqual(updatedList(fromFile, ['\\Qtunnel.example\\E'], wanted, imported), ['\\Qtunnel.example\\E']);
});
