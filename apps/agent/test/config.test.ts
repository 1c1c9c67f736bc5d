import assert from 'node:assert/strict';
import { access, chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, test } from 'node:test';
import type { AccessToken, GetTokenOptions, TokenCredential } from '@azure/identity';
import { browserCommand, systemBrowserOpener } from '../src/auth/browser.ts';
import { checkedResource } from '../src/auth/discovery.ts';
import { CONFIG_VARIABLES, loadConfig } from '../src/config.ts';
import { AZURE_COGNITIVE_SERVICES_SCOPE, buildChatModelOptions, createChatModel } from '../src/model.ts';

const MCP = { MCP_AUTH: 'key', MCP_API_KEY: 'mcpk_test' };
const modelOf = (env: Record<string, string>) => loadConfig({ ...MCP, ...env }).model;

describe('provider selection (API_HOST): base URL, model and credentials, without network', () => {
  test('openai: api.openai.com by default, OPENAI_BASE_URL for any compatible endpoint', () => {
    assert.deepEqual(
      buildChatModelOptions(modelOf({ API_HOST: 'openai', OPENAI_API_KEY: 'sk-1', OPENAI_MODEL: 'gpt-x' })),
      {
        baseURL: 'https://api.openai.com/v1',
        model: 'gpt-x',
        apiKey: 'sk-1',
        credential: 'api-key',
      },
    );
    const compatible = buildChatModelOptions(
      modelOf({ API_HOST: 'openai', OPENAI_API_KEY: 'k', OPENAI_BASE_URL: 'http://127.0.0.1:9999/v1/' }),
    );
    assert.equal(compatible.baseURL, 'http://127.0.0.1:9999/v1');
    assert.equal(compatible.model, 'gpt-4.1-mini');
  });

  test('azure with a key: the v1 endpoint of the resource, the deployment as the model', () => {
    const options = buildChatModelOptions(
      modelOf({
        API_HOST: 'azure',
        AZURE_OPENAI_ENDPOINT: 'https://my-resource.openai.azure.com/',
        AZURE_OPENAI_CHAT_DEPLOYMENT: 'chat-deploy',
        AZURE_OPENAI_API_KEY: 'azure-key',
      }),
    );
    assert.deepEqual(options, {
      baseURL: 'https://my-resource.openai.azure.com/openai/v1',
      model: 'chat-deploy',
      apiKey: 'azure-key',
      credential: 'api-key',
    });
  });

  test('azure without a key: an Entra ID token for Cognitive Services, fetched per request', async () => {
    const asked: string[] = [];
    const credential: TokenCredential = {
      async getToken(scopes: string | string[], _options?: GetTokenOptions): Promise<AccessToken> {
        asked.push(...[scopes].flat());
        return { token: `entra-token-${asked.length}`, expiresOnTimestamp: Date.now() + 3_600_000 };
      },
    };
    const options = buildChatModelOptions(
      modelOf({
        API_HOST: 'azure',
        AZURE_OPENAI_ENDPOINT: 'https://r.openai.azure.com',
        AZURE_OPENAI_CHAT_DEPLOYMENT: 'd',
      }),
      { azureCredential: () => credential },
    );
    assert.equal(options.credential, 'entra-id');
    assert.equal(options.baseURL, 'https://r.openai.azure.com/openai/v1');
    assert.equal(typeof options.apiKey, 'function');
    assert.equal(await (options.apiKey as () => Promise<string>)(), 'entra-token-1');
    assert.deepEqual(asked, [AZURE_COGNITIVE_SERVICES_SCOPE]);
  });

  test('github: GitHub Models inference endpoint with the GitHub token', () => {
    assert.deepEqual(buildChatModelOptions(modelOf({ API_HOST: 'github', GITHUB_TOKEN: 'ghp_x' })), {
      baseURL: 'https://models.github.ai/inference',
      model: 'openai/gpt-4.1-mini',
      apiKey: 'ghp_x',
      credential: 'github-token',
    });
    assert.equal(
      buildChatModelOptions(modelOf({ API_HOST: 'github', GITHUB_TOKEN: 'g', GITHUB_MODEL: 'meta/llama' })).model,
      'meta/llama',
    );
  });

  test('ollama: the local OpenAI-compatible endpoint by default, no real key', () => {
    assert.deepEqual(buildChatModelOptions(modelOf({ API_HOST: 'ollama' })), {
      baseURL: 'http://localhost:11434/v1',
      model: 'llama3.1',
      apiKey: 'ollama',
      credential: 'none',
    });
    const remote = buildChatModelOptions(
      modelOf({ API_HOST: 'ollama', OLLAMA_BASE_URL: 'http://gpu-box:11434/v1', OLLAMA_MODEL: 'qwen3:8b' }),
    );
    assert.deepEqual([remote.baseURL, remote.model], ['http://gpu-box:11434/v1', 'qwen3:8b']);
  });

  test('ChatOpenAI gets exactly those settings', () => {
    const model = createChatModel({
      baseURL: 'http://127.0.0.1:1/v1',
      model: 'm-1',
      apiKey: 'k-1',
      credential: 'api-key',
    });
    assert.equal(model.model, 'm-1');
    assert.equal(model.apiKey, 'k-1');
    assert.equal(model.clientConfig.baseURL, 'http://127.0.0.1:1/v1');
  });
});

