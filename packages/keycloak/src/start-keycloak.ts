import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { access, copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { acquirePidLock, livePidIn } from '@mcp-auth-stack/pid-lock';
import { ensureDistribution } from './distribution.ts';
import { findJava } from './java.ts';
import { keycloakEgressProxyMappings, REALM_FEATURES, REALM_FILE, REALM_NAME } from './realm.ts';

export type KeycloakPhase =
  | 'checking'
  | 'distribution'
  | 'java'
  | 'building'
  | 'starting'
  | 'importing'
  | 'waiting'
  | 'ready'
  | 'reused';

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

const LOG_LINES_KEPT = 80;
const STOP_GRACE_MS = 20_000;
const PROGRESS_INTERVAL_MS = 5_000;
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
  const existing = await probeExisting(probeHost, httpPort, managementPort);
  const portVariables = options.portVariables ?? { http: 'httpPort', management: 'managementPort' };
  if (existing === 'realm') {
    if (options.ifRunning === 'reuse') {
      // When the running one is this data folder's own (its pid file names a live process), it
      // may have been imported with other values; a Keycloak of another folder says nothing here.
      if (keptDir && (await runsFrom(keptDir))) {
        await bringRealmUrlsUpToDate(keptDir, localUrl, await realmUrlValues(env, options), options, report);
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

  const features = [...(options.features ?? REALM_FEATURES)].sort();
  const buildOptions = { db: DB_KIND, features, health: true };
  const releaseBuildLock = await lockIfBuildNeeded(dirname(distribution.home), buildOptions, report);

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
  await writeFile(pidFile, String(child.pid));

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
  if (importsRealm && !temporary) {
    await writeFile(join(instanceDir, 'data', REALM_ENV_FILE), `${JSON.stringify(realmValues, null, 2)}\n`);
  } else if (!temporary) {
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
  await mkdir(join(instanceDir, 'bin'), { recursive: true });
  await copyFile(join(distributionHome, 'bin', 'kc.sh'), join(instanceDir, 'bin', 'kc.sh'));
  for (const shared of ['lib', 'conf', 'providers', 'themes', 'version.txt']) {
    await rm(join(instanceDir, shared), { recursive: true, force: true });
    await symlink(join(distributionHome, shared), join(instanceDir, shared));
  }
  const importDir = join(instanceDir, 'data', 'import');
  await mkdir(importDir, { recursive: true });
  for (const stale of await readdir(importDir)) await rm(join(importDir, stale), { force: true });
  for (const realmFile of realmFiles) await copyFile(realmFile, join(importDir, basename(realmFile)));
}

/**
 * The URL placeholders of the realm files (`${MCP_SERVER_RESOURCE_URL:http://…}`) as this start
 * resolves them: `realmEnv`, else the environment, else the file's default. URLs only: they are
 * what ties a realm to one deployment, and unlike the secrets they may be written down.
 */
async function realmUrlValues(env: NodeJS.ProcessEnv, options: StartKeycloakOptions): Promise<Record<string, string>> {
  const given: Record<string, string | undefined> = { ...env, ...options.realmEnv };
  const values: Record<string, string> = {};
  for (const file of options.realmFiles ?? [REALM_FILE]) {
    const text = await readFile(file, 'utf8');
    for (const [, name, fallback] of text.matchAll(/\$\{([A-Z0-9_]+_URL)(?::([^}]*))?\}/g)) {
      if (name) values[name] = given[name] ?? fallback ?? '';
    }
  }
  return values;
}

/** The realm values a kept database was imported with (`data/`, so `--fresh` removes it too). */
const REALM_ENV_FILE = 'realm-env.json';

/**
 * A kept database holds the realm as imported the first time: Keycloak does not read the realm
 * file again. When the URLs differ now (the server moved to another PORT, so tokens need another
 * audience), the places of the realm that hold them are updated through the admin API, so the
 * users, their ids (the `sub` the server stores data under), registered clients and changes made
 * in the admin console all stay. The record is rewritten only once the update is done.
 */
async function bringRealmUrlsUpToDate(
  instanceDir: string,
  keycloakUrl: string,
  wanted: Record<string, string>,
  options: StartKeycloakOptions,
  report: (phase: KeycloakPhase, message: string) => void,
): Promise<void> {
  const file = join(instanceDir, 'data', REALM_ENV_FILE);
  let imported: Record<string, string>;
  try {
    imported = JSON.parse(await readFile(file, 'utf8')) as Record<string, string>;
  } catch {
    // Imported before these values were recorded (or a first start that never got ready).
    report(
      'checking',
      `${join(instanceDir, 'data')} does not record the URLs its realm was imported with; if the server URL changed since, start with --fresh`,
    );
    return;
  }
  const differing = Object.keys({ ...imported, ...wanted }).filter((name) => imported[name] !== wanted[name]);
  if (differing.length === 0) return;
  for (const name of differing) {
    report(
      'importing',
      `${name}: ${imported[name] ?? '(unset)'} → ${wanted[name] ?? '(unset)'} (updating the kept realm)`,
    );
  }
  try {
    await updateRealmUrls(
      keycloakUrl,
      options.admin ?? DEMO_ADMIN,
      options.realmFiles ?? [REALM_FILE],
      wanted,
      imported,
    );
  } catch (error) {
    throw new Error(
      `The realm in ${instanceDir} was imported for other URLs (${differing.map((name) => `${name}: ${imported[name] ?? '(unset)'}, now ${wanted[name] ?? '(unset)'}`).join('; ')}) and could not be updated through the admin API: ${(error as Error).message}\nRemove ${join(instanceDir, 'data')} (pnpm keycloak --fresh) to import it again (the demo users keep their ids; registered clients and admin console changes go), or set KEYCLOAK_DATA_DIR to another folder.`,
    );
  }
  await writeFile(file, `${JSON.stringify(wanted, null, 2)}\n`);
}

const DEMO_ADMIN = { username: 'admin', password: 'admin' };

/** Whether a string of the realm file holds a URL placeholder (`${..._URL:…}`). */
const URL_PLACEHOLDER = /\$\{([A-Z0-9_]+_URL)(?::([^}]*))?\}/g;
const holdsUrl = (value: unknown): value is string =>
  typeof value === 'string' && new RegExp(URL_PLACEHOLDER.source).test(value);
const withUrls = (value: string, wanted: Record<string, string>) =>
  value.replace(URL_PLACEHOLDER, (_match, name: string, fallback?: string) => wanted[name] ?? fallback ?? '');

interface RealmFile {
  realm?: string;
  clientScopes?: { name: string; protocolMappers?: { name: string; config?: Record<string, unknown> }[] }[];
  clients?: { clientId: string; redirectUris?: unknown[]; attributes?: Record<string, unknown> }[];
}

/**
 * Sets every realm value that the realm files fill from a URL placeholder: protocol mapper
 * settings of client scopes (the audience), client attributes (`resource_url`) and redirect
 * URIs. The realm files say where the URLs go, so a new placeholder needs no code here; one in
 * a place this does not know is an error rather than a silently stale value.
 */
async function updateRealmUrls(
  keycloakUrl: string,
  admin: { username: string; password: string },
  realmFiles: string[],
  wanted: Record<string, string>,
  imported: Record<string, string>,
): Promise<void> {
  const tokenResponse = await fetch(`${keycloakUrl}/realms/master/protocol/openid-connect/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'password', client_id: 'admin-cli', ...admin }),
  });
  if (!tokenResponse.ok) {
    throw new Error(`the bootstrap admin ${admin.username} could not sign in (HTTP ${tokenResponse.status})`);
  }
  const { access_token: token } = (await tokenResponse.json()) as { access_token: string };
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${keycloakUrl}/admin/realms/${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    if (!response.ok) throw new Error(`${method} /admin/realms/${path}: HTTP ${response.status}`);
    return response.status === 204 ? undefined : ((await response.json()) as unknown);
  };

  for (const realmFile of realmFiles) {
    const realm = JSON.parse(await readFile(realmFile, 'utf8')) as RealmFile & Record<string, unknown>;
    const name = encodeURIComponent(realm.realm ?? REALM_NAME);
    const known = new Set<unknown>([realm.clientScopes, realm.clients]);
    const elsewhere = Object.entries(realm).filter(
      ([, value]) => !known.has(value) && JSON.stringify(value)?.match(new RegExp(URL_PLACEHOLDER.source)),
    );
    if (elsewhere.length > 0) {
      throw new Error(
        `${realmFile} has URL placeholders under ${elsewhere.map(([key]) => key).join(', ')}, which cannot be updated`,
      );
    }
    for (const scope of realm.clientScopes ?? []) {
      const mappers = (scope.protocolMappers ?? []).filter((mapper) =>
        Object.values(mapper.config ?? {}).some(holdsUrl),
      );
      if (mappers.length === 0) continue;
      const scopes = (await call('GET', `${name}/client-scopes`)) as { id: string; name: string }[];
      const scopeId = scopes.find((candidate) => candidate.name === scope.name)?.id;
      if (!scopeId) throw new Error(`client scope ${scope.name} is missing from realm ${realm.realm}`);
      const current = (await call('GET', `${name}/client-scopes/${scopeId}/protocol-mappers/models`)) as {
        id: string;
        name: string;
        config: Record<string, string>;
      }[];
      for (const mapper of mappers) {
        const model = current.find((candidate) => candidate.name === mapper.name);
        if (!model) throw new Error(`protocol mapper ${mapper.name} of client scope ${scope.name} is missing`);
        for (const [key, value] of Object.entries(mapper.config ?? {})) {
          if (holdsUrl(value)) model.config[key] = withUrls(value, wanted);
        }
        await call('PUT', `${name}/client-scopes/${scopeId}/protocol-mappers/models/${model.id}`, model);
      }
    }
    for (const client of realm.clients ?? []) {
      const attributes = Object.entries(client.attributes ?? {}).filter(([, value]) => holdsUrl(value));
      const redirects = (client.redirectUris ?? []).some(holdsUrl);
      if (attributes.length === 0 && !redirects) continue;
      const found = (await call('GET', `${name}/clients?clientId=${encodeURIComponent(client.clientId)}`)) as {
        id: string;
        attributes?: Record<string, string>;
        redirectUris?: string[];
      }[];
      const current = found[0];
      if (!current) throw new Error(`client ${client.clientId} is missing from realm ${realm.realm}`);
      for (const [key, value] of attributes)
        current.attributes = { ...current.attributes, [key]: withUrls(value as string, wanted) };
      if (redirects) {
        // The redirect URIs from placeholders are replaced; any added in the admin console stay.
        const before = new Set((client.redirectUris ?? []).filter(holdsUrl).map((uri) => withUrls(uri, imported)));
        const kept = (current.redirectUris ?? []).filter((uri) => !before.has(uri));
        current.redirectUris = [
          ...new Set([
            ...kept,
            ...(client.redirectUris ?? []).map((uri) => (holdsUrl(uri) ? withUrls(uri, wanted) : String(uri))),
          ]),
        ];
      }
      await call('PUT', `${name}/clients/${current.id}`, current);
    }
  }
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

/** `realm` when a Keycloak serving the realm answers, a description when something else holds a port, else undefined. */
async function probeExisting(host: string, httpPort: number, managementPort: number): Promise<string | undefined> {
  if (await portAnswers(host, httpPort)) {
    try {
      const response = await fetch(`http://${host}:${httpPort}/realms/${REALM_NAME}`, {
        signal: AbortSignal.timeout(3_000),
      });
      const body = (await response.json()) as { realm?: string };
      if (response.ok && body.realm === REALM_NAME) return 'realm';
    } catch {}
    return `Port ${httpPort} on ${host} is in use by a program that does not serve the Keycloak realm ${REALM_NAME}`;
  }
  if (await portAnswers(host, managementPort)) return `Management port ${managementPort} on ${host} is in use`;
  return undefined;
}

