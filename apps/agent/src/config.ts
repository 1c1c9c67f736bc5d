/**
 * The agent's whole configuration, read from the environment once at start-up. A missing or
 * invalid variable stops the process with a message that names it, before any model or MCP
 * server is contacted.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  boolean,
  ConfigError,
  directory,
  type Env,
  httpUrl,
  integer,
  LOG_LEVELS,
  type LogLevel,
  oneOf,
  optional,
  parseUrl,
  required,
  text,
} from '@mcp-auth-stack/config';

export { ConfigError, type LogLevel };

export type ApiHost = 'azure' | 'openai' | 'github' | 'ollama';
export type McpAuthMode = 'oauth' | 'client_credentials' | 'key' | 'none';

/** Which chat-completions endpoint the agent talks to; every one goes through `ChatOpenAI`. */
export type ModelProviderConfig =
  | { host: 'openai'; apiKey: string; model: string; baseUrl: string | undefined }
  | { host: 'azure'; endpoint: string; deployment: string; apiKey: string | undefined }
  | { host: 'github'; token: string; model: string; baseUrl: string }
  | { host: 'ollama'; baseUrl: string; model: string };

/** How the agent proves who it is to the expenses MCP server (`MCP_SERVER_URL`). */
export type McpAuthConfig =
  /** No credential: for a server in `none` mode (development, or a private network). */
  | { mode: 'none' }
  | { mode: 'key'; apiKey: string }
  | {
      mode: 'client_credentials';
      clientId: string;
      clientSecret: string;
      scope: string;
      /** Skips discovery from the server's 401 when set (a server without protected resource metadata). */
      tokenUrl: string | undefined;
      /**
       * The server's public resource, when the agent reaches it by another URL (compose:
       * http://server:8000/mcp for http://localhost:8000/mcp); its metadata must name exactly it.
       */
      resource: string | undefined;
    }
  | {
      mode: 'oauth';
      /** A pre-registered client (e.g. `vscode-mcp-client`); unset means CIMD or Dynamic Client Registration. */
      clientId: string | undefined;
      /** A pre-registered confidential client's secret; only with `clientId`. */
      clientSecret: string | undefined;
      /** HTTPS URL of a Client ID Metadata Document; used when the authorization server supports CIMD. */
      clientMetadataUrl: string | undefined;
      /**
       * `MCP_SCOPE`, or empty: then the login asks for what the server names, as the MCP
       * specification's scope selection has it (its 401's `scope`, else its metadata's
       * `scopes_supported`, else no scope at all).
       */
      scope: string;
      /** `MCP_SCOPE` was set: the first login asks for exactly that (more only by step-up). */
      exactScope: boolean;
      /** Port of the loopback redirect listener on 127.0.0.1; 0 picks a free one. */
      redirectPort: number;
      /** Where tokens and client registrations are kept (files mode 0600). */
      cacheDir: string;
    };

/** Another MCP server whose tools the agent may use, as the talk configures Tavily. */
export interface ExtraMcpServer {
  name: string;
  url: string;
  headers: Record<string, string>;
  /**
   * The server's tool annotations are believed: a tool it marks read-only runs without asking.
   * Unset, every call of its tools is confirmed (MCP: annotations are untrusted unless they come
   * from a trusted server).
   */
  trustAnnotations: boolean;
}

export interface AgentConfig {
  mcpServerUrl: string;
  mcpAuth: McpAuthConfig;
  extraServers: ExtraMcpServer[];
  model: ModelProviderConfig;
  /** `serve` mode only: where the HTTP endpoint listens. */
  host: string;
  port: number;
  /** `serve` mode only: when set, `POST /chat` needs `Authorization: Bearer <token>`. */
  chatToken: string | undefined;
  /**
   * `serve` mode without a token: `AGENT_CHAT_UNAUTHENTICATED=true` lets `/chat` answer callers
   * from any address (still no web pages), for a listener the network alone guards (compose
   * publishes the port on 127.0.0.1). Without it, only connections from loopback.
   */
  chatUnauthenticated: boolean;
  /** `serve` mode: a `/chat` turn still running after this is stopped and answered 504. */
  turnTimeoutSeconds: number;
  /**
   * Tool calls that may delete or overwrite data (MCP annotations: not read-only, not marked
   * non-destructive): `ask` the person at the terminal first (refused where nobody can be asked:
   * HTTP mode, a one-shot run without a terminal), `refuse` them, or `allow` them unasked.
   */
  destructiveTools: DestructiveToolsPolicy;
  /** How long the model may take to start its answer, each attempt (raise it for a slow local model). */
  modelTimeoutSeconds: number;
  logLevel: LogLevel;
}