describe('missing or invalid settings name the variable', () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    ['no API_HOST', {}, /API_HOST is not set/],
    ['unknown API_HOST', { API_HOST: 'anthropic' }, /API_HOST must be one of azure, openai, github, ollama/],
    ['openai without key', { API_HOST: 'openai' }, /OPENAI_API_KEY is required/],
    [
      'azure without endpoint',
      { API_HOST: 'azure', AZURE_OPENAI_CHAT_DEPLOYMENT: 'd' },
      /AZURE_OPENAI_ENDPOINT is required/,
    ],
    [
      'azure without deployment',
      { API_HOST: 'azure', AZURE_OPENAI_ENDPOINT: 'https://r.openai.azure.com' },
      /AZURE_OPENAI_CHAT_DEPLOYMENT is required/,
    ],
    ['github without token', { API_HOST: 'github' }, /GITHUB_TOKEN is required/],
    ['bad ollama URL', { API_HOST: 'ollama', OLLAMA_BASE_URL: 'localhost:11434' }, /OLLAMA_BASE_URL must be/],
    // Credentials HTTP cannot carry: fetch would refuse them only when sent, quoting them, and a
    // service would report ready and fail every request. The value is never shown.
    [
      'an OpenAI key with a line break',
      { API_HOST: 'openai', OPENAI_API_KEY: 'sk-proj-LEAKME1\nLEAKME2' },
      /^Invalid configuration: OPENAI_API_KEY holds a character HTTP cannot carry (?!.*LEAKME)/,
    ],
    [
      'a GitHub token with a line break',
      { API_HOST: 'github', GITHUB_TOKEN: 'ghp_SECRETTOKEN\nX' },
      /^Invalid configuration: GITHUB_TOKEN holds a character HTTP cannot carry (?!.*SECRETTOKEN)/,
    ],
    [
      'an Azure key with a control character',
      {
        API_HOST: 'azure',
        AZURE_OPENAI_ENDPOINT: 'https://r.openai.azure.com',
        AZURE_OPENAI_CHAT_DEPLOYMENT: 'd',
        AZURE_OPENAI_API_KEY: 'abc\u0007def',
      },
      /^Invalid configuration: AZURE_OPENAI_API_KEY holds a character HTTP cannot carry/,
    ],
    [
      'an AGENT_CHAT_TOKEN no caller could send',
      { API_HOST: 'ollama', AGENT_CHAT_TOKEN: '€'.repeat(32) },
      /^Invalid configuration: AGENT_CHAT_TOKEN must be printable ASCII characters/,
    ],
    // A guessable password for /chat; the message gives its length, never the value.
    [
      'a short AGENT_CHAT_TOKEN',
      { API_HOST: 'ollama', AGENT_CHAT_TOKEN: 'chat-secret' },
      /^Invalid configuration: AGENT_CHAT_TOKEN must be at least 32 characters, got 11: (?!.*chat-secret)/,
    ],
    // The bound itself: 31 characters are one too few.
    [
      'an AGENT_CHAT_TOKEN one character short',
      { API_HOST: 'ollama', AGENT_CHAT_TOKEN: 'x'.repeat(31) },
      /^Invalid configuration: AGENT_CHAT_TOKEN must be at least 32 characters, got 31/,
    ],
  ];
  for (const [name, env, message] of cases) {
    test(name, () => {
      assert.throws(
        () => loadConfig({ ...MCP, ...env }),
        (error: Error) => {
          assert.equal(error.name, 'ConfigError');
          assert.match(error.message, message);
          return true;
        },
      );
    });
  }

  const ollama = { API_HOST: 'ollama' };
  const mcpCases: [string, Record<string, string>, RegExp][] = [
    ['key mode without key', { MCP_AUTH: 'key' }, /MCP_API_KEY is required with MCP_AUTH=key/],
    ['unknown mode', { MCP_AUTH: 'password' }, /MCP_AUTH must be one of oauth, client_credentials, key, none/],
    ['client credentials without secret', { MCP_AUTH: 'client_credentials' }, /MCP_CLIENT_SECRET is required/],
    [
      'an oauth client secret without its client id',
      { MCP_CLIENT_SECRET: 's' },
      /MCP_CLIENT_SECRET with MCP_AUTH=oauth belongs to a pre-registered client: set MCP_CLIENT_ID/,
    ],
    ['bad MCP URL', { MCP_SERVER_URL: 'ftp://x/mcp' }, /MCP_SERVER_URL must be http or https/],
    [
      'CIMD over http',
      { MCP_CLIENT_METADATA_URL: 'http://example.com/client.json' },
      /MCP_CLIENT_METADATA_URL must be an https URL/,
    ],
    ['bad port', { MCP_OAUTH_REDIRECT_PORT: '70000' }, /MCP_OAUTH_REDIRECT_PORT must be between 0 and 65535/],
    ['extra servers not JSON', { MCP_EXTRA_SERVERS: '{tavily' }, /MCP_EXTRA_SERVERS is not valid JSON/],
    [
      'extra server without URL',
      { MCP_EXTRA_SERVERS: '{"tavily": {}}' },
      /MCP_EXTRA_SERVERS\.tavily\.url must be a string/,
    ],
    [
      'extra servers as a list',
      { MCP_EXTRA_SERVERS: '[{"url": "https://t.example/mcp"}]' },
      /MCP_EXTRA_SERVERS must be a JSON object of name/,
    ],
    // The expenses server's tools are its own: another server named "expenses" would stand in for it.
    [
      'an extra server named expenses',
      { MCP_EXTRA_SERVERS: '{"expenses": {"url": "https://t.example/mcp"}}' },
      /MCP_EXTRA_SERVERS\.expenses must be named with letters, digits, - or _ and not "expenses"/,
    ],
    [
      'an extra server name with a dot',
      { MCP_EXTRA_SERVERS: '{"t.x": {"url": "https://t.example/mcp"}}' },
      /MCP_EXTRA_SERVERS\.t\.x must be named/,
    ],
    [
      'an extra server that is a string',
      { MCP_EXTRA_SERVERS: '{"t": "https://t.example/mcp"}' },
      /MCP_EXTRA_SERVERS\.t must be an object with "url"/,
    ],
    [
      'an extra server over ws',
      { MCP_EXTRA_SERVERS: '{"t": {"url": "ws://t.example/mcp"}}' },
      /MCP_EXTRA_SERVERS\.t\.url must be http or https/,
    ],
    // The expenses server is connected once, with the agent's own credential, not again with other headers.
    [
      'the expenses server again as an extra server',
      {
        MCP_SERVER_URL: 'http://localhost:8000/mcp',
        MCP_EXTRA_SERVERS: '{"again": {"url": "http://localhost:8000/mcp"}}',
      },
      /MCP_EXTRA_SERVERS\.again\.url is MCP_SERVER_URL again/,
    ],
    [
      'extra server trustAnnotations not a boolean',
      { MCP_EXTRA_SERVERS: '{"t": {"url": "https://t.example/mcp", "trustAnnotations": "yes"}}' },
      /MCP_EXTRA_SERVERS\.t\.trustAnnotations must be true or false/,
    ],
    [
      'extra server with a setting that does not exist (a typo of trustAnnotations)',
      { MCP_EXTRA_SERVERS: '{"t": {"url": "https://t.example/mcp", "trustAnotations": true}}' },
      /MCP_EXTRA_SERVERS\.t\.trustAnotations is not a setting/,
    ],
    [
      'extra server header not a string',
      { MCP_EXTRA_SERVERS: '{"t": {"url": "https://t.example/mcp", "headers": {"a": 1}}}' },
      /MCP_EXTRA_SERVERS\.t\.headers/,
    ],
    // Fetch would refuse these only at connect: the service would retry a header that can never go.
    [
      'extra server header value with a line break',
      {
        MCP_EXTRA_SERVERS:
          '{"t": {"url": "https://t.example/mcp", "headers": {"Authorization": "Bearer k\\nX-Evil: 1"}}}',
      },
      /MCP_EXTRA_SERVERS\.t\.headers\.Authorization holds a character HTTP cannot carry .* the value is not shown/,
    ],
    [
      'an API key past U+00FF',
      { MCP_AUTH: 'key', MCP_API_KEY: 'mcpk_abc€def' },
      /Invalid configuration: MCP_API_KEY holds a character HTTP cannot carry (?!.*abc)/,
    ],
    [
      'extra server URL with a user name and password',
      { MCP_EXTRA_SERVERS: '{"t": {"url": "http://u:p@127.0.0.1:18630/mcp"}}' },
      /MCP_EXTRA_SERVERS\.t\.url must not carry a user name or password/,
    ],
    [
      'extra server URL with a password and no user name',
      { MCP_EXTRA_SERVERS: '{"t": {"url": "http://:p@127.0.0.1:18630/mcp"}}' },
      /MCP_EXTRA_SERVERS\.t\.url must not carry a user name or password/,
    ],
    [
      'extra server header name with a space',
      { MCP_EXTRA_SERVERS: '{"t": {"url": "https://t.example/mcp", "headers": {"X Key": "k"}}}' },
      /MCP_EXTRA_SERVERS\.t\.headers has a header name HTTP cannot carry: "X Key"/,
    ],
  ];
  test('an extra server URL without a scheme: the error names the entry, not the URL, whose query may hold a key', () => {
    assert.throws(
      () =>
        loadConfig({
          ...ollama,
          MCP_EXTRA_SERVERS: JSON.stringify({ tavily: { url: 'mcp.tavily.com/mcp/?tavilyApiKey=tvly-SECRET' } }),
        }),
      (error: Error) => {
        assert.match(error.message, /^Invalid configuration: MCP_EXTRA_SERVERS\.tavily\.url must be an absolute URL/);
        assert.doesNotMatch(error.message, /tvly-SECRET|tavily\.com/);
        return true;
      },
    );
  });

  test('extra servers with a JSON typo: the error quotes no part of the value, which may hold a header secret', () => {
    for (const [value, where] of [
      ['{"tavily":{"url":"https://mcp.tavily.com/mcp/","headers":{"Authorization":Bearer tvly-dev-5eCr3t}}}', ''],
      [
        '{"tavily":{"url":"https://mcp.tavily.com/mcp/","headers":{"Authorization":"Bearer tvly-dev-5eCr3t"}}}}',
        ' (error at character 101)', // the extra closing brace, the last character
      ],
      ['{"tavily":{"headers":{"Authorization":"Bearer tvly-dev-5eCr3t', ' (error at character 61)'], // the end
    ]) {
      assert.throws(
        () => loadConfig({ ...ollama, MCP_EXTRA_SERVERS: value }),
        (error: Error) => {
          assert.equal(
            error.message,
            `Invalid configuration: MCP_EXTRA_SERVERS is not valid JSON${where}; the value is not shown since its headers may hold secrets`,
          );
          assert.doesNotMatch(`${error.stack}`, /tvly|5eCr3t|Bearer/);
          return true;
        },
      );
    }
  });
  for (const [name, env, message] of mcpCases) {
    test(name, () => assert.throws(() => loadConfig({ ...ollama, ...env }), message));
  }
});

