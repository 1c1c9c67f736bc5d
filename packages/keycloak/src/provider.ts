import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, copyFile, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/**
 * The realm's own Keycloak extension, committed built (keycloak/providers/): Compose mounts it
 * into the stock image and keycloak/Dockerfile copies it, neither of which has a compiler.
 * `keycloak/provider/src/main` holds its sources; `pnpm keycloak:provider` builds the jar again
 * and a test requires the committed one to hold what the sources compile to.
 */
export const POLICY_PROVIDER_JAR = resolve(
  import.meta.dirname,
  '../../../keycloak/providers/mcp-auth-stack-client-policies.jar',
);
export const POLICY_PROVIDER_SOURCES = resolve(import.meta.dirname, '../../../keycloak/provider/src/main');

/** The Java release the classes are compiled for: the stock Keycloak 26 image runs OpenJDK 21. */
export const POLICY_PROVIDER_JAVA_RELEASE = 21;

/** Every entry of the jar carries this time, so that a build gives the same bytes whenever it runs. */
const ENTRY_TIME = '2026-01-01T00:00:00Z';

/** The jar's SHA-256, which the runner records among Keycloak's build options. */
export async function policyProviderDigest(jar = POLICY_PROVIDER_JAR): Promise<string> {
  return createHash('sha256')
    .update(await readFile(jar))
    .digest('hex');
}

/**
 * Puts the committed jar into a Keycloak home's `providers/` (where `start-dev` and `kc.sh build`
 * read extensions), replacing an older copy.
 */
export async function installPolicyProvider(keycloakHome: string, jar = POLICY_PROVIDER_JAR): Promise<void> {
  await mkdir(join(keycloakHome, 'providers'), { recursive: true });
  await copyFile(jar, join(keycloakHome, 'providers', 'mcp-auth-stack-client-policies.jar'));
}

export interface BuildPolicyProviderOptions {
  /** A JDK home (javac and jar): the one `findJava` returns. */
  javaHome: string;
  /** The Keycloak distribution whose `lib/lib/main` jars the classes compile against. */
  keycloakHome: string;
  /** Where to write the jar. */
  outFile: string;
  /** The sources: `java/` and `resources/` below it (default: the repository's). */
  sources?: string;
}

/**
 * Compiles the provider's sources against the distribution's jars and writes the jar: entries in
 * sorted order, one fixed time, no manifest, so the same sources and JDK give the same bytes.
 */
export async function buildPolicyProvider(options: BuildPolicyProviderOptions): Promise<void> {
  const sources = options.sources ?? POLICY_PROVIDER_SOURCES;
  const javac = join(options.javaHome, 'bin', 'javac');
  await access(javac).catch(() => {
    throw new Error(
      `Building the Keycloak provider needs a JDK: ${options.javaHome} has no bin/javac (set JAVA_HOME to a JDK 21 or newer).`,
    );
  });
  const work = await mkdtemp(join(tmpdir(), 'keycloak-provider-'));
  try {
    const classes = join(work, 'classes');
    const javaFiles = (await filesUnder(join(sources, 'java'))).filter((file) => file.endsWith('.java'));
    await execFileAsync(javac, [
      '--release',
      String(POLICY_PROVIDER_JAVA_RELEASE),
      '-encoding',
      'UTF-8',
      '-Xlint:all',
      '-Werror',
      '-d',
      classes,
      '-cp',
      join(options.keycloakHome, 'lib', 'lib', 'main', '*'),
      ...javaFiles.map((file) => join(sources, 'java', file)),
    ]);
    for (const resource of await filesUnder(join(sources, 'resources'))) {
      await mkdir(dirname(join(classes, resource)), { recursive: true });
      await copyFile(join(sources, 'resources', resource), join(classes, resource));
    }
    const entries = (await filesUnder(classes)).sort();
    await mkdir(dirname(options.outFile), { recursive: true });
    await rm(options.outFile, { force: true });
    await execFileAsync(join(options.javaHome, 'bin', 'jar'), [
      '--create',
      '--no-manifest',
      `--date=${ENTRY_TIME}`,
      '--file',
      options.outFile,
      ...entries.flatMap((entry) => ['-C', classes, entry]),
    ]);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Every file below `root`, as paths relative to it with `/` separators. */
async function filesUnder(root: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) found.push(relative(root, join(entry.parentPath, entry.name)).split('\\').join('/'));
  }
  return found;
}
