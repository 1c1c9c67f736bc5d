/**
 * A kept Keycloak database holds the realm as first imported; when the server's URLs change,
 * the realm's URL values are brought up to date through the admin API, and client policies the
 * realm file gained since are added (start-keycloak.ts calls both on every start that keeps its
 * data).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeycloakPhase } from './keycloak-process.ts';
import { REALM_FILE, REALM_NAME } from './realm.ts';

/** What of startKeycloak's options the update needs. */
export interface KeptRealmOptions {
  admin?: { username: string; password: string };
  realmFiles?: string[];
}

/** The realm values a kept database was imported with (`data/`, so `--fresh` removes it too). */
export const REALM_ENV_FILE = 'realm-env.json';

/**
 * A kept database holds the realm as imported the first time: Keycloak does not read the realm
 * file again. When the URLs differ now (the server moved to another PORT, so tokens need another
 * audience), the places of the realm that hold them are updated through the admin API, so the
 * users, their ids (the `sub` the server stores data under), registered clients and changes made
 * in the admin console all stay. The record is rewritten only once the update is done.
 */
export async function bringRealmUrlsUpToDate(
  instanceDir: string,
  keycloakUrl: string,
  wanted: Record<string, string>,
  options: KeptRealmOptions,
  report: (phase: KeycloakPhase, message: string) => void,
  serving?: { httpPort: number },
): Promise<void> {
  const file = join(instanceDir, 'data', REALM_ENV_FILE);
  let imported: Record<string, string>;
  try {
    imported = withHostOfOlderRecords(JSON.parse(await readFile(file, 'utf8')) as Record<string, string>, wanted);
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
  const changes = differing.map((name) => `${name}: ${imported[name] ?? '(unset)'}, now ${wanted[name] ?? '(unset)'}`);
  if (serving) {
    // A Keycloak already running from this folder was started for those values, by a process
    // still alive (its watchdog ends it with that process): most often another `pnpm start`,
    // whose server would get tokens for another audience from this update on.
    throw new Error(
      `The Keycloak running from ${instanceDir} on port ${serving.httpPort} has its realm set up for other URLs (${changes.join('; ')}), which whoever started it still serves. Stop that Keycloak first (this start then updates its realm), or give this one a Keycloak of its own: KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT and KEYCLOAK_DATA_DIR.`,
    );
  }
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
      `The realm in ${instanceDir} was imported for other URLs (${changes.join('; ')}) and could not be updated through the admin API: ${(error as Error).message}\nRemove ${join(instanceDir, 'data')} (pnpm keycloak --fresh) to import it again (the demo users keep their ids; registered clients and admin console changes go), or set KEYCLOAK_DATA_DIR to another folder.`,
    );
  }
  await writeFile(file, `${JSON.stringify(wanted, null, 2)}\n`);
}

const DEMO_ADMIN = { username: 'admin', password: 'admin' };

/**
 * Records written before host placeholders were kept hold the URLs only. `pnpm start` and
 * `pnpm keycloak` imported such a realm with MCP_SERVER_HOST as `servedUrls()` gives it, the
 * host of the server's URL: that, not the file's default, is what an update must replace. (A
 * realm imported before they passed the host has the default, `localhost`, which then stays
 * beside the new host: one more loopback name.) Only for realm files that have the placeholder.
 */
function withHostOfOlderRecords(
  record: Record<string, string>,
  wanted: Record<string, string>,
): Record<string, string> {
  if (!('MCP_SERVER_HOST' in wanted) || 'MCP_SERVER_HOST' in record) return record;
  if (record.MCP_SERVER_RESOURCE_URL === undefined) return record;
  return { ...record, MCP_SERVER_HOST: new URL(record.MCP_SERVER_RESOURCE_URL).hostname };
}

/**
 * A placeholder of the realm file that holds one of the server's addresses: a URL
 * (`${..._URL:…}`) or a host (`${..._HOST:…}`, the host anonymous registrations may redirect to).
 */
export const ADDRESS_PLACEHOLDER = /\$\{([A-Z0-9_]+_(?:URL|HOST))(?::([^}]*))?\}/g;
const holdsAddress = (value: unknown): value is string =>
  typeof value === 'string' && new RegExp(ADDRESS_PLACEHOLDER.source).test(value);