describe('MCP settings', () => {
  test('none: no credential at all, for a server in none mode', () => {
    assert.deepEqual(loadConfig({ API_HOST: 'ollama', MCP_AUTH: 'none', MCP_API_KEY: 'ignored' }).mcpAuth, {
      mode: 'none',
    });
  });

  test('defaults: oauth against the local server, cache under XDG_CACHE_HOME', () => {
    const config = loadConfig({ API_HOST: 'ollama', XDG_CACHE_HOME: '/tmp/xdg' });
    assert.equal(config.mcpServerUrl, 'http://localhost:8000/mcp');
    assert.deepEqual(config.mcpAuth, {
      mode: 'oauth',
      clientId: undefined,
      clientSecret: undefined,
      clientMetadataUrl: undefined,
      scope: '',
      exactScope: false,
      redirectPort: 0,
      cacheDir: '/tmp/xdg/mcp-auth-stack/agent',
    });
    const narrow = loadConfig({ API_HOST: 'ollama', MCP_SCOPE: 'mcp:access expenses:read' }).mcpAuth;
    assert.deepEqual(narrow.mode === 'oauth' ? [narrow.scope, narrow.exactScope] : [], [
      'mcp:access expenses:read',
      true,
    ]);
    const withoutXdg = loadConfig({ API_HOST: 'ollama', HOME: '/home/u' }).mcpAuth;
    assert.equal(withoutXdg.mode === 'oauth' ? withoutXdg.cacheDir : undefined, '/home/u/.cache/mcp-auth-stack/agent');
  });

  test('client credentials default to the realm’s service-account client', () => {
    assert.deepEqual(
      loadConfig({ API_HOST: 'ollama', MCP_AUTH: 'client_credentials', MCP_CLIENT_SECRET: 's' }).mcpAuth,
      {
        mode: 'client_credentials',
        clientId: 'expenses-agent',
        clientSecret: 's',
        scope: 'mcp:access expenses:read expenses:write',
        tokenUrl: undefined,
        resource: undefined,
      },
    );
    const behindAnotherName = loadConfig({
      API_HOST: 'ollama',
      MCP_AUTH: 'client_credentials',
      MCP_CLIENT_SECRET: 's',
      MCP_SERVER_URL: 'http://server:8000/mcp',
      MCP_RESOURCE: 'http://localhost:8000/mcp',
    }).mcpAuth;
    assert.equal(
      behindAnotherName.mode === 'client_credentials' && behindAnotherName.resource,
      'http://localhost:8000/mcp',
    );
    assert.throws(
      () =>
        loadConfig({ API_HOST: 'ollama', MCP_AUTH: 'client_credentials', MCP_CLIENT_SECRET: 's', MCP_RESOURCE: 'mcp' }),
      /MCP_RESOURCE must be an absolute URL/,
    );
  });

  test('MCP_SERVER_URL, MCP_RESOURCE and MCP_TOKEN_URL are kept as written: a trailing / is part of the URL', () => {
    const env = {
      API_HOST: 'ollama',
      MCP_AUTH: 'client_credentials',
      MCP_CLIENT_SECRET: 's',
      MCP_SERVER_URL: 'https://mcp.example.com/mcp/',
      MCP_RESOURCE: 'https://mcp.example.com/mcp/',
      MCP_TOKEN_URL: 'https://as.example.com/token/',
    };
    const config = loadConfig(env);
    assert.equal(config.mcpServerUrl, 'https://mcp.example.com/mcp/');
    assert.deepEqual(
      config.mcpAuth.mode === 'client_credentials' ? [config.mcpAuth.resource, config.mcpAuth.tokenUrl] : [],
      ['https://mcp.example.com/mcp/', 'https://as.example.com/token/'],
    );
    // The server's metadata names what it serves, slash and all: the agent asks for that resource.
    assert.equal(checkedResource(config.mcpServerUrl, 'https://mcp.example.com/mcp/'), 'https://mcp.example.com/mcp/');
    // Not a resource with a query or fragment the server's URL has not (the SDK's check ignores them).
    for (const named of [
      'https://mcp.example.com/mcp/?tenant=other',
      'https://mcp.example.com/mcp/#x',
      'https://mcp.example.com/mcp/?',
    ]) {
      assert.throws(
        () => checkedResource(config.mcpServerUrl, named),
        /with a query or fragment its URL has not/,
        named,
      );
    }
    // A path-less resource gains no `/` either (a server comparing exactly would refuse it).
    const pathless = loadConfig({ ...env, MCP_RESOURCE: 'https://mcp.example.com' }).mcpAuth;
    assert.equal(pathless.mode === 'client_credentials' && pathless.resource, 'https://mcp.example.com');
    // Still checked as URLs.
    assert.throws(() => loadConfig({ ...env, MCP_SERVER_URL: 'https://mcp.example.com/mcp?x=1' }), /query/);
    assert.throws(() => loadConfig({ ...env, MCP_RESOURCE: 'https://u:p@mcp.example.com/mcp' }), /user name/);
  });

  test('MCP_CACHE_DIR and XDG_CACHE_HOME are made absolute against the working directory', () => {
    const cacheDirOf = (env: Record<string, string>) => {
      const auth = loadConfig({ API_HOST: 'ollama', ...env }).mcpAuth;
      return auth.mode === 'oauth' ? auth.cacheDir : undefined;
    };
    assert.equal(cacheDirOf({ MCP_CACHE_DIR: './tokens' }), resolve('tokens'));
    assert.equal(
      cacheDirOf({ XDG_CACHE_HOME: 'relative-cache' }),
      resolve('relative-cache', 'mcp-auth-stack', 'agent'),
    );
  });

  test('extra servers with headers, as the talk configures Tavily', () => {
    const config = loadConfig({
      ...ollama(),
      MCP_EXTRA_SERVERS: JSON.stringify({
        tavily: { url: 'https://mcp.tavily.com/mcp/', headers: { Authorization: 'Bearer tvly' } },
        notes: { url: 'https://notes.example/mcp', trustAnnotations: true },
      }),
    });
    assert.deepEqual(config.extraServers, [
      {
        name: 'tavily',
        url: 'https://mcp.tavily.com/mcp/',
        headers: { Authorization: 'Bearer tvly' },
        trustAnnotations: false,
      },
      { name: 'notes', url: 'https://notes.example/mcp', headers: {}, trustAnnotations: true },
    ]);
  });

  test('the README documents every variable', async () => {
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
    for (const name of CONFIG_VARIABLES) assert.ok(readme.includes(`\`${name}\``), `README documents ${name}`);
  });
});

