/**
 * azd hooks for MCP_AUTH_PROVIDER=entra_proxy: the Entra app registration the server's OAuth
 * proxy signs users in with.
 *
 *   node infra/hooks/entra-app-registration.ts preprovision   # create or update; store id and secret
 *   node infra/hooks/entra-app-registration.ts postprovision  # add the deployed /auth/callback
 *
 * Idempotent: the app is found again by its unique name (then display name) and patched only
 * where it differs; a client secret is added only when the azd environment has none that the
 * app still knows. Other modes: both steps do nothing.
 *
 * Microsoft Graph is called over REST with a token from `@azure/identity` (the azd login by
 * default). The Graph URL, the credential and the azd environment are injectable for tests.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { generateSigningKey } from '@mcp-auth-stack/oauth-proxy';
import { STACK_AUTH_MODE } from '@mcp-auth-stack/server/config';
import { type AzdEnvironment, azdCli } from './azd.ts';

export const GRAPH_BASE_URL = 'https://graph.microsoft.com/v1.0';
export const GRAPH_SCOPE = 'https://graph.microsoft.com/.default';
export const MCP_SCOPE = 'mcp-access';
/** The app role of expenses administrators (the same name as the Keycloak realm role). */
export const ADMIN_ROLE = 'expenses-admin';
export const CALLBACK_PATH = '/auth/callback';
/** The local server's callback, so the same registration works for `pnpm start:server`. */
export const LOCAL_CALLBACK_URL = 'http://localhost:8000/auth/callback';
const MICROSOFT_GRAPH_APP_ID = '00000003-0000-0000-c000-000000000000';
const USER_READ_SCOPE_ID = 'e1fe6dd8-ba31-4d61-89e7-88639da4683d';
const SECRET_LIFETIME_DAYS = 180;
/**
 * A stored secret this close to its end is replaced at the next run: Entra keeps listing an
 * expired secret, so its mere presence does not say it still works.
 */
const SECRET_RENEWAL_DAYS = 30;

/** What @azure/identity's credentials offer (typed here so tests need not load it). */
export interface TokenCredentialLike {
  getToken(scopes: string | string[]): Promise<{ token: string } | null>;
}

export interface HookOptions {
  graphBaseUrl?: string;
  credential?: TokenCredentialLike;
  azd?: AzdEnvironment;
  /** The hook's environment (azd passes its environment values to hooks this way). */
  env?: Record<string, string | undefined>;
  log?: (message: string) => void;
  now?: () => Date;
}

interface PermissionScope {
  id: string;
  value: string;
  type: string;
  isEnabled: boolean;
  adminConsentDisplayName: string;
  adminConsentDescription: string;
  userConsentDisplayName: string;
  userConsentDescription: string;
}

interface AppRole {
  id: string;
  value: string;
  allowedMemberTypes: string[];
  displayName: string;
  description: string;
  isEnabled: boolean;
}

interface Application {
  id: string;
  appId: string;
  displayName: string;
  uniqueName?: string | null;
  identifierUris?: string[];
  web?: { redirectUris?: string[] };
  api?: { requestedAccessTokenVersion?: number | null; oauth2PermissionScopes?: PermissionScope[] };
  appRoles?: AppRole[];
  passwordCredentials?: { keyId: string; displayName?: string | null; endDateTime?: string | null }[];
}

export interface RegistrationResult {
  skipped: boolean;
  appId?: string;
  objectId?: string;
  created?: boolean;
  secretAdded?: boolean;
  patched?: boolean;
}