const withAddresses = (value: string, wanted: Record<string, string>) =>
  value.replace(ADDRESS_PLACEHOLDER, (_match, name: string, fallback?: string) => wanted[name] ?? fallback ?? '');

interface ExecutorFile {
  executor: string;
  configuration?: Record<string, unknown>;
}

interface RealmFile {
  realm?: string;
  clientProfiles?: { profiles?: { name: string; executors?: ExecutorFile[] }[] };
  clientScopes?: { name: string; protocolMappers?: { name: string; config?: Record<string, unknown> }[] }[];
  clients?: { clientId: string; redirectUris?: unknown[]; attributes?: Record<string, unknown> }[];
}

/**
 * Refuses a realm file with a URL or host placeholder where this cannot update it, before any
 * change is made: a stale value there would go unnoticed.
 */
function refuseUnknownPlaces(realmFile: string, realm: RealmFile & Record<string, unknown>): void {
  const known = new Set<unknown>([realm.clientScopes, realm.clients, realm.clientProfiles]);
  // In client profiles, only executor settings that are a string or a list of strings are
  // updated; everything else of a profile counts as elsewhere.
  const profilesOutsideSettings = (realm.clientProfiles?.profiles ?? []).map((profile) => ({
    ...profile,
    executors: (profile.executors ?? []).map(({ executor, configuration }) => ({
      executor,
      nested: Object.values(configuration ?? {}).filter((value) => !isStringSetting(value)),
    })),
  }));
  const elsewhere = [
    ...Object.entries(realm).filter(([, value]) => !known.has(value)),
    ['clientProfiles (outside executor settings)', profilesOutsideSettings] as const,
  ].filter(([, value]) => JSON.stringify(value)?.match(new RegExp(ADDRESS_PLACEHOLDER.source)));
  if (elsewhere.length > 0) {
    throw new Error(
      `${realmFile} has URL or host placeholders under ${elsewhere.map(([key]) => key).join(', ')}, which cannot be updated`,
    );
  }
}

/** One object of the realm that holds values from address placeholders, as the admin API has it. */
interface AddressHolder {
  /** What a person would call it, for messages. */
  label: string;
  /** Where the admin API reads and writes it (under `/admin/realms/`). */
  path: string;
  model: Record<string, unknown>;
  /** The settings of `model` to fill: the realm file's value of each (a string or a list). */
  settings: AddressSetting[];
}

interface AddressSetting {
  label: string;
  fromFile: string | unknown[];
  read(): unknown;
  write(value: string | string[]): void;
}

const settingOf = (label: string, fromFile: string | unknown[], holder: Record<string, unknown>, key: string) => ({
  label,
  fromFile,
  read: () => holder[key],
  write: (value: string | string[]) => {
    holder[key] = value;
  },
});

/** The realm files, each refused (before any admin call) when it has an address placeholder where this cannot reach it. */
async function readRealmFiles(realmFiles: string[]): Promise<RealmFile[]> {
  return await Promise.all(
    realmFiles.map(async (realmFile) => {
      const realm = JSON.parse(await readFile(realmFile, 'utf8')) as RealmFile & Record<string, unknown>;
      refuseUnknownPlaces(realmFile, realm);
      return realm;
    }),
  );
}

/**
 * Every object of the realm that the realm files fill from a URL or host placeholder: protocol
 * mappers of client scopes (the audience), clients (`resource_url`, redirect URIs) and the
 * realm's client profiles (the hosts anonymous registrations may redirect to). The realm files
 * say where the values go, so a new placeholder needs no code here; one in a place this does not
 * know is an error rather than a silently stale value.
 */
