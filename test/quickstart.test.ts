import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { REALM_CLIENTS } from '@mcp-auth-stack/keycloak';
import { type CallbackServer, freePort, postMcp, startCallbackServer } from '@mcp-auth-stack/testing';
import { launchChromium } from '@mcp-auth-stack/testing/browser';
import { BrowserOAuthProvider, connectWithOAuth } from '@mcp-auth-stack/testing/mcp-oauth';
import { messageText, startScriptedLlm } from '@mcp-auth-stack/testing/scripted-llm';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';

/**
 * The README's Quick start, run literally: the command lines come from README.md's code blocks
 * (so the README cannot drift from what is tested) and run in a fresh clone of this working
 * tree, in a temporary folder, with the environment a new user has: no DATA_DIR, no test
 * variables, relative paths, the default ports. Only when 8000, 8080 or 9000 are taken (other
 * test runs share the machine) does it set PORT, KEYCLOAK_PORT and KEYCLOAK_MANAGEMENT_PORT,
 * as the README says to, and it reports that. Chromium signs in as alice; Ctrl-C is a SIGINT
 * to the process group, as a terminal sends it.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const execFileAsync = promisify(execFile);
const DEFAULT_PORTS = { PORT: 8000, KEYCLOAK_PORT: 8080, KEYCLOAK_MANAGEMENT_PORT: 9000 };
const SUMMARY_END = 'Ctrl-C stops everything.';
const alice = { username: 'alice', password: 'alice-password' };

// ---------------------------------------------------------------- the README's commands

/** The command lines of the README's code blocks under `## <heading>`, comments dropped. */
function commandsOf(readme: string, heading: string): string[][] {
  const start = readme.indexOf(`\n## ${heading}\n`);
  assert.ok(start >= 0, `README has a section "${heading}"`);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end === -1 ? undefined : end);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((block) =>
    (block[1] as string)
      .split('\n')
      .map((line) => line.replace(/\s+#.*$/, '').trim())
      .filter(Boolean),
  );
}

interface Command {
  line: string;
  env: Record<string, string>;
  argv: string[];
}

/**
 * `NAME=value ... program args`, as a shell reads these simple lines. Anything a shell would
 * treat specially makes the test fail, so a new README line gets looked at, not half-run.
 */
function parse(line: string): Command {
  // A double-quoted word is one word, as a shell reads it, when nothing inside it expands.
  const unquoted = line.replace(/"[^"$`\\]*"/g, 'quoted');
  assert.doesNotMatch(unquoted, /["'`$|&;<>()\\*?]/, `a README command this test can run literally: ${line}`);
  const words = (line.match(/"[^"]*"|\S+/g) ?? []).map((word) => (word.startsWith('"') ? word.slice(1, -1) : word));
  const env: Record<string, string> = {};
  while (words[0] && /^[A-Z_][A-Z0-9_]*=/.test(words[0])) {
    const [name, ...value] = (words.shift() as string).split('=');
    env[name as string] = value.join('=');
  }
  return { line, env, argv: words };
}

// ---------------------------------------------------------------- a new user's shell

/**
 * What a new user's login shell has: no DATA_DIR, no TEST_*, no NODE_TEST_CONTEXT, no npm_*.
 * Kept: the machine's own settings a user has too (where Java is, where caches and the
 * Keycloak download come from, proxies), so the clone does not fetch Keycloak a second time.
 */
function userEnvironment(): Record<string, string> {
  const kept = [
    ...['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LC_ALL', 'TMPDIR', 'JAVA_HOME', 'XDG_CACHE_HOME'],
    ...['KEYCLOAK_CACHE_DIR', 'KEYCLOAK_DIST_URL', 'KEYCLOAK_DIST_SHA1'],
    ...['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy'],
  ];
  const env: Record<string, string> = {};
  for (const name of kept) if (process.env[name]) env[name] = process.env[name] as string;
  return env;
}

interface Running {
  child: ChildProcess;
  output: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Run on a pseudo-terminal: Ctrl-C is typed into it. */
  terminal: boolean;
}

/**
 * Starts a README line as a terminal would: its own process group, in the clone. With
 * `terminal`, on a real pseudo-terminal (`script`), for what a person at a terminal sees: what
 * `pnpm start` shows only there (a demo key). `exec`: script runs the line through `sh -c`.
 */
function run(
  clone: string,
  command: Command,
  extraEnv: Record<string, string>,
  { terminal = false }: { terminal?: boolean } = {},
): Running {
  const [program, ...args] = command.argv;
  const options = {
    cwd: clone,
    env: { ...userEnvironment(), ...extraEnv, ...command.env },
    detached: true,
  };
  // The words hold no quote (parse refuses them): single quotes keep each one word.
  const child = terminal
    ? spawn('script', ['-qfec', `exec ${command.argv.map((word) => `'${word}'`).join(' ')}`, '/dev/null'], {
        ...options,
        stdio: ['pipe', 'pipe', 'pipe'],
      })
    : spawn(program as string, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (chunk) => (output += chunk));
  child.stderr?.on('data', (chunk) => (output += chunk));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, output: () => output, exit, terminal };
}

