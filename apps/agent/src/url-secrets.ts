/**
 * URLs written into error texts, without what they may carry: an MCP server's URL may hold its key
 * (`?tavilyApiKey=…`), and errors reach the terminal, the log, /ready, /chat and the model.
 */
import type { AgentConfig } from './config.ts';

/**
 * `error` itself when its message holds nothing to hide; else a new Error (its `stack` and `cause`
 * would still carry what the message had) of the same class and name, whose message has every
 * URL that carries a query, a fragment or userinfo cut to its origin and path
 * (`withoutUrlSecrets`), or as `hide` writes it.
 */
export function withUrlSecretsHidden(error: unknown, hide: (text: string) => string = withoutUrlSecrets): Error {
  const original = error instanceof Error ? error : new Error(String(error));
  const message = hide(original.message);
  if (message === original.message) return original;
  const hidden = new Error(message);
  Object.setPrototypeOf(hidden, Object.getPrototypeOf(original));
  hidden.name = original.name;
  return hidden;
}

/**
 * A URL in running text: a scheme and `//`, up to white space, a double quote, `<`, `>` or a
 * backtick, less the punctuation of the sentence around it (`…?key=s, but`).
 */
const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"<>`]*[^\s"<>`.,;:!)\]]/gi;

/**
 * `text` with every URL that has a query, a fragment or userinfo written as its origin and path,
 * with markers where something was left out: `https://mcp.tavily.com/mcp/?…`, `#…`,
 * `https://…@host/`. What is left is enough to tell which server failed, and holds no key. A
 * URL that does not parse is cut after its scheme, since where its secret ends is unknown.
 */
export function withoutUrlSecrets(text: string): string {
  return text.replace(URL_IN_TEXT, (found) => {
    if (!URL.canParse(found)) return `${found.slice(0, found.indexOf('//') + 2)}…`;
    const url = new URL(found);
    if (!url.search && !url.hash && !url.username && !url.password) return found;
    const userinfo = url.username || url.password ? '…@' : '';
    return `${url.protocol}//${userinfo}${url.host}${url.pathname}${url.search ? '?…' : ''}${url.hash ? '#…' : ''}`;
  });
}

/** Shorter values are not taken for secrets: replacing them everywhere would garble the text. */
const SHORTEST_SECRET = 6;
/** Shorter model credentials are placeholders: OpenAI's, Azure's and GitHub's keys are 32 or more. */
const SHORTEST_MODEL_CREDENTIAL = 16;

/**
 * What the configuration holds that a server could repeat without its URL around it (a
 * framework's "Route POST:/mcp?apiKey=… not found"): of every MCP server URL its query (whole and
 * each value), fragment, user name and password; each extra server's header values (whole and
 * after an auth scheme such as `Bearer`); the MCP key or client secret (`clientSecretForms`); the
 * model provider's key or token. Each as written and percent-decoded.
 */

export function configuredSecrets(
  config: Pick<AgentConfig, 'mcpServerUrl' | 'extraServers' | 'mcpAuth'> & Partial<Pick<AgentConfig, 'model'>>,
): string[] {
  const found = new Set<string>();
  const add = (value: string) => {
    for (const form of [value, safelyDecoded(value)]) if (form.length >= SHORTEST_SECRET) found.add(form);
  };
  for (const raw of [config.mcpServerUrl, ...config.extraServers.map((server) => server.url)]) {
    if (!URL.canParse(raw)) continue;
    const url = new URL(raw);
    add(url.search.slice(1));
    for (const pair of url.search.slice(1).split('&')) add(pair.slice(pair.indexOf('=') + 1));
    add(url.hash.slice(1));
    add(url.username);
    add(url.password);
  }
  for (const server of config.extraServers) {
    for (const value of Object.values(server.headers)) {
      add(value);
      add(value.slice(value.indexOf(' ') + 1));
    }
  }
  if (config.mcpAuth.mode === 'key') add(config.mcpAuth.apiKey);
  if (config.mcpAuth.mode === 'client_credentials' || config.mcpAuth.mode === 'oauth') {
    const { clientId, clientSecret } = config.mcpAuth;
    if (clientSecret) for (const form of clientSecretForms(clientId, clientSecret)) add(form);
  }
  // The model provider's credential, which its client's errors may quote. Not a short
  // placeholder (`OPENAI_API_KEY=unused` for a local server, as the README shows): no secret, and
  // hiding it would cut that word out of every text.
  const model = config.model;
  const modelCredential =
    model?.host === 'openai' || model?.host === 'azure'
      ? model.apiKey
      : model?.host === 'github'
        ? model.token
        : undefined;
  if (modelCredential && modelCredential.length >= SHORTEST_MODEL_CREDENTIAL) add(modelCredential);
  // Longest first: a value inside a longer one (a query value in the whole query) goes with it.
  return longestFirst([...found]);
}