async function readAddressHolders(call: AdminCall, realms: RealmFile[]): Promise<AddressHolder[]> {
  const holders: AddressHolder[] = [];
  for (const realm of realms) {
    const name = encodeURIComponent(realm.realm ?? REALM_NAME);
    for (const scope of realm.clientScopes ?? []) {
      const mappers = (scope.protocolMappers ?? []).filter((mapper) =>
        Object.values(mapper.config ?? {}).some(holdsAddress),
      );
      if (mappers.length === 0) continue;
      const scopes = (await call('GET', `${name}/client-scopes`)) as { id: string; name: string }[];
      const scopeId = scopes.find((candidate) => candidate.name === scope.name)?.id;
      if (!scopeId) throw new Error(`client scope ${scope.name} is missing from realm ${realm.realm}`);
      const current = (await call('GET', `${name}/client-scopes/${scopeId}/protocol-mappers/models`)) as {
        id: string;
        name: string;
        config: Record<string, unknown>;
      }[];
      for (const mapper of mappers) {
        const model = current.find((candidate) => candidate.name === mapper.name);
        if (!model) throw new Error(`protocol mapper ${mapper.name} of client scope ${scope.name} is missing`);
        const label = `protocol mapper ${mapper.name} of client scope ${scope.name}`;
        holders.push({
          label,
          path: `${name}/client-scopes/${scopeId}/protocol-mappers/models/${model.id}`,
          model,
          settings: Object.entries(mapper.config ?? {})
            .filter(([, value]) => holdsAddress(value))
            .map(([key, value]) => settingOf(`${label}: ${key}`, value as string, model.config, key)),
        });
      }
    }
    for (const client of realm.clients ?? []) {
      const attributes = Object.entries(client.attributes ?? {}).filter(([, value]) => holdsAddress(value));
      const redirects = (client.redirectUris ?? []).some(holdsAddress);
      if (attributes.length === 0 && !redirects) continue;
      const found = (await call('GET', `${name}/clients?clientId=${encodeURIComponent(client.clientId)}`)) as {
        id: string;
        attributes?: Record<string, unknown>;
        redirectUris?: string[];
      }[];
      const model = found[0];
      if (!model) throw new Error(`client ${client.clientId} is missing from realm ${realm.realm}`);
      model.attributes ??= {};
      const label = `client ${client.clientId}`;
      holders.push({
        label,
        path: `${name}/clients/${model.id}`,
        model,
        settings: [
          ...attributes.map(([key, value]) =>
            settingOf(`${label}: ${key}`, value as string, model.attributes as Record<string, unknown>, key),
          ),
          ...(redirects
            ? [settingOf(`${label}: redirect URIs`, client.redirectUris ?? [], model, 'redirectUris')]
            : []),
        ],
      });
    }
    const profiles = (realm.clientProfiles?.profiles ?? []).filter((profile) =>
      (profile.executors ?? []).some((executor) =>
        Object.values(executor.configuration ?? {}).some(holdsAddressInSetting),
      ),
    );
    if (profiles.length === 0) continue;
    // The realm's own profiles (not Keycloak's global ones), all put back in one PUT.
    const current = (await call('GET', `${name}/client-policies/profiles`)) as {
      profiles: { name: string; executors: { executor: string; configuration?: Record<string, unknown> }[] }[];
    };
    const settings: AddressSetting[] = [];
    for (const profile of profiles) {
      const model = current.profiles.find((candidate) => candidate.name === profile.name);
      if (!model) throw new Error(`client profile ${profile.name} is missing from realm ${realm.realm}`);
      for (const [index, executor] of (profile.executors ?? []).entries()) {
        // The executors in the order of the file; the same kind twice is matched by position.
        const sameKind = (profile.executors ?? []).slice(0, index).filter((e) => e.executor === executor.executor);
        const target = model.executors.filter((e) => e.executor === executor.executor)[sameKind.length];
        if (!target) {
          throw new Error(
            `executor ${executor.executor} of client profile ${profile.name} is missing from realm ${realm.realm}: a Keycloak started before the realm file added it; stop it and start again (pnpm keycloak and pnpm start add it), or --fresh`,
          );
        }
        target.configuration ??= {};
        for (const [key, value] of Object.entries(executor.configuration ?? {})) {
          if (!holdsAddressInSetting(value)) continue;
          settings.push(
            settingOf(
              `executor ${executor.executor} of client profile ${profile.name}: ${key}`,
              value as string | string[],
              target.configuration,
              key,
            ),
          );
        }
      }
    }
    holders.push({
      label: `client profiles of realm ${realm.realm}`,
      path: `${name}/client-policies/profiles`,
      model: { profiles: current.profiles },
      settings,
    });
  }
  return holders;
}

/**
 * Sets every realm value that the realm files fill from a URL or host placeholder to what
 * `wanted` gives. A list keeps the entries the admin console added or removed (`updatedList`).
 */
