import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/**
 * pnpm runs a root script by its bare name (`pnpm keys`) only when the name is not one of its
 * own commands: `pnpm server` ran pnpm's hidden `server` command, printed nothing and exited 0,
 * so the README's `pnpm server` never started the MCP server. Every root script name is
 * checked against pnpm's commands, then run the way the README runs it.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const execFileAsync = promisify(execFile);

/**
 * pnpm 10's own commands, from its source (pnpm 10.34.8, `dist/pnpm.cjs`: every command
 * module's `commandNames`, and the names `pnpm/src/pnpm.ts` passes through to npm). Several are
 * hidden from `pnpm help -a` (`server`, `setup`, `recursive`, `get`, `set`, `ll`...), so the
 * help text cannot be the source. A name missing here is still caught by the run below.
 */
const PNPM_COMMANDS = new Set([
  // pnpm's command modules
  ...['add', 'approve-builds', 'audit', 'bin', 'c', 'cache', 'cat-file', 'cat-index', 'ci', 'clean-install'],
  ...['completion', 'config', 'create', 'dedupe', 'deploy', 'dislink', 'dlx', 'doctor', 'env', 'exec', 'fetch'],
  ...['find-hash', 'get', 'help', 'i', 'ic', 'ignored-builds', 'import', 'init', 'install', 'install-clean'],
  ...['install-test', 'it', 'la', 'licenses', 'link', 'list', 'll', 'ln', 'ls', 'm', 'multi', 'outdated', 'pack'],
  ...['patch', 'patch-commit', 'patch-remove', 'prune', 'publish', 'rb', 'rebuild', 'recursive', 'remove'],
  ...['restart', 'rm', 'root', 'run', 'run-script', 'self-update', 'server', 'set', 'setup', 'start', 'stop'],
  ...['store', 't', 'test', 'tst', 'un', 'uni', 'uninstall', 'unlink', 'up', 'update', 'upgrade', 'why'],
  // passed through to npm
  ...['access', 'adduser', 'bugs', 'deprecate', 'dist-tag', 'docs', 'edit', 'find', 'home', 'info', 'issues'],
  ...['login', 'logout', 'owner', 'ping', 'prefix', 'profile', 'pkg', 'repo', 's', 'se', 'search', 'set-script'],
  ...['show', 'star', 'stars', 'team', 'token', 'unpublish', 'unstar', 'v', 'version', 'view', 'whoami', 'xmas'],
]);
/** pnpm commands whose job is to run the package's script of the same name. */
const RUN_THEIR_SCRIPT = new Set(['start', 'test']);

let scripts: Record<string, string>;
let readme: string;
let project: string;

before(async () => {
  scripts = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> })
    .scripts;
  readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  // A project with the same script names, each printing which one ran: what `pnpm <name>`
  // does with a name is decided before the script's command matters.
  project = await mkdtemp(join(tmpdir(), 'pnpm-script-names-'));
  const probes = Object.fromEntries(
    Object.keys(scripts).map((name) => [
      name,
      'node -e "console.log(\'ran script \' + process.env.npm_lifecycle_event)"',
    ]),
  );
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'probe', private: true, scripts: probes }));
});

after(async () => {
  if (project) await rm(project, { recursive: true, force: true });
});