function portAnswers(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.setTimeout(2_000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

async function waitUntilReady(
  child: ChildProcess,
  readyUrl: string,
  log: LogCapture,
  timeoutMs: number,
  report: (phase: KeycloakPhase, message: string) => void,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let nextProgress = Date.now() + PROGRESS_INTERVAL_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `Keycloak exited (${child.exitCode ?? child.signalCode}) before it was ready. Its last output:\n${log.tail()}`,
      );
    }
    try {
      const response = await fetch(readyUrl, { signal: AbortSignal.timeout(2_000) });
      if (response.ok) return;
    } catch {}
    if (Date.now() >= deadline) {
      throw new Error(
        `Keycloak was not ready within ${timeoutMs / 1000} s (${readyUrl}). Its last output:\n${log.tail()}`,
      );
    }
    if (Date.now() >= nextProgress) {
      report('waiting', `waiting for ${readyUrl}`);
      nextProgress = Date.now() + PROGRESS_INTERVAL_MS;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** SIGTERM to kc.sh and the JVM (Keycloak shuts down in 1-3 s), then SIGKILL if it hangs. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  killGroup(child, 'SIGTERM');
  const timedOut = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((resolve) => setTimeout(() => resolve(true), STOP_GRACE_MS).unref()),
  ]);
  if (timedOut) {
    killGroup(child, 'SIGKILL');
    await exited;
  }
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (!child.pid) return;
  try {
    // Negative pid: the whole process group this module created for kc.sh and its JVM.
    process.kill(-child.pid, signal);
  } catch {}
}

