import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { freePort, postMcp, startCallbackServer } from '@mcp-auth-stack/testing';
import { launchChromium } from '@mcp-auth-stack/testing/browser';
import { connectWithOAuth, ProxyOAuthProvider } from '@mcp-auth-stack/testing/mcp-oauth';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** `pnpm start` as a user runs it, until its summary is printed. */
async function start(
  env: Record<string, string>,
  whileStarting: (output: string) => void = () => {},
): Promise<{ child: ChildProcess; output: () => string }> {
  // Only what the test names picks the mode, not whatever the caller's shell has set.
  const { MCP_AUTH_PROVIDER: _ignored, ...inherited } = process.env;
  const child = spawn(process.execPath, ['scripts/start.ts'], {
    cwd: ROOT,
    env: { ...inherited, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk) => (output += chunk));
  child.stderr?.on('data', (chunk) => (output += chunk));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no summary within 5 min:\n${output}`)), 300_000);
    child.stderr?.on('data', () => whileStarting(output));
    child.stdout?.on('data', () => {
      whileStarting(output);
      if (output.includes('Ctrl-C stops everything.')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`pnpm start exited with ${code}:\n${output}`)));
  });
  return { child, output: () => output };
}

/**
 * `pnpm start` that is expected to stop by itself: its exit code and output. One that serves
 * instead (and so never exits) is killed after a minute.
 */
async function startUntilExit(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const { MCP_AUTH_PROVIDER: _ignored, ...inherited } = process.env;
  const child = spawn(process.execPath, ['scripts/start.ts'], {
    cwd: ROOT,
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk) => (output += chunk));
  child.stderr?.on('data', (chunk) => (output += chunk));
  const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(killer);
  return { code, output };
}

async function interrupt(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGINT');
  return await exited;
}

/**
 * `command` in key mode on a real pseudo-terminal (`script`); `typeCtrlC` writes ^C to it, a
 * typed Ctrl-C, which the terminal driver sends to the whole foreground process group (pnpm
 * and node). `exec`: script runs its command through `sh -c`, and a non-interactive sh that
 * receives the Ctrl-C may die of it (exit 130) whatever pnpm does; a user's interactive shell
 * does not.
 */
async function onTerminal(command: string, prefix: string, reuse?: { dataDir: string }) {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const port = await freePort();
  const dataDir = reuse?.dataDir ?? join(dir, 'data');
  const { MCP_AUTH_PROVIDER: _ignored, ...inherited } = process.env;
  const child = spawn('script', ['-qfec', `exec ${command}`, '/dev/null'], {
    cwd: ROOT,
    env: { ...inherited, MCP_AUTH_PROVIDER: 'key', PORT: String(port), DATA_DIR: dataDir },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk) => (output += chunk));
  child.stderr?.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    port,
    dataDir,
    exited,
    output: () => output,
    typeCtrlC: () => child.stdin?.write('\x03'),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Waits for `pnpm start`'s summary on the terminal, or fails with what it printed. */
async function untilTerminalSummary(terminal: Awaited<ReturnType<typeof onTerminal>>): Promise<string> {
  for (let waited = 0; !terminal.output().includes('Ctrl-C stops everything.'); waited += 200) {
    if (waited > 120_000 || terminal.child.exitCode !== null) throw new Error(`no summary:\n${terminal.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return terminal.output();
}

/**
 * `pnpm keys <args>` on this DATA_DIR: its exit code and output (what it prints on stdout; its
 * stderr, which names the database first, only when it failed).
 */
async function keys(dataDir: string, ...args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['apps/server/src/keys-cli.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, DATA_DIR: dataDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let errors = '';
  child.stdout?.on('data', (chunk) => (output += chunk));
  child.stderr?.on('data', (chunk) => (errors += chunk));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, output: code === 0 ? output : `${output}${errors}` };
}

const answers = (url: string) =>
  fetch(url).then(
    (response) => response.ok,
    () => false,
  );

describe('pnpm start', () => {
  test('runs Keycloak and the server in keycloak mode together, prints the summary, and Ctrl-C stops both', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mcp-start-'));
    const port = await freePort();
    const keycloakPort = await freePort();
    const env = {
      PORT: String(port),
      DATA_DIR: join(dir, 'data'),
      KEYCLOAK_PORT: String(keycloakPort),
      KEYCLOAK_MANAGEMENT_PORT: String(await freePort()),
      KEYCLOAK_DATA_DIR: join(dir, 'keycloak'),
      LOG_LEVEL: 'info', // the janitor's line below
    };
    const { child, output } = await start(env);
    try {
      const summary = output();
      assert.match(summary, new RegExp(`Expenses MCP server +http://localhost:${port}/mcp`));
      assert.match(summary, new RegExp(`Keycloak realm +http://localhost:${keycloakPort}/realms/mcp`));
      assert.match(summary, /alice \/ alice-password/);
      const realm = await fetch(`http://localhost:${keycloakPort}/realms/mcp`);
      assert.equal(((await realm.json()) as { realm: string }).realm, 'mcp');

      assert.match(summary, /auth: keycloak/);
      // The server runs in keycloak mode against the Keycloak it started: a bare request is
      // sent to the realm through the protected resource metadata.
      const challenge = await fetch(`http://localhost:${port}/mcp`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      });
      assert.equal(challenge.status, 401);
      assert.match(challenge.headers.get('www-authenticate') ?? '', /resource_metadata=/);
      const metadata = (await (
        await fetch(`http://localhost:${port}/.well-known/oauth-protected-resource/mcp`)
      ).json()) as { authorization_servers: string[] };
      assert.deepEqual(metadata.authorization_servers, [`http://localhost:${keycloakPort}/realms/mcp`]);
      const ready = (await (await fetch(`http://localhost:${port}/ready`)).json()) as { status: string };
      assert.equal(ready.status, 'ready', "the realm's metadata and keys are reachable");
      // The janitor of registered clients runs with the local realm's client (docs/security.md).
      for (let waited = 0; !/keycloak client janitor: (on|failed)/.test(output()); waited += 200) {
        if (waited > 60_000) break; // the start pass tries a slow Keycloak again (5 s, then 15 s)
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.match(output(), /keycloak client janitor: on/);

      // A second pnpm start on the same DATA_DIR and another PORT stops before Keycloak: the
      // running stack's realm keeps its audience.
      const second = await startUntilExit({ ...env, PORT: String(await freePort()) });
      assert.equal(second.code, 1, second.output);
      assert.match(second.output, /in use by process \d+: another pnpm start/);
      assert.doesNotMatch(second.output, /keycloak|updating the kept realm/i);
    } finally {
      assert.equal(await interrupt(child), 0);
    }
    assert.equal(await answers(`http://127.0.0.1:${port}/health`), false, 'the server stopped');
    assert.equal(await answers(`http://127.0.0.1:${keycloakPort}/realms/mcp`), false, 'Keycloak stopped');
    await rm(dir, { recursive: true, force: true });
  });

  test('Keycloak killed under a running stack (the OOM killer, a crash): pnpm start says so and stops the server, exit 1', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mcp-start-kc-killed-'));
    const port = await freePort();
    const keycloakPort = await freePort();
    const keycloakDataDir = join(dir, 'keycloak');
    const { child, output } = await start({
      PORT: String(port),
      DATA_DIR: join(dir, 'data'),
      KEYCLOAK_PORT: String(keycloakPort),
      KEYCLOAK_MANAGEMENT_PORT: String(await freePort()),
      KEYCLOAK_DATA_DIR: keycloakDataDir,
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const pid = Number((await readFile(join(keycloakDataDir, 'keycloak.pid'), 'utf8')).split(' ')[0]);
      process.kill(-pid, 'SIGKILL');
      // Bounded, so that a stack that does not notice fails here rather than hanging the suite.
      const stillRunning = new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 60_000).unref());
      assert.equal(await Promise.race([exited, stillRunning]), 1, output());
      assert.match(output(), /Keycloak stopped \(by SIGKILL\)/);
      assert.equal(await answers(`http://127.0.0.1:${port}/health`), false, 'the server was stopped with it');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('MCP_AUTH_PROVIDER=key without a terminal: the server alone, no key created or printed, the summary says how to create one', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mcp-start-key-'));
    const dataDir = join(dir, 'data');
    const env = { PORT: String(await freePort()), DATA_DIR: dataDir, MCP_AUTH_PROVIDER: 'key' };
    // PORT=0, as the README allows: pnpm start picks the port and says which.
    const first = await start({ ...env, PORT: '0' });
    try {
      assert.doesNotMatch(first.output(), /Keycloak/);
      // stdout is a pipe here: whatever reads it (a log collector) must not get a secret.
      assert.doesNotMatch(first.output(), /mcpk_|Demo key/);
      const port = /Expenses MCP server +http:\/\/localhost:(\d+)\/mcp/.exec(first.output())?.[1];
      assert.ok(port && port !== '0', first.output());
      // The commands printed are the ones that reach this DATA_DIR, not the default .data.
      const created = /No API key yet .*Create one: (DATA_DIR=\S+ pnpm keys create --user demo-user)/.exec(
        first.output(),
      );
      assert.ok(created, first.output());
      assert.equal(created[1], `DATA_DIR=${dataDir} pnpm keys create --user demo-user`);
      // A second pnpm start on the same DATA_DIR and another PORT stops at once, naming the first.
      const second = await startUntilExit({ ...env, PORT: String(await freePort()) });
      assert.equal(second.code, 1, second.output);
      assert.match(second.output, /in use by process \d+: another pnpm start/);
      assert.doesNotMatch(second.output, /The MCP server stopped/, 'no second server was started');
      // On the same PORT too (`pnpm start` run twice): the process is named, not only the port.
      const again = await startUntilExit({ ...env, PORT: port });
      assert.equal(again.code, 1, again.output);
      assert.match(again.output, /in use by process \d+: another pnpm start/);
    } finally {
      assert.equal(await interrupt(first.child), 0);
    }
    assert.deepEqual(await keys(dataDir, 'list'), { code: 0, output: 'No keys.\n' }, 'no key nobody saw');
    await rm(dir, { recursive: true, force: true });
  });

  test('MCP_AUTH_PROVIDER=key while a keys command has the embedded database open: pnpm start waits for it, then starts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mcp-start-wait-'));
    const dataDir = join(dir, 'data');
    // A tool that owns the files, as `pnpm keys create` does while no server runs, until told.
    const database = join(ROOT, 'packages/database/src/index.ts');
    const tool = spawn(
      process.execPath,
      [
        '-e',
        `import(${JSON.stringify(database)}).then(async (m) => { const db = await m.openDatabase({ dataDir: process.argv[1] }); console.log('open'); await new Promise((r) => process.stdin.once('data', r)); await db.close(); process.exit(0); })`,
        dataDir,
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    const toolExited = new Promise((resolve) => tool.once('exit', resolve));
    try {
      await new Promise<void>((resolve, reject) => {
        tool.stdout?.on('data', (chunk: Buffer) => chunk.toString().includes('open') && resolve());
        tool.once('exit', (code) => reject(new Error(`the tool exited (${code}) before it opened the database`)));
      });
      let toldToFinish = false;
      const started = await start(
        { PORT: String(await freePort()), DATA_DIR: dataDir, MCP_AUTH_PROVIDER: 'key' },
        (output) => {
          // The tool finishes once pnpm start says it waits for it.
          if (!toldToFinish && output.includes('Waiting for process')) {
            toldToFinish = true;
            tool.stdin?.end('done\n');
          }
        },
      );
      try {
        assert.match(started.output(), new RegExp(`Waiting for process ${tool.pid}, which has the embedded database`));
        assert.doesNotMatch(started.output(), /in use by process/);
      } finally {
        assert.equal(await interrupt(started.child), 0);
      }
    } finally {
      tool.kill();
      await toolExited;
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('keycloak mode with a realm of your own (KEYCLOAK_REALM_URL): no local Keycloak, the summary names none', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mcp-start-own-realm-'));
    // A realm nobody answers for: the server starts (its keys are fetched later), Keycloak does not.
    const env = {
      DATA_DIR: join(dir, 'data'),
      KEYCLOAK_DATA_DIR: join(dir, 'keycloak'),
      KEYCLOAK_REALM_URL: 'http://127.0.0.1:9/realms/own',
    };
    try {
      for (const [mode, why] of [
        ['keycloak', 'named'],
        // Blank is unset, as the server reads it: the stack's mode, keycloak (not the server's key).
        ['  ', 'blank'],
      ] as const) {
        const own = await start({ ...env, PORT: String(await freePort()), MCP_AUTH_PROVIDER: mode });
        try {
          assert.match(own.output(), /\(auth: keycloak\)/, why);
          assert.doesNotMatch(own.output(), /Keycloak realm|Keycloak is ready/, why);
        } finally {
          assert.equal(await interrupt(own.child), 0);
        }
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('MCP_AUTH_PROVIDER=key on a terminal: the first run shows a demo key once; no later run makes another, even with every key revoked', async () => {
    const first = await onTerminal('pnpm start', 'mcp-start-key-tty-');
    let demoKey = '';
    try {
      const summary = await untilTerminalSummary(first);
      demoKey = /Demo key for "demo-user".*\r?\n\s+(mcpk_\S+)/.exec(summary)?.[1] ?? '';
      assert.ok(demoKey, `a demo key is shown:\n${summary}`);
      const listed = await postMcp(
        `http://127.0.0.1:${first.port}/mcp`,
        { jsonrpc: '2.0', id: 1, method: 'tools/list' },
        { authorization: `Bearer ${demoKey}` },
      );
      assert.equal(listed.status, 200, 'the demo key works');
    } finally {
      first.typeCtrlC();
    }
    assert.equal(await first.exited, 0, first.output());
    assert.doesNotMatch(await readFile(join(first.dataDir, 'server.log'), 'utf8'), /mcpk_/, 'not in the request log');

    // What an operator does after a leak: revoke every key.
    const id = /(key_[0-9a-f]+) +demo-user/.exec((await keys(first.dataDir, 'list')).output)?.[1] ?? '';
    assert.equal((await keys(first.dataDir, 'revoke', id)).code, 0);

    const second = await onTerminal('pnpm start', 'mcp-start-key-tty-', { dataDir: first.dataDir });
    try {
      const summary = await untilTerminalSummary(second);
      assert.doesNotMatch(summary, /Demo key|mcpk_/, 'no new key after a revocation');
      // The command reaches this DATA_DIR, not the default .data.
      assert.ok(
        summary.includes(
          `No active API key: every key is revoked or expired. Create one: DATA_DIR=${first.dataDir} pnpm keys create --user demo-user`,
        ),
        summary,
      );
    } finally {
      second.typeCtrlC();
    }
    assert.equal(await second.exited, 0, second.output());
    const listed = (await keys(first.dataDir, 'list')).output;
    assert.equal(listed.match(/key_[0-9a-f]+/g)?.length, 1, `still the one revoked key:\n${listed}`);
    assert.match(listed, /demo-user .* revoked /);
    await first.remove();
    await second.remove();
  });

  test('MCP_AUTH_PROVIDER=key on a terminal: a first run stopped before its summary makes no key nobody saw; the next run shows one', async () => {
    const first = await onTerminal('node scripts/start.ts', 'mcp-start-key-early-');
    // The log file is made just before the server is spawned; the server then takes a second
    // or more to open the embedded database, so this Ctrl-C comes before the summary.
    for (let waited = 0; !existsSync(join(first.dataDir, 'server.log')); waited += 10) {
      if (waited > 120_000 || first.child.exitCode !== null) throw new Error(`no server started:\n${first.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    first.typeCtrlC();
    assert.equal(await first.exited, 0, first.output());
    assert.doesNotMatch(first.output(), /Ctrl-C stops everything|mcpk_/, 'stopped before the summary');
    assert.match((await keys(first.dataDir, 'list')).output, /^No keys\./, 'no key was made');

    const second = await onTerminal('node scripts/start.ts', 'mcp-start-key-early-', { dataDir: first.dataDir });
    try {
      const summary = await untilTerminalSummary(second);
      assert.match(summary, /Demo key for "demo-user".*\r?\n\s+mcpk_\S+/, summary);
    } finally {
      second.typeCtrlC();
    }
    assert.equal(await second.exited, 0, second.output());
    await first.remove();
    await second.remove();
  });

  test('a closed terminal (SIGHUP) stops pnpm start as Ctrl-C does: the server drains, the database is closed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mcp-start-hup-'));
    const dataDir = join(dir, 'data');
    try {
      const { child } = await start({ MCP_AUTH_PROVIDER: 'key', PORT: String(await freePort()), DATA_DIR: dataDir });
      let output = '';
      child.stdout?.on('data', (chunk) => (output += chunk));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGHUP');
      assert.equal(await exited, 0, output);
      assert.match(output, /Stopped\./);
      assert.ok(!existsSync(join(dataDir, 'embedded.lock')), 'the embedded database was closed, its lock released');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a request log that cannot be written costs the log, not the service', async () => {
    // What a full disk does to the log (ENOSPC) is what any failed write does: here the log's
    // path is a folder (EISDIR). The server answers a full disk itself; pnpm start must not die of it.
    const dir = await mkdtemp(join(tmpdir(), 'mcp-start-log-'));
    const dataDir = join(dir, 'data');
    await mkdir(join(dataDir, 'server.log'), { recursive: true });
    const terminal = await onTerminal('node scripts/start.ts', 'mcp-start-log-', { dataDir });
    try {
      await untilTerminalSummary(terminal);
      for (let waited = 0; !terminal.output().includes('cannot be written'); waited += 100) {
        if (waited > 10_000) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.match(
        terminal.output(),
        /The request log .*server\.log cannot be written \(EISDIR\); the server goes on without it/,
      );
      for (let request = 0; request < 3; request++) {
        assert.ok(await answers(`http://127.0.0.1:${terminal.port}/health`), 'the server still answers');
      }
      assert.equal(terminal.child.exitCode, null, 'pnpm start still runs');
    } finally {
      terminal.typeCtrlC();
    }
    assert.equal(await terminal.exited, 0, terminal.output());
    await terminal.remove();
    await rm(dir, { recursive: true, force: true });
  });

  test('a program on [::1] at the port is found before anything starts: localhost may reach it first', async () => {
    const port = await freePort();
    const other = createServer();
    // This machine has IPv6 loopback; without it there is nothing to find (and start.ts skips ::1).
    await new Promise<void>((resolve, reject) => {
      other.once('error', reject);
      other.listen(port, '::1', resolve);
    });
    try {
      const dir = await mkdtemp(join(tmpdir(), 'mcp-start-v6-'));
      // A start that misses it serves on 127.0.0.1 and never exits by itself.
      const { code, output } = await startUntilExit({
        MCP_AUTH_PROVIDER: 'key',
        PORT: String(port),
        DATA_DIR: join(dir, 'data'),
      });
      assert.equal(code, 1, output);
      assert.match(output, new RegExp(`Port ${port} on ::1 is in use \\(EADDRINUSE\\)`));
      assert.doesNotMatch(output, /Expenses MCP server/, 'no summary sends anyone to it');
      await rm(dir, { recursive: true, force: true });
    } finally {
      other.close();
    }
  });

  test('a HOST this machine does not have is named as the problem, not the port', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mcp-start-host-'));
    try {
      // TEST-NET-2 (RFC 5737): no machine has it.
      const { code, output } = await startUntilExit({
        MCP_AUTH_PROVIDER: 'key',
        HOST: '198.51.100.77',
        PORT: String(await freePort()),
        DATA_DIR: join(dir, 'data'),
      });
      assert.equal(code, 1, output);
      assert.match(
        output,
        /HOST 198\.51\.100\.77 cannot be listened on \(EADDRNOTAVAIL\): it is not an address of this machine/,
      );
      assert.doesNotMatch(output, /is in use|set PORT/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a data folder that cannot be used ends with a message naming DATA_DIR, not a stack trace', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mcp-start-bad-'));
    const notAFolder = join(dir, 'file');
    await writeFile(notAFolder, 'not a folder');
    const { code, output } = await startUntilExit({
      MCP_AUTH_PROVIDER: 'key',
      PORT: String(await freePort()),
      DATA_DIR: notAFolder,
    });
    assert.equal(code, 1, output);
    assert.match(output, new RegExp(`The database could not be opened \\(DATA_DIR ${notAFolder}\\)`));
    assert.doesNotMatch(output, /\n\s+at /, 'no stack trace');
    await rm(dir, { recursive: true, force: true });
  });

  test('on a terminal: request logs go to $DATA_DIR/server.log, not through the summary; a typed Ctrl-C exits 0 and pnpm stays quiet', async () => {
    const terminal = await onTerminal('pnpm start', 'mcp-start-tty-');
    try {
      await untilTerminalSummary(terminal);
      assert.ok(await answers(`http://127.0.0.1:${terminal.port}/health`));
      assert.match(terminal.output(), new RegExp(`Request log +${join(terminal.dataDir, 'server.log')}`));
    } finally {
      terminal.typeCtrlC();
    }
    assert.equal(await terminal.exited, 0, terminal.output());
    assert.doesNotMatch(terminal.output(), /ELIFECYCLE|Command failed/);
    assert.doesNotMatch(terminal.output(), /"level":/, 'no JSON log line on the terminal');
    const log = await readFile(join(terminal.dataDir, 'server.log'), 'utf8');
    assert.match(log, /"msg":"request".*"path":"\/health"/, 'the request log is in the file');
    await terminal.remove();
  });

  test('on a terminal: a typed Ctrl-C stops pnpm start:server with exit 0 and pnpm stays quiet', async () => {
    const terminal = await onTerminal('pnpm start:server', 'mcp-start-server-tty-');
    try {
      for (let waited = 0; !(await answers(`http://127.0.0.1:${terminal.port}/health`)); waited += 200) {
        if (waited > 120_000 || terminal.child.exitCode !== null) {
          throw new Error(`the server did not answer:\n${terminal.output()}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    } finally {
      terminal.typeCtrlC();
    }
    assert.equal(await terminal.exited, 0, terminal.output());
    assert.match(terminal.output(), /"msg":"shutting down"/);
    assert.doesNotMatch(terminal.output(), /ELIFECYCLE|Command failed/);
    assert.equal(await answers(`http://127.0.0.1:${terminal.port}/health`), false, 'the server stopped');
    await terminal.remove();
  });

  test('MCP_AUTH_PROVIDER=oauth_proxy runs the proxy in front of the local Keycloak with no other setting', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mcp-start-proxy-'));
    const port = await freePort();
    const keycloakPort = await freePort();
    const { child, output } = await start({
      MCP_AUTH_PROVIDER: 'oauth_proxy',
      PORT: String(port),
      DATA_DIR: join(dir, 'data'),
      KEYCLOAK_PORT: String(keycloakPort),
      KEYCLOAK_MANAGEMENT_PORT: String(await freePort()),
      KEYCLOAK_DATA_DIR: join(dir, 'keycloak'),
      // The README's advice for anything beyond a demo: the realm's proxy client gets this
      // secret, and the proxy must sign in upstream with it, not with the demo one.
      KEYCLOAK_PROXY_CLIENT_SECRET: 'start-test-proxy-secret',
    });
    const browser = await launchChromium();
    const callback = await startCallbackServer();
    try {
      assert.match(output(), /auth: oauth_proxy/);
      assert.match(output(), new RegExp(`Keycloak realm +http://localhost:${keycloakPort}/realms/mcp`));
      const metadata = (await (
        await fetch(`http://localhost:${port}/.well-known/oauth-authorization-server`)
      ).json()) as { issuer: string; registration_endpoint: string };
      assert.equal(metadata.issuer, `http://localhost:${port}`);
      assert.equal(metadata.registration_endpoint, `http://localhost:${port}/register`);
      const ready = await fetch(`http://localhost:${port}/ready`);
      assert.equal(ready.status, 200, 'the upstream realm is reachable');
      // The whole sign-in: consent here, Keycloak's login, the proxy's code exchange upstream.
      const client = await connectWithOAuth(
        `http://localhost:${port}/mcp`,
        new ProxyOAuthProvider(browser, callback, { username: 'alice', password: 'alice-password' }),
      );
      const { tools } = await client.listTools();
      assert.ok(tools.some((tool) => tool.name === 'get_user_expenses'));
      await client.close();
    } finally {
      await callback.close();
      await browser.close();
      assert.equal(await interrupt(child), 0);
    }
    await rm(dir, { recursive: true, force: true });
  });
});
