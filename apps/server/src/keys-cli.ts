import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  API_KEY_PREFIX,
  ApiKeyInputError,
  type ApiKeyRecord,
  ApiKeyStore,
  couldBeAKey,
  looksLikeApiKey,
  MAX_API_KEY_LIFETIME_SECONDS,
} from '@mcp-auth-stack/auth';
import { EXPENSE_SCOPES, EXPENSE_USER_SCOPES } from '@mcp-auth-stack/expenses';
import { ConfigError, loadConfig } from './config.ts';
import { openAppDatabase } from './database.ts';

/** What a key can meaningfully carry: the scopes the expenses tools check. */
const KEY_SCOPES: readonly string[] = Object.values(EXPENSE_SCOPES);

const USAGE = `Manage API keys for MCP_AUTH_PROVIDER=key.

Usage:
  pnpm keys create --user <id> [--name <label>] [--scope <scope>]... [--expires-in <n>d|<n>h]
      Creates a key and prints it once, on the last line. Only its hash is stored.
      --expires-in: it stops working after that many days (90d) or hours (12h); without it,
      it works until revoked.
      Scopes a key can carry: ${KEY_SCOPES.join(', ')}. Without --scope it gets
      ${EXPENSE_USER_SCOPES.join(' and ')}; each --scope replaces that default, so name them all:
      ${[...EXPENSE_USER_SCOPES, EXPENSE_SCOPES.admin].map((scope) => `--scope ${scope}`).join(' ')}
      for a user who also sees the statistics. The user id and name are plain text: no
      control, bidirectional or invisible characters; and the user id must not pass for
      another (no fullwidth or styled letters, no Latin mixed with Cyrillic or Greek).
  pnpm keys list [--user <id>]
      Lists keys (never the keys themselves): id, user, name, scopes, created, last used,
      expires, status.
  pnpm keys revoke <key-id>
  pnpm keys revoke <key>
      Revokes a key, by its id or by the key itself (mcpk_…, as a secret scanner reports
      a leaked one; it is never printed back): refused by running servers within 1 s
      (their next request on the embedded database).

Uses DATABASE_URL when set, else the embedded database in DATA_DIR (default .data),
whether or not the server is running; each command names the database it used.`;

/** The options each command reads. */
const OPTIONS_OF: Readonly<Record<string, readonly string[]>> = {
  create: ['user', 'name', 'scope', 'expires-in'],
  list: ['user'],
  revoke: [],
};

