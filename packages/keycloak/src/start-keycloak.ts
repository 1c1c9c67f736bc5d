import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { access, chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { acquirePidLock, livePidIn, processStartTicks } from '@mcp-auth-stack/pid-lock';
import { ensureDistribution } from './distribution.ts';
import { findJava } from './java.ts';
import {
  ACCOUNT_CONSOLE_MARKER,
  ADDRESS_PLACEHOLDER,
  AdminSignInRefusedError,
  addMissingAccountConsoleParts,
  addMissingClientPolicies,
  bringRealmUrlsUpToDate,
  REALM_ENV_FILE,
  realmAddressDifferences,
} from './kept-realm.ts';
import {
  type KeycloakPhase,
  killGroup,
  LogCapture,
  probeExisting,
  stopChild,
  waitUntilReady,
} from './keycloak-process.ts';
import { installPolicyProvider, policyProviderDigest } from './provider.ts';
import { keycloakEgressProxyMappings, REALM_FEATURES, REALM_FILE, REALM_NAME } from './realm.ts';

export type { KeycloakPhase } from './keycloak-process.ts';

export interface KeycloakProgress {
  phase: KeycloakPhase;
  message: string;
  elapsedMs: number;
}

export interface StartKeycloakOptions {
  /** Port of the OIDC endpoints, login pages and admin console. Default 8080. */
  httpPort?: number;
  /** Port of `/health/ready` (Keycloak's management interface). Default 9000. */
  managementPort?: number;
  /**
   * How the caller's user sets the two ports (e.g. KEYCLOAK_PORT), named when a port is taken.
   * Default: the option names.
   */
  portVariables?: { http: string; management: string };
  /** Address to bind. Default 127.0.0.1: the demo admin password must not face the network. */
  bindHost?: string;
  /**
   * Base URL Keycloak puts in `iss` and in every endpoint it advertises, whichever host name a
   * request used. Default `http://localhost:<httpPort>`.
   */
  publicUrl?: string;
  /**
   * The per-run Keycloak home (`data/h2` holds the database, `data/import` the realm copy,
   * `keycloak.log` the output). Given: kept across runs (the realm is imported only once).
   * Omitted: a temporary directory, deleted by `stop()`, so every run starts from the realm file.
   */
  instanceDir?: string;
  /** Realm files to import. Default `keycloak/realm-mcp.json`. */
  realmFiles?: string[];
  /** Values for the realm file's `${VAR:default}` placeholders (e.g. MCP_SERVER_RESOURCE_URL). */
  realmEnv?: Record<string, string>;
  /** Keycloak features. Default `cimd,resource-indicators`, which the realm needs. */
  features?: readonly string[];
  /** Bootstrap admin of the master realm (created only with a new database). Demo default admin/admin. */
  admin?: { username: string; password: string };
  /**
   * What to do when a Keycloak with the realm already answers on `httpPort`: `reuse` returns
   * it (its `stop()` does nothing), `fail` (default) throws.
   */
  ifRunning?: 'reuse' | 'fail';
  readyTimeoutMs?: number;
  /** Where the distribution is cached. Default `defaultCacheDir()`. */
  cacheDir?: string;
  /** Environment for Java detection and the distribution download. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  onProgress?: (progress: KeycloakProgress) => void;
}

export interface RunningKeycloak {
  /** Public base URL, e.g. http://localhost:8080. */
  url: string;
  /** The realm's issuer, e.g. http://localhost:8080/realms/mcp. */
  realmUrl: string;
  adminConsoleUrl: string;
  /** Base URL of the management interface (`/health/ready`). */
  managementUrl: string;
  /** True when this call found a Keycloak already running and did not start one. */
  reused: boolean;
  instanceDir: string | undefined;
  logFile: string | undefined;
  /** The last lines Keycloak printed, for error messages. */
  recentLog(): string;
  /** Settles when the Keycloak process ends, by stop() or on its own (never for a reused one). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}

// Keycloak reads these build-time options from its augmented classes; changing one triggers a
// new 20-40 s build step, so every start of a cached distribution must pass the same values.
const DB_KIND = 'dev-file';
// Runs kc.sh (exec: same pid, same process group) next to a watchdog that terminates the group
// once this Node process is gone, so a test runner killed by Ctrl-C or a crash leaves no
// Keycloak behind. stop() signals the group, which ends the watchdog too.
const WATCHDOG_SCRIPT = `parent=$1; shift
( while kill -0 "$parent" 2>/dev/null; do sleep 2; done; kill -TERM 0 ) </dev/null >/dev/null 2>&1 &
exec "$@"`;

export async function startKeycloak(options: StartKeycloakOptions = {}): Promise<RunningKeycloak> {
  const startedAt = Date.now();
  const report = (phase: KeycloakPhase, message: string) =>
    options.onProgress?.({ phase, message, elapsedMs: Date.now() - startedAt });
  const env = options.env ?? process.env;
  // Absolute from here on: the instance links to the distribution and runs kc.sh from its folder.
  const keptDir = options.instanceDir === undefined ? undefined : resolve(options.instanceDir);
  const httpPort = options.httpPort ?? 8080;
  const managementPort = options.managementPort ?? 9000;
  const bindHost = options.bindHost ?? '127.0.0.1';
  const url = (options.publicUrl ?? `http://localhost:${httpPort}`).replace(/\/+$/, '');
  const probeHost = bindHost === '0.0.0.0' || bindHost === '::' ? '127.0.0.1' : bindHost;
  // Where this process itself talks to it (the admin API), whatever the public URL is.
  const localUrl = `http://${probeHost.includes(':') ? `[${probeHost}]` : probeHost}:${httpPort}`;
  const urls = {
    url,
    realmUrl: `${url}/realms/${REALM_NAME}`,
    adminConsoleUrl: `${url}/admin/master/console/#/${REALM_NAME}`,
    managementUrl: `http://${probeHost}:${managementPort}`,
  };

  report('checking', `looking for a Keycloak already on port ${httpPort}`);
  const existing = await probeExisting(
    probeHost,
    httpPort,
    managementPort,
    new URL(url).hostname === 'localhost' && probeHost === '127.0.0.1',
  );
  const portVariables = options.portVariables ?? { http: 'httpPort', management: 'managementPort' };
  if (existing === 'realm') {
    if (options.ifRunning === 'reuse') {
      // When the running one is this data folder's own (its pid file names a live process), it
      // may have been imported with other values, which its starter still serves: refused then,
      // never updated under it. A Keycloak of another folder says nothing here.
      const wanted = await realmUrlValues(env, options);
      if (keptDir && (await runsFrom(keptDir))) {
        await bringRealmUrlsUpToDate(keptDir, localUrl, wanted, options, report, { httpPort });
      } else {
        // Another folder's (another checkout's `pnpm start`), or one started some other way:
        // its realm is used as it is, so it must already serve this start's addresses.
        await refuseRealmOfOtherAddresses(localUrl, wanted, options, report, httpPort, keptDir);
      }
      report('reused', `Keycloak is already running on port ${httpPort} with realm ${REALM_NAME}; using it`);
      return {
        ...urls,
        reused: true,
        instanceDir: undefined,
        logFile: undefined,
        recentLog: () => '',
        exited: new Promise(() => {}),
        stop: async () => {},
      };
    }
    throw new Error(
      `A Keycloak with realm ${REALM_NAME} already answers on port ${httpPort}. Stop it, use it, or set ${portVariables.http} and ${portVariables.management} to other ports.`,
    );
  }
  if (existing) {
    const variable = existing.startsWith('Management') ? portVariables.management : portVariables.http;
    throw new Error(`${existing}. Stop that program, or set ${variable} to another port.`);
  }

  report('java', 'looking for Java 21+');
  const java = await findJava(env);
  report('java', `Java ${java.version} in ${java.javaHome}`);
  const distribution = await ensureDistribution({
    ...(options.cacheDir ? { cacheDir: resolve(options.cacheDir) } : {}),
    env,
    javaHome: java.javaHome,
    onProgress: (message) => report('distribution', message),
  });
  if (distribution.source !== 'cache')
    report('distribution', `Keycloak ${distribution.version} ready in ${distribution.home}`);

  const temporary = !keptDir;
  const instanceDir = keptDir ?? (await mkdtemp(join(tmpdir(), 'keycloak-')));
  const pidFile = join(instanceDir, 'keycloak.pid');
  await refuseSharedInstance(pidFile, instanceDir);
  const importsRealm = temporary || !(await exists(join(instanceDir, 'data', 'h2')));
  const realmValues = await realmUrlValues(env, options);
  await prepareInstance(instanceDir, distribution.home, options.realmFiles ?? [REALM_FILE]);
  if (importsRealm && !temporary) {
    // Recorded before Keycloak imports: a first start cut short after the import (Ctrl-C, a
    // timeout) still tells the next start what the realm holds, so it can update it.
    await writeFile(join(instanceDir, 'data', REALM_ENV_FILE), `${JSON.stringify(realmValues, null, 2)}\n`);
  }

  const features = [...(options.features ?? REALM_FEATURES)].sort();
  // The realm's own executor (keycloak/providers) is part of what Keycloak's build step reads:
  // a new jar builds again, like new options.
  const buildOptions = { db: DB_KIND, features, health: true, provider: await policyProviderDigest() };
  const releaseBuildLock = await lockIfBuildNeeded(dirname(distribution.home), buildOptions, report);
  if (releaseBuildLock) await installPolicyProvider(distribution.home);

  const logFile = join(instanceDir, 'keycloak.log');
  const log = new LogCapture(logFile, (phase, message) => report(phase, message));
  const args = [
    'start-dev',
    '--import-realm',
    `--db=${DB_KIND}`,
    `--features=${features.join(',')}`,
    '--health-enabled=true',
    `--http-host=${bindHost}`,
    `--http-port=${httpPort}`,
    `--http-management-port=${managementPort}`,
    `--hostname=${url}`,
  ];
  report('starting', `bin/kc.sh ${args.join(' ')}`);
  const child = spawn(
    '/bin/sh',
    ['-c', WATCHDOG_SCRIPT, 'keycloak', String(process.pid), join(instanceDir, 'bin', 'kc.sh'), ...args],
    {
      cwd: instanceDir,
      env: keycloakEnv(env, java.javaHome, options),
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: stop() can signal kc.sh and the JVM it starts together.
      detached: true,
    },
  );
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const exitHook = () => killGroup(child, 'SIGKILL');
  process.on('exit', exitHook);
  log.attach(child);
  // With when it started: after a crash, a pid handed out again (a reboot) is not this Keycloak.
  const started = child.pid === undefined ? undefined : await processStartTicks(child.pid);
  await writeFile(pidFile, started === undefined ? String(child.pid) : `${child.pid} ${started}`);

  const stop = async () => {
    await stopChild(child);
    process.off('exit', exitHook);
    log.close();
    await rm(pidFile, { force: true });
    if (temporary) await rm(instanceDir, { recursive: true, force: true });
  };

  try {
    await waitUntilReady(child, `${urls.managementUrl}/health/ready`, log, options.readyTimeoutMs ?? 300_000, report);
    if (releaseBuildLock) await writeBuildMarker(dirname(distribution.home), buildOptions);
  } catch (error) {
    await stop();
    throw error;
  } finally {
    await releaseBuildLock?.();
  }
  if (!importsRealm && !temporary) {
    // A rule the realm file gained since the import (a new client policy, an executor) first:
    // the URL update then finds every executor the file names. It runs on every kept start, so a
    // failure (an admin password changed in the console) is told, not fatal: starts did without it.
    try {
      for (const piece of await addMissingClientPolicies(localUrl, options, realmValues)) {
        report('importing', `${piece}: added to the kept realm from the realm file`);
      }
    } catch (error) {
      report(
        'checking',
        `the kept realm's client policies could not be compared with the realm file (${(error as Error).message}); rules added to the file since the import may be missing: pnpm keycloak --fresh imports it again`,
      );
    }
    // What the account console needs, for a realm imported before the file declared it: once.
    const consoleMarker = join(instanceDir, 'data', ACCOUNT_CONSOLE_MARKER);
    try {
      if (!existsSync(consoleMarker)) {
        for (const piece of await addMissingAccountConsoleParts(localUrl, options)) {
          report('importing', `${piece}: added to the kept realm from the realm file`);
        }
        await writeFile(consoleMarker, `${new Date().toISOString()}\n`);
      }
    } catch (error) {
      report(
        'checking',
        `the kept realm's account console could not be compared with the realm file (${(error as Error).message}); it may not work: pnpm keycloak --fresh imports the realm again`,
      );
    }
    try {
      await bringRealmUrlsUpToDate(instanceDir, localUrl, realmValues, options, report);
    } catch (error) {
      await stop();
      throw error;
    }
  }
  report('ready', `Keycloak is ready at ${urls.realmUrl} after ${Math.round((Date.now() - startedAt) / 1000)} s`);
  return {
    ...urls,
    reused: false,
    instanceDir: temporary ? undefined : instanceDir,
    logFile: temporary ? undefined : logFile,
    recentLog: () => log.tail(),
    exited,
    stop,
  };
}

/**
 * A Keycloak home of its own for this run, sharing the cached distribution's read-only parts
 * through symlinks. Keycloak takes its home from the location of `bin/kc.sh` (after resolving
 * symlinks), so the script is copied, not linked; `data/` (database, realm import, transaction
 * logs) is then private to the run and parallel runs cannot disturb each other.
 */
async function prepareInstance(instanceDir: string, distributionHome: string, realmFiles: string[]): Promise<void> {
  // Every folder made here (the instance's, and DATA_DIR above it on a first `pnpm start`) is
  // its owner's alone.
  await mkdir(join(instanceDir, 'bin'), { recursive: true, mode: 0o700 });
  await copyFile(join(distributionHome, 'bin', 'kc.sh'), join(instanceDir, 'bin', 'kc.sh'));
  for (const shared of ['lib', 'conf', 'providers', 'themes', 'version.txt']) {
    await rm(join(instanceDir, shared), { recursive: true, force: true });
    await symlink(join(distributionHome, shared), join(instanceDir, shared));
  }
  const importDir = join(instanceDir, 'data', 'import');
  await mkdir(importDir, { recursive: true, mode: 0o700 });
  // Keycloak's database (password hashes, client secrets, sessions) and the realm's copy: its
  // owner's alone, whatever the umask or an older start left.
  await chmod(join(instanceDir, 'data'), 0o700);
  for (const stale of await readdir(importDir)) await rm(join(importDir, stale), { force: true });
  for (const realmFile of realmFiles) await copyFile(realmFile, join(importDir, basename(realmFile)));
}

/**
 * The URL and host placeholders of the realm files (`${MCP_SERVER_RESOURCE_URL:http://…}`,
 * `${MCP_SERVER_HOST:localhost}`) as this start resolves them: `realmEnv`, else the environment,
 * else the file's default. Those only: they are what ties a realm to one deployment, and unlike
 * the secrets they may be written down.
 */
async function realmUrlValues(env: NodeJS.ProcessEnv, options: StartKeycloakOptions): Promise<Record<string, string>> {
  const given: Record<string, string | undefined> = { ...env, ...options.realmEnv };
  const values: Record<string, string> = {};
  for (const file of options.realmFiles ?? [REALM_FILE]) {
    const text = await readFile(file, 'utf8');
    for (const [, name, fallback] of text.matchAll(new RegExp(ADDRESS_PLACEHOLDER.source, 'g'))) {
      if (name) values[name] = given[name] ?? fallback ?? '';
    }
  }
  return values;
}

/**
 * A running Keycloak that is not this data folder's is reused only when its realm serves this
 * start's addresses: otherwise every token would name another server's audience, and sign-ins
 * would fail later, at the MCP server, with nothing pointing here. One whose admin API refuses
 * the bootstrap admin (started some other way, its admin someone else's) cannot be compared:
 * said, and used. Any other failure to compare (a client or scope of the realm file missing
 * there, an error answer) refuses it.
 */
async function refuseRealmOfOtherAddresses(
  keycloakUrl: string,
  wanted: Record<string, string>,
  options: StartKeycloakOptions,
  report: (phase: KeycloakPhase, message: string) => void,
  httpPort: number,
  keptDir: string | undefined,
): Promise<void> {
  let differences: string[];
  try {
    differences = await realmAddressDifferences(keycloakUrl, wanted, options);
  } catch (error) {
    if (!(error instanceof AdminSignInRefusedError)) {
      differences = [`it could not be compared with the realm file (${(error as Error).message})`];
    } else {
      report(
        'checking',
        `the realm of the Keycloak on port ${httpPort} could not be compared with this start's addresses (${error.message}); if its tokens are refused, give this start a Keycloak of its own`,
      );
      return;
    }
  }
  if (differences.length === 0) return;
  const whose = keptDir ? `runs from another folder than ${keptDir}` : 'was not started by this run';
  throw new Error(
    `The Keycloak on port ${httpPort} ${whose}, and its realm is not set up for this start's addresses: ${differences.join('; ')}. Its tokens would not be for this server. Stop it, or give this start a Keycloak of its own: KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT and KEYCLOAK_DATA_DIR.`,
  );
}

/** Whether the pid file of this data folder names a live process: the Keycloak running from it. */
async function runsFrom(instanceDir: string): Promise<boolean> {
  return (await livePidIn(join(instanceDir, 'keycloak.pid'))) !== undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function refuseSharedInstance(pidFile: string, instanceDir: string): Promise<void> {
  const pid = await livePidIn(pidFile);
  if (pid !== undefined) {
    throw new Error(
      `Keycloak process ${pid} already runs from ${instanceDir} (its H2 database allows one server). Stop it first.`,
    );
  }
}

/**
 * The first start with a given set of build options runs Keycloak's build step, which writes
 * into the shared distribution (`lib/quarkus`). Only one process may do that at a time: it
 * holds a lock until its server is ready, then records the options; later starts skip the lock.
 */
async function lockIfBuildNeeded(
  cacheDistDir: string,
  buildOptions: object,
  report: (phase: KeycloakPhase, message: string) => void,
): Promise<(() => Promise<void>) | undefined> {
  const wanted = JSON.stringify(buildOptions);
  const markerPath = join(cacheDistDir, 'build-options.json');
  if ((await readFile(markerPath, 'utf8').catch(() => '')).trim() === wanted) return undefined;
  const release = await acquirePidLock(join(cacheDistDir, 'build.lock'), {
    timeoutMs: 10 * 60_000,
    onWait: (pid) => report('building', `waiting for process ${pid}, which is running Keycloak's one-off build step`),
  });
  if ((await readFile(markerPath, 'utf8').catch(() => '')).trim() === wanted) {
    await release();
    return undefined;
  }
  await rm(markerPath, { force: true });
  return release;
}

async function writeBuildMarker(cacheDistDir: string, buildOptions: object): Promise<void> {
  await writeFile(join(cacheDistDir, 'build-options.json'), `${JSON.stringify(buildOptions)}\n`);
}

function keycloakEnv(env: NodeJS.ProcessEnv, javaHome: string, options: StartKeycloakOptions): NodeJS.ProcessEnv {
  const result: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(env)) {
    // Keycloak reads every KC_* variable as configuration; a stray KC_DB or KC_HOSTNAME from
    // the caller's shell would silently change what this function promises to start.
    if (!name.startsWith('KC_')) result[name] = value;
  }
  return {
    ...result,
    ...options.realmEnv,
    JAVA_HOME: javaHome,
    // Outgoing requests only to the realm's CIMD hosts (loopback included here): no blind SSRF
    // through what an anonymous registration names.
    KC_SPI_CONNECTIONS_HTTP_CLIENT__DEFAULT__PROXY_MAPPINGS: keycloakEgressProxyMappings({ loopback: true }),
    KC_BOOTSTRAP_ADMIN_USERNAME: options.admin?.username ?? 'admin',
    KC_BOOTSTRAP_ADMIN_PASSWORD: options.admin?.password ?? 'admin',
  };
}
