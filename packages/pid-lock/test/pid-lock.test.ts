import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { acquirePidLock, livePidIn, processIsAlive, processStartTicks, tryPidLock } from '../src/pid-lock.ts';

/** Above Linux's pid_max (at most 2^22): no process ever has it. */
const NEVER_A_PID = 2147483646;

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pid-lock-'));
});
after(() => rm(dir, { recursive: true, force: true }));

describe('processIsAlive', () => {
  test('this process runs; a pid no process has does not', () => {
    assert.equal(processIsAlive(process.pid), true);
    assert.equal(processIsAlive(NEVER_A_PID), false);
  });
});

describe('livePidIn', () => {
  test('names the live process a file holds, nothing for a missing, garbled or dead one', async () => {
    const file = join(dir, 'live.pid');
    await writeFile(file, `${process.pid}\n`);
    assert.equal(await livePidIn(file), process.pid);
    assert.equal(await livePidIn(join(dir, 'missing.pid')), undefined);
    await writeFile(file, 'not a pid');
    assert.equal(await livePidIn(file), undefined);
    await writeFile(file, '0');
    assert.equal(await livePidIn(file), undefined);
    await writeFile(file, String(NEVER_A_PID));
    assert.equal(await livePidIn(file), undefined);
  });
});

describe('livePidIn, a pid handed out again', () => {
  test('a lock naming a live pid that started at another time names another process (Linux)', async () => {
    const file = join(dir, 'reused.pid');
    const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
    try {
      await new Promise((resolve) => other.once('spawn', resolve));
      const started = await processStartTicks(other.pid as number);
      assert.ok(started, 'the start time from /proc');
      await writeFile(file, `${other.pid} ${started}`);
      assert.equal(await livePidIn(file), other.pid, 'its holder');
      // The same pid as a boot ago (or the last container) left it: started at another time.
      await writeFile(file, `${other.pid} ${Number(started) - 1}`);
      assert.equal(await livePidIn(file), undefined, 'the pid is another process now');
      const release = await tryPidLock(file);
      assert.ok(release, 'a lock naming it is stale: taken over');
      await release();
      // A pid file without a start time (Keycloak's) is taken at its word.
      await writeFile(file, String(other.pid));
      assert.equal(await livePidIn(file), other.pid);
    } finally {
      other.kill();
    }
  });
});

describe('livePidIn, a lock copied with its folder', () => {
  test("a copy's lock names nobody; the same folder by another name or moved still names its holder", async () => {
    const original = join(dir, 'data');
    await mkdir(original);
    const lock = join(original, 'x.lock');
    const release = await tryPidLock(lock);
    assert.ok(release);
    try {
      // `cp -a data copy` while the owner runs: the lock file comes along, naming a live process.
      const copy = join(dir, 'copy');
      await cp(original, copy, { recursive: true, preserveTimestamps: true });
      assert.equal(await livePidIn(join(copy, 'x.lock')), undefined, "the copy is nobody's");
      const taken = await tryPidLock(join(copy, 'x.lock'));
      assert.ok(taken, "the copy's lock is taken over");
      await taken();
      assert.equal(await livePidIn(lock), process.pid, 'the original is still held');
      await symlink(original, join(dir, 'link'));
      assert.equal(await livePidIn(join(dir, 'link', 'x.lock')), process.pid, 'through a symlink');
      await rename(original, join(dir, 'moved'));
      assert.equal(await livePidIn(join(dir, 'moved', 'x.lock')), process.pid, 'moved: the same folder');
      await rename(join(dir, 'moved'), original);
      // A lock written before locks named their folder (`<pid> <start>`) is taken at its word.
      await writeFile(join(copy, 'old.lock'), `${process.pid} ${await processStartTicks(process.pid)}`);
      assert.equal(await livePidIn(join(copy, 'old.lock')), process.pid);
    } finally {
      await release();
    }
  });
});