/**
 * A client secret as a token request carries it, which a token endpoint that echoes its request
 * quotes: as written, form-encoded (`client_secret_post`: `URLSearchParams` writes a space as
 * `+`, `encodeURIComponent` as `%20`), and inside `client_secret_basic`'s base64 of `id:secret`,
 * form-encoded first as RFC 6749 asks (this agent) or not (clients that do not). Only forms long
 * enough to be told from ordinary text.
 */
export function clientSecretForms(clientId: string | undefined, clientSecret: string): string[] {
  const basic = (id: string, secret: string) => Buffer.from(`${id}:${secret}`).toString('base64');
  const forms = formSpellings(clientSecret);
  if (clientId !== undefined) {
    forms.push(basic(encodeURIComponent(clientId), encodeURIComponent(clientSecret)), basic(clientId, clientSecret));
  }
  return longestFirst(forms.filter((form) => form.length >= SHORTEST_SECRET));
}

/** A value as written and as a form body or a URL carries it (a space as `+`, or as `%20`). */
function formSpellings(value: string): string[] {
  return [value, encodeURIComponent(value), new URLSearchParams({ s: value }).toString().slice(2)];
}

/** Each once, longest first: a value inside a longer one goes with it. */
function longestFirst(values: readonly string[]): string[] {
  return [...new Set(values)].sort((a, b) => b.length - a.length);
}

/**
 * Secrets the agent obtains while it runs, to be hidden like the configured ones: the access
 * and refresh tokens of the expenses server (a server or token endpoint that echoes its request,
 * a debugging page say, would hand them to the model, the terminal, the log and `/chat`). The
 * newest few are kept: older tokens have expired, and each one kept costs every hidden text a
 * search.
 */
export class ObtainedSecrets {
  static readonly KEPT = 8;
  readonly #kept: string[] = [];
  #forms: readonly string[] = [];

  add(value: string | undefined): void {
    if (value === undefined || value.length < SHORTEST_SECRET || this.#kept.includes(value)) return;
    this.#kept.unshift(value);
    this.#kept.length = Math.min(this.#kept.length, ObtainedSecrets.KEPT);
    this.#forms = longestFirst(this.#kept.flatMap(formSpellings));
  }

  /**
   * Each kept secret as written and as a form body carries it (a refresh request sends the
   * refresh token form-encoded, and an answer quoting the request quotes that: Google's begin
   * with `1//`), longest first.
   */
  get values(): readonly string[] {
    return this.#forms;
  }
}

function safelyDecoded(value: string): string {
  try {
    return decodeURIComponent(value.replaceAll('+', ' '));
  } catch {
    return value;
  }
}

/**
 * `withoutUrlSecrets`, then every one of `secrets` (longest first, `configuredSecrets`) and of
 * `obtained` left in the text replaced by `…`.
 */
export function secretsHider(secrets: readonly string[], obtained?: ObtainedSecrets): (text: string) => string {
  return (text) => {
    let hidden = withoutUrlSecrets(text);
    for (const secret of secrets) if (hidden.includes(secret)) hidden = hidden.replaceAll(secret, '…');
    for (const secret of obtained?.values ?? []) if (hidden.includes(secret)) hidden = hidden.replaceAll(secret, '…');
    return hidden;
  };
}
