import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, constants, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { defaultCacheDir, ensureDistribution } from '../src/distribution.ts';
import { findJava } from '../src/java.ts';
import { KEYCLOAK_DISTRIBUTION_SHA1, KEYCLOAK_VERSION } from '../src/realm.ts';

/**
 * The download path of `pnpm keycloak` without Maven: a small stand-in distribution zip (made
 * with the JDK's `jar`), served with and without its `.sha1` from loopback.
 */
const VERSION = '9.9.9';
const execFileAsync = promisify(execFile);

let work: string;
let server: Server;
let base = '';
let zip: Buffer;
let sha1 = '';
const requests: string[] = [];
let javaHome: string;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'kc-dist-'));
  const tree = join(work, 'tree', `keycloak-${VERSION}`);
  await mkdir(join(tree, 'bin'), { recursive: true });
  await mkdir(join(tree, 'lib'), { recursive: true });
  await writeFile(join(tree, 'bin', 'kc.sh'), '#!/bin/sh\necho stand-in\n');
  await writeFile(join(tree, 'lib', 'quarkus-run.jar'), 'not really a jar');
  javaHome = (await findJava()).javaHome;
  const zipPath = join(work, 'dist.zip');
  await execFileAsync(join(javaHome, 'bin', 'jar'), [
    '--create',
    '--no-manifest',
    '--file',
    zipPath,
    '-C',
    join(work, 'tree'),
    '.',
  ]);
  zip = await readFile(zipPath);
  sha1 = createHash('sha1').update(zip).digest('hex');
  server = createServer((request, response) => {
    requests.push(request.url ?? '');
    // A mirror that takes its access token in the query, for the zip and its .sha1 alike.
    const path = (request.url ?? '').replace(/\?token=mirror-token$/, '');
    if (path === '/good.zip' || path === '/bad.zip' || path === '/nosum.zip') {
      response.end(zip);
    } else if (path === '/good.zip.sha1') {
      response.end(`${sha1}  keycloak-${VERSION}.zip\n`);
    } else if (path === '/bad.zip.sha1') {
      response.end(`${'0'.repeat(40)}\n`);
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(work, { recursive: true, force: true });
});

// PATH with unzip, and KEYCLOAK_DIST_URL set: the URL wins even where mvn is installed.
const envFor = (path: string, extra: Record<string, string> = {}) => ({
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: work,
  KEYCLOAK_DIST_URL: `${base}${path}`,
  ...extra,
});

describe('ensureDistribution from a URL', () => {
  test('verifies the published SHA-1, unpacks with kc.sh executable, then serves from the cache', async () => {
    const cacheDir = join(work, 'cache-good');
    const first = await ensureDistribution({ version: VERSION, cacheDir, env: envFor('/good.zip'), javaHome });
    assert.equal(first.source, 'url');
    await access(join(first.home, 'bin', 'kc.sh'), constants.X_OK);
    const marker = JSON.parse(await readFile(join(cacheDir, 'dist', 'complete.json'), 'utf8')) as Record<
      string,
      string
    >;
    assert.deepEqual([marker.sha1, marker.verifiedBy], [sha1, `${base}/good.zip.sha1`]);
    const before = requests.length;
    const second = await ensureDistribution({ version: VERSION, cacheDir, env: envFor('/good.zip'), javaHome });
    assert.equal(second.source, 'cache');
    assert.equal(requests.length, before, 'nothing downloaded the second time');
  });

  test("a mirror's access token in KEYCLOAK_DIST_URL is not printed, in the progress or the error", async () => {
    const progress: string[] = [];
    const error = await ensureDistribution({
      version: VERSION,
      cacheDir: join(work, 'cache-token'),
      env: envFor('/missing.zip?access_token=SECRET-TOKEN&v=1'),
      javaHome,
      onProgress: (message) => progress.push(message),
    }).catch((caught: Error) => caught);
    assert.ok(error instanceof Error);
    assert.match(error.message, /missing\.zip\?access_token=\*\*\*&v=1 failed: HTTP 404/);
    assert.ok(
      progress.some((line) => line.includes('access_token=***')),
      progress.join('\n'),
    );
    assert.doesNotMatch([error.message, ...progress].join('\n'), /SECRET-TOKEN/);
    assert.ok(requests.includes('/missing.zip?access_token=SECRET-TOKEN&v=1'), 'the request itself carried it');
  });

  test('a mirror URL with a query: the published SHA-1 is looked up beside the zip, the query kept', async () => {
    const cacheDir = join(work, 'cache-query');
    const fetched = await ensureDistribution({
      version: VERSION,
      cacheDir,
      env: envFor('/good.zip?token=mirror-token'),
      javaHome,
    });
    assert.equal(fetched.source, 'url');
    assert.ok(requests.includes('/good.zip.sha1?token=mirror-token'), requests.join(' '));
    const marker = JSON.parse(await readFile(join(cacheDir, 'dist', 'complete.json'), 'utf8')) as Record<
      string,
      string
    >;
    assert.deepEqual([marker.sha1, marker.verifiedBy], [sha1, `${base}/good.zip.sha1?token=***`]);
  });

  test('a SHA-1 that does not match: refused, the download deleted, nothing unpacked', async () => {
    const cacheDir = join(work, 'cache-bad');
    await assert.rejects(
      ensureDistribution({ version: VERSION, cacheDir, env: envFor('/bad.zip'), javaHome }),
      /has SHA-1 [0-9a-f]{40}, but .*bad\.zip\.sha1 says 0{40}/,
    );
    await assert.rejects(access(join(cacheDir, 'dist', `keycloak-${VERSION}`)));
    await assert.rejects(access(join(cacheDir, 'download', `keycloak-${VERSION}.zip`)));
  });

  test("the pinned version is checked against its pinned SHA-1, not the mirror's .sha1 that matches another zip", async () => {
    // A mirror serving another zip with a .sha1 to match: the published check alone would pass.
    await assert.rejects(
      ensureDistribution({
        version: KEYCLOAK_VERSION,
        cacheDir: join(work, 'cache-pinned'),
        env: envFor('/good.zip'),
        javaHome,
      }),
      new RegExp(
        `has SHA-1 ${sha1}, but the SHA-1 pinned for Keycloak ${KEYCLOAK_VERSION}.* says ${KEYCLOAK_DISTRIBUTION_SHA1[KEYCLOAK_VERSION]}`,
      ),
    );
    await assert.rejects(
      access(join(work, 'cache-pinned', 'dist', `keycloak-${KEYCLOAK_VERSION}`)),
      'nothing unpacked',
    );
  });

  test('KEYCLOAK_DIST_SHA1 that is not a SHA-1 is an error naming it, not a skipped check', async () => {
    await assert.rejects(
      ensureDistribution({
        version: VERSION,
        cacheDir: join(work, 'cache-typo'),
        env: envFor('/good.zip', { KEYCLOAK_DIST_SHA1: 'abc123' }),
        javaHome,
      }),
      /KEYCLOAK_DIST_SHA1 must be the zip's SHA-1/,
    );
  });

  test('no published SHA-1: the zip CRCs are tested with unzip; without unzip nothing is unpacked', async () => {
    const tested = await ensureDistribution({
      version: VERSION,
      cacheDir: join(work, 'cache-crc'),
      env: envFor('/nosum.zip'),
      javaHome,
    });
    assert.equal(tested.source, 'url');
    // A PATH with neither unzip nor mvn: no way to check the zip.
    const empty = join(work, 'empty-bin');
    await mkdir(empty, { recursive: true });
    await assert.rejects(
      ensureDistribution({
        version: VERSION,
        cacheDir: join(work, 'cache-unchecked'),
        env: { ...envFor('/nosum.zip'), PATH: empty },
        javaHome,
      }),
      /could not be verified: no SHA-1 was published for it and unzip .* is missing/,
    );
    await assert.rejects(access(join(work, 'cache-unchecked', 'dist', `keycloak-${VERSION}`)));
  });
});

test('cache folders given as relative paths are resolved against the working directory', () => {
  // The instance folders symlink into the cache: a relative target would point nowhere.
  assert.equal(defaultCacheDir({ KEYCLOAK_CACHE_DIR: 'kc-cache' }, VERSION), join(process.cwd(), 'kc-cache'));
  assert.equal(
    defaultCacheDir({ XDG_CACHE_HOME: 'xdg' }, VERSION),
    join(process.cwd(), 'xdg', 'mcp-auth-stack', 'keycloak', VERSION),
  );
  assert.equal(defaultCacheDir({ KEYCLOAK_CACHE_DIR: '/abs/kc' }, VERSION), '/abs/kc');
});