/**
 * Every variable `loadConfig` reads for the agent; the README documents each (a test keeps the
 * two in step). Not listed: `XDG_CACHE_HOME` and `HOME`, the usual places of the token cache.
 */
export const CONFIG_VARIABLES = [
  'MCP_SERVER_URL',
  'MCP_AUTH',
  'MCP_API_KEY',
  'MCP_CLIENT_ID',
  'MCP_CLIENT_SECRET',
  'MCP_CLIENT_METADATA_URL',
  'MCP_SCOPE',
  'MCP_TOKEN_URL',
  'MCP_RESOURCE',
  'MCP_OAUTH_REDIRECT_PORT',
  'MCP_CACHE_DIR',
  'MCP_EXTRA_SERVERS',
  'API_HOST',
  'OPENAI_API_KEY',
  'OPENAI_MODEL',
  'OPENAI_BASE_URL',
  'AZURE_OPENAI_ENDPOINT',
  'AZURE_OPENAI_CHAT_DEPLOYMENT',
  'AZURE_OPENAI_API_KEY',
  'GITHUB_TOKEN',
  'GITHUB_MODEL',
  'OLLAMA_BASE_URL',
  'OLLAMA_MODEL',
  'HOST',
  'PORT',
  'AGENT_CHAT_TOKEN',
  'AGENT_CHAT_UNAUTHENTICATED',
  'AGENT_TURN_TIMEOUT_SECONDS',
  'AGENT_DESTRUCTIVE_TOOLS',
  'MODEL_TIMEOUT_SECONDS',
  'LOG_LEVEL',
] as const;

export const API_HOSTS: readonly ApiHost[] = ['azure', 'openai', 'github', 'ollama'];
export type DestructiveToolsPolicy = 'ask' | 'allow' | 'refuse';
export const DESTRUCTIVE_TOOLS_POLICIES: readonly DestructiveToolsPolicy[] = ['ask', 'allow', 'refuse'];
export const MCP_AUTH_MODES: readonly McpAuthMode[] = ['oauth', 'client_credentials', 'key', 'none'];

/**
 * What the service account asks for (`client_credentials`): access to the MCP server, then
 * reading and writing expenses. A person's login (`oauth`) asks for what the server names.
 */
export const DEFAULT_MCP_SCOPE = 'mcp:access expenses:read expenses:write';
/** The realm's service-account client (keycloak/README.md). */
export const DEFAULT_AGENT_CLIENT_ID = 'expenses-agent';
export const DEFAULT_MCP_SERVER_URL = 'http://localhost:8000/mcp';
export const GITHUB_MODELS_BASE_URL = 'https://models.github.ai/inference';
export const DEFAULT_OLLAMA_BASE_URL = 'http://localhost:11434/v1';
export const DEFAULT_OPENAI_MODEL = 'gpt-4.1-mini';
export const DEFAULT_GITHUB_MODEL = 'openai/gpt-4.1-mini';
export const DEFAULT_OLLAMA_MODEL = 'llama3.1';

export function loadConfig(env: Env = process.env): AgentConfig {
  const mcpServerUrl = endpointUrl(env, 'MCP_SERVER_URL', DEFAULT_MCP_SERVER_URL);
  return {
    mcpServerUrl,
    mcpAuth: loadMcpAuth(env),
    extraServers: loadExtraServers(env, mcpServerUrl),
    model: loadModelProvider(env),
    host: text(env, 'HOST', '127.0.0.1'),
    port: integer(env, 'PORT', 8001, 0, 65535),
    chatToken: loadChatToken(env),
    chatUnauthenticated: boolean(env, 'AGENT_CHAT_UNAUTHENTICATED', false),
    turnTimeoutSeconds: integer(env, 'AGENT_TURN_TIMEOUT_SECONDS', 120, 1, 3600),
    destructiveTools: oneOf(env, 'AGENT_DESTRUCTIVE_TOOLS', DESTRUCTIVE_TOOLS_POLICIES, 'ask'),
    modelTimeoutSeconds: integer(env, 'MODEL_TIMEOUT_SECONDS', 60, 1, 3600),
    logLevel: oneOf(env, 'LOG_LEVEL', LOG_LEVELS, 'info'),
  };
}