async function updateRealmUrls(
  keycloakUrl: string,
  admin: { username: string; password: string },
  realmFiles: string[],
  wanted: Record<string, string>,
  imported: Record<string, string>,
): Promise<void> {
  const realms = await readRealmFiles(realmFiles);
  const call = await adminCaller(keycloakUrl, admin);
  for (const holder of await readAddressHolders(call, realms)) {
    for (const setting of holder.settings) {
      setting.write(
        Array.isArray(setting.fromFile)
          ? updatedList(setting.fromFile, setting.read(), wanted, imported)
          : withAddresses(setting.fromFile, wanted),
      );
    }
    await call('PUT', holder.path, holder.model);
  }
}

/**
 * How a running realm differs from what `wanted` would make of the realm files' address
 * placeholders, one line per place: a value that is another (the audience of another server), an
 * entry missing from a list (a redirect URI, a host). Entries the admin console added to a list
 * are not differences. Empty when the realm serves these addresses.
 */
export async function realmAddressDifferences(
  keycloakUrl: string,
  wanted: Record<string, string>,
  options: KeptRealmOptions,
): Promise<string[]> {
  const realms = await readRealmFiles(options.realmFiles ?? [REALM_FILE]);
  const call = await adminCaller(keycloakUrl, options.admin ?? DEMO_ADMIN);
  const differences: string[] = [];
  for (const holder of await readAddressHolders(call, realms)) {
    for (const setting of holder.settings) {
      const current = setting.read();
      if (Array.isArray(setting.fromFile)) {
        const has = Array.isArray(current) ? current.map(String) : [];
        const missing = setting.fromFile
          .filter(holdsAddress)
          .map((entry) => withAddresses(entry, wanted))
          .filter((entry) => !has.includes(entry));
        if (missing.length > 0) differences.push(`${setting.label}: ${missing.join(', ')} missing`);
      } else {
        const expected = withAddresses(setting.fromFile, wanted);
        if (current !== expected) differences.push(`${setting.label}: ${String(current)}, not ${expected}`);
      }
    }
  }
  return differences;
}

/** The admin API refused the bootstrap admin: a Keycloak whose admin is someone else's. */
export class AdminSignInRefusedError extends Error {
  override name = 'AdminSignInRefusedError';
}

type AdminCall = (method: string, path: string, body?: unknown) => Promise<unknown>;