async function completes(clone: string, command: Command, extraEnv: Record<string, string> = {}): Promise<string> {
  const running = run(clone, command, extraEnv);
  const { code } = await running.exit;
  assert.equal(code, 0, `${command.line} exited with ${code}:\n${running.output()}`);
  return running.output();
}

async function untilSummary(running: Running, timeoutMs = 540_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (!running.output().includes(SUMMARY_END)) {
    const ended = await Promise.race([running.exit, new Promise((resolve) => setTimeout(resolve, 250, 'waiting'))]);
    if (ended !== 'waiting')
      throw new Error(`exited before its summary (${JSON.stringify(ended)}):\n${running.output()}`);
    if (Date.now() > deadline) throw new Error(`no summary within ${timeoutMs / 1000} s:\n${running.output()}`);
  }
  return running.output();
}

/**
 * Ctrl-C: SIGINT to the whole foreground process group (pnpm, node, its children); on a
 * pseudo-terminal, ^C typed into it, which its driver turns into that SIGINT.
 */
async function ctrlC(running: Running): Promise<Stopped> {
  if (running.child.exitCode === null && running.child.signalCode === null) {
    if (running.terminal) running.child.stdin?.write('\x03');
    else process.kill(-(running.child.pid as number), 'SIGINT');
  }
  const { code } = await running.exit;
  return { code, output: running.output() };
}

type Stopped = { code: number | null; output: string };

/** Exit 0 after Ctrl-C, and pnpm quiet about it. */
function stoppedCleanly({ code, output }: Stopped): void {
  assert.equal(code, 0, output.slice(-2000));
  assert.doesNotMatch(output, /ELIFECYCLE|Command failed/);
}