/** Keycloak's output goes to a log file; the last lines stay in memory and notable ones become progress events. */
class LogCapture {
  private readonly lines: string[] = [];
  private readonly file: WriteStream;
  private readonly report: (phase: KeycloakPhase, message: string) => void;

  constructor(path: string, report: (phase: KeycloakPhase, message: string) => void) {
    this.file = createWriteStream(path, { flags: 'a' });
    this.report = report;
  }

  attach(child: ChildProcess): void {
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => this.add(line));
    }
  }

  tail(): string {
    return this.lines.join('\n');
  }

  close(): void {
    this.file.end();
  }

  private add(line: string): void {
    this.file.write(`${line}\n`);
    this.lines.push(line);
    if (this.lines.length > LOG_LINES_KEPT) this.lines.shift();
    const progress = notableLine(line);
    if (progress) this.report(progress.phase, progress.message);
  }
}

function notableLine(line: string): { phase: KeycloakPhase; message: string } | undefined {
  if (line.includes('Updating the configuration and installing your custom providers')) {
    return { phase: 'building', message: "running Keycloak's build step (once per cache, 20-40 s)" };
  }
  if (line.includes('Quarkus augmentation completed')) return { phase: 'building', message: 'build step done' };
  if (line.includes('Running the server in development mode')) return { phase: 'starting', message: 'server starting' };
  if (line.includes('Initializing database schema')) return { phase: 'starting', message: 'creating the database' };
  const imported = /Realm '([^']+)' imported/.exec(line);
  if (imported) return { phase: 'importing', message: `realm ${imported[1]} imported` };
  const skipped = /Realm '([^']+)' already exists|Not importing realm (\S+)/.exec(line);
  if (skipped) {
    const realm = skipped[1] ?? skipped[2];
    return {
      phase: 'importing',
      message: `realm ${realm} already in the database; the realm file was not re-imported`,
    };
  }
  if (line.includes(' ERROR ')) return { phase: 'starting', message: line.replace(/^\S+ \S+ /, '') };
  return undefined;
}
