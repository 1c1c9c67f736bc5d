import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { access, chmod, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { directory } from '@mcp-auth-stack/config';
import { acquirePidLock } from '@mcp-auth-stack/pid-lock';
import { KEYCLOAK_DISTRIBUTION_SHA1, KEYCLOAK_VERSION } from './realm.ts';

const execFileAsync = promisify(execFile);

const MAVEN_GROUP_PATH = 'org/keycloak/keycloak-quarkus-dist';
const MAVEN_CENTRAL = 'https://repo1.maven.org/maven2';

export interface Distribution {
  /** The unpacked Keycloak home (`bin/kc.sh`, `lib/`, `conf/`...). */
  home: string;
  version: string;
  /** Where this process got it from: the cache, Maven, or `KEYCLOAK_DIST_URL`. */
  source: 'cache' | 'maven' | 'url';
}

export interface EnsureDistributionOptions {
  version?: string;
  /** Defaults to `defaultCacheDir()`. */
  cacheDir?: string;
  env?: NodeJS.ProcessEnv;
  /** Used to unpack with `jar` where `unzip` is missing. */
  javaHome?: string;
  onProgress?: (message: string) => void;
}

interface CompleteMarker {
  version: string;
  sha1: string;
  verifiedBy: string;
  source: 'maven' | 'url';
  origin: string;
}

/** `$KEYCLOAK_CACHE_DIR`, else `$XDG_CACHE_HOME/mcp-auth-stack/keycloak/<version>` (`~/.cache` by default): outside git. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env, version = KEYCLOAK_VERSION): string {
  // Absolute (relative values against the working directory): the instance folders link to
  // the distribution, and a relative symlink target would resolve from the link's own folder.
  const cacheHome = directory(env, 'XDG_CACHE_HOME', join(homedir(), '.cache'));
  return directory(env, 'KEYCLOAK_CACHE_DIR', join(cacheHome, 'mcp-auth-stack', 'keycloak', version));
}

export function defaultDistUrl(version = KEYCLOAK_VERSION): string {
  return `https://github.com/keycloak/keycloak/releases/download/${version}/keycloak-${version}.zip`;
}

/**
 * Returns an unpacked, verified Keycloak distribution, fetching it once: from `KEYCLOAK_DIST_URL`
 * when it is set, else with Maven (`mvn dependency:copy`) where `mvn` exists, else (or when Maven
 * fails) from Keycloak's release URL. The zip's SHA-1 is compared with the one the repository
 * publishes (or `KEYCLOAK_DIST_SHA1`); without one, the zip's own CRCs are tested, and with
 * neither check possible nothing is unpacked. The unpacked tree is moved into place only when
 * complete, so an interrupted download never leaves a half distribution in the cache.
 */
export async function ensureDistribution(options: EnsureDistributionOptions = {}): Promise<Distribution> {
  const env = options.env ?? process.env;
  const version = options.version ?? KEYCLOAK_VERSION;
  const cacheDir = options.cacheDir ?? defaultCacheDir(env, version);
  const report = options.onProgress ?? (() => {});
  const home = join(cacheDir, 'dist', `keycloak-${version}`);
  const markerPath = join(cacheDir, 'dist', 'complete.json');

  if (await isComplete(markerPath, home, version)) return { home, version, source: 'cache' };

  await mkdir(cacheDir, { recursive: true });
  const release = await acquirePidLock(join(cacheDir, 'download.lock'), {
    timeoutMs: 15 * 60_000,
    onWait: (pid) => report(`waiting for process ${pid}, which is fetching Keycloak ${version} into ${cacheDir}`),
  });
  try {
    // Another process may have finished while this one waited for the lock.
    if (await isComplete(markerPath, home, version)) return { home, version, source: 'cache' };
    const downloadDir = join(cacheDir, 'download');
    // Emptied first: a zip left by an interrupted fetch (Ctrl-C, a full disk) is neither checked
    // nor kept, and Maven would not overwrite it.
    await rm(downloadDir, { recursive: true, force: true });
    await mkdir(downloadDir, { recursive: true });
    let fetched: Fetched;
    if (!env.KEYCLOAK_DIST_URL && (await commandExists('mvn', env))) {
      try {
        fetched = await fetchWithMaven(version, downloadDir, env, report);
      } catch (error) {
        // Maven stopped by a signal (Ctrl-C reaches the whole process group) is not Maven failing.
        if ((error as { interrupted?: boolean }).interrupted) throw error;
        report(`${(error as Error).message.split('\n')[0]}; trying ${defaultDistUrl(version)} instead`);
        fetched = await fetchFromUrl(version, downloadDir, env, report);
      }
    } else {
      fetched = await fetchFromUrl(version, downloadDir, env, report);
    }

    report(`verifying ${fetched.zip}`);
    const actualSha1 = await sha1Of(fetched.zip);
    const pinned = KEYCLOAK_DISTRIBUTION_SHA1[version];
    if (pinned !== undefined) {
      // A pinned version is checked against the pin only: a mirror (or a path to it) that serves
      // another zip can serve a `.sha1` to match.
      fetched.expectedSha1 = pinned;
      fetched.sha1Origin = `the SHA-1 pinned for Keycloak ${version} (packages/keycloak/src/realm.ts)`;
    }
    if (fetched.expectedSha1 && fetched.expectedSha1 !== actualSha1) {
      await rm(fetched.zip, { force: true });
      throw new Error(
        `Keycloak ${version} from ${fetched.origin} has SHA-1 ${actualSha1}, but ${fetched.sha1Origin} says ${fetched.expectedSha1}. The download was deleted; try again.`,
      );
    }
    if (!fetched.expectedSha1) {
      report(`no published SHA-1 found for ${fetched.origin}; checking the zip's own CRCs instead`);
      await testZipIntegrity(fetched.zip, env);
    }

    report(`unpacking into ${home}`);
    await unpack(fetched.zip, join(cacheDir, 'dist'), `keycloak-${version}`, env, options.javaHome);
    const marker: CompleteMarker = {
      version,
      sha1: actualSha1,
      verifiedBy: fetched.expectedSha1 ? fetched.sha1Origin : 'zip CRC check (no published SHA-1)',
      source: fetched.source,
      origin: fetched.origin,
    };
    await writeFile(markerPath, `${JSON.stringify(marker, null, 2)}\n`);
    // The zip is 170 MB and the unpacked tree is what runs; keep only the latter.
    await rm(downloadDir, { recursive: true, force: true });
    return { home, version, source: fetched.source };
  } finally {
    await release();
  }
}

interface Fetched {
  zip: string;
  source: 'maven' | 'url';
  origin: string;
  expectedSha1: string | undefined;
  sha1Origin: string;
}

async function fetchWithMaven(
  version: string,
  downloadDir: string,
  env: NodeJS.ProcessEnv,
  report: (message: string) => void,
): Promise<Fetched> {
  const artifact = `org.keycloak:keycloak-quarkus-dist:${version}:zip`;
  report(`fetching ${artifact} with Maven (about 170 MB, once)`);
  try {
    await execFileAsync(
      'mvn',
      ['-q', '-B', 'dependency:copy', `-Dartifact=${artifact}`, `-DoutputDirectory=${downloadDir}`],
      { env, timeout: 20 * 60_000, maxBuffer: 16 * 1024 * 1024 },
    );
  } catch (error) {
    const { stdout, stderr, signal, code } = error as {
      stdout?: string;
      stderr?: string;
      signal?: string;
      code?: number;
    };
    if (signal || code === 130) {
      throw Object.assign(new Error(`mvn dependency:copy of ${artifact} was interrupted (${signal ?? code})`), {
        interrupted: true,
      });
    }
    throw new Error(
      `mvn dependency:copy of ${artifact} failed:\n${`${stdout ?? ''}${stderr ?? ''}`.trim().slice(-2000)}`,
    );
  }
  const fileName = `keycloak-quarkus-dist-${version}.zip`;
  // Maven keeps the checksum it downloaded from the repository next to the artifact.
  const localSha1 = join(env.HOME || homedir(), '.m2', 'repository', MAVEN_GROUP_PATH, version, `${fileName}.sha1`);
  let expectedSha1 = parseSha1(await readFile(localSha1, 'utf8').catch(() => ''));
  let sha1Origin = localSha1;
  if (!expectedSha1) {
    sha1Origin = `${MAVEN_CENTRAL}/${MAVEN_GROUP_PATH}/${version}/${fileName}.sha1`;
    expectedSha1 = await fetchSha1(sha1Origin);
  }
  return { zip: join(downloadDir, fileName), source: 'maven', origin: artifact, expectedSha1, sha1Origin };
}

async function fetchFromUrl(
  version: string,
  downloadDir: string,
  env: NodeJS.ProcessEnv,
  report: (message: string) => void,
): Promise<Fetched> {
  const url = env.KEYCLOAK_DIST_URL || defaultDistUrl(version);
  const shown = withoutSecrets(url);
  report(`downloading ${shown} (set KEYCLOAK_DIST_URL to use a mirror)`);
  // A checksum given by hand that is not one is a mistake to say, not a check to skip.
  if (env.KEYCLOAK_DIST_SHA1 && !parseSha1(env.KEYCLOAK_DIST_SHA1)) {
    throw new Error(`KEYCLOAK_DIST_SHA1 must be the zip's SHA-1 as 40 hex digits, got "${env.KEYCLOAK_DIST_SHA1}".`);
  }
  const zip = join(downloadDir, `keycloak-${version}.zip`);
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new Error(
      `Could not download Keycloak from ${shown}: ${(error as Error).message}. Install Maven (it fetches org.keycloak:keycloak-quarkus-dist from Maven Central) or set KEYCLOAK_DIST_URL.`,
    );
  }
  if (!response.ok || !response.body) throw new Error(`Downloading ${shown} failed: HTTP ${response.status}`);
  await pipeline(
    Readable.fromWeb(response.body as import('node:stream/web').ReadableStream),
    createWriteStream(`${zip}.part`),
  );
  await rename(`${zip}.part`, zip);
  const sha1Origin = env.KEYCLOAK_DIST_SHA1 ? 'KEYCLOAK_DIST_SHA1' : withoutSecrets(sha1UrlOf(url));
  const expectedSha1 = env.KEYCLOAK_DIST_SHA1 ? parseSha1(env.KEYCLOAK_DIST_SHA1) : await fetchSha1(sha1UrlOf(url));
  return { zip, source: 'url', origin: shown, expectedSha1, sha1Origin };
}