/** Whether a header value holds only what HTTP carries (RFC 9110 5.5): tab, visible ASCII, space, obs-text. */
function httpCanCarry(value: string): boolean {
  return !/[^\t\x20-\x7e\x80-\xff]/.test(value);
}

/**
 * A credential sent in an HTTP header, checked for what HTTP can carry (RFC 9110 5.5) when it is
 * read: fetch refuses the rest only when it is sent, quoting the value, and a service would
 * start, report ready and fail every request. The value is never shown.
 */
function headerCredential<T extends string | undefined>(name: string, value: T): T {
  if (value !== undefined && !httpCanCarry(value)) {
    throw new ConfigError(
      name,
      'holds a character HTTP cannot carry (a line break, a control character, or one past U+00FF); the value is not shown since it is a secret',
    );
  }
  return value;
}

/** `/chat`'s bearer secret must not be guessable: azd generates 40 characters, the compose test 32. */
export const CHAT_TOKEN_MIN_LENGTH = 32;

function loadChatToken(env: Env): string | undefined {
  const token = optional(env, 'AGENT_CHAT_TOKEN');
  // What a caller can send after `Bearer `: printable ASCII. A token with other characters
  // (past U+007E, a control character) could not be presented by fetch or curl alike, so /chat
  // would refuse everyone.
  if (token !== undefined && !/^[\x20-\x7e]+$/.test(token)) {
    throw new ConfigError(
      'AGENT_CHAT_TOKEN',
      'must be printable ASCII characters (e.g. openssl rand -base64 32); the value is not shown since it is a secret',
    );
  }
  if (token !== undefined && token.length < CHAT_TOKEN_MIN_LENGTH) {
    throw new ConfigError(
      'AGENT_CHAT_TOKEN',
      `must be at least ${CHAT_TOKEN_MIN_LENGTH} characters, got ${token.length}: it is the password of /chat (e.g. openssl rand -base64 32)`,
    );
  }
  return token;
}

export function loadModelProvider(env: Env): ModelProviderConfig {
  const host = optional(env, 'API_HOST');
  if (host === undefined) {
    throw new ConfigError('API_HOST', `is not set: choose the model provider, one of ${API_HOSTS.join(', ')}`);
  }
  if (!(API_HOSTS as readonly string[]).includes(host)) {
    throw new ConfigError('API_HOST', `must be one of ${API_HOSTS.join(', ')}, got "${host}"`);
  }
  switch (host as ApiHost) {
    case 'openai':
      return {
        host: 'openai',
        apiKey: headerCredential(
          'OPENAI_API_KEY',
          required(env, 'OPENAI_API_KEY', 'with API_HOST=openai (any value for a compatible server without keys)'),
        ),
        model: text(env, 'OPENAI_MODEL', DEFAULT_OPENAI_MODEL),
        baseUrl: optional(env, 'OPENAI_BASE_URL') === undefined ? undefined : httpUrl(env, 'OPENAI_BASE_URL', ''),
      };
    case 'azure':
      return {
        host: 'azure',
        endpoint: httpUrl(
          env,
          'AZURE_OPENAI_ENDPOINT',
          undefined,
          'with API_HOST=azure (e.g. https://<resource>.openai.azure.com)',
        ),
        deployment: required(
          env,
          'AZURE_OPENAI_CHAT_DEPLOYMENT',
          'with API_HOST=azure (the chat model deployment name)',
        ),
        apiKey: headerCredential('AZURE_OPENAI_API_KEY', optional(env, 'AZURE_OPENAI_API_KEY')),
      };
    case 'github':
      return {
        host: 'github',
        token: headerCredential(
          'GITHUB_TOKEN',
          required(env, 'GITHUB_TOKEN', 'with API_HOST=github (a token with the models:read permission)'),
        ),
        model: text(env, 'GITHUB_MODEL', DEFAULT_GITHUB_MODEL),
        baseUrl: GITHUB_MODELS_BASE_URL,
      };
    case 'ollama':
      return {
        host: 'ollama',
        baseUrl: httpUrl(env, 'OLLAMA_BASE_URL', DEFAULT_OLLAMA_BASE_URL),
        model: text(env, 'OLLAMA_MODEL', DEFAULT_OLLAMA_MODEL),
      };
  }
}

