/**
 * azd postprovision hook: writes the deployment's URLs and endpoints into the repository's
 * `.env.azure`, inside a marked block it replaces on every run (lines outside it are kept), so a
 * local agent or a test can talk to what was just deployed (`node --env-file=.env.azure …`).
 * Not `.env`: docker compose reads that one on its own, and `API_HOST=azure` or the deployed
 * `MCP_AUTH_PROVIDER` would change the local stack. Secrets are never written: they stay in Key
 * Vault and the azd environment.
 *
 *   node infra/hooks/write-env.ts [path]   # default: .env.azure at the repository root
 */
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { type AzdEnvironment, azdCli } from './azd.ts';

/** Where the hook writes by default. */
export const DEFAULT_ENV_FILE = fileURLToPath(new URL('../../.env.azure', import.meta.url));

/** Outputs of infra/azure/main.bicep copied to the file (infra/test checks each is an output). */
export const ENV_FILE_OUTPUTS = [
  'MCP_SERVER_URL',
  'MCP_AUTH_PROVIDER',
  'AGENT_URL',
  'KEYCLOAK_URL',
  'KEYCLOAK_REALM_URL',
  'KEYCLOAK_ADMIN_CONSOLE_URL',
  'AZURE_OPENAI_ENDPOINT',
  'AZURE_OPENAI_CHAT_DEPLOYMENT',
  'AZURE_KEY_VAULT_NAME',
  'AZURE_RESOURCE_GROUP',
  'AZURE_TENANT_ID',
  'APPLICATIONINSIGHTS_CONNECTION_STRING',
] as const;

export const BEGIN = '# >>> azd (written by infra/hooks/write-env.ts; replaced on every azd provision)';
export const END = '# <<< azd';

function quote(value: string): string {
  return /^[\w./:@%+,-]*$/.test(value) ? value : JSON.stringify(value);
}

/** `text` without this hook's block; lines of one's own stay. */
function withoutBlock(text: string): string {
  const pattern = new RegExp(`${BEGIN.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[\\s\\S]*?${END}\\n?`, 'g');
  return text.replace(pattern, '').replace(/\n*$/, '');
}

/** The file's new text: `existing` without its old block, plus the new block. */
export function renderEnvFile(existing: string, values: Record<string, string>): string {
  const kept = withoutBlock(existing);
  const lines = [
    BEGIN,
    // A local agent then uses the deployed model without keys (your azd/az login).
    'API_HOST=azure',
    ...ENV_FILE_OUTPUTS.filter((name) => values[name]).map((name) => `${name}=${quote(values[name] as string)}`),
    END,
  ];
  return `${kept ? `${kept}\n\n` : ''}${lines.join('\n')}\n`;
}

/** What `azd up` ends by printing: where the deployment answers (the outputs that are set). */
export function deploymentSummary(values: Record<string, string>): string[] {
  const rows: [string, string | undefined][] = [
    ['MCP server', values.MCP_SERVER_URL],
    ['Keycloak realm', values.KEYCLOAK_REALM_URL],
    ['Keycloak admin console', values.KEYCLOAK_ADMIN_CONSOLE_URL],
    ['Agent', values.AGENT_URL],
  ];
  return rows.filter((row): row is [string, string] => Boolean(row[1])).map(([what, url]) => `${what}: ${url}`);
}

export async function writeEnvFile(
  path: string,
  azd: AzdEnvironment = azdCli(),
): Promise<{ path: string; written: string[]; summary: string[] }> {
  const values = await azd.values();
  const existing = await readFile(path, 'utf8').catch(() => '');
  await writeFile(path, renderEnvFile(existing, values), { mode: 0o600 });
  return { path, written: ENV_FILE_OUTPUTS.filter((name) => values[name]), summary: deploymentSummary(values) };
}

/**
 * Takes this hook's block out of `path` (the `.env` it wrote before it wrote `.env.azure`, which
 * docker compose would keep reading). Whether there was one.
 */
export async function removeBlock(path: string): Promise<boolean> {
  const existing = await readFile(path, 'utf8').catch(() => undefined);
  if (existing === undefined) return false;
  const kept = withoutBlock(existing);
  // A BEGIN without its END is not a block this hook wrote whole: left as it is.
  if (kept === existing.replace(/\n*$/, '')) return false;
  await writeFile(path, kept ? `${kept}\n` : '');
  return true;
}

/** Where the hook wrote before `.env.azure`. */
const FORMER_ENV_FILE = fileURLToPath(new URL('../../.env', import.meta.url));

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const path = process.argv[2] ?? DEFAULT_ENV_FILE;
  Promise.all([writeEnvFile(path), process.argv[2] ? false : removeBlock(FORMER_ENV_FILE)]).then(
    ([{ written, summary }, removed]) =>
      process.stdout.write(
        `${summary.map((line) => `${line}\n`).join('')}Wrote ${written.length} values to ${path}\n${
          removed
            ? `Removed the block an earlier azd provision wrote to ${FORMER_ENV_FILE} (docker compose reads that file).\n`
            : ''
        }`,
      ),
    (error: unknown) => {
      process.stderr.write(`${(error as Error).message}\n`);
      process.exit(1);
    },
  );
}