describe('tryPidLock', () => {
  test('creates the lock with this pid (mode 600), refuses while held, is free after release', async () => {
    const lock = join(dir, 'a.lock');
    const release = await tryPidLock(lock);
    assert.ok(release, 'a free lock is taken');
    const folder = await stat(dir, { bigint: true });
    assert.equal(
      await readFile(lock, 'utf8'),
      `${process.pid} ${await processStartTicks(process.pid)} ${folder.dev}:${folder.ino}`,
    );
    assert.equal((await stat(lock)).mode & 0o777, 0o600);
    assert.equal(await tryPidLock(lock), undefined, 'a live holder keeps it');
    await release();
    await assert.rejects(stat(lock), { code: 'ENOENT' });
    const again = await tryPidLock(lock);
    assert.ok(again, 'taken again after release');
    await again();
  });

  test('takes over a lock whose holder no longer runs, or that names no process', async () => {
    // This process's own pid in a lock it never took: left by an earlier process with the same
    // pid (a container's pid 1, killed and started again).
    for (const content of [String(NEVER_A_PID), '', 'garbage', String(process.pid)]) {
      const lock = join(dir, 'stale.lock');
      await writeFile(lock, content);
      const release = await tryPidLock(lock);
      assert.ok(release, `taken over from ${JSON.stringify(content)}`);
      const folder = await stat(dir, { bigint: true });
      assert.equal(
        await readFile(lock, 'utf8'),
        `${process.pid} ${await processStartTicks(process.pid)} ${folder.dev}:${folder.ino}`,
      );
      await release();
    }
  });

  test("removes the drafts a process left when it died in the middle of taking it, not a live one's", async () => {
    const drafts = await mkdtemp(join(dir, 'drafts-'));
    const lock = join(drafts, 'd.lock');
    const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
    try {
      await new Promise((resolve) => other.once('spawn', resolve));
      const otherStart = await processStartTicks(other.pid as number);
      const ownStart = Number(await processStartTicks(process.pid));
      const files: Record<string, [content: string, kept: boolean]> = {
        [`d.lock.${NEVER_A_PID}.0123456789ab`]: [`${NEVER_A_PID} 5`, false],
        [`d.lock.takeover.${NEVER_A_PID}.0123456789ab`]: [`${NEVER_A_PID} 5`, false],
        // This pid, in an earlier life (a container's pid 1 before a restart).
        [`d.lock.${process.pid}.aaaaaaaaaaaa`]: [`${process.pid} ${ownStart - 1}`, false],
        [`d.lock.${other.pid}.bbbbbbbbbbbb`]: [`${other.pid} ${otherStart}`, true],
        // Created and not written yet by a live process: it is being written now.
        [`d.lock.${other.pid}.cccccccccccc`]: ['', true],
        'd.lock.backup': ['kept', true],
        [`e.lock.${NEVER_A_PID}.0123456789ab`]: [`${NEVER_A_PID} 5`, true],
      };
      for (const [name, [content]] of Object.entries(files)) await writeFile(join(drafts, name), content);
      const release = await tryPidLock(lock);
      assert.ok(release);
      for (const [name, [, kept]] of Object.entries(files)) {
        const present = await stat(join(drafts, name)).then(
          () => true,
          () => false,
        );
        assert.equal(present, kept, `${name} ${kept ? 'kept' : 'removed'}`);
      }
      await release();
    } finally {
      other.kill();
    }
  });
});