/** Calls of the admin API (`/admin/realms/…`) as the bootstrap admin. */
async function adminCaller(keycloakUrl: string, admin: { username: string; password: string }): Promise<AdminCall> {
  const tokenResponse = await fetch(`${keycloakUrl}/realms/master/protocol/openid-connect/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'password', client_id: 'admin-cli', ...admin }),
  });
  if (!tokenResponse.ok) {
    throw new AdminSignInRefusedError(
      `the bootstrap admin ${admin.username} could not sign in (HTTP ${tokenResponse.status})`,
    );
  }
  const { access_token: token } = (await tokenResponse.json()) as { access_token: string };
  return async (method, path, body) => {
    const response = await fetch(`${keycloakUrl}/admin/realms/${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    if (!response.ok) throw new Error(`${method} /admin/realms/${path}: HTTP ${response.status}`);
    // 201 Created and 204 No Content have no body.
    const text = await response.text();
    return text ? (JSON.parse(text) as unknown) : undefined;
  };
}

interface PolicyFile {
  name: string;
}

interface ProfileFile {
  name: string;
  executors?: ExecutorFile[];
}

/**
 * Client profiles, executors of a profile and client policies that the realm file has and a kept
 * realm lacks (a rule the file gained after the realm was imported) are added where the file
 * has them, their address placeholders filled with `wanted`. What the realm has is left as it is:
 * the admin console may have changed it. A missing piece with any other placeholder (a secret, a
 * switch) cannot be filled here and is an error naming it. Returns what was added.
 */
export async function addMissingClientPolicies(
  keycloakUrl: string,
  options: KeptRealmOptions,
  wanted: Record<string, string>,
): Promise<string[]> {
  const added: string[] = [];
  let call: AdminCall | undefined;
  for (const realmFile of options.realmFiles ?? [REALM_FILE]) {
    const realm = JSON.parse(await readFile(realmFile, 'utf8')) as {
      realm?: string;
      clientProfiles?: { profiles?: ProfileFile[] };
      clientPolicies?: { policies?: PolicyFile[] };
    };
    const fileProfiles = realm.clientProfiles?.profiles ?? [];
    const filePolicies = realm.clientPolicies?.policies ?? [];
    if (fileProfiles.length === 0 && filePolicies.length === 0) continue;
    call ??= await adminCaller(keycloakUrl, options.admin ?? DEMO_ADMIN);
    const name = encodeURIComponent(realm.realm ?? REALM_NAME);
    const filled = (value: unknown, what: string): unknown => {
      const text = JSON.stringify(value).replace(ADDRESS_PLACEHOLDER, (match, placeholder: string) =>
        placeholder in wanted ? JSON.stringify(wanted[placeholder]).slice(1, -1) : match,
      );
      const other = /\$\{([^}:]+)/.exec(text);
      if (other)
        throw new Error(
          `${what} of ${realmFile} is missing from realm ${realm.realm}, and holds \${${other[1]}}, which only an import fills`,
        );
      return JSON.parse(text) as unknown;
    };

    const current = (await call('GET', `${name}/client-policies/profiles`)) as { profiles?: ProfileFile[] };
    const profiles = current.profiles ?? [];
    let profilesChanged = false;
    for (const [index, profile] of fileProfiles.entries()) {
      const model = profiles.find((candidate) => candidate.name === profile.name);
      if (!model) {
        profiles.splice(
          Math.min(index, profiles.length),
          0,
          filled(profile, `client profile ${profile.name}`) as ProfileFile,
        );
        added.push(`client profile ${profile.name}`);
        profilesChanged = true;
        continue;
      }
      model.executors ??= [];
      for (const [position, executor] of (profile.executors ?? []).entries()) {
        if (model.executors.some((candidate) => candidate.executor === executor.executor)) continue;
        const what = `executor ${executor.executor} of client profile ${profile.name}`;
        model.executors.splice(Math.min(position, model.executors.length), 0, filled(executor, what) as ExecutorFile);
        added.push(what);
        profilesChanged = true;
      }
    }
    const currentPolicies = (await call('GET', `${name}/client-policies/policies`)) as { policies?: PolicyFile[] };
    const policies = currentPolicies.policies ?? [];
    let policiesChanged = false;
    for (const [index, policy] of filePolicies.entries()) {
      if (policies.some((candidate) => candidate.name === policy.name)) continue;
      policies.splice(
        Math.min(index, policies.length),
        0,
        filled(policy, `client policy ${policy.name}`) as PolicyFile,
      );
      added.push(`client policy ${policy.name}`);
      policiesChanged = true;
    }
    // Profiles first: a policy names its profiles.
    if (profilesChanged) await call('PUT', `${name}/client-policies/profiles`, { profiles });
    if (policiesChanged) await call('PUT', `${name}/client-policies/policies`, { policies });
  }
  return added;
}

interface MapperFile {
  name: string;
  protocolMapper?: string;
  config?: Record<string, string>;
}

interface AccountConsoleFile {
  clientId: string;
  defaultClientScopes?: string[];
  protocolMappers?: MapperFile[];
}

/**
 * Written to `data/` once the account console's parts were brought into a kept realm: the update
 * runs once, so what an administrator removes afterwards (a scope, a user's role) stays removed.
 * `--fresh` removes it with the database.
 */
export const ACCOUNT_CONSOLE_MARKER = 'account-console-updated';

/**
 * What makes the account console work (decision 84) and a realm imported before the file
 * declared Keycloak's account clients lacks: `account-console`'s default scopes and mappers as
 * the file has them, and the realm's default role for the file's users that hold it there.
 * Only added, never removed: the admin console may have added more. The caller runs it once
 * per kept realm (`ACCOUNT_CONSOLE_MARKER`). Returns what was added.
 */
export async function addMissingAccountConsoleParts(keycloakUrl: string, options: KeptRealmOptions): Promise<string[]> {
  const added: string[] = [];
  for (const realmFile of options.realmFiles ?? [REALM_FILE]) {
    const realm = JSON.parse(await readFile(realmFile, 'utf8')) as {
      realm?: string;
      clients?: AccountConsoleFile[];
      defaultRole?: { name?: string };
      users?: { username: string; realmRoles?: string[] }[];
    };
    const fileConsole = realm.clients?.find((client) => client.clientId === 'account-console');
    if (!fileConsole) continue;
    const call = await adminCaller(keycloakUrl, options.admin ?? DEMO_ADMIN);
    const name = encodeURIComponent(realm.realm ?? REALM_NAME);
    const [current] = (await call('GET', `${name}/clients?clientId=account-console`)) as {
      id: string;
      defaultClientScopes?: string[];
      optionalClientScopes?: string[];
      protocolMappers?: MapperFile[];
    }[];
    if (!current) continue;
    // A scope the client has as optional is Keycloak's to keep (adding it as default does nothing).
    const held = [...(current.defaultClientScopes ?? []), ...(current.optionalClientScopes ?? [])];
    const missingScopes = (fileConsole.defaultClientScopes ?? []).filter((scope) => !held.includes(scope));
    if (missingScopes.length > 0) {
      const scopes = (await call('GET', `${name}/client-scopes`)) as { id: string; name: string }[];
      for (const scope of missingScopes) {
        const id = scopes.find((candidate) => candidate.name === scope)?.id;
        if (!id) continue;
        await call('PUT', `${name}/clients/${current.id}/default-client-scopes/${id}`);
        added.push(`default scope ${scope} of account-console`);
      }
    }
    for (const mapper of fileConsole.protocolMappers ?? []) {
      // The same mapper under another name (made by hand, as keycloak/README.md tells) counts.
      const same = (candidate: MapperFile) =>
        candidate.name === mapper.name ||
        (candidate.protocolMapper === mapper.protocolMapper &&
          candidate.config?.['claim.name'] === mapper.config?.['claim.name']);
      if ((current.protocolMappers ?? []).some(same)) continue;
      await call('POST', `${name}/clients/${current.id}/protocol-mappers/models`, mapper);
      added.push(`mapper "${mapper.name}" of account-console`);
    }
    const defaultRole = realm.defaultRole?.name;
    if (!defaultRole) continue;
    let role: { id: string; name: string } | undefined;
    for (const user of realm.users ?? []) {
      if (!user.realmRoles?.includes(defaultRole)) continue;
      const [found] = (await call('GET', `${name}/users?username=${encodeURIComponent(user.username)}&exact=true`)) as {
        id: string;
      }[];
      if (!found) continue;
      const held = (await call('GET', `${name}/users/${found.id}/role-mappings/realm`)) as { name: string }[];
      if (held.some((candidate) => candidate.name === defaultRole)) continue;
      role ??= (await call('GET', `${name}/roles/${encodeURIComponent(defaultRole)}`)) as { id: string; name: string };
      await call('POST', `${name}/users/${found.id}/role-mappings/realm`, [{ id: role.id, name: role.name }]);
      added.push(`role ${defaultRole} of user ${user.username}`);
    }
  }
  return added;
}

/** A setting this updates: a string, or a list of strings. */
function isStringSetting(value: unknown): value is string | string[] {
  return typeof value === 'string' || (Array.isArray(value) && value.every((entry) => typeof entry === 'string'));
}

/** Whether a setting (a string, or a list of them) holds a URL or host placeholder. */
function holdsAddressInSetting(value: unknown): boolean {
  return isStringSetting(value) && (Array.isArray(value) ? value.some(holdsAddress) : holdsAddress(value));
}

/**
 * A list setting after an address change: each entry a placeholder gave at the last import is
 * replaced where it stands by the value it gives now, and everything else is left as the admin
 * console has it. An entry of the file without a placeholder is not put back when it was removed
 * there (removing `vscode\\.dev` from the hosts registrations may redirect to is a hardening the
 * move must not undo). A placeholder's entry whose old value is not in the list (removed, or
 * recorded with another value by an older start) is added: the file puts the server's address
 * there.
 */
export function updatedList(
  fromFile: unknown[],
  current: unknown,
  wanted: Record<string, string>,
  imported: Record<string, string>,
): string[] {
  const placeholders = fromFile.filter(holdsAddress);
  const moved = new Map(placeholders.map((entry) => [withAddresses(entry, imported), withAddresses(entry, wanted)]));
  const kept = (Array.isArray(current) ? current.map(String) : []).map((entry) => moved.get(entry) ?? entry);
  return [...new Set([...kept, ...placeholders.map((entry) => withAddresses(entry, wanted))])];
}