describe('root package.json scripts', () => {
  test('no script name is a pnpm command (except start and test, which run their script)', () => {
    const shadowed = Object.keys(scripts).filter((name) => PNPM_COMMANDS.has(name) && !RUN_THEIR_SCRIPT.has(name));
    assert.deepEqual(shadowed, [], `pnpm runs its own command for ${shadowed.join(', ')}, not the script`);
  });

  test('`pnpm <name>` runs the script of that name, for every root script', async () => {
    // Only names that passed the list above are run: a real pnpm command could have effects.
    const names = Object.keys(scripts).filter((name) => !PNPM_COMMANDS.has(name) || RUN_THEIR_SCRIPT.has(name));
    const results = await Promise.all(
      names.map(async (name) => {
        const { stdout } = await execFileAsync('pnpm', [name], {
          cwd: project,
          // No registry traffic, whatever a future command would try.
          env: { ...process.env, npm_config_registry: 'http://127.0.0.1:9/', npm_config_offline: 'true' },
          timeout: 60_000,
        }).catch((error: { stdout?: string }) => ({ stdout: error.stdout ?? '' }));
        return [name, stdout.includes(`ran script ${name}`)] as const;
      }),
    );
    assert.deepEqual(
      results.filter(([, ran]) => !ran).map(([name]) => name),
      [],
      'these names do not run their script',
    );
  });

  test('every `pnpm <word>` in the README is a root script or a pnpm command meant as one', () => {
    const used = new Set(
      [...readme.matchAll(/(?:^|[\s`(])pnpm ([a-z][a-z0-9:-]*)/gm)].map((match) => match[1] as string),
    );
    const meant = new Set(['install', 'add', 'exec', 'dlx']);
    const unknown = [...used].filter((word) => !(word in scripts) && !meant.has(word));
    assert.deepEqual(unknown, [], 'README commands that are neither a root script nor a pnpm command');
  });
});

describe('the Node.js floor', () => {
  const floorOf = (range: string) => /^>=(\d+\.\d+)\.0$/.exec(range)?.[1];

  test('package.json engines, scripts/ci/node.sh and the README name one floor, which the MCP Inspector CLI accepts', async () => {
    const engines = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { engines: { node: string } })
      .engines.node;
    const floor = floorOf(engines);
    assert.ok(floor, `engines.node is ">=X.Y.0", got ${engines}`);
    const [major, minor] = floor.split('.');
    const nodeSh = await readFile(join(ROOT, 'scripts/ci/node.sh'), 'utf8');
    assert.ok(nodeSh.includes(`a>${major}||(a===${major}&&b>=${minor})`), 'node.sh checks the same floor');
    assert.ok(nodeSh.includes(`Node.js ${floor}+ is required`), 'and says so');
    assert.match(readme, new RegExp(`Needs Node\\.js ${floor.replace('.', '\\.')} or newer`));
    // The tests run the Inspector CLI, whose own floor must not be above the project's.
    const inspector = JSON.parse(
      await readFile(join(ROOT, 'apps/server/node_modules/@modelcontextprotocol/inspector/package.json'), 'utf8'),
    ) as { engines: { node: string } };
    const needed = floorOf(inspector.engines.node);
    assert.ok(needed, `the Inspector's engines.node is ">=X.Y.0", got ${inspector.engines.node}`);
    const [neededMajor, neededMinor] = needed.split('.').map(Number) as [number, number];
    assert.ok(
      Number(major) > neededMajor || (Number(major) === neededMajor && Number(minor) >= neededMinor),
      `the floor ${floor} is below the Inspector's ${needed}`,
    );
  });

  test('scripts/ci/node.sh sourced from outside the repository reads the pinned pnpm from its own package.json', async () => {
    // A fake npm records what would have been installed globally (it used to be "pnpm@").
    const bin = join(project, 'fake-bin');
    await mkdir(bin, { recursive: true });
    await writeFile(join(bin, 'npm'), `#!/bin/sh\necho "$@" >> "${join(project, 'npm-calls')}"\n`);
    await chmod(join(bin, 'npm'), 0o755);
    const pinned = (
      JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { packageManager: string }
    ).packageManager.split('@')[1];
    const { stdout } = await execFileAsync(
      'bash',
      ['-c', `source "${join(ROOT, 'scripts/ci/node.sh')}" && echo "pnpm $pnpm_version"`],
      { cwd: project, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } },
    ).catch((error: { stdout?: string; stderr?: string }) => ({ stdout: `${error.stdout}${error.stderr}` }));
    assert.match(stdout, new RegExp(`pnpm ${pinned}`));
    const calls = await readFile(join(project, 'npm-calls'), 'utf8').catch(() => '');
    assert.doesNotMatch(calls, /pnpm@(\s|$)/, 'never "npm install --global pnpm@" with no version');
  });
});

test("the variables scripts/start.ts reads besides the server's are in the README's Configuration tables", async () => {
  const source = await readFile(join(ROOT, 'scripts/start.ts'), 'utf8');
  const own = new Set(
    [...source.matchAll(/(?:integer|directory|text|optional)\(process\.env, '([A-Z0-9_]+)'/g)].map(
      (match) => match[1] as string,
    ),
  );
  assert.ok(own.has('KEYCLOAK_PORT') && own.has('KEYCLOAK_DATA_DIR'), [...own].join(' '));
  const configuration = readme.slice(readme.indexOf('\n## Configuration'), readme.indexOf('\n## Storage'));
  for (const variable of own) assert.match(configuration, new RegExp(`\\| \`${variable}\` +\\|`), variable);
});