describe('tryPidLock, processes racing', () => {
  const MODULE = new URL('../src/pid-lock.ts', import.meta.url).href;
  // Each contender loads the module, says so, then on "go" tries the lock, reports, and holds
  // what it won until told to let go: the winner is alive while the others look.
  const CONTENDER = `
    import { tryPidLock } from ${JSON.stringify(MODULE)};
    process.stdin.setEncoding('utf8');
    let release;
    process.stdin.on('data', async (chunk) => {
      for (const line of chunk.split('\\n').filter(Boolean)) {
        if (line === 'go') {
          release = await tryPidLock(process.argv[1]);
          process.stdout.write(release ? 'won\\n' : 'lost\\n');
        } else if (line === 'done') {
          await release?.();
          process.exit(0);
        }
      }
    });
    process.stdout.write('ready\\n');
  `;

  async function race(lock: string, contenders: number): Promise<{ won: number[]; holder: string }> {
    const children = Array.from({ length: contenders }, () =>
      spawn(process.execPath, ['--input-type=module', '-e', CONTENDER, lock], { stdio: ['pipe', 'pipe', 'inherit'] }),
    );
    const said = children.map((child) => {
      let out = '';
      child.stdout.setEncoding('utf8');
      return (word: string) =>
        new Promise<string>((resolve) => {
          const look = () => {
            const lines = out.split('\n');
            const found = lines.find((line) => line === word || (word === 'result' && /^(won|lost)$/.test(line)));
            if (found) {
              out = lines.slice(lines.indexOf(found) + 1).join('\n');
              child.stdout.off('data', onData);
              resolve(found);
            }
          };
          const onData = (chunk: string) => {
            out += chunk;
            look();
          };
          child.stdout.on('data', onData);
          look();
        });
    });
    await Promise.all(said.map((wait) => wait('ready')));
    for (const child of children) child.stdin.write('go\n');
    const results = await Promise.all(said.map((wait) => wait('result')));
    const holder = await readFile(lock, 'utf8').catch(() => '(none)');
    const exits = children.map((child) => new Promise((resolve) => child.once('exit', resolve)));
    for (const child of children) child.stdin.write('done\n');
    await Promise.all(exits);
    return {
      won: results.flatMap((result, index) => (result === 'won' ? [children[index]?.pid as number] : [])),
      holder,
    };
  }

  test('exactly one of several processes gets a free lock, or a stale one, every time', async () => {
    for (let round = 0; round < 6; round++) {
      for (const stale of [false, true]) {
        const lock = join(dir, `race-${round}-${stale}.lock`);
        if (stale) await writeFile(lock, String(NEVER_A_PID));
        const { won, holder } = await race(lock, 4);
        assert.equal(won.length, 1, `round ${round}, ${stale ? 'stale' : 'free'} lock: winners ${won.join(', ')}`);
        assert.equal(holder.split(' ')[0], String(won[0]), 'the lock names the winner');
        await assert.rejects(stat(lock), { code: 'ENOENT' }, 'released by its winner');
      }
    }
  });
});

describe('acquirePidLock', () => {
  test('fails after the timeout naming the live holder, and reports the wait once', async () => {
    const lock = join(dir, 'held.lock');
    // A live holder other than this process: the test runner that started it.
    await writeFile(lock, String(process.ppid));
    const waits: number[] = [];
    // Several polls before the timeout (and room for a loaded machine's first look, which at
    // 30 ms could already be past it): the wait is still reported once.
    await assert.rejects(
      acquirePidLock(lock, { timeoutMs: 300, pollMs: 20, onWait: (pid) => waits.push(pid) }),
      new RegExp(`held by process ${process.ppid}`),
    );
    assert.deepEqual(waits, [process.ppid]);
    await rm(lock);
  });

  test('gets the lock once the holder lets go', async () => {
    const lock = join(dir, 'handed.lock');
    const first = await acquirePidLock(lock, { timeoutMs: 0 });
    const waiting = acquirePidLock(lock, { timeoutMs: 60_000, pollMs: 10 });
    await first();
    const second = await waiting;
    const folder = await stat(dir, { bigint: true });
    assert.equal(
      await readFile(lock, 'utf8'),
      `${process.pid} ${await processStartTicks(process.pid)} ${folder.dev}:${folder.ino}`,
    );
    await second();
  });
});