export function loadMcpAuth(env: Env): McpAuthConfig {
  const mode = oneOf(env, 'MCP_AUTH', MCP_AUTH_MODES, 'oauth');
  switch (mode) {
    case 'none':
      return { mode };
    case 'key':
      return {
        mode,
        apiKey: headerCredential(
          'MCP_API_KEY',
          required(env, 'MCP_API_KEY', 'with MCP_AUTH=key (create one with `pnpm keys create`)'),
        ),
      };
    case 'client_credentials':
      return {
        mode,
        clientId: text(env, 'MCP_CLIENT_ID', DEFAULT_AGENT_CLIENT_ID),
        clientSecret: required(
          env,
          'MCP_CLIENT_SECRET',
          'with MCP_AUTH=client_credentials (the service client secret)',
        ),
        scope: text(env, 'MCP_SCOPE', DEFAULT_MCP_SCOPE),
        tokenUrl: optional(env, 'MCP_TOKEN_URL') === undefined ? undefined : endpointUrl(env, 'MCP_TOKEN_URL', ''),
        resource: optional(env, 'MCP_RESOURCE') === undefined ? undefined : endpointUrl(env, 'MCP_RESOURCE', ''),
      };
    case 'oauth': {
      const clientMetadataUrl = optional(env, 'MCP_CLIENT_METADATA_URL');
      if (clientMetadataUrl !== undefined) {
        // The MCP SDK refuses anything else, and so would a careful authorization server.
        const parsed = parseUrl('MCP_CLIENT_METADATA_URL', clientMetadataUrl);
        if (parsed.protocol !== 'https:' || parsed.pathname === '/') {
          throw new ConfigError(
            'MCP_CLIENT_METADATA_URL',
            'must be an https URL with a path (a Client ID Metadata Document)',
          );
        }
      }
      const clientId = optional(env, 'MCP_CLIENT_ID');
      const clientSecret = optional(env, 'MCP_CLIENT_SECRET');
      if (clientSecret !== undefined && clientId === undefined) {
        throw new ConfigError(
          'MCP_CLIENT_SECRET',
          'with MCP_AUTH=oauth belongs to a pre-registered client: set MCP_CLIENT_ID too (or unset MCP_CLIENT_SECRET to register dynamically)',
        );
      }
      return {
        mode,
        clientId,
        clientSecret,
        clientMetadataUrl,
        scope: optional(env, 'MCP_SCOPE') ?? '',
        exactScope: optional(env, 'MCP_SCOPE') !== undefined,
        redirectPort: integer(env, 'MCP_OAUTH_REDIRECT_PORT', 0, 0, 65535),
        cacheDir: directory(env, 'MCP_CACHE_DIR', defaultCacheDir(env)),
      };
    }
  }
}

/**
 * `$XDG_CACHE_HOME/mcp-auth-stack/agent`, else `~/.cache/mcp-auth-stack/agent`; absolute, a
 * relative value resolved against the working directory (as every path variable, decision 24).
 */
export function defaultCacheDir(env: Env): string {
  const cacheHome = directory(env, 'XDG_CACHE_HOME', join(optional(env, 'HOME') ?? homedir(), '.cache'));
  return join(cacheHome, 'mcp-auth-stack', 'agent');
}

/**
 * An http(s) URL that names one thing (an MCP endpoint, a token endpoint, a resource), kept as
 * written: `httpUrl` drops a trailing `/`, which is part of such a URL (`https://h/mcp/` is not
 * `https://h/mcp`, and a resource is compared as a string). Base URLs, which paths are appended
 * to, go through `httpUrl`.
 */
