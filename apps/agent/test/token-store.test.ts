import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { TokenStore } from '../src/auth/token-store.ts';

const root = await mkdtemp(join(tmpdir(), 'agent-store-'));
after(() => rm(root, { recursive: true, force: true }));

test('the token cache is written owner-only (0600 file, 0700 directory) whatever the umask', async () => {
  const previous = process.umask(0o000); // the most permissive umask: modes must still be exact
  try {
    const store = new TokenStore(join(root, 'cache'), 'http://localhost:8000/mcp');
    await store.save({
      mcpUrl: 'http://localhost:8000/mcp',
      tokens: { access_token: 'a', token_type: 'Bearer', refresh_token: 'r' },
    });
    assert.equal((await stat(store.file)).mode & 0o777, 0o600);
    assert.equal((await stat(join(root, 'cache'))).mode & 0o777, 0o700);
    assert.equal((await store.load())?.tokens?.refresh_token, 'r');

    // A file someone loosened is replaced by an owner-only one on the next save.
    await chmod(store.file, 0o644);
    await store.save({ mcpUrl: 'http://localhost:8000/mcp' });
    assert.equal((await stat(store.file)).mode & 0o777, 0o600);
    assert.doesNotMatch(await readFile(store.file, 'utf8'), /"r"/);
  } finally {
    process.umask(previous);
  }
});

test('an existing, looser cache directory is tightened to 0700; its parent is left alone', async () => {
  const parent = join(root, 'chosen');
  const directory = join(parent, 'tokens');
  await mkdir(directory, { recursive: true });
  await chmod(parent, 0o755);
  await chmod(directory, 0o755);
  const store = new TokenStore(directory, 'http://localhost:8000/mcp');
  await store.save({
    mcpUrl: 'http://localhost:8000/mcp',
    tokens: { access_token: 'a', token_type: 'Bearer', refresh_token: 'r' },
  });
  assert.equal((await stat(directory)).mode & 0o777, 0o700);
  assert.equal((await stat(store.file)).mode & 0o777, 0o600);
  assert.equal((await stat(parent)).mode & 0o777, 0o755, 'only the directory the tokens go in');
});

test('a looser directory holding other files (MCP_CACHE_DIR=~, say) is refused, not made owner-only', async () => {
  const home = join(root, 'home');
  await mkdir(home);
  await writeFile(join(home, '.bashrc'), '# mine\n');
  await chmod(home, 0o755);
  const store = new TokenStore(home, 'http://localhost:8000/mcp');
  await assert.rejects(
    store.save({ mcpUrl: 'http://localhost:8000/mcp', tokens: { access_token: 'a', token_type: 'Bearer' } }),
    /token cache directory .*home is not owner-only and holds other files \(\.bashrc\); set MCP_CACHE_DIR/,
  );
  assert.equal((await stat(home)).mode & 0o777, 0o755);
  assert.deepEqual(await readdir(home), ['.bashrc']);
});

test('a shared directory (sticky bit, like /tmp) is refused as the cache, left as it was and not written to', async () => {
  const shared = join(root, 'shared');
  await mkdir(shared);
  await chmod(shared, 0o1777);
  const store = new TokenStore(shared, 'http://localhost:8000/mcp');
  await assert.rejects(
    store.save({ mcpUrl: 'http://localhost:8000/mcp', tokens: { access_token: 'a', token_type: 'Bearer' } }),
    /token cache directory .*shared is shared \(sticky bit, like \/tmp\); set MCP_CACHE_DIR to a directory of its own/,
  );
  assert.equal((await stat(shared)).mode & 0o7777, 0o1777);
  assert.deepEqual(await readdir(shared), []);
});

test("a session file others may write, or a link, is refused before it is read (another's tokens); one others may read is made owner-only", async () => {
  const directory = join(root, 'planted');
  await mkdir(directory, { recursive: true });
  const store = new TokenStore(directory, 'http://localhost:8000/mcp');
  const planted = { mcpUrl: 'http://localhost:8000/mcp', tokens: { access_token: 'theirs', token_type: 'Bearer' } };
  await writeFile(store.file, JSON.stringify(planted));
  await chmod(directory, 0o777);
  await chmod(store.file, 0o666);
  await assert.rejects(
    store.load(),
    /may be written by other users, so its tokens may not be yours; remove it, or set MCP_CACHE_DIR/,
  );
  await chmod(store.file, 0o620);
  await assert.rejects(store.load(), /may be written by other users/);

  // Readable by others only (restored from a backup): this user's own, used, and made owner-only.
  await chmod(store.file, 0o644);
  assert.equal((await store.load())?.tokens?.access_token, 'theirs');
  assert.equal((await stat(store.file)).mode & 0o777, 0o600);

  // A link put in its place, to a file of the linker's choosing.
  const elsewhere = join(root, 'elsewhere.json');
  await writeFile(elsewhere, JSON.stringify(planted), { mode: 0o600 });
  await rm(store.file);
  await symlink(elsewhere, store.file);
  await assert.rejects(store.load(), /is not a plain file \(a link\?\)/);
  await rm(store.file);
  // A pipe put in its place: refused at once, not waited on.
  execFileSync('mkfifo', [store.file]);
  await assert.rejects(store.load(), /is not a plain file; remove it/);
  await rm(store.file);
  assert.equal(await store.load(), undefined, 'no file: no session');
});

test('one file per MCP server; a damaged file reads as no session', async () => {
  const a = new TokenStore(root, 'http://a.example/mcp');
  const b = new TokenStore(root, 'http://b.example/mcp');
  assert.notEqual(a.file, b.file);
  assert.equal(await a.load(), undefined);
  await writeFile(a.file, '{not json', { mode: 0o600 });
  assert.equal(await a.load(), undefined);
});
