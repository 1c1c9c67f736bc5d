import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, openMcpPost, run, type ServerProcess } from '@mcp-auth-stack/testing';
import pg from 'pg';
import { connectClient, keysCli, postMcp, runServerToExit, spawnServer } from './helpers.ts';

/**
 * The server as its own process on the embedded database, with the keys CLI next to it:
 * what a user gets from `pnpm install && pnpm start`.
 */
describe('the server process on the embedded database, with the keys CLI beside it', () => {
  let dataDir: string;
  let server: ServerProcess;
  let key: string;
  let keyId: string;
  const env = () => ({ DATA_DIR: dataDir, MCP_AUTH_PROVIDER: 'key' });

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'mcp-e2e-'));
    server = await spawnServer(env());
  });
  after(async () => {
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  test('health and readiness', async () => {
    const health = await fetch(`${server.url}/health`);
    assert.deepEqual([health.status, await health.json()], [200, { status: 'ok' }]);
    const ready = await fetch(`${server.url}/ready`);
    assert.deepEqual([ready.status, await ready.json()], [200, { status: 'ready', checks: { database: 'ok' } }]);
  });

  test('keys create prints the key once, on the last line, while the server runs', async () => {
    // No --scope: the key gets the ordinary user scopes (read and write).
    const created = await keysCli(['create', '--user', 'alice', '--name', 'demo'], env());
    assert.equal(created.code, 0, created.stderr);
    const lines = created.stdout.trim().split('\n');
    key = lines.at(-1) as string;
    assert.match(key, /^mcpk_[A-Za-z0-9_-]{43}$/);
    keyId = /Created (key_[0-9a-f]+)/.exec(created.stderr)?.[1] as string;
    assert.ok(keyId, created.stderr);
  });

  test('the key works against the running server with the SDK client', async () => {
    const client = await connectClient(server.mcpUrl, { Authorization: `Bearer ${key}` });
    const result = await client.callTool({
      name: 'add_user_expense',
      arguments: { date: '2025-12-17', amount: 20, category: 'food', description: 'Pizza', payment_method: 'amex' },
    });
    assert.equal(result.isError, undefined);
    await client.close();
  });

  test('the MCP Inspector CLI, an independent client, lists and calls tools with the key header', async () => {
    const inspector = join(
      dirname(createRequire(import.meta.url).resolve('@modelcontextprotocol/inspector/package.json')),
      'clients/launcher/build/index.js',
    );
    const header = `Authorization: Bearer ${key}`;
    const listed = await run(process.execPath, [
      inspector,
      '--cli',
      server.mcpUrl,
      '--method',
      'tools/list',
      '--header',
      header,
    ]);
    assert.equal(listed.code, 0, listed.stderr + listed.stdout);
    const names = (JSON.parse(listed.stdout) as { tools: { name: string }[] }).tools.map((tool) => tool.name).sort();
    assert.deepEqual(names, ['add_user_expense', 'delete_user_expense', 'get_spending_summary', 'get_user_expenses']);

    const called = await run(process.execPath, [
      inspector,
      '--cli',
      server.mcpUrl,
      '--method',
      'tools/call',
      '--tool-name',
      'get_user_expenses',
      '--tool-arg',
      'category=food',
      '--header',
      header,
    ]);
    assert.equal(called.code, 0, called.stderr + called.stdout);
    const expenses = (JSON.parse(called.stdout) as { structuredContent: { expenses: { description: string }[] } })
      .structuredContent.expenses;
    assert.deepEqual(
      expenses.map((e) => e.description),
      ['Pizza'],
    );

    const refused = await run(process.execPath, [
      inspector,
      '--cli',
      server.mcpUrl,
      '--method',
      'tools/list',
      '--stored-auth-only',
      '--header',
      'Authorization: Bearer mcpk_wrong',
    ]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stdout + refused.stderr, /invalid_token/);
  });

  test('keys list shows the key, its last use and never the key itself', async () => {
    const listed = await keysCli(['list', '--user', 'alice'], env());
    assert.equal(listed.code, 0, listed.stderr);
    // The default scopes, exactly: the admin scope is never a default.
    assert.match(listed.stdout, new RegExp(`${keyId}\\s+alice\\s+demo\\s+expenses:read expenses:write\\s+\\d{4}-`));
    assert.doesNotMatch(listed.stdout, /expenses:admin/);
    assert.match(
      listed.stdout,
      new RegExp(`${keyId}\\s+alice\\s+demo\\s+expenses:read expenses:write\\s+\\S+\\s+\\d{4}-`),
      'last use was recorded',
    );
    assert.ok(!listed.stdout.includes(key.slice(5)));
    // The user as create reads it: spaces around it do not hide alice's keys.
    const spaced = await keysCli(['list', '--user', ' alice '], env());
    assert.match(spaced.stdout, new RegExp(keyId));
    // A shell that exported the server's mode without that mode's variables: keys needs neither.
    const inKeycloakShell = await keysCli(['list', '--user', 'alice'], { ...env(), MCP_AUTH_PROVIDER: 'keycloak' });
    assert.equal(inKeycloakShell.code, 0, inKeycloakShell.stderr);
    assert.match(inKeycloakShell.stdout, new RegExp(keyId));
  });

  test('keys create refuses unknown scopes, stray arguments and user ids or names that misread or pass for another; nothing is stored', async () => {
    const listed = async () => (await keysCli(['list'], env())).stdout;
    const before = await listed();
    const refusals: [string, string[], RegExp][] = [
      [
        'a scope no tool checks',
        ['--scope', 'expenses:delete'],
        /unknown scope "expenses:delete": a key can carry expenses:read, expenses:write, expenses:admin/,
      ],
      [
        "the realm's audience scope, which means nothing on a key",
        ['--scope', 'mcp:access'],
        /unknown scope "mcp:access"/,
      ],
      [
        'a known scope beside an unknown one',
        ['--scope', 'expenses:read', '--scope', 'admin'],
        /unknown scope "admin"/,
      ],
      ['a name given without --name', ['laptop'], /create takes no arguments besides its options; got "laptop"/],
      // Not the last one kept without a word: whose key would it be?
      ['a second user', ['--user', 'bob'], /--user given more than once/],
      ['a second name', ['--name', 'a', '--name', 'b'], /--name given more than once/],
      ['a control character in the name', ['--name', 'lap\ntop'], /name must not contain control characters/],
      ['an escape sequence in the name', ['--name', 'x\u001b[2Jy'], /name must not contain control characters/],
      [
        'a right-to-left override in the name',
        ['--name', 'Lunch \u202Egnp.exe'],
        /name must not contain bidirectional controls/,
      ],
    ];
    for (const [what, extra, message] of refusals) {
      const result = await keysCli(['create', '--user', 'mallory', ...extra], env());
      assert.notEqual(result.code, 0, what);
      assert.match(result.stderr, message, what);
      assert.equal(result.stdout, '', `${what}: no key printed`);
    }
    const userIds: [string, string, RegExp][] = [
      ['a control character', 'eve\u0007', /user id must not contain control characters/],
      ['a zero-width space', 'ali\u200Bce', /user id must not contain bidirectional controls, invisible/],
      // They pass for alice: `keys list --user alice` would not show their keys.
      ['fullwidth letters', '\uFF41\uFF4C\uFF49\uFF43\uFF45', /compatibility characters .*: it reads as "alice"/],
      ['a Cyrillic letter among Latin ones', '\u0430lice', /user id must not mix Latin and Cyrillic letters/],
    ];
    for (const [what, user, message] of userIds) {
      const result = await keysCli(['create', '--user', user], env());
      assert.equal(result.code, 64, what);
      assert.match(result.stderr, message, what);
    }
    assert.equal(await listed(), before, 'no key was stored');
    // The usage says what --scope does to the default.
    assert.match((await keysCli(['help'], env())).stdout, /each --scope replaces that default/);
  });

  test('keys: an option its command does not read, an unknown option or a missing value is a usage error (64); nothing changes', async () => {
    const listed = async () => (await keysCli(['list'], env())).stdout;
    const before = await listed();
    assert.match(before, new RegExp(`${keyId} .* active`));
    const refusals: [string[], RegExp][] = [
      // Not a guard: the key would be revoked whoever it belongs to.
      [['revoke', '--user', 'someone-else', keyId], /revoke takes no --user/],
      [['list', '--scope', 'expenses:admin'], /list takes no --scope/],
      [['list', '--user', 'alice', '--name', 'laptop'], /list takes no --name/],
      [['create', '--user', 'zoe', '--force'], /Unknown option '--force'/],
      [['create', '--user'], /argument missing/],
      [['list', '-u', 'alice'], /Unknown option '-u'/],
    ];
    for (const [args, message] of refusals) {
      const result = await keysCli(args, env());
      assert.equal(result.code, 64, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, message, args.join(' '));
      assert.match(result.stderr, /Usage:/, args.join(' '));
    }
    assert.equal(await listed(), before, 'no key created or revoked');
  });

  test('keys: a user id typed with decomposed accents is refused, naming the composed one; nothing is stored', async () => {
    // It would be a second user that `keys list` shows as the first.
    const composed = await keysCli(['create', '--user', 'jos\u00e9', '--name', 'cafe\u0301'], env());
    assert.equal(composed.code, 0, composed.stderr);
    const decomposed = await keysCli(['create', '--user', 'jose\u0301'], env());
    assert.notEqual(decomposed.code, 0);
    assert.match(decomposed.stderr, /composed characters \(Unicode NFC\): "jos\u00e9"/);
    assert.equal(decomposed.stdout, '', 'no key printed');
    const listed = await keysCli(['list', '--user', 'jos\u00e9'], env());
    assert.equal(listed.stdout.trim().split('\n').length, 2, `a header and one key:\n${listed.stdout}`);
    assert.match(listed.stdout, /caf\u00e9/, 'the name, a label, is composed');
  });

  test('keys create --expires-in: the key works until then and list says when; a lifetime it cannot read is a usage error', async () => {
    const created = await keysCli(['create', '--user', 'ivy', '--name', 'ci', '--expires-in', '12h'], env());
    assert.equal(created.code, 0, created.stderr);
    const ivyKey = created.stdout.trim().split('\n').at(-1) as string;
    const expires = /expiring (\S+)\./.exec(created.stderr)?.[1] ?? '';
    const hoursAway = (Date.parse(expires) - Date.now()) / 3_600_000;
    assert.ok(hoursAway > 11.9 && hoursAway <= 12, `expires in 12 hours: ${created.stderr}`);
    const listed = (await keysCli(['list', '--user', 'ivy'], env())).stdout;
    assert.match(listed, /EXPIRES +STATUS/);
    assert.match(listed, new RegExp(`ivy +ci +expenses:read expenses:write +\\S+ +never +${expires} +active`));
    const call = await postMcp(
      server.mcpUrl,
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { authorization: `Bearer ${ivyKey}` },
    );
    assert.equal(call.status, 200);
    const before = (await keysCli(['list'], env())).stdout;
    for (const lifetime of ['0d', '90', '1w', '3661d', '1.5d', '', '12 h']) {
      const refused = await keysCli(['create', '--user', 'ivy', '--expires-in', lifetime], env());
      assert.equal(refused.code, 64, `${lifetime}: ${refused.stderr}`);
      assert.match(refused.stderr, /--expires-in takes a number of days or hours/, lifetime);
    }
    const twice = await keysCli(['create', '--user', 'ivy', '--expires-in', '1d', '--expires-in', '2d'], env());
    assert.equal(twice.code, 64);
    assert.match(twice.stderr, /--expires-in given more than once/);
    assert.equal((await keysCli(['list'], env())).stdout, before, 'nothing stored');
  });

  test('keys revoke takes effect on the next request', async () => {
    const revoked = await keysCli(['revoke', keyId], env());
    assert.equal(revoked.code, 0, revoked.stderr);
    const response = await postMcp(
      server.mcpUrl,
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { authorization: `Bearer ${key}` },
    );
    assert.equal(response.status, 401);
    const again = await keysCli(['revoke', keyId], env());
    assert.equal(again.code, 1);
    assert.match(again.stderr, /No active key/);
  });

  test('keys revoke takes the key itself (a leaked one) and never prints it back; each command names its database', async () => {
    const created = await keysCli(['create', '--user', 'leaky'], env());
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stderr, new RegExp(`Database: ${dataDir} \\(embedded PGlite`));
    const leaked = created.stdout.trim().split('\n').at(-1) as string;
    const leakedId = /Created (key_[0-9a-f]+)/.exec(created.stderr)?.[1] as string;
    const outputs: string[] = [];
    const revokeLeaked = async () => {
      const result = await keysCli(['revoke', leaked], env());
      outputs.push(result.stdout, result.stderr);
      return result;
    };
    const revoked = await revokeLeaked();
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal(revoked.stdout, `Revoked ${leakedId} (the key given).\n`);
    assert.match((await keysCli(['list', '--user', 'leaky'], env())).stdout, new RegExp(`${leakedId} .*revoked`));
    const again = await revokeLeaked();
    assert.equal(again.code, 1);
    assert.match(again.stderr, /No active key is the key given/);
    // Cut short, or pasted with more around it: a usage error that does not print it either.
    for (const pasted of [leaked.slice(0, 30), `Bearer ${leaked}`, `x${leaked}`]) {
      const result = await keysCli(['revoke', pasted], env());
      outputs.push(result.stdout, result.stderr);
      assert.equal(result.code, 64, pasted.slice(0, 10));
      assert.match(result.stderr, /not a whole key/);
    }
    // In another case, with a hyphen, or where the command wants no argument at all.
    for (const args of [
      ['revoke', leaked.toUpperCase()],
      ['revoke', leaked.replace('mcpk_', 'mcpk-')],
      ['revoke', leaked.slice(5)],
      // Without its prefix and one character mistyped.
      ['revoke', `${leaked.slice(5, 25)}${leaked[25] === 'Q' ? 'R' : 'Q'}${leaked.slice(26)}`],
      ['create', '--user', 'leaky', leaked],
      ['list', leaked],
      [leaked],
      // Pasted into the wrong option: refused, not stored (the user id is logged with each request).
      ['create', '--user', leaked],
      ['create', '--user', leaked.slice(5)],
      ['create', '--user', 'leaky', '--name', `laptop ${leaked}`],
    ]) {
      const result = await keysCli(args, env());
      outputs.push(result.stdout, result.stderr);
      assert.ok(result.code === 64 || result.code === 1, `${args.join(' ').slice(0, 20)}: ${result.code}`);
      assert.match(result.stderr, /not a whole key|a key, not shown|must not be an API key/, args[0]);
    }
    // Any 12 characters of the key, in any case.
    const pieces = Array.from({ length: leaked.length - 16 }, (_, i) => leaked.slice(5 + i, 17 + i).toLowerCase());
    for (const output of outputs) {
      const shown = pieces.find((piece) => output.toLowerCase().includes(piece));
      assert.equal(shown, undefined, 'part of the key was printed');
    }
    assert.doesNotMatch((await keysCli(['list', '--user', 'leaky'], env())).stdout, /laptop/, 'nothing was stored');
    // What is no key is shown as typed: a UUID, a key id.
    const uuid = 'f81d4fae-7dec-11d0-a765-00a0c91e6bf6';
    assert.match((await keysCli(['revoke', uuid], env())).stderr, new RegExp(`No active key with id "${uuid}"`));
    assert.equal((await keysCli(['revoke', ' '], env())).code, 64, 'an empty id is a usage error');
  });

  test('keys list and revoke on a DATA_DIR without a database make none: they say so, exit 1', async () => {
    const mistyped = `${dataDir}-mistyped`;
    for (const args of [['list'], ['revoke', 'key_0123456789abcdef']]) {
      const result = await keysCli(args, { ...env(), DATA_DIR: mistyped });
      assert.equal(result.code, 1, result.stderr);
      assert.match(
        result.stderr,
        new RegExp(`No embedded database in ${mistyped} \\(DATA_DIR\\): nothing to ${args[0]}`),
      );
      assert.equal(existsSync(mistyped), false, 'a database was made');
    }
  });

  test('keys create: a user id or name the store refuses is a usage error (64), like the other refusals', async () => {
    for (const extra of [
      ['--user', 'x'.repeat(256)],
      ['--user', 'sam', '--name', 'n'.repeat(101)],
      ['--user', 'sam', '--name', 'lap\ntop'],
    ]) {
      const result = await keysCli(['create', ...extra], env());
      assert.equal(result.code, 64, result.stderr);
      assert.equal(result.stdout, '');
    }
  });

  test('DNS rebinding: a foreign Host or Origin gets 403 over real HTTP', async () => {
    const port = new URL(server.url).port;
    const foreignHost = await run('curl', [
      '-s',
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '-X',
      'POST',
      '-H',
      `Host: attacker.example:${port}`,
      `${server.mcpUrl}`,
    ]);
    assert.equal(foreignHost.stdout, '403');
    const foreignOrigin = await postMcp(
      server.mcpUrl,
      { jsonrpc: '2.0', id: 1, method: 'tools/list' },
      { origin: 'http://attacker.example' },
    );
    assert.equal(foreignOrigin.status, 403);
  });

  test('an oversize body gets 413 and the server stays up', async () => {
    const fresh = (await keysCli(['create', '--user', 'bob'], env())).stdout.trim();
    const big = await postMcp(
      server.mcpUrl,
      { jsonrpc: '2.0', id: 1, method: 'ping', params: { pad: 'x'.repeat(2 * 1024 * 1024) } },
      { authorization: `Bearer ${fresh}` },
    );
    assert.equal(big.status, 413);
    // Without credentials the body is never read: 401 first.
    const anonymous = await postMcp(server.mcpUrl, {
      jsonrpc: '2.0',
      id: 1,
      method: 'ping',
      params: { pad: 'x'.repeat(2 * 1024 * 1024) },
    });
    assert.equal(anonymous.status, 401);
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
  });

  test('SIGTERM drains and exits cleanly; then the CLI opens the database alone', async () => {
    // A request in flight when SIGTERM arrives: its body is still coming.
    const fresh = (await keysCli(['create', '--user', 'drain'], env())).stdout.trim();
    const inFlight = openMcpPost(server.mcpUrl, fresh, {
      headers: {
        'transfer-encoding': 'chunked',
      },
    });
    const answered = new Promise<{ status: number; body: string }>((resolve, reject) => {
      inFlight.on('response', (response) => {
        let body = '';
        response.on('data', (chunk) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      });
      inFlight.on('error', reject);
    });
    inFlight.write('{"jsonrpc":"2.0","id":42,');
    await new Promise((resolve) => setTimeout(resolve, 300));
    const stopped = server.stop();
    // The body ends only once the server has taken the signal, so the request is in flight
    // through the shutdown.
    await server.waitForOutput(/"msg":"shutting down"/);
    inFlight.end('"method":"ping"}');
    const reply = await answered;
    assert.deepEqual([reply.status, JSON.parse(reply.body)], [200, { jsonrpc: '2.0', id: 42, result: {} }]);
    assert.equal(await stopped, 0);
    // Nothing new is taken once it stops.
    await assert.rejects(fetch(`${server.url}/health`));
    assert.match(server.output(), /"msg":"stopped"/);
    const listed = await keysCli(['list'], env());
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /revoked/);
  });
});