async function portFree(port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const probe = createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

const answers = (url: string) =>
  fetch(url).then(
    () => true,
    () => false,
  );

// ---------------------------------------------------------------- MCP

async function call(client: Client, name: string, args: Record<string, unknown> = {}) {
  const result = (await client.callTool({ name, arguments: args })) as CallToolResult;
  assert.notEqual(result.isError, true, JSON.stringify(result.content));
  return result.structuredContent as Record<string, unknown>;
}

async function descriptions(client: Client): Promise<string[]> {
  const { expenses } = (await call(client, 'get_user_expenses')) as { expenses: { description: string }[] };
  return expenses.map((expense) => expense.description);
}

async function withKey(mcpUrl: string, key: string): Promise<Client> {
  const client = new Client({ name: 'quickstart-key', version: '1' });
  await client.connect(
    new StreamableHTTPClientTransport(new URL(mcpUrl), {
      requestInit: { headers: { authorization: `Bearer ${key}` } },
    }),
  );
  return client;
}

const expense = (description: string) => ({
  date: '2026-11-30',
  amount: 12.5,
  category: 'food',
  description,
  payment_method: 'visa',
});

// ---------------------------------------------------------------- the test

let readme: string;
let clone: string;
let quickstart: Command[];
/** Ports for lines that do not set their own; empty when the defaults are free. */
let portEnv: Record<string, string> = {};
let browser: Awaited<ReturnType<typeof launchChromium>>;
let callback: CallbackServer;
const startedAt = Date.now();

before(
  async () => {
    readme = await readFile(join(ROOT, 'README.md'), 'utf8');
    quickstart = commandsOf(readme, 'Quick start').flat().map(parse);
    const free = await Promise.all(Object.values(DEFAULT_PORTS).map(portFree));
    if (free.includes(false)) {
      portEnv = {
        PORT: String(await freePort()),
        KEYCLOAK_PORT: String(await freePort()),
        KEYCLOAK_MANAGEMENT_PORT: String(await freePort()),
      };
      console.log(`# 8000, 8080 or 9000 is taken on this machine: the test sets ${JSON.stringify(portEnv)}`);
    }
    clone = join(await mkdtemp(join(tmpdir(), 'quickstart-')), 'mcp-auth-stack');
    await cloneWorkingTree(clone);
    browser = await launchChromium();
    callback = await startCallbackServer();
  },
  { timeout: 300_000 },
);

after(async () => {
  await callback?.close();
  await browser?.close();
  if (clone) await rm(dirname(clone), { recursive: true, force: true });
  console.log(`# quickstart: ${Math.round((Date.now() - startedAt) / 1000)} s in all`);
});

/**
 * `git clone` of this repository, then the working tree's uncommitted changes on top (tracked
 * changes, new files that are not ignored, deletions), so the test runs what is in front of
 * the developer, not the last commit only.
 */
async function cloneWorkingTree(target: string): Promise<void> {
  await execFileAsync('git', ['clone', '--quiet', '--no-hardlinks', ROOT, target]).catch((error: Error) => {
    throw new Error(`this test clones the repository with git; ${ROOT} could not be cloned: ${error.message}`);
  });
  const git = async (...args: string[]) =>
    (await execFileAsync('git', args, { cwd: ROOT, maxBuffer: 16 * 1024 * 1024 })).stdout.split('\0').filter(Boolean);
  for (const file of await git('ls-files', '-z', '--modified', '--others', '--exclude-standard')) {
    const source = join(ROOT, file);
    if (!(await stat(source).catch(() => undefined))?.isFile()) continue; // deleted: below
    await mkdir(dirname(join(target, file)), { recursive: true });
    await copyFile(source, join(target, file));
  }
  for (const file of await git('ls-files', '-z', '--deleted')) await rm(join(target, file), { force: true });
}

function quickstartLine(description: string, matches: (command: Command) => boolean): Command {
  const found = quickstart.filter(matches);
  assert.equal(
    found.length,
    1,
    `the Quick start has one line that ${description}: ${quickstart.map((c) => c.line).join(' | ')}`,
  );
  return found[0] as Command;
}

const isPnpm = (command: Command, ...argv: string[]) =>
  command.argv[0] === 'pnpm' && JSON.stringify(command.argv.slice(1)) === JSON.stringify(argv);

describe("the README's Quick start, in a fresh clone", () => {
  test("Configuration's commands are the Quick start's, which this test runs", () => {
    // Configuration repeats the moved-ports line for its table of variables.
    const configuration = commandsOf(readme, 'Configuration').flat();
    assert.ok(configuration.length > 0, 'Configuration shows a command');
    const runHere = new Set(quickstart.map((command) => command.line));
    assert.deepEqual(
      configuration.filter((line) => !runHere.has(line)),
      [],
    );
  });

  test('every line of it is one this test runs (pnpm test aside: it is the suite running this)', () => {
    const known = quickstart.filter(
      (command) =>
        isPnpm(command, 'install') ||
        isPnpm(command, 'test') ||
        isPnpm(command, 'start') ||
        (command.argv[0] === 'pnpm' && command.argv[1] === 'keys'),
    );
    assert.deepEqual(
      quickstart.filter((command) => !known.includes(command)).map((command) => command.line),
      [],
    );
  });

  test('pnpm install', { timeout: 300_000 }, async () => {
    // From the local store where it can: the same packages, without asking the registry again.
    await completes(
      clone,
      quickstartLine('installs', (c) => isPnpm(c, 'install')),
      {
        npm_config_prefer_offline: 'true',
      },
    );
  });

  let firstMcpUrl = '';
  test('pnpm start: Keycloak and the server; alice signs in with Chromium, adds and lists an expense; Ctrl-C exits 0', {
    // The first Keycloak on a new machine downloads and builds it (a few minutes).
    timeout: 600_000,
  }, async () => {
    const command = quickstartLine(
      'starts the whole stack',
      (c) => isPnpm(c, 'start') && Object.keys(c.env).length === 0,
    );
    let stopped: Stopped;
    const running = run(clone, command, portEnv);
    try {
      const summary = await untilSummary(running);
      const port = portEnv.PORT ?? String(DEFAULT_PORTS.PORT);
      firstMcpUrl = `http://localhost:${port}/mcp`;
      assert.match(summary, new RegExp(`Expenses MCP server +${firstMcpUrl} +\\(auth: keycloak\\)`));
      assert.match(
        summary,
        new RegExp(`Database +embedded, in ${join(clone, '.data')}\\n`),
        'relative DATA_DIR, absolute here',
      );
      assert.match(summary, /alice \/ alice-password/);
      const client = await connectWithOAuth(firstMcpUrl, new BrowserOAuthProvider(browser, callback, alice));
      try {
        await call(client, 'add_user_expense', expense('quickstart lunch'));
        assert.deepEqual(await descriptions(client), ['quickstart lunch']);
      } finally {
        await client.close();
      }
    } finally {
      stopped = await ctrlC(running);
    }
    stoppedCleanly(stopped);
    assert.equal(await answers(firstMcpUrl.replace('/mcp', '/health')), false, 'the server stopped');
  });

  test('on other ports, as the README moves them: the kept realm follows, and alice finds her expense', {
    timeout: 400_000,
  }, async () => {
    const written = quickstartLine('moves the ports', (c) => isPnpm(c, 'start') && 'PORT' in c.env);
    assert.ok(firstMcpUrl, 'runs after the first start');
    const moved: Record<string, string> = {};
    for (const [name, value] of Object.entries(written.env)) {
      // The README's ports, unless this machine has them taken.
      moved[name] = (await portFree(Number(value))) ? value : String(await freePort());
    }
    let stopped: Stopped;
    const running = run(clone, { ...written, env: moved }, {});
    try {
      const summary = await untilSummary(running);
      const mcpUrl = `http://localhost:${moved.PORT}/mcp`;
      assert.match(summary, new RegExp(`Expenses MCP server +${mcpUrl}`));
      if (moved.KEYCLOAK_PORT)
        assert.match(summary, new RegExp(`Keycloak realm +http://localhost:${moved.KEYCLOAK_PORT}/`));
      assert.match(
        summary,
        new RegExp(`make "expenses"\\n +\\{"type":"http","url":"${mcpUrl}"\\}`),
        'VS Code gets the entry for this port',
      );
      const client = await connectWithOAuth(mcpUrl, new BrowserOAuthProvider(browser, callback, alice));
      try {
        assert.deepEqual(await descriptions(client), ['quickstart lunch'], 'the same alice (sub), the same data');
      } finally {
        await client.close();
      }
    } finally {
      stopped = await ctrlC(running);
    }
    stoppedCleanly(stopped);
  });

  test('MCP_AUTH_PROVIDER=key pnpm start and the README key commands: create, list, revoke; data kept across a restart', {
    timeout: 300_000,
  }, async () => {
    const keyStart = quickstartLine('starts key mode', (c) => isPnpm(c, 'start') && c.env.MCP_AUTH_PROVIDER === 'key');
    const port = portEnv.PORT ?? String(DEFAULT_PORTS.PORT);
    const mcpUrl = `http://localhost:${port}/mcp`;
    // The Access modes section's key commands, after the Quick start's own.
    const accessModes = commandsOf(readme, 'Access modes (`MCP_AUTH_PROVIDER`)').flat();
    const keyLines = [...new Set([...quickstart.map((c) => c.line), ...accessModes])]
      .filter((line) => line.startsWith('pnpm keys '))
      .map(parse);
    assert.ok(
      keyLines.some((command) => command.argv[2] === 'revoke'),
      'the README shows pnpm keys revoke',
    );

    let stopped: Stopped;
    // In a terminal, as a person runs it: only there does pnpm start show a key.
    const first = run(clone, keyStart, portEnv, { terminal: true });
    let demoKey = '';
    try {
      const summary = await untilSummary(first);
      assert.match(summary, new RegExp(`Expenses MCP server +${mcpUrl} +\\(auth: key\\)`));
      demoKey = /Demo key for "demo-user".*\r?\n\s+(mcpk_\S+)/.exec(summary)?.[1] ?? '';
      assert.ok(demoKey, `a demo key is printed once:\n${summary}`);
      const demo = await withKey(mcpUrl, demoKey);
      try {
        await call(demo, 'add_user_expense', expense('key-mode taxi'));
        assert.deepEqual(await descriptions(demo), ['key-mode taxi']);
      } finally {
        await demo.close();
      }

      // Next to the running server, as the README says: each line as written.
      let aliceKey = '';
      let aliceKeyId = '';
      let carolKey = '';
      for (const command of keyLines) {
        if (command.argv[2] === 'revoke') continue;
        if (command.argv[2] === 'list' && command.line.includes('[')) {
          // `pnpm keys list [--user alice]`: the line without and with its optional part.
          for (const variant of [command.line.replace(/\s*\[.*\]/, ''), command.line.replace(/[[\]]/g, '')]) {
            const listed = await completes(clone, parse(variant));
            assert.match(listed, /alice +laptop +expenses:read expenses:write/);
            // `--scope` replaces the default: carol's key holds what was named, and nothing else.
            if (!variant.includes('--user')) {
              assert.match(listed, /carol +\S* *expenses:read expenses:admin +\d/);
              // `--expires-in 90d`: its expiry is shown, and the key is active until then.
              assert.match(listed, /ci-bot +expenses:read expenses:write +\S+ +never +\d{4}-\S+ +active/);
            }
            aliceKeyId = /(key_[0-9a-f]+) +alice +laptop/.exec(listed)?.[1] ?? aliceKeyId;
          }
          continue;
        }
        const output = await completes(clone, command);
        if (command.argv[2] === 'create' && command.line.includes('--user alice')) {
          aliceKey = output.trim().split('\n').at(-1) ?? '';
        }
        if (command.argv[2] === 'create' && command.line.includes('--user carol')) {
          carolKey = output.trim().split('\n').at(-1) ?? '';
        }
      }
      assert.match(aliceKey, /^mcpk_/, 'pnpm keys create prints the key on the last line');
      assert.match(aliceKeyId, /^key_/, 'pnpm keys list shows its id');
      // "carol above can read and see statistics, not write".
      const carolClient = await withKey(mcpUrl, carolKey);
      const carolTools = (await carolClient.listTools()).tools.map((tool) => tool.name);
      await carolClient.close();
      assert.ok(carolTools.includes('get_expense_stats'), carolTools.join(' '));
      assert.ok(carolTools.includes('get_user_expenses'), carolTools.join(' '));
      assert.ok(!carolTools.includes('add_user_expense'), carolTools.join(' '));
      const aliceClient = await withKey(mcpUrl, aliceKey);
      assert.deepEqual(await descriptions(aliceClient), [], "alice (by key) sees none of demo-user's expenses");
      await aliceClient.close();

      const revoke = keyLines.find((command) => command.argv[2] === 'revoke') as Command;
      // The README's placeholder id, replaced by the real one.
      const revoked = await completes(clone, parse(revoke.line.replace(/key_[0-9a-f]+/, aliceKeyId)));
      assert.match(revoked, new RegExp(`Revoked ${aliceKeyId}`));
      const refused = await postMcp(
        mcpUrl,
        { jsonrpc: '2.0', id: 1, method: 'tools/list' },
        { authorization: `Bearer ${aliceKey}` },
      );
      assert.equal(refused.status, 401, 'a revoked key is refused at once');
    } finally {
      stopped = await ctrlC(first);
    }
    stoppedCleanly(stopped);

    const second = run(clone, keyStart, portEnv, { terminal: true });
    try {
      const summary = await untilSummary(second);
      assert.doesNotMatch(summary, /Demo key/, 'the demo key was shown once');
      const demo = await withKey(mcpUrl, demoKey);
      try {
        assert.deepEqual(await descriptions(demo), ['key-mode taxi'], 'the data and the key survived the restart');
      } finally {
        await demo.close();
      }
    } finally {
      stopped = await ctrlC(second);
    }
    stoppedCleanly(stopped);
  });

  test('"Keycloak, locally": pnpm keycloak and pnpm start:server by hand on the kept realm; pnpm keycloak --fresh re-imports it, alice keeps her id', {
    timeout: 600_000,
  }, async () => {
    const blocks = commandsOf(readme, 'Keycloak, locally and without Docker');
    const lines = blocks.flat();
    assert.deepEqual(
      lines.filter((line) => line.startsWith('pnpm keycloak')),
      ['pnpm keycloak', 'pnpm keycloak --fresh', 'pnpm keycloak'],
      'the section shows pnpm keycloak, --fresh, and pnpm keycloak again to run the two by hand',
    );
    const kept = parse('pnpm keycloak');
    const fresh = parse('pnpm keycloak --fresh');
    const byHand = lines.find((line) => line.includes('pnpm start:server'));
    assert.ok(byHand, 'the section runs the server by hand with pnpm start:server');
    const keycloakEnv = portEnv.KEYCLOAK_PORT
      ? { KEYCLOAK_PORT: portEnv.KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT: portEnv.KEYCLOAK_MANAGEMENT_PORT as string }
      : {};
    const port = portEnv.PORT ?? String(DEFAULT_PORTS.PORT);

    /** Keycloak from `keycloakLine`, then the server by hand against it; alice finds her expense. */
    const byHandWith = async (keycloakLine: Command, checks: (keycloakOutput: string) => Promise<void>) => {
      // With the same PORT as the server below: the realm is imported for the URL it will serve.
      const keycloak = run(clone, keycloakLine, { ...keycloakEnv, ...(portEnv.PORT ? { PORT: portEnv.PORT } : {}) });
      let stopped: Stopped;
      try {
        while (!keycloak.output().includes('Press Ctrl-C to stop.')) {
          const ended = await Promise.race([
            keycloak.exit,
            new Promise((resolve) => setTimeout(resolve, 250, 'waiting')),
          ]);
          if (ended !== 'waiting') throw new Error(`${keycloakLine.line} exited:\n${keycloak.output()}`);
        }
        // The README's realm URL, on the port Keycloak really has.
        const line = portEnv.KEYCLOAK_PORT ? byHand.replace(':8080/', `:${portEnv.KEYCLOAK_PORT}/`) : byHand;
        const server = run(clone, parse(line), portEnv.PORT ? { PORT: portEnv.PORT } : {});
        try {
          for (let waited = 0; !(await answers(`http://127.0.0.1:${port}/health`)); waited += 250) {
            if (waited > 60_000 || server.child.exitCode !== null) throw new Error(`no server:\n${server.output()}`);
            await new Promise((resolve) => setTimeout(resolve, 250));
          }
          const client = await connectWithOAuth(
            `http://localhost:${port}/mcp`,
            new BrowserOAuthProvider(browser, callback, alice),
          );
          try {
            assert.deepEqual(await descriptions(client), ['quickstart lunch'], 'alice finds her expense');
          } finally {
            await client.close();
          }
          await checks(keycloak.output());
        } finally {
          await ctrlC(server);
          // pnpm returns at once; the server closes the embedded database after it.
          for (let waited = 0; await answers(`http://127.0.0.1:${port}/health`); waited += 250) {
            if (waited > 30_000) break;
            await new Promise((resolve) => setTimeout(resolve, 250));
          }
        }
      } finally {
        stopped = await ctrlC(keycloak);
      }
      stoppedCleanly(stopped);
      assert.equal(await answers(`http://127.0.0.1:${port}/health`), false, 'the server stopped on Ctrl-C');
    };

    await byHandWith(kept, async (output) => {
      assert.doesNotMatch(output, /realm mcp imported/, 'the kept realm, not the file again');
      await agentLineRuns(port);
    });
    await byHandWith(fresh, async (output) => {
      assert.match(output, /realm mcp imported/, 'the realm file was imported again');
    });
  });
});

/**
 * The README's agent line with the OpenAI provider and the realm's service account, as written;
 * its placeholders (…) filled with the scripted model's key and the realm's demo secret, and the
 * model's URL pointed at the scripted OpenAI-compatible server (no model is reachable here).
 */
async function agentLineRuns(port: string) {
  const line = commandsOf(readme, 'The agent')
    .flat()
    .find((candidate) => candidate.includes('API_HOST=openai') && candidate.includes('MCP_AUTH=client_credentials'));
  assert.ok(line, 'the README shows the agent with OpenAI and client credentials');
  const command = parse(line);
  assert.deepEqual(Object.keys(command.env).sort(), ['API_HOST', 'MCP_AUTH', 'MCP_CLIENT_SECRET', 'OPENAI_API_KEY']);
  command.env.OPENAI_API_KEY = 'scripted-model-key';
  command.env.MCP_CLIENT_SECRET = REALM_CLIENTS.agent.demoSecret;
  const question = command.argv.at(-1) as string;
  const llm = await startScriptedLlm([
    { toolCalls: [{ name: 'get_user_expenses', arguments: { category: 'food' } }] },
    (request) => ({ content: `Scripted answer; the tool said: ${messageText(request.messages.at(-1))}` }),
  ]);
  try {
    const output = await completes(clone, command, {
      OPENAI_BASE_URL: llm.baseUrl,
      ...(port === String(DEFAULT_PORTS.PORT) ? {} : { MCP_SERVER_URL: `http://localhost:${port}/mcp` }),
    });
    assert.match(output, /Scripted answer; the tool said:/);
    assert.equal(llm.remaining(), 0, 'the model was asked twice: the question, then the tool result');
    assert.match(messageText(llm.requests[0]?.body.messages.at(-1)), new RegExp(question.replace('?', '\\?')));
    const toolResult = llm.requests[1]?.body.messages.find((message) => message.role === 'tool');
    assert.ok(toolResult, 'the server answered the tool call');
    assert.doesNotMatch(messageText(toolResult), /error|unauthori[sz]ed|forbidden/i, messageText(toolResult));
  } finally {
    await llm.close();
  }
}
