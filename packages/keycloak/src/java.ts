import { execFile } from 'node:child_process';
import { access, readdir, readFile, realpath } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Keycloak 26.6+ runs on OpenJDK 21 and 25; 17 is deprecated and refused here. */
export const MINIMUM_JAVA_MAJOR = 21;

export interface JavaRuntime {
  javaHome: string;
  major: number;
  version: string;
}

interface JavaCandidate {
  javaHome: string;
  /** Where the candidate came from, for the error message. */
  origin: string;
}

/**
 * Finds a Java runtime Keycloak can run on: `JAVA_HOME` when it is new enough, else the newest
 * JDK under `/usr/lib/jvm`, else the `java` on PATH. The error lists every runtime it looked at,
 * because "Java not found" is useless when a Java 17 sits on PATH.
 */
export async function findJava(env: NodeJS.ProcessEnv = process.env, jvmDir = '/usr/lib/jvm'): Promise<JavaRuntime> {
  const candidates: JavaCandidate[] = [];
  if (env.JAVA_HOME) candidates.push({ javaHome: env.JAVA_HOME, origin: 'JAVA_HOME' });
  candidates.push(...(await jdksUnder(jvmDir)));
  const onPath = await javaHomeOnPath(env);
  if (onPath) candidates.push({ javaHome: onPath, origin: 'java on PATH' });

  const found: string[] = [];
  const usable: JavaRuntime[] = [];
  const seen = new Set<string>();
  for (const candidate of candidates) {
    const key = await realpath(candidate.javaHome).catch(() => candidate.javaHome);
    if (seen.has(key)) continue;
    seen.add(key);
    const version = await javaVersion(candidate.javaHome);
    found.push(`${candidate.javaHome} (${candidate.origin}): ${version ?? 'no working bin/java'}`);
    if (!version) continue;
    const major = majorOf(version);
    // JAVA_HOME is the user's explicit choice: use it when it qualifies, before any newer JDK.
    if (major >= MINIMUM_JAVA_MAJOR && candidate.origin === 'JAVA_HOME')
      return { javaHome: candidate.javaHome, major, version };
    if (major >= MINIMUM_JAVA_MAJOR) usable.push({ javaHome: candidate.javaHome, major, version });
  }
  const newest = usable.sort((a, b) => b.major - a.major)[0];
  if (newest) return newest;
  throw new Error(
    `Keycloak needs Java ${MINIMUM_JAVA_MAJOR} or newer (21 or 25 recommended). Found:\n` +
      (found.length > 0 ? found.map((line) => `  - ${line}`).join('\n') : '  - no Java at all') +
      `\nInstall a JDK ${MINIMUM_JAVA_MAJOR}+ (e.g. \`apt-get install openjdk-21-jdk-headless\`, or Temurin 25) and set JAVA_HOME to it.`,
  );
}

/** `17.0.15` -> 17, `25` -> 25, `1.8.0_402` -> 8. */
export function majorOf(version: string): number {
  const [first, second] = version.split(/[.+_-]/);
  const major = first === '1' ? Number(second) : Number(first);
  return Number.isFinite(major) ? major : 0;
}

async function jdksUnder(jvmDir: string): Promise<JavaCandidate[]> {
  const names = await readdir(jvmDir).catch(() => [] as string[]);
  return names.sort().map((name) => ({ javaHome: join(jvmDir, name), origin: jvmDir }));
}

async function javaHomeOnPath(env: NodeJS.ProcessEnv): Promise<string | undefined> {
  for (const dir of (env.PATH ?? '').split(':').filter(Boolean)) {
    const java = join(dir, 'java');
    try {
      await access(java);
      // /usr/bin/java -> /etc/alternatives/java -> /usr/lib/jvm/<jdk>/bin/java
      return dirname(dirname(await realpath(java)));
    } catch {}
  }
  return undefined;
}

/**
 * The JDK's `release` file answers without starting a JVM; `java -version` is the fallback
 * for runtimes packaged without one.
 */
async function javaVersion(javaHome: string): Promise<string | undefined> {
  const java = join(javaHome, 'bin', 'java');
  try {
    await access(java);
  } catch {
    return undefined;
  }
  const release = await readFile(join(javaHome, 'release'), 'utf8').catch(() => '');
  const fromRelease = /^JAVA_VERSION="([^"]+)"/m.exec(release)?.[1];
  if (fromRelease) return fromRelease;
  try {
    const { stderr } = await execFileAsync(java, ['-version'], { timeout: 15_000 });
    return /version "([^"]+)"/.exec(stderr)?.[1];
  } catch {
    return undefined;
  }
}