describe('start-up configuration', () => {
  test('an invalid variable stops start-up with a message that names it', async () => {
    const result = await runServerToExit({ MCP_AUTH_PROVIDER: 'magic' });
    assert.equal(result.code, 78);
    assert.match(result.stderr, /MCP_AUTH_PROVIDER must be one of none, key/);
  });

  test('oauth_proxy: a signing key of the right shape that does not import stops the start, naming the variable', async () => {
    const result = await runServerToExit({
      MCP_AUTH_PROVIDER: 'oauth_proxy',
      KEYCLOAK_REALM_URL: 'http://127.0.0.1:9/realms/unreachable',
      MCP_SERVER_BASE_URL: 'http://localhost:8000',
      OAUTH_PROXY_SIGNING_KEY: JSON.stringify({ kty: 'EC', crv: 'P-256', x: 'AQAB', y: 'AQAB', d: 'AQAB' }),
      OAUTH_PROXY_ENCRYPTION_KEY: 'ab'.repeat(32),
    });
    assert.equal(result.code, 78, result.stderr);
    assert.match(result.stderr, /OAUTH_PROXY_SIGNING_KEY is not a key the proxy can sign with/);
  });

  test('an Application Insights connection string without its key stops the start, naming the variable, with no stack trace', async () => {
    const result = await runServerToExit({
      MCP_AUTH_PROVIDER: 'none',
      APPLICATIONINSIGHTS_CONNECTION_STRING: 'garbage',
    });
    assert.equal(result.code, 78, result.stderr);
    assert.match(result.stderr, /^APPLICATIONINSIGHTS_CONNECTION_STRING has no InstrumentationKey=/);
    assert.doesNotMatch(result.stderr, /\bat /, 'no stack trace');
  });

  test('an OTLP endpoint that is not a URL stops the start, naming the variable, with no stack trace', async () => {
    const result = await runServerToExit({ MCP_AUTH_PROVIDER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'not a url' });
    assert.equal(result.code, 78, result.stderr);
    assert.match(result.stderr, /^OTEL_EXPORTER_OTLP_ENDPOINT must be an http\(s\) URL/);
    assert.doesNotMatch(result.stderr, /\bat /, 'no stack trace');
  });

  test('a PORT taken, or a HOST that is not this machine, stops the start with exit code 78 naming the variable', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const taken = (holder.address() as AddressInfo).port;
    const portDataDir = await mkdtemp(join(tmpdir(), 'mcp-port-'));
    try {
      const result = await runServerToExit({ MCP_AUTH_PROVIDER: 'key', PORT: String(taken), DATA_DIR: portDataDir });
      assert.equal(result.code, 78, result.stderr);
      assert.match(
        result.stderr,
        new RegExp(`PORT ${taken} is in use on 127\\.0\\.0\\.1: stop what holds it, or choose another PORT`),
      );
    } finally {
      holder.close();
      await rm(portDataDir, { recursive: true, force: true });
    }
    // Its own DATA_DIR (the database is opened before the listen fails), removed after: 39 MB each run.
    const dataDir = await mkdtemp(join(tmpdir(), 'mcp-host-'));
    try {
      const elsewhere = await runServerToExit({ MCP_AUTH_PROVIDER: 'key', HOST: '192.0.2.1', DATA_DIR: dataDir });
      assert.equal(elsewhere.code, 78, elsewhere.stderr);
      assert.match(elsewhere.stderr, /HOST 192\.0\.2\.1 is not an address of this machine/);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('none mode refuses a non-loopback address unless told explicitly', async () => {
    const result = await runServerToExit({ MCP_AUTH_PROVIDER: 'none', HOST: '0.0.0.0' });
    assert.equal(result.code, 78);
    assert.match(result.stderr, /HOST is 0\.0\.0\.0.*ALLOW_UNAUTHENTICATED_REMOTE/);
  });

  test('none mode on loopback warns loudly and acts as the local user', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'mcp-none-'));
    const server = await spawnServer({ MCP_AUTH_PROVIDER: 'none', DATA_DIR: dataDir, LOCAL_USER_ID: 'me' });
    try {
      assert.match(server.output(), /"level":"warn","msg":"MCP_AUTH_PROVIDER=none: authentication is OFF/);
      // PORT=0 (a free port): the MCP URL it prints is the port it got, not localhost:0.
      assert.ok(
        server.output().includes(`"mcp_url":"http://localhost:${new URL(server.url).port}/mcp"`),
        server.output(),
      );
      const client = await connectClient(server.mcpUrl, {});
      await client.callTool({
        name: 'add_user_expense',
        arguments: { date: '2025-01-01', amount: 1, category: 'other', description: 'x', payment_method: 'cash' },
      });
      const listed = await client.callTool({ name: 'get_user_expenses', arguments: {} });
      assert.equal((listed.structuredContent as { count: number }).count, 1);
      await client.close();
      await server.waitForOutput(/"status":200,"duration_ms":[\d.]+,"user_id":"me"/);
    } finally {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('oauth_proxy: a damaged generated keys file stops the start with its name, never with its text', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'mcp-proxy-keys-'));
    const file = join(dataDir, 'oauth-proxy-keys.json');
    try {
      // Hand-edited (a quote lost: JSON.parse would quote the text around it, the private key)
      // and cut down to an object without keys.
      for (const text of [
        '{"signingKey": {"kty": "EC", "crv": "P-256", "d": PRIVATEPART}}',
        '{}',
        // Well-formed, but not a key the proxy can sign with (an RSA key; a point off the curve).
        '{"signingKey": {"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}, "encryptionKey": "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28"}',
        '{"signingKey": {"kty": "EC", "crv": "P-256", "x": "AQAB", "y": "AQAB", "d": "AQAB"}, "encryptionKey": "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28"}',
      ]) {
        await writeFile(file, text, { mode: 0o600 });
        const result = await runServerToExit({
          DATA_DIR: dataDir,
          MCP_AUTH_PROVIDER: 'oauth_proxy',
          KEYCLOAK_REALM_URL: 'http://127.0.0.1:9/realms/unreachable',
          MCP_SERVER_BASE_URL: 'http://localhost:8000',
        });
        assert.equal(result.code, 1, result.stderr);
        assert.ok(result.stderr.includes(`${file} does not hold the OAuth proxy's generated keys`), result.stderr);
        assert.match(result.stderr, /Delete it to generate new ones/);
        // JSON.parse's message quotes ten characters either side of the error: PRIVATEPAR.
        assert.doesNotMatch(result.stderr, /PRIV/);
      }
      assert.match(await readFile(file, 'utf8'), /"kty": "EC"/, 'the file is left for its owner to look at');
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test('a second server on the same embedded data directory is refused with the reason', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'mcp-two-'));
    const first = await spawnServer({ DATA_DIR: dataDir });
    try {
      const second = await runServerToExit({ DATA_DIR: dataDir });
      assert.equal(second.code, 1);
      assert.match(second.stderr, /is in use by process \d+/);
    } finally {
      await first.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

test('keys list says "expired" for a key past its expiry, which no request is served with', async () => {
  const database = await createTestDatabase();
  const env = { DATABASE_URL: database.url, MCP_AUTH_PROVIDER: 'key' };
  const server = await spawnServer(env);
  try {
    const created = await keysCli(['create', '--user', 'ivy', '--expires-in', '1d'], env);
    assert.equal(created.code, 0, created.stderr);
    const secret = created.stdout.trim().split('\n').at(-1) as string;
    const call = () =>
      postMcp(server.mcpUrl, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { authorization: `Bearer ${secret}` });
    assert.equal((await call()).status, 200);
    // Its day has passed (set by hand, as an administrator might): announced, so the server's cache drops it.
    const sql = new pg.Client({ connectionString: database.url });
    await sql.connect();
    await sql.query("UPDATE api_keys SET expires_at = now() - interval '1 minute'");
    await sql.end();
    assert.match((await keysCli(['list'], env)).stdout, /ivy .* expired\n/);
    let status = 200;
    for (let tries = 0; tries < 50 && status === 200; tries++) {
      status = (await call()).status;
      if (status === 200) await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(status, 401, 'refused once the change is announced (within the cache bound)');
  } finally {
    await server.stop();
    await database.drop();
  }
});

test('four `pnpm keys create` at once with no server running: each exits 0 with its key stored', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'mcp-keys-together-'));
  const env = { DATA_DIR: dataDir, MCP_AUTH_PROVIDER: 'key' };
  try {
    // One owns the files; the others wait for it (they do not join a session that ends with it).
    const runs = await Promise.all([1, 2, 3, 4].map((n) => keysCli(['create', '--user', `together-${n}`], env)));
    for (const [index, created] of runs.entries()) assert.equal(created.code, 0, `run ${index + 1}: ${created.stderr}`);
    const listed = await keysCli(['list'], env);
    assert.equal(listed.code, 0, listed.stderr);
    for (const n of [1, 2, 3, 4]) assert.match(listed.stdout, new RegExp(`together-${n}`));
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