/** Where a repository publishes a file's SHA-1: beside it, `.sha1` on the path (a query stays a query). */
function sha1UrlOf(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.pathname = `${parsed.pathname}.sha1`;
    return parsed.href;
  } catch {
    return `${url}.sha1`;
  }
}

/**
 * A mirror's URL as it is printed and recorded: a query parameter that looks like a credential
 * (an access token some artifact stores take in the URL) shown as `***`.
 */
export function withoutSecrets(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return url;
  }
  if (parsed.password) parsed.password = '***';
  for (const name of [...parsed.searchParams.keys()]) {
    if (/token|key|secret|pass|sig|auth|credential/i.test(name)) parsed.searchParams.set(name, '***');
  }
  return parsed.href;
}

async function fetchSha1(url: string): Promise<string | undefined> {
  try {
    const response = await fetch(url);
    return response.ok ? parseSha1(await response.text()) : undefined;
  } catch {
    return undefined;
  }
}

/** A `.sha1` file holds the hex digest, sometimes followed by the file name. */
function parseSha1(text: string): string | undefined {
  const digest = text.trim().split(/\s+/)[0]?.toLowerCase();
  return digest && /^[0-9a-f]{40}$/.test(digest) ? digest : undefined;
}

async function sha1Of(path: string): Promise<string> {
  const hash = createHash('sha1');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

async function testZipIntegrity(zip: string, env: NodeJS.ProcessEnv): Promise<void> {
  if (!(await commandExists('unzip', env))) {
    await rm(zip, { force: true });
    throw new Error(
      `${zip} could not be verified: no SHA-1 was published for it and unzip (to test its CRCs) is missing. Install unzip or set KEYCLOAK_DIST_SHA1.`,
    );
  }
  try {
    await execFileAsync('unzip', ['-tq', zip], { timeout: 5 * 60_000, maxBuffer: 16 * 1024 * 1024 });
  } catch (error) {
    await rm(zip, { force: true });
    throw new Error(`${zip} is corrupt (unzip -t failed: ${(error as Error).message}); it was deleted, try again.`);
  }
}

/** Unpacks into a scratch directory next to the target, then renames: the target appears complete or not at all. */
async function unpack(
  zip: string,
  parentDir: string,
  topDir: string,
  env: NodeJS.ProcessEnv,
  javaHome: string | undefined,
): Promise<void> {
  await mkdir(parentDir, { recursive: true });
  const scratch = join(parentDir, `.unpack-${process.pid}`);
  await rm(scratch, { recursive: true, force: true });
  await mkdir(scratch);
  try {
    if (await commandExists('unzip', env)) {
      await execFileAsync('unzip', ['-q', zip, '-d', scratch], { timeout: 10 * 60_000, maxBuffer: 16 * 1024 * 1024 });
    } else if (javaHome) {
      await execFileAsync(join(javaHome, 'bin', 'jar'), ['xf', zip], { cwd: scratch, timeout: 10 * 60_000 });
    } else {
      throw new Error('Neither unzip nor a JDK `jar` tool is available to unpack Keycloak; install unzip.');
    }
    const unpacked = join(scratch, topDir);
    await access(join(unpacked, 'bin', 'kc.sh'));
    await access(join(unpacked, 'lib', 'quarkus-run.jar'));
    // `jar xf` drops the executable bits that unzip keeps.
    for (const name of await readdir(join(unpacked, 'bin'))) {
      if (name.endsWith('.sh')) await chmod(join(unpacked, 'bin', name), 0o755);
    }
    await rm(join(parentDir, topDir), { recursive: true, force: true });
    await rename(unpacked, join(parentDir, topDir));
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

async function isComplete(markerPath: string, home: string, version: string): Promise<boolean> {
  try {
    const marker = JSON.parse(await readFile(markerPath, 'utf8')) as CompleteMarker;
    if (marker.version !== version) return false;
    await access(join(home, 'bin', 'kc.sh'));
    await access(join(home, 'lib', 'quarkus-run.jar'));
    return true;
  } catch {
    return false;
  }
}

async function commandExists(command: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  for (const dir of (env.PATH ?? '').split(':').filter(Boolean)) {
    try {
      await access(join(dir, command));
      return true;
    } catch {}
  }
  return false;
}
