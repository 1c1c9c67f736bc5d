import { resolve } from 'node:path';

/**
 * Readers for one environment variable each. A missing or invalid value throws a ConfigError
 * whose message names the variable, so an app's config module stops start-up with it.
 */
export type Env = Record<string, string | undefined>;

export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`Invalid configuration: ${variable} ${problem}`);
    this.name = 'ConfigError';
  }
}

/** The trimmed value, or undefined when unset or blank. */
export function optional(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

export function required(env: Env, name: string, why: string): string {
  const value = optional(env, name);
  if (value === undefined) throw new ConfigError(name, `is required ${why}`);
  return value;
}

export function text(env: Env, name: string, fallback: string): string {
  return optional(env, name) ?? fallback;
}

export function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

export function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = optional(env, name)?.toLowerCase();
  if (raw === undefined) return fallback;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new ConfigError(name, `must be true or false, got "${raw}"`);
}

export function oneOf<T extends string>(env: Env, name: string, values: readonly T[], fallback: T): T {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  if (!(values as readonly string[]).includes(raw)) {
    throw new ConfigError(name, `must be one of ${values.join(', ')}, got "${raw}"`);
  }
  return raw as T;
}

/** A comma-separated list, items trimmed, empty items dropped. */
export function list(env: Env, name: string, fallback: string[]): string[] {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  return raw
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

/**
 * A comma-separated list of web origins, as browsers send them in `Origin`: `scheme://host[:port]`,
 * lower case, no default port, no path. Compared as text, so `http://localhost:6274/` or `*`
 * would match no request: each is refused here, with the form to write. A value that lists
 * nothing is refused too (unset, the fallback applies). Returns the origins in their browser form.
 */
export function originList(env: Env, name: string, fallback: string[]): string[] {
  const items = nonEmptyList(env, name, fallback, 'origin');
  return items.map((item) => {
    const example = 'scheme://host[:port], e.g. http://localhost:6274';
    const quoted = quotedItem(item);
    if (item.includes('*') || item.toLowerCase() === 'null') {
      throw new ConfigError(name, `lists ${quoted}: name each origin a browser may call from, in full (${example})`);
    }
    let url: URL;
    try {
      url = new URL(item);
    } catch {
      throw new ConfigError(name, `lists ${quoted}, which is not an origin (${example})`);
    }
    if (url.protocol === 'http:' || url.protocol === 'https:') {
      if (url.origin !== item.toLowerCase()) {
        throw new ConfigError(name, `lists ${quoted}, which is not an origin as browsers send it: write ${url.origin}`);
      }
      return url.origin;
    }
    // Another scheme (a browser extension's, an editor's web view): its origin is the text itself.
    if (!/^[a-z][a-z0-9+.-]*:\/\/[^/?#@\s]+$/i.test(item)) {
      throw new ConfigError(name, `lists ${quoted}, which is not an origin (${example})`);
    }
    return item.toLowerCase();
  });
}

/**
 * A comma-separated list of host names, each optionally with a port, as clients send them in
 * `Host`: `mcp.example.com`, `localhost:8000`, `[::1]`. A URL, a path, `*` or a host the URL
 * parser would write otherwise is refused with the form to write (they would match no request).
 * A value that lists nothing is refused (unset, the fallback applies).
 */
export function hostList(env: Env, name: string, fallback: string[]): string[] {
  const items = nonEmptyList(env, name, fallback, 'host');
  return items.map((item) => {
    const example = 'a host name with an optional port, e.g. mcp.example.com or localhost:8000';
    const quoted = quotedItem(item);
    if (item.includes('*')) {
      throw new ConfigError(name, `lists ${quoted}: name each host in full (${example})`);
    }
    if (item.includes('://')) {
      let host: string | undefined;
      try {
        host = new URL(item).host;
      } catch {}
      throw new ConfigError(name, `lists ${quoted}, a URL: ${host ? `write its host, ${host}` : example}`);
    }
    let url: URL;
    try {
      url = new URL(`http://${item}`);
    } catch {
      throw new ConfigError(name, `lists ${quoted}, which is not ${example}`);
    }
    if (url.username || url.password || url.pathname !== '/' || url.search || url.hash) {
      throw new ConfigError(name, `lists ${quoted}, which is not ${example}`);
    }
    const lower = item.toLowerCase();
    // `host:80` is how the parser's `http:` drops its default port; clients send it either way.
    if (url.host !== lower && `${url.host}:80` !== lower) {
      throw new ConfigError(name, `lists ${quoted}, which clients send as ${url.host}: write that`);
    }
    return lower;
  });
}

/** An item for a message, quoted unless it may hold a password (`user:secret@`). */
function quotedItem(item: string): string {
  return item.includes('@') ? 'an item with a user name' : `"${item}"`;
}

function nonEmptyList(env: Env, name: string, fallback: string[], what: string): string[] {
  const items = list(env, name, fallback);
  if (items.length === 0 && optional(env, name) !== undefined) {
    throw new ConfigError(name, `lists no ${what}: name at least one, or leave it unset for the default`);
  }
  return items;
}

/** Parses an absolute URL, naming the variable when it is not one. */
export function parseUrl(name: string, raw: string): URL {
  try {
    return new URL(raw);
  } catch {
    // Quoted unless it may hold credentials (`user:secret@`): the value is for spotting a typo.
    throw new ConfigError(
      name,
      raw.includes('@') ? 'must be an absolute URL' : `must be an absolute URL, got "${raw}"`,
    );
  }
}

/**
 * An http(s) URL without query, fragment, user name, password or trailing slash. An undefined
 * `fallback` makes the variable required (`why` says when).
 */
export function httpUrl(env: Env, name: string, fallback: string | undefined, why = ''): string {
  const raw = optional(env, name) ?? fallback;
  if (raw === undefined) throw new ConfigError(name, `is required ${why}`.trim());
  const parsed = parseUrl(name, raw);
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new ConfigError(name, 'must be http or https');
  if (parsed.search || parsed.hash) throw new ConfigError(name, 'must not have a query or fragment');
  // fetch refuses such a URL, and every error that names it would carry the password.
  if (parsed.username || parsed.password) throw new ConfigError(name, 'must not carry a user name or password');
  return parsed.toString().replace(/\/+$/, '');
}

/**
 * A directory, as an absolute path: a relative value (or fallback) is resolved against `cwd`
 * (the working directory by default, which for `pnpm <script>` is the repository root). Done
 * here, where the variable is read, so no later consumer sees a relative path: `pg` takes a
 * relative socket directory for a host name, and symlinks resolve relative targets from
 * their own folder.
 */
export function directory(env: Env, name: string, fallback: string, cwd: string = process.cwd()): string {
  const value = optional(env, name) ?? fallback;
  if (value.includes('\0')) throw new ConfigError(name, 'must be a path without NUL characters');
  return resolve(cwd, value);
}

/**
 * The MCP server's URL when MCP_SERVER_BASE_URL is not set: `localhost` where it reaches the
 * listener (every address, or the usual loopback ones); on one address of its own
 * (`HOST=192.0.2.2`, `127.0.0.2`) that address, since `localhost` would reach nothing there and
 * requests naming the address would be refused as a foreign Host. The server and the realm it
 * is imported for both read it.
 */
export function defaultServerBaseUrl(host: string, port: number): string {
  const localhost = `http://localhost:${port}`;
  // The URL parser's spelling: `0`, `0:0:0:0:0:0:0:0` and `::ffff:127.0.0.1` are the usual
  // addresses too. One it cannot put in a URL (an IPv6 zone, `fe80::1%eth0`) keeps localhost.
  let hostname: string;
  try {
    hostname = new URL(`http://${host.includes(':') ? `[${host}]` : host}`).hostname;
  } catch {
    return localhost;
  }
  const usual = ['localhost', '0.0.0.0', '127.0.0.1', '[::]', '[::1]', '[::ffff:7f00:1]', '[::ffff:0:0]'];
  return usual.includes(hostname) ? localhost : `http://${hostname}:${port}`;
}

/**
 * Why `listen` on HOST and PORT failed, as the variable to change, or undefined when the error
 * is not one a setting explains. Node's own (`listen EADDRINUSE: address already in use`, or a
 * DNS error for a HOST that is not this machine's) names neither variable.
 */
export function listenConfigError(error: unknown, host: string, port: number): ConfigError | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  switch (code) {
    case 'EADDRINUSE':
      return new ConfigError('PORT', `${port} is in use on ${host}: stop what holds it, or choose another PORT`);
    case 'EACCES':
      return new ConfigError('PORT', `${port} needs privileges this process does not have: choose a port above 1023`);
    case 'EADDRNOTAVAIL':
      return new ConfigError('HOST', `${host} is not an address of this machine`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ConfigError('HOST', `${host} is not a host name this machine can resolve`);
    default:
      return undefined;
  }
}