function endpointUrl(env: Env, name: string, fallback: string): string {
  // httpUrl's checks (scheme, no query, fragment or credentials); only its value is not used.
  httpUrl(env, name, fallback);
  return optional(env, name) ?? fallback;
}

/**
 * `MCP_EXTRA_SERVERS` is JSON: `{"tavily": {"url": "https://mcp.tavily.com/mcp/", "headers":
 * {"Authorization": "Bearer …"}}}`. Headers are the only credential these servers get.
 */
export function loadExtraServers(env: Env, mcpServerUrl: string): ExtraMcpServer[] {
  const raw = optional(env, 'MCP_EXTRA_SERVERS');
  if (raw === undefined) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (error) {
    // V8's message quotes the input around the error, which here may be part of a header secret:
    // only the position (digits) goes into ours.
    const position = /at position (\d+)/.exec((error as Error).message)?.[1];
    throw new ConfigError(
      'MCP_EXTRA_SERVERS',
      `is not valid JSON${position === undefined ? '' : ` (error at character ${position})`}; the value is not shown since its headers may hold secrets`,
    );
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError('MCP_EXTRA_SERVERS', 'must be a JSON object of name → {"url": …, "headers": {…}}');
  }
  return Object.entries(parsed).map(([name, value]) => {
    const where = `MCP_EXTRA_SERVERS.${name}`;
    if (!/^[A-Za-z0-9_-]+$/.test(name) || name === 'expenses') {
      throw new ConfigError(where, 'must be named with letters, digits, - or _ and not "expenses"');
    }
    if (typeof value !== 'object' || value === null) throw new ConfigError(where, 'must be an object with "url"');
    const {
      url: serverUrl,
      headers = {},
      trustAnnotations = false,
      ...unknown
    } = value as { url?: unknown; headers?: unknown; trustAnnotations?: unknown };
    const [stray] = Object.keys(unknown);
    if (stray !== undefined) {
      throw new ConfigError(`${where}.${stray}`, 'is not a setting: "url", "headers" and "trustAnnotations" are');
    }
    if (typeof serverUrl !== 'string') throw new ConfigError(`${where}.url`, 'must be a string');
    if (typeof trustAnnotations !== 'boolean')
      throw new ConfigError(`${where}.trustAnnotations`, 'must be true or false');
    // Not parseUrl: its message quotes the value, and such URLs may carry a key in their query
    // (`?tavilyApiKey=…`).
    if (!URL.canParse(serverUrl)) {
      throw new ConfigError(
        `${where}.url`,
        'must be an absolute URL (http:// or https://); the value is not shown since it may hold a secret',
      );
    }
    const parsedUrl = new URL(serverUrl);
    if (parsedUrl.protocol !== 'http:' && parsedUrl.protocol !== 'https:') {
      throw new ConfigError(`${where}.url`, 'must be http or https');
    }
    // fetch refuses such a URL, and a service would retry it for ever, as for MCP_SERVER_URL.
    if (parsedUrl.username || parsedUrl.password) {
      throw new ConfigError(`${where}.url`, 'must not carry a user name or password: send credentials in "headers"');
    }
    if (parsedUrl.toString() === new URL(mcpServerUrl).toString()) {
      throw new ConfigError(`${where}.url`, 'is MCP_SERVER_URL again');
    }
    if (
      typeof headers !== 'object' ||
      headers === null ||
      Object.values(headers).some((header) => typeof header !== 'string')
    ) {
      throw new ConfigError(`${where}.headers`, 'must be an object of string values');
    }
    // What HTTP can carry (RFC 9110 5.1, 5.5), checked here: fetch refuses the rest only at
    // connect, where the service would retry a header that can never be sent.
    for (const [header, value] of Object.entries(headers as Record<string, string>)) {
      if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(header)) {
        throw new ConfigError(
          `${where}.headers`,
          `has a header name HTTP cannot carry: ${JSON.stringify(header.slice(0, 40))}`,
        );
      }
      if (!httpCanCarry(value)) {
        throw new ConfigError(
          `${where}.headers.${header}`,
          'holds a character HTTP cannot carry (a line break, a control character, or one past U+00FF); the value is not shown since it may be a secret',
        );
      }
    }
    return { name, url: serverUrl, headers: headers as Record<string, string>, trustAnnotations };
  });
}
