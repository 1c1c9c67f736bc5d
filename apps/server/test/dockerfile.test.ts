import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { connectClient, run } from './helpers.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

interface Step {
  instruction: string;
  args: string;
}

/** The Dockerfile's instructions, with line continuations joined and comments dropped. */
async function readDockerfile(path: string): Promise<Step[]> {
  const text = (await readFile(path, 'utf8')).replace(/\\\n/g, ' ');
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const [instruction, ...rest] = line.split(/\s+/);
      return { instruction: (instruction as string).toUpperCase(), args: rest.join(' ') };
    });
}

/** .dockerignore patterns as regular expressions over paths relative to the context. */
async function dockerignore(path: string): Promise<RegExp[]> {
  return (await readFile(path, 'utf8'))
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((pattern) => {
      const body = pattern
        .split('**/')
        .map((part) =>
          part
            .replace(/[.+^${}()|[\]\\]/g, '\\$&')
            .replace(/\*/g, '[^/]*')
            .replace(/\?/g, '[^/]'),
        )
        .join('(?:.*/)?');
      return new RegExp(`^${body}(?:/.*)?$`);
    });
}

/**
 * No Docker engine runs here, so the image is replayed: every COPY from the build context and
 * every `pnpm` RUN step, in a fresh directory, then the image's own CMD with its own ENV. What
 * the image would hold is what this starts, and it must serve a health check and an MCP call.
 */
test('apps/server/Dockerfile: its files, install step and command give a working server', async () => {
  const steps = await readDockerfile(join(ROOT, 'apps/server/Dockerfile'));
  const app = await mkdtemp(join(tmpdir(), 'mcp-image-'));
  const env: Record<string, string> = {};
  let command: string[] | undefined;
  try {
    for (const { instruction, args } of steps) {
      if (instruction === 'COPY' && !args.startsWith('--from')) {
        assert.equal(args, '. .', 'the replay handles the whole-context COPY this Dockerfile uses');
        const ignored = await dockerignore(join(ROOT, '.dockerignore'));
        await cp(ROOT, app, {
          recursive: true,
          filter: (source) => {
            const path = relative(ROOT, source);
            return path === '' || !ignored.some((pattern) => pattern.test(path));
          },
        });
      } else if (instruction === 'RUN' && args.startsWith('pnpm ')) {
        const result = await run('sh', ['-c', `cd ${app} && ${args}`]);
        assert.equal(result.code, 0, result.stderr);
      } else if (instruction === 'ENV') {
        for (const match of args.matchAll(/(\w+)=(\S+)/g)) env[match[1] as string] = match[2] as string;
      } else if (instruction === 'CMD') {
        command = JSON.parse(args) as string[];
      }
    }
    assert.deepEqual(command, ['node', 'apps/server/src/main.ts']);
    assert.equal(env.NODE_ENV, 'production');
    // Only production dependencies were installed: no test tools in the image.
    const installed = await run('sh', ['-c', `ls ${join(app, 'node_modules/.pnpm')}`]);
    assert.doesNotMatch(installed.stdout, /biomejs|typescript@|autocannon|inspector/);

    const dataDir = join(app, 'data');
    const keyResult = await run(
      process.execPath,
      [join(app, 'apps/server/src/keys-cli.ts'), 'create', '--user', 'img'],
      {
        DATA_DIR: dataDir,
      },
    );
    assert.equal(keyResult.code, 0, keyResult.stderr);
    const key = keyResult.stdout.trim();

    const { spawn } = await import('node:child_process');
    const child = spawn(process.execPath, [join(app, (command as string[])[1] as string)], {
      cwd: app,
      env: { ...process.env, ...env, DATA_DIR: dataDir, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(output)), 60_000);
        child.stdout.on('data', () => {
          const match = /"msg":"listening","url":"([^"]+)"/.exec(output);
          if (match?.[1]) {
            clearTimeout(timer);
            resolve(match[1]);
          }
        });
      });
      assert.equal((await fetch(`${url}/health`)).status, 200);
      const client = await connectClient(`${url}/mcp`, { Authorization: `Bearer ${key}` });
      const { tools } = await client.listTools();
      assert.equal(tools.length, 4);
      await client.close();
      assert.ok(dirname(fileURLToPath(import.meta.url)));
    } finally {
      child.kill('SIGTERM');
    }
  } finally {
    await rm(app, { recursive: true, force: true });
  }
});