function ollama() {
  return { API_HOST: 'ollama', ...MCP };
}

describe('opening the browser', () => {
  const url = 'https://as.example/authorize?response_type=code&client_id=c&state=s';

  test('$BROWSER wins; without a display on Linux there is nothing to open (the URL is printed instead)', () => {
    assert.deepEqual(browserCommand(url, { BROWSER: '/usr/bin/firefox:chromium' }, 'linux'), {
      program: '/usr/bin/firefox',
      args: [url],
    });
    assert.deepEqual(browserCommand(url, { DISPLAY: ':0' }, 'linux'), { program: 'xdg-open', args: [url] });
    assert.equal(browserCommand(url, {}, 'linux'), undefined);
    assert.deepEqual(browserCommand(url, {}, 'darwin'), { program: 'open', args: [url] });
  });

  test('only http(s) URLs: file:, smb:, a custom protocol are refused, and no program starts for them', async () => {
    const directory = await mkdtemp(join(tmpdir(), 'agent-browser-'));
    try {
      // A $BROWSER that leaves a mark when it is started.
      const marker = join(directory, 'started');
      const program = join(directory, 'browser');
      await writeFile(program, `#!/bin/sh\necho "$1" >> '${marker}'\n`);
      await chmod(program, 0o755);
      for (const refused of [
        'file://attacker.example/share/x',
        'smb://attacker.example/share',
        'x-custom-handler://run/payload',
        'javascript:alert(1)',
        'not a URL',
      ]) {
        for (const platform of ['linux', 'darwin', 'win32'] as const) {
          assert.throws(
            () => browserCommand(refused, { DISPLAY: ':0' }, platform),
            /only http and https URLs are opened in a browser/,
            `${refused} on ${platform}`,
          );
        }
        await assert.rejects(
          systemBrowserOpener({ BROWSER: program })(refused),
          /only http and https URLs are opened in a browser/,
          refused,
        );
      }
      await assert.rejects(access(marker), 'the program was never started');
      assert.equal(await systemBrowserOpener({ BROWSER: program })(url), true, 'an https URL is opened');
      // The program runs on its own: wait for its mark (the URL, as one argument) before the folder
      // goes, or the removal races its write (ENOTEMPTY).
      let marked = '';
      for (let waited = 0; marked === '' && waited < 5000; waited += 20) {
        marked = await readFile(marker, 'utf8').catch(() => '');
        if (marked === '') await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.equal(marked, `${url}\n`);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  test('Windows: no cmd, which would run what follows an & in the URL; the URL is one argument, untouched', () => {
    // An authorization_endpoint with a query of its own chooses what follows the &.
    const hostile = 'https://as.example/authorize?tenant=x&calc.exe&response_type=code&state=s';
    const command = browserCommand(hostile, {}, 'win32');
    assert.deepEqual(command, { program: 'rundll32', args: ['url.dll,FileProtocolHandler', hostile] });
    assert.ok(![command?.program, ...(command?.args ?? [])].some((word) => /^cmd(\.exe)?$/i.test(word ?? '')));
  });
});