class Graph {
  private token: string | undefined;
  private readonly baseUrl: string;
  private readonly credential: TokenCredentialLike;
  constructor(baseUrl: string, credential: TokenCredentialLike) {
    this.baseUrl = baseUrl;
    this.credential = credential;
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    if (!this.token) {
      const token = await this.credential.getToken(GRAPH_SCOPE);
      if (!token) throw new Error('No token for Microsoft Graph: run `azd auth login` first.');
      this.token = token.token;
    }
    const response = await fetch(`${this.baseUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    if (!response.ok) {
      let detail = text.slice(0, 300);
      try {
        const error = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
        if (error) detail = `${error.code}: ${error.message}`;
      } catch {}
      throw new Error(`Microsoft Graph ${method} ${path.split('?')[0]} answered ${response.status} (${detail})`);
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }
}

async function defaultCredential(env: Record<string, string | undefined>): Promise<TokenCredentialLike> {
  // Loaded only when no credential is injected (the tests inject one).
  const specifier = '@azure/identity';
  let identity: { AzureDeveloperCliCredential: new (options?: { tenantId?: string }) => TokenCredentialLike };
  try {
    identity = (await import(specifier)) as typeof identity;
  } catch {
    throw new Error('@azure/identity is not installed: run `pnpm install` in the repository first.');
  }
  return new identity.AzureDeveloperCliCredential(env.AZURE_TENANT_ID ? { tenantId: env.AZURE_TENANT_ID } : {});
}

function odataString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

function registrationName(env: Record<string, string | undefined>): string {
  const envName = env.AZURE_ENV_NAME?.trim();
  if (!envName) throw new Error('AZURE_ENV_NAME is not set: run this through azd (azd provision / azd up).');
  return env.ENTRA_PROXY_APP_NAME?.trim() || `mcp-auth-stack-${envName}`;
}

async function findApplication(graph: Graph, name: string, appId: string | undefined): Promise<Application | null> {
  const select = '$select=id,appId,displayName,uniqueName,identifierUris,web,api,appRoles,passwordCredentials';
  if (appId) {
    const found = await graph.request<{ value: Application[] }>(
      'GET',
      `/applications?$filter=${encodeURIComponent(`appId eq ${odataString(appId)}`)}&${select}`,
    );
    if (found.value[0]) return found.value[0];
  }
  for (const property of ['uniqueName', 'displayName']) {
    const found = await graph.request<{ value: Application[] }>(
      'GET',
      `/applications?$filter=${encodeURIComponent(`${property} eq ${odataString(name)}`)}&${select}`,
    );
    if (found.value.length > 1) {
      throw new Error(
        `${found.value.length} app registrations are named ${name}; delete the extra ones or set ENTRA_PROXY_AZURE_CLIENT_ID.`,
      );
    }
    if (found.value[0]) return found.value[0];
  }
  return null;
}

function mcpScope(existing: PermissionScope | undefined): PermissionScope {
  return {
    id: existing?.id ?? randomUUID(),
    value: MCP_SCOPE,
    type: 'User',
    isEnabled: true,
    adminConsentDisplayName: 'Use the expenses MCP server',
    adminConsentDescription: 'Lets the app call the expenses MCP server as the signed-in user.',
    userConsentDisplayName: 'Use the expenses MCP server',
    userConsentDescription: 'Lets the app call the expenses MCP server as you.',
  };
}

/**
 * The app role whose members may see cross-user statistics: Entra puts `"roles":
 * ["expenses-admin"]` in the ID token of users (or groups) an administrator assigned to it
 * under Enterprise applications, and the proxy then grants them `expenses:admin`.
 */
function adminRole(existing: AppRole | undefined): AppRole {
  return {
    id: existing?.id ?? randomUUID(),
    value: ADMIN_ROLE,
    allowedMemberTypes: ['User'],
    displayName: 'Expenses administrator',
    description: 'Sees expense statistics across all users (the get_expense_stats tool).',
    isEnabled: true,
  };
}

/** The changes that bring `app` to the wanted state; empty when it is already there. */
function wantedPatch(app: Application, redirectUris: string[]): Record<string, unknown> {
  const patch: Record<string, unknown> = {};
  const identifierUri = `api://${app.appId}`;
  if (!app.identifierUris?.includes(identifierUri))
    patch.identifierUris = [...(app.identifierUris ?? []), identifierUri];
  const current = app.web?.redirectUris ?? [];
  const merged = [...new Set([...current, ...redirectUris])];
  if (merged.length !== current.length) patch.web = { redirectUris: merged };
  const scopes = app.api?.oauth2PermissionScopes ?? [];
  const existing = scopes.find((scope) => scope.value === MCP_SCOPE);
  const scope = mcpScope(existing);
  const scopeDiffers = !existing || JSON.stringify(existing) !== JSON.stringify({ ...existing, ...scope });
  const roles = app.appRoles ?? [];
  const existingRole = roles.find((role) => role.value === ADMIN_ROLE);
  const role = adminRole(existingRole);
  if (!existingRole || JSON.stringify(existingRole) !== JSON.stringify({ ...existingRole, ...role })) {
    patch.appRoles = [...roles.filter((r) => r.value !== ADMIN_ROLE), role];
  }
  if (scopeDiffers || app.api?.requestedAccessTokenVersion !== 2) {
    patch.api = {
      requestedAccessTokenVersion: 2,
      oauth2PermissionScopes: [...scopes.filter((s) => s.value !== MCP_SCOPE), scope],
    };
  }
  return patch;
}

async function context(options: HookOptions) {
  const azd = options.azd ?? azdCli();
  const env = { ...(options.env ?? process.env) };
  const log = options.log ?? ((message: string) => process.stdout.write(`${message}\n`));
  return { azd, env, log };
}

function inEntraProxyMode(env: Record<string, string | undefined>): boolean {
  return (env.MCP_AUTH_PROVIDER ?? STACK_AUTH_MODE).trim() === 'entra_proxy';
}

/** preprovision: create or update the app registration and store its id and a secret in azd. */
export async function preprovision(options: HookOptions = {}): Promise<RegistrationResult> {
  const { azd, env, log } = await context(options);
  if (!inEntraProxyMode(env)) {
    log(
      `MCP_AUTH_PROVIDER is ${env.MCP_AUTH_PROVIDER ?? `${STACK_AUTH_MODE} (default)`}: no Entra app registration needed.`,
    );
    return { skipped: true };
  }
  const graph = new Graph(options.graphBaseUrl ?? GRAPH_BASE_URL, options.credential ?? (await defaultCredential(env)));
  const name = registrationName(env);
  const redirectUris = [LOCAL_CALLBACK_URL, ...(env.MCP_OAUTH_CALLBACK_URL ? [env.MCP_OAUTH_CALLBACK_URL] : [])];

  let app = await findApplication(graph, name, env.ENTRA_PROXY_AZURE_CLIENT_ID);
  const created = app === null;
  if (!app) {
    app = await graph.request<Application>('POST', '/applications', {
      displayName: name,
      uniqueName: name,
      signInAudience: 'AzureADMyOrg',
      web: { redirectUris, implicitGrantSettings: { enableAccessTokenIssuance: false, enableIdTokenIssuance: false } },
      api: { requestedAccessTokenVersion: 2, oauth2PermissionScopes: [mcpScope(undefined)] },
      appRoles: [adminRole(undefined)],
      requiredResourceAccess: [
        { resourceAppId: MICROSOFT_GRAPH_APP_ID, resourceAccess: [{ id: USER_READ_SCOPE_ID, type: 'Scope' }] },
      ],
    });
    log(`Created the app registration ${name} (client id ${app.appId}).`);
  }
  const patch = wantedPatch(app, redirectUris);
  if (Object.keys(patch).length > 0) {
    await graph.request('PATCH', `/applications/${app.id}`, patch);
    log(`Updated ${name}: ${Object.keys(patch).join(', ')}.`);
  }

  const principals = await graph.request<{ value: { id: string }[] }>(
    'GET',
    `/servicePrincipals?$filter=${encodeURIComponent(`appId eq ${odataString(app.appId)}`)}&$select=id`,
  );
  if (principals.value.length === 0) await graph.request('POST', '/servicePrincipals', { appId: app.appId });

  const storedKeyId = env.ENTRA_PROXY_AZURE_CLIENT_SECRET_ID;
  const now = options.now?.() ?? new Date();
  const renewFrom = now.getTime() + SECRET_RENEWAL_DAYS * 86_400_000;
  const secretKnown =
    Boolean(env.ENTRA_PROXY_AZURE_CLIENT_SECRET) &&
    (app.passwordCredentials ?? []).some(
      (credential) =>
        credential.keyId === storedKeyId &&
        (credential.endDateTime == null || Date.parse(credential.endDateTime) > renewFrom),
    );
  let secretAdded = false;
  if (!secretKnown) {
    const end = new Date(now.getTime() + SECRET_LIFETIME_DAYS * 86_400_000);
    const secret = await graph.request<{ keyId: string; secretText: string }>(
      'POST',
      `/applications/${app.id}/addPassword`,
      { passwordCredential: { displayName: `azd ${env.AZURE_ENV_NAME}`, endDateTime: end.toISOString() } },
    );
    await azd.set('ENTRA_PROXY_AZURE_CLIENT_SECRET', secret.secretText);
    await azd.set('ENTRA_PROXY_AZURE_CLIENT_SECRET_ID', secret.keyId);
    secretAdded = true;
    log(`Added a client secret (valid ${SECRET_LIFETIME_DAYS} days) and stored it in the azd environment.`);
  }
  if (env.ENTRA_PROXY_AZURE_CLIENT_ID !== app.appId) await azd.set('ENTRA_PROXY_AZURE_CLIENT_ID', app.appId);
  // The proxy's own keys, made once per environment: replicas share them through Key Vault, and
  // changing them would invalidate every token and stored upstream grant. The signing key is a
  // JWK, JSON with quotes, which azd would paste unescaped into main.parameters.json's JSON, so
  // the azd environment holds it base64-encoded and the Bicep decodes it (base64ToString).
  if (!env.OAUTH_PROXY_SIGNING_KEY_BASE64) {
    // An environment from before the encoding keeps its key (it never reached a deployment).
    const jwk = env.OAUTH_PROXY_SIGNING_KEY || JSON.stringify(await generateSigningKey());
    await azd.set('OAUTH_PROXY_SIGNING_KEY_BASE64', Buffer.from(jwk, 'utf8').toString('base64'));
    log(
      env.OAUTH_PROXY_SIGNING_KEY
        ? 'Stored the OAuth proxy token-signing key base64-encoded in the azd environment.'
        : 'Generated the OAuth proxy token-signing key and stored it in the azd environment.',
    );
  }
  if (!env.OAUTH_PROXY_ENCRYPTION_KEY) {
    await azd.set('OAUTH_PROXY_ENCRYPTION_KEY', randomBytes(32).toString('base64url'));
    log('Generated the OAuth proxy encryption key and stored it in the azd environment.');
  }
  return {
    skipped: false,
    appId: app.appId,
    objectId: app.id,
    created,
    secretAdded,
    patched: Object.keys(patch).length > 0,
  };
}

/** postprovision: add the deployed server's /auth/callback to the registration's redirect URIs. */
export async function postprovision(options: HookOptions = {}): Promise<RegistrationResult> {
  const { azd, env, log } = await context(options);
  if (!inEntraProxyMode(env)) return { skipped: true };
  // The azd environment after provisioning (its outputs), in case the hook's own predates them.
  const values = await azd.values();
  const callback =
    values.MCP_OAUTH_CALLBACK_URL ??
    env.MCP_OAUTH_CALLBACK_URL ??
    (values.MCP_SERVER_BASE_URL ? `${values.MCP_SERVER_BASE_URL}${CALLBACK_PATH}` : undefined);
  const appId = values.ENTRA_PROXY_AZURE_CLIENT_ID ?? env.ENTRA_PROXY_AZURE_CLIENT_ID;
  if (!callback || !appId)
    throw new Error('MCP_OAUTH_CALLBACK_URL or ENTRA_PROXY_AZURE_CLIENT_ID is missing: run azd provision.');
  const graph = new Graph(options.graphBaseUrl ?? GRAPH_BASE_URL, options.credential ?? (await defaultCredential(env)));
  const app = await findApplication(graph, registrationName(env), appId);
  if (!app) throw new Error(`No app registration with client id ${appId}: run azd provision again.`);
  const current = app.web?.redirectUris ?? [];
  if (current.includes(callback)) {
    log(`${callback} is already a redirect URI of the app registration.`);
    return { skipped: false, appId: app.appId, objectId: app.id, patched: false };
  }
  await graph.request('PATCH', `/applications/${app.id}`, { web: { redirectUris: [...current, callback] } });
  log(`Added ${callback} to the app registration's redirect URIs.`);
  return { skipped: false, appId: app.appId, objectId: app.id, patched: true };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const step = process.argv[2];
  const steps: Record<string, () => Promise<unknown>> = { preprovision, postprovision };
  const run = step ? steps[step] : undefined;
  if (!run) {
    process.stderr.write('usage: node infra/hooks/entra-app-registration.ts preprovision|postprovision\n');
    process.exit(64);
  }
  run().catch((error: unknown) => {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(1);
  });
}