function parseOptions(args: string[]) {
  return parseArgs({
    args,
    allowPositionals: true,
    options: {
      // Collected, to refuse a second one: parseArgs would keep the last without a word.
      user: { type: 'string', multiple: true },
      name: { type: 'string', multiple: true },
      scope: { type: 'string', multiple: true },
      'expires-in': { type: 'string', multiple: true },
    },
  });
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return command ? 0 : 64;
  }
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions(rest);
  } catch (error) {
    // An unknown option, or one without its value: a usage error like the others (64), not a failure.
    if ((error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS_')) return usage((error as Error).message);
    throw error;
  }
  const { values, positionals } = parsed;
  // An option a command does not read is refused, not ignored: `revoke --user alice <id>` would
  // otherwise revoke the key whoever it belongs to.
  const allowed = Object.hasOwn(OPTIONS_OF, command) ? OPTIONS_OF[command] : undefined;
  const unread = Object.keys(values).filter((option) => allowed && !allowed.includes(option));
  if (unread.length > 0) return usage(`${command} takes no ${unread.map((option) => `--${option}`).join(' or ')}`);
  for (const option of ['user', 'name', 'expires-in'] as const) {
    if ((values[option]?.length ?? 0) > 1) return usage(`--${option} given more than once`);
  }
  // As create stores it: `list --user ' alice '` finds alice's keys.
  const user = values.user?.[0]?.trim();
  const name = values.name?.[0];

  if (command === 'create' && !user) return usage('create needs --user <id>');
  if ((command === 'create' || command === 'list') && positionals.length > 0) {
    // `create --user alice laptop` would otherwise drop "laptop" without a word.
    return usage(
      `${command} takes no arguments besides its options; got ${positionals.map((word) => JSON.stringify(word)).join(' ')}`,
    );
  }
  const unknownScopes = (values.scope ?? []).filter((scope) => !KEY_SCOPES.includes(scope));
  if (unknownScopes.length > 0) {
    return usage(
      `unknown scope ${unknownScopes.map((scope) => JSON.stringify(scope)).join(', ')}: a key can carry ${KEY_SCOPES.join(', ')}`,
    );
  }
  const expiresIn = values['expires-in']?.[0];
  const lifetime = expiresIn === undefined ? undefined : lifetimeSeconds(expiresIn);
  if (lifetime === null) {
    return usage(
      `--expires-in takes a number of days or hours from 1 to ten years (90d, 12h); got ${JSON.stringify(expiresIn)}`,
    );
  }
  if (command === 'revoke' && (positionals.length !== 1 || !positionals[0]?.trim())) {
    return usage('revoke needs exactly one key id, or the key');
  }
  const revoking = command === 'revoke' ? (positionals[0] as string).trim() : '';
  // A key, even a mistyped one or one pasted with more around it (`Bearer mcpk_…`), is a secret:
  // never printed back (a terminal's or CI's log keeps it).
  if (/mcpk/i.test(revoking) && !looksLikeApiKey(revoking)) {
    return usage(`that is not a whole key: ${API_KEY_PREFIX} and 43 more characters (the key is not shown here)`);
  }
  if (!['create', 'list', 'revoke'].includes(command)) return usage(`unknown command "${command}"`);

  // Only the database settings matter to keys: a shell that exported the server's mode
  // (MCP_AUTH_PROVIDER=keycloak) without that mode's own variables must still reach it.
  const config = loadConfig({ ...process.env, MCP_AUTH_PROVIDER: 'key' });
  // Listing or revoking makes no database: a mistyped DATA_DIR would get a new, empty one.
  if (command !== 'create' && !config.databaseUrl && !existsSync(join(config.dataDir, 'pgdata'))) {
    process.stderr.write(
      `No embedded database in ${config.dataDir} (DATA_DIR): nothing to ${command}. Check DATA_DIR (relative to the repository root under pnpm); the server's first start makes the database, and so does pnpm keys create.\n`,
    );
    return 1;
  }
  const database = await openAppDatabase(config, 'tool');
  const store = new ApiKeyStore(database.pool);
  // A key made in the wrong database (a forgotten DATABASE_URL, another DATA_DIR) is refused by
  // the server for no reason anyone can see: every command says which one it used.
  process.stderr.write(`Database: ${database.location}\n`);
  try {
    switch (command) {
      case 'create': {
        let created: Awaited<ReturnType<ApiKeyStore['create']>>;
        try {
          created = await store.create({
            userId: user as string,
            name,
            scopes: values.scope ?? [...EXPENSE_USER_SCOPES],
            expiresInSeconds: lifetime,
          });
        } catch (error) {
          if (error instanceof ApiKeyInputError) return usage(error.message);
          throw error;
        }
        const { record, secret } = created;
        process.stderr.write(
          `Created ${record.id} for user ${record.userId}${record.scopes.length ? ` with scopes ${record.scopes.join(' ')}` : ''}${record.expiresAt ? `, expiring ${record.expiresAt}` : ''}.\n` +
            'This is the only time the key is shown; store it now:\n',
        );
        process.stdout.write(`${secret}\n`);
        return 0;
      }
      case 'list': {
        const keys = await store.list({ userId: user });
        if (keys.length === 0) {
          process.stdout.write('No keys.\n');
          return 0;
        }
        const rows = keys.map((key) => [
          key.id,
          key.userId,
          key.name ?? '',
          key.scopes.join(' '),
          key.createdAt,
          key.lastUsedAt ?? 'never',
          key.expiresAt ?? 'never',
          statusOf(key),
        ]);
        process.stdout.write(
          table(['ID', 'USER', 'NAME', 'SCOPES', 'CREATED', 'LAST USED', 'EXPIRES', 'STATUS'], rows),
        );
        return 0;
      }
      case 'revoke': {
        if (looksLikeApiKey(revoking)) {
          const id = await store.revokeBySecret(revoking);
          if (id !== undefined) {
            process.stdout.write(`Revoked ${id} (the key given).\n`);
            return 0;
          }
          process.stderr.write('No active key is the key given (unknown here, or already revoked).\n');
          return 1;
        }
        if (await store.revoke(revoking)) {
          process.stdout.write(`Revoked ${revoking}.\n`);
          return 0;
        }
        process.stderr.write(withoutKeys(`No active key with id ${JSON.stringify(revoking)}.\n`));
        return 1;
      }
    }
    return 64;
  } finally {
    await database.close();
  }
}

/** `90d` or `12h` in seconds; null for anything else, or beyond ten years. */
function lifetimeSeconds(text: string): number | null {
  const match = /^([1-9][0-9]{0,5})([dh])$/.exec(text);
  if (!match) return null;
  const seconds = Number(match[1]) * (match[2] === 'd' ? 86_400 : 3_600);
  return seconds <= MAX_API_KEY_LIFETIME_SECONDS ? seconds : null;
}

function statusOf(key: ApiKeyRecord): string {
  if (key.revokedAt) return `revoked ${key.revokedAt}`;
  if (key.expired) return 'expired';
  return 'active';
}

function usage(problem: string): number {
  process.stderr.write(`${withoutKeys(problem)}\n\n${USAGE}\n`);
  return 64; // EX_USAGE
}

/**
 * A message with every word that could be a key (`couldBeAKey`) replaced: whatever was typed
 * where a key might go is a secret a terminal's or CI's log would keep. Words are split at
 * white space and quotes, so the time is linear in the message.
 */
function withoutKeys(message: string): string {
  return message.replace(/[^\s"]+/g, (word) => (couldBeAKey(word) ? '(a key, not shown)' : word));
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`${error instanceof ConfigError ? error.message : `keys: ${(error as Error).message}`}\n`);
  process.exitCode = 1;
}
