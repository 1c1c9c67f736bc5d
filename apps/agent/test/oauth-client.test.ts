/**
 * The agent as an OAuth client facing servers that do not behave: an MCP server without
 * metadata, or naming another resource; an authorization server without PKCE, one whose answer
 * names another issuer, one that never answers. Real Keycloak cannot be made to do any of this
 * (keycloak-auth.test.ts has the agent against the real one), so the two servers here are small
 * stand-ins on 127.0.0.1 that speak the protocol's HTTP and record every request.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { startScriptedLlm } from '@mcp-auth-stack/testing/scripted-llm';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { createMcpClient } from '../src/agent.ts';
import { ClientCredentialsTokenSource } from '../src/auth/client-credentials.ts';
import { checkEndpointTransport, checkIssuer } from '../src/auth/discovery.ts';
import { InteractiveOAuthProvider, LOGIN_TIMEOUT_MS } from '../src/auth/oauth-provider.ts';
import { loadConfig } from '../src/config.ts';
import { prepareConnections } from '../src/connections.ts';
import { startAgent } from '../src/runtime.ts';
import { configuredSecrets, ObtainedSecrets, secretsHider } from '../src/url-secrets.ts';
import { scriptedModelEnv } from './helpers/agent.ts';

interface Seen {
  path: string;
  authorization: string | undefined;
  body: string;
}
type Handler = (request: IncomingMessage, response: ServerResponse) => void;

const servers: Server[] = [];
const temporary: string[] = [];
after(async () => {
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  for (const directory of temporary) await rm(directory, { recursive: true, force: true });
});

async function recording(handler: Handler): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer(async (request, response) => {
    let body = '';
    for await (const chunk of request) body += chunk;
    seen.push({
      path: new URL(request.url ?? '/', 'http://x').pathname,
      authorization: request.headers.authorization,
      body,
    });
    handler(request, response);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

const json = (response: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}) =>
  response.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(value));

const basicOf = (seen: Seen) =>
  seen.authorization?.startsWith('Basic ') ? Buffer.from(seen.authorization.slice(6), 'base64').toString() : undefined;

type TokenEndpoint =
  | 'answers'
  | 'hangs'
  | 'fails (503)'
  | 'refuses the client'
  | 'refuses the grant'
  | 'is gone (an HTML 404)'
  | 'answers 400 with an error of its own';

/**
 * An authorization server: RFC 8414 metadata (`metadata` merged over it) and a token endpoint
 * that behaves as `tokenEndpoint` says (asked at each request when it is a function), issuing
 * tokens of `expiresIn` seconds. With `servesMcp`, also an MCP server at `/mcp` without protected
 * resource metadata (2025-03-26), whose authorization server is at its own origin.
 */
async function authorizationServer(
  metadata: Record<string, unknown> = {},
  tokenEndpoint: TokenEndpoint | (() => TokenEndpoint) = 'answers',
  { expiresIn = 300, servesMcp = false }: { expiresIn?: number; servesMcp?: boolean } = {},
) {
  let base = '';
  let issued = 0;
  const server = await recording((request, response) => {
    const path = new URL(request.url ?? '/', 'http://x').pathname;
    if (path === '/.well-known/oauth-authorization-server') {
      json(response, 200, {
        issuer: base,
        authorization_endpoint: `${base}/authorize`,
        token_endpoint: `${base}/token`,
        response_types_supported: ['code'],
        grant_types_supported: ['authorization_code', 'refresh_token', 'client_credentials'],
        code_challenge_methods_supported: ['S256'],
        registration_endpoint: `${base}/register`,
        ...metadata,
      });
    } else if (path === '/token') {
      const behaviour = typeof tokenEndpoint === 'function' ? tokenEndpoint() : tokenEndpoint;
      if (behaviour === 'hangs') return;
      if (behaviour === 'fails (503)') {
        return response.writeHead(503, { 'content-type': 'text/html' }).end('<h1>Service Unavailable</h1>');
      }
      if (behaviour === 'refuses the client') return json(response, 401, { error: 'invalid_client' });
      if (behaviour === 'refuses the grant') return json(response, 400, { error: 'invalid_grant' });
      if (behaviour === 'is gone (an HTML 404)') {
        return response.writeHead(404, { 'content-type': 'text/html' }).end('<h1>Not Found</h1>');
      }
      if (behaviour === 'answers 400 with an error of its own') {
        return json(response, 400, { error: 'Realm does not exist' });
      }
      issued += 1;
      json(response, 200, {
        access_token: `token-${issued}`,
        refresh_token: `refresh-${issued}-from-${base}`,
        token_type: 'Bearer',
        expires_in: expiresIn,
      });
    } else if (path === '/register') {
      json(response, 201, { client_id: `client-of-${base}`, redirect_uris: [], token_endpoint_auth_method: 'none' });
    } else if (path === '/mcp' && servesMcp) {
      json(response, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer' });
    } else json(response, 404, { error: 'not_found' });
  });
  base = server.url;
  return server;
}

/**
 * An MCP server that refuses every request (401), with protected resource metadata or none
 * (`metadata` returning `undefined`: the metadata endpoint fails for now, 503).
 */
async function refusingMcpServer(metadata?: (base: string) => Record<string, unknown> | undefined) {
  let base = '';
  const server = await recording((request, response) => {
    const path = new URL(request.url ?? '/', 'http://x').pathname;
    if (path === '/.well-known/oauth-protected-resource/mcp' && metadata) {
      const document = metadata(base);
      return document ? json(response, 200, document) : json(response, 503, { error: 'unavailable' });
    }
    if (path === '/mcp') {
      const challenge = metadata
        ? `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"`
        : 'Bearer';
      return json(response, 401, { error: 'invalid_token' }, { 'www-authenticate': challenge });
    }
    json(response, 404, { error: 'not_found' });
  });
  base = server.url;
  return server;
}

/** The realm's `expenses-agent` in client_credentials mode, for the server at `mcpUrl`. */
function agentTokenSource(
  mcpUrl: string,
  options: Partial<ConstructorParameters<typeof ClientCredentialsTokenSource>[0]> = {},
): ClientCredentialsTokenSource {
  return new ClientCredentialsTokenSource({
    mcpUrl,
    clientId: 'expenses-agent',
    clientSecret: 's',
    scope: 'mcp:access',
    ...options,
  });
}

describe('client_credentials', () => {
  test('a token answer that is not JSON fails without quoting it: a token in it would reach the log', async () => {
    // A token in form encoding where JSON was due: V8's message would quote its start.
    const leaked = 'access_token=secret-token-part&expires_in=300';
    const source = agentTokenSource('http://mcp.test/mcp', {
      tokenUrl: 'http://as.test/token',
      fetchFn: async (url) =>
        String(url).startsWith('http://as.test/token')
          ? new Response(leaked, {
              headers: { 'content-type': 'application/json' },
            })
          : new Response('not found', { status: 404 }),
    });
    await assert.rejects(source.accessToken(), (error: Error) => {
      assert.match(error.message, /not JSON/);
      assert.doesNotMatch(`${error.message} ${error.stack}`, /access_tok|secret-token/);
      return true;
    });
  });

  test('a token endpoint that redirects is not followed: the other origin gets nothing, and no token is taken', async () => {
    const elsewhere = await recording((_request, response) =>
      json(response, 200, { access_token: 'token-from-elsewhere', token_type: 'Bearer', expires_in: 300 }),
    );
    const redirecting = await recording((_request, response) =>
      response.writeHead(307, { location: `${elsewhere.url}/steal` }).end(),
    );
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [] }));
    const source = agentTokenSource(`${mcp.url}/mcp`, {
      tokenUrl: `${redirecting.url}/token`,
      clientSecret: 'the-secret',
    });
    await assert.rejects(
      source.accessToken(),
      /answered 307: a redirect, which a token endpoint must not answer; not followed/,
    );
    assert.equal(redirecting.seen.length, 1);
    assert.deepEqual(elsewhere.seen, []);
  });

  test('after a 401 the SDK asks MCP_TOKEN_URL again, for the same resource; the secret never goes to the MCP server', async () => {
    const as = await authorizationServer();
    // No protected resource metadata: the SDK on its own would post the secret to the server's /token.
    const mcp = await refusingMcpServer();
    const prepared = await prepareConnections(
      {
        mcpServerUrl: `${mcp.url}/mcp`,
        mcpAuth: {
          mode: 'client_credentials',
          clientId: 'expenses-agent',
          clientSecret: 'the-secret',
          scope: 'mcp:access',
          tokenUrl: `${as.url}/token`,
          resource: undefined,
        },
        extraServers: [],
      },
      { openBrowser: async () => false, print: () => {} },
    );
    const client = createMcpClient(prepared.connections);
    await assert.rejects(client.getTools());
    await client.close().catch(() => {});
    assert.deepEqual(
      mcp.seen
        .filter((request) => request.path !== '/mcp' && !request.path.startsWith('/.well-known/'))
        .map((request) => request.path),
      [],
      'the MCP server got MCP requests and metadata lookups, no token request',
    );
    assert.ok(
      mcp.seen.every((request) => basicOf(request) === undefined),
      'and never the client credentials',
    );
    const tokenRequests = as.seen.filter((request) => request.path === '/token');
    assert.equal(tokenRequests.length, 2, 'the first token, then the SDK asked the same endpoint after the 401');
    for (const request of tokenRequests) {
      assert.equal(basicOf(request), 'expenses-agent:the-secret');
      const form = new URLSearchParams(request.body);
      assert.equal(form.get('grant_type'), 'client_credentials');
      assert.equal(form.get('resource'), `${mcp.url}/mcp`);
    }
  });

  test('a server whose metadata names another resource gets no token; MCP_RESOURCE admits exactly the one it names', async () => {
    const as = await authorizationServer();
    const payroll = 'https://payroll.example/mcp';
    const mcp = await refusingMcpServer(() => ({ resource: payroll, authorization_servers: [as.url] }));
    const source = (resource?: string) => agentTokenSource(`${mcp.url}/mcp`, { resource });
    await assert.rejects(
      source().accessToken(),
      /says it is the resource https:\/\/payroll\.example\/mcp, another server/,
    );
    await assert.rejects(
      source('https://expenses.example/mcp').accessToken(),
      /not https:\/\/expenses\.example\/mcp \(MCP_RESOURCE\)/,
    );
    assert.equal(as.seen.filter((request) => request.path === '/token').length, 0, 'no token was asked for');
    // The operator says the server is known by that name (compose: its public URL).
    await source(payroll).accessToken();
    const asked = as.seen.filter((request) => request.path === '/token');
    assert.equal(new URLSearchParams(asked.at(-1)?.body).get('resource'), payroll);
  });

  test('RFC 8414 3.3: metadata that names another issuer is not used; the secret goes nowhere', async () => {
    const as = await authorizationServer({ issuer: 'https://attacker.example' });
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    const source = agentTokenSource(`${mcp.url}/mcp`, { clientSecret: 'the-secret' });
    await assert.rejects(
      source.accessToken(),
      /names the issuer https:\/\/attacker\.example: not used \(RFC 8414 3\.3\)/,
    );
    assert.deepEqual(
      as.seen.map((request) => request.path),
      ['/.well-known/oauth-authorization-server'],
      'only the metadata was read',
    );
  });

  test('a discovered token endpoint on plain http to another host gets no secret (MCP: every endpoint over HTTPS)', async () => {
    const as = await authorizationServer({ token_endpoint: 'http://attacker.example/token' });
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    const source = agentTokenSource(`${mcp.url}/mcp`, { clientSecret: 'the-secret' });
    await assert.rejects(
      source.accessToken(),
      /names token_endpoint http:\/\/attacker\.example\/token: not used, no secret or code goes there .*set MCP_TOKEN_URL/,
    );
    assert.deepEqual(
      as.seen.map((request) => request.path),
      ['/.well-known/oauth-authorization-server'],
      'only the metadata was read',
    );
  });

  test('MCP_TOKEN_URL: metadata that fails for now (503, unreachable) is asked again, not replaced by the MCP URL for good', async () => {
    const as = await authorizationServer();
    let available = false;
    // Its metadata names the path-less resource, which the fallback (the MCP URL) is not.
    const mcp = await refusingMcpServer((base) =>
      available ? { resource: base, authorization_servers: [as.url] } : undefined,
    );
    const source = agentTokenSource(`${mcp.url}/mcp`, { tokenUrl: `${as.url}/token` });
    const first = await source.accessToken().then(
      () => 'a token',
      (error: Error) => `refused: ${error.message}`,
    );
    available = true;
    source.invalidate(); // as after a 401: the next call asks for a token again
    await source.accessToken();
    const asked = as.seen.filter((request) => request.path === '/token');
    assert.equal(new URLSearchParams(asked.at(-1)?.body).get('resource'), mcp.url, "the document's resource");
    assert.match(first, /^refused: could not read the protected resource metadata of .*HTTP 503/);
    assert.equal(asked.length, 1, 'no token was asked for while the metadata could not be read');

    // A server that does not answer at all: an error too, not the MCP URL.
    const nobody = createServer();
    await new Promise<void>((resolve) => nobody.listen(0, '127.0.0.1', resolve));
    const port = (nobody.address() as AddressInfo).port;
    await new Promise((resolve) => nobody.close(resolve));
    const unreachable = agentTokenSource(`http://127.0.0.1:${port}/mcp`, { tokenUrl: `${as.url}/token` });
    await assert.rejects(unreachable.accessToken(), new RegExp(`could not reach http://127\\.0\\.0\\.1:${port}/mcp`));
    assert.equal(as.seen.filter((request) => request.path === '/token').length, 1, 'no token for a guessed resource');
  });

  test('a token endpoint that never answers fails the token request', async () => {
    const as = await authorizationServer({}, 'hangs');
    const mcp = await refusingMcpServer();
    const source = agentTokenSource(`${mcp.url}/mcp`, { tokenUrl: `${as.url}/token`, requestTimeoutMs: 200 });
    await assert.rejects(source.accessToken(), /did not answer within 0\.2 s/);
  });
});

describe('interactive OAuth', () => {
  const stateOf = (authorize: URL) => authorize.searchParams.get('state') ?? '';
  const approve = (authorize: URL) => ({ code: 'c', state: stateOf(authorize) });

  /** A "browser" that records each URL it is sent to and calls the loopback redirect back with `answer(authorize URL)`. */
  const answeringBrowser =
    (opened: string[], answer: (authorize: URL) => Record<string, string> = approve) =>
    async (href: string) => {
      opened.push(href);
      const authorize = new URL(href);
      const redirect = new URL(authorize.searchParams.get('redirect_uri') ?? '');
      redirect.search = new URLSearchParams(answer(authorize)).toString();
      await fetch(redirect);
      return true;
    };

  /**
   * The provider for `mcp`, with a "browser" that records each URL it is sent to and calls the
   * loopback redirect back with `answer(authorize URL)`.
   */
  async function interactive(
    mcp: { url: string },
    options: {
      answer?: (authorize: URL) => Record<string, string>;
      clientId?: string | undefined;
      clientSecret?: string | undefined;
      cacheDir?: string;
      now?: () => number;
      requestTimeoutMs?: number;
      redirectPort?: number;
    } = {},
  ) {
    const cacheDir = options.cacheDir ?? (await mkdtemp(join(tmpdir(), 'agent-oauth-client-')));
    temporary.push(cacheDir);
    const opened: string[] = [];
    const provider = await InteractiveOAuthProvider.create({
      mcpUrl: `${mcp.url}/mcp`,
      scope: 'mcp:access',
      clientId: options.clientId,
      clientSecret: options.clientSecret,
      redirectPort: options.redirectPort ?? 0,
      cacheDir,
      print: () => {},
      loginTimeoutMs: 10_000,
      ...(options.now ? { now: options.now } : {}),
      ...(options.requestTimeoutMs ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
      openBrowser: answeringBrowser(opened, options.answer),
    });
    return { provider, opened, cacheDir };
  }

  /** An MCP server whose metadata names `first` until `move()`, then `second`. */
  async function movingServer() {
    const first = await authorizationServer();
    const second = await authorizationServer();
    let current = first.url;
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [current] }));
    return { first, second, mcp, move: () => (current = second.url) };
  }

  /** A pre-registered client's sign-in at an authorization server with `metadata`. */
  async function signIn(metadata: Record<string, unknown>, answer: (authorize: URL) => Record<string, string>) {
    const as = await authorizationServer(metadata);
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    const { provider, opened } = await interactive(mcp, { answer, clientId: 'pre-registered' });
    const outcome = await provider.ensureAuthorized().then(
      () => 'signed in',
      (error: Error) => `refused: ${error.message}`,
    );
    return {
      opened,
      outcome,
      codeExchanges: as.seen.filter((request) => request.path === '/token').length,
      issuer: as.url,
    };
  }
  test('an authorization server that does not announce PKCE (S256) gets no sign-in', async () => {
    const { opened, outcome } = await signIn({ code_challenge_methods_supported: undefined }, approve);
    assert.deepEqual(opened, [], 'the browser was not sent there');
    assert.match(outcome, /^refused: .*does not announce PKCE with S256/);
  });

  test('a sign-in page (authorization_endpoint) that is not https, nor http on loopback, is never opened', async () => {
    for (const endpoint of [
      'file://attacker.example/share/x',
      'smb://attacker.example/share',
      'x-custom-handler://run/payload',
      'http://attacker.example/authorize',
    ]) {
      const { opened, outcome, codeExchanges } = await signIn({ authorization_endpoint: endpoint }, approve);
      const { protocol, host } = new URL(endpoint);
      assert.deepEqual(opened, [], `${endpoint}: the browser was not sent there`);
      assert.ok(
        outcome.startsWith('refused: ') && outcome.includes(`with the scheme ${protocol} on ${host}: not opened`),
        `${endpoint}: ${outcome}`,
      );
      assert.equal(codeExchanges, 0, endpoint);
    }
  });

  test('a token or registration endpoint on plain http to another host: no registration, no browser, no code sent', async () => {
    for (const [name, endpoint] of [
      ['token_endpoint', 'http://attacker.example/token'],
      ['registration_endpoint', 'http://attacker.example/register'],
    ] as const) {
      const as = await authorizationServer({ [name]: endpoint });
      const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
      // Dynamic registration: the client's first request would go to registration_endpoint.
      const { provider, opened } = await interactive(mcp);
      await assert.rejects(provider.ensureAuthorized(), (error: Error) => {
        assert.ok(error.message.includes(`names ${name} ${endpoint}: not used`), error.message);
        return true;
      });
      assert.deepEqual(opened, [], `${name}: the browser was not sent anywhere`);
      assert.deepEqual(
        as.seen.map((request) => request.path),
        ['/.well-known/oauth-authorization-server'],
        `${name}: only the metadata was read`,
      );
    }
  });

  test('metadata named over plain http on another host is not used: no registration, no browser, no token', async () => {
    // 192.0.2.2 and .3 stand for hosts on the network; the stand-ins serve them from loopback.
    const asElsewhere = 'http://192.0.2.2:18531';
    // Its metadata names it by the address the agent was given, as a real one's would.
    const as = await authorizationServer({ issuer: asElsewhere });
    const nearby = await authorizationServer();
    const prmElsewhere = 'http://192.0.2.3:18532';
    let mcpBase = '';
    const fetchVia: typeof fetch = (input, init) =>
      fetch(
        String(input instanceof Request ? input.url : input)
          .replace(asElsewhere, as.url)
          .replace(prmElsewhere, mcpBase),
        init,
      );
    for (const named of [
      { authorizationServer: asElsewhere, metadataAt: undefined },
      { authorizationServer: nearby.url, metadataAt: prmElsewhere },
    ]) {
      const mcp = await recording((request, response) => {
        const path = new URL(request.url ?? '/', 'http://x').pathname;
        if (path.startsWith('/.well-known/oauth-protected-resource')) {
          return json(response, 200, {
            resource: `${mcpBase}/mcp`,
            authorization_servers: [named.authorizationServer],
          });
        }
        const metadataUrl = `${named.metadataAt ?? mcpBase}/.well-known/oauth-protected-resource/mcp`;
        json(
          response,
          401,
          { error: 'invalid_token' },
          { 'www-authenticate': `Bearer resource_metadata="${metadataUrl}"` },
        );
      });
      mcpBase = mcp.url;
      const cacheDir = await mkdtemp(join(tmpdir(), 'agent-oauth-'));
      temporary.push(cacheDir);
      const opened: string[] = [];
      const provider = await InteractiveOAuthProvider.create({
        mcpUrl: `${mcp.url}/mcp`,
        scope: 'mcp:access',
        redirectPort: 0,
        cacheDir,
        print: () => {},
        loginTimeoutMs: 5_000,
        openBrowser: answeringBrowser(opened, approve),
        fetchFn: fetchVia,
      });
      const refusal = /over plain http from another host: not used/;
      await assert.rejects(provider.ensureAuthorized(), refusal, JSON.stringify(named));
      assert.deepEqual(opened, []);
      const source = agentTokenSource(`${mcp.url}/mcp`, { fetchFn: fetchVia });
      await assert.rejects(source.accessToken(), refusal, JSON.stringify(named));
    }
    assert.deepEqual(
      [...as.seen, ...nearby.seen]
        .filter((request) => request.path !== '/.well-known/oauth-authorization-server')
        .map((r) => r.path),
      [],
      'no registration, no token request',
    );
  });

  test('no registration where no sign-in could follow: no S256, or a sign-in page that would not be opened', async () => {
    for (const [metadata, refusal] of [
      [{ code_challenge_methods_supported: ['plain'] }, /does not announce PKCE with S256/],
      [{ authorization_endpoint: 'http://192.0.2.2/authorize' }, /with the scheme http: on 192\.0\.2\.2: not opened/],
      [{ authorization_endpoint: 'file:///etc/passwd' }, /with the scheme file:/],
    ] as const) {
      const as = await authorizationServer(metadata);
      const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
      const { provider, opened } = await interactive(mcp);
      await assert.rejects(provider.ensureAuthorized(), refusal);
      assert.deepEqual(opened, []);
      assert.deepEqual(
        as.seen.map((request) => request.path),
        ['/.well-known/oauth-authorization-server'],
        `${JSON.stringify(metadata)}: only the metadata was read, nothing registered`,
      );
    }
  });

  test('the redirect port taken by another program: the sign-in stops, naming the port, before any browser opens', async () => {
    const as = await authorizationServer();
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    // It holds the port a previous login used (or MCP_OAUTH_REDIRECT_PORT names), and would get the code.
    const squatter = await recording((_request, response) => response.writeHead(200).end('thanks'));
    const port = Number(new URL(squatter.url).port);
    const { provider, opened } = await interactive(mcp, { redirectPort: port });
    await assert.rejects(provider.ensureAuthorized(), new RegExp(`port ${port} on 127\\.0\\.0\\.1 is in use`));
    assert.deepEqual(opened, [], 'the browser was not sent to the sign-in page');
    assert.deepEqual(squatter.seen, [], 'the program on the port got nothing');
    assert.equal(as.seen.filter((request) => request.path === '/token').length, 0);
  });

  test('a path-less resource (https://mcp.example): the refresh names it as the sign-in did, without a trailing /', async () => {
    const as = await authorizationServer();
    const mcp = await refusingMcpServer((base) => ({ resource: base, authorization_servers: [as.url] }));
    let clock = Date.now();
    const { provider, opened } = await interactive(mcp, { now: () => clock });
    await provider.ensureAuthorized();
    // Past the refresh margin of the 300 s token: tokens() refreshes it.
    clock += 290_000;
    assert.equal((await provider.tokens())?.access_token, 'token-2');
    const asked = new URL(opened[0] ?? '').searchParams.get('resource');
    assert.equal(asked, mcp.url, "the authorization request: the metadata's string as written");
    const [exchange, refresh] = as.seen
      .filter((request) => request.path === '/token')
      .map((request) => new URLSearchParams(request.body));
    assert.equal(exchange?.get('grant_type'), 'authorization_code');
    assert.equal(exchange?.get('resource'), asked);
    assert.equal(refresh?.get('grant_type'), 'refresh_token');
    assert.equal(refresh?.get('resource'), asked);
  });

  test('a server without protected resource metadata (2025-03-26): the refresh sends no resource, as the sign-in did not', async () => {
    const server = await authorizationServer({}, 'answers', { servesMcp: true });
    let clock = Date.now();
    const { provider, opened } = await interactive(server, { now: () => clock });
    await provider.ensureAuthorized();
    clock += 290_000;
    assert.equal((await provider.tokens())?.access_token, 'token-2');
    assert.equal(new URL(opened[0] ?? '').searchParams.has('resource'), false, 'the authorization request');
    const [exchange, refresh] = server.seen
      .filter((request) => request.path === '/token')
      .map((request) => new URLSearchParams(request.body));
    assert.equal(exchange?.get('grant_type'), 'authorization_code');
    assert.equal(exchange?.has('resource'), false);
    assert.equal(refresh?.get('grant_type'), 'refresh_token');
    assert.equal(refresh?.has('resource'), false);
  });

  test('a token shorter-lived than the 30 s margin is refreshed at half its life, not at every request', async () => {
    const as = await authorizationServer({}, 'answers', { expiresIn: 20 });
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    let clock = Date.now();
    const { provider } = await interactive(mcp, { now: () => clock });
    await provider.ensureAuthorized();
    for (let request = 0; request < 5; request++) assert.equal((await provider.tokens())?.access_token, 'token-1');
    clock += 9_000;
    assert.equal((await provider.tokens())?.access_token, 'token-1', 'before half its life');
    assert.equal(provider.refreshes, 0);
    clock += 1_000;
    assert.equal((await provider.tokens())?.access_token, 'token-2', 'at half its life');
    assert.equal(provider.refreshes, 1);
  });

  test('a token refused before its expiry (401) is refreshed, not signed in again; a step-up, or its refused refresh, gets the browser', async () => {
    const as = await authorizationServer({}, 'answers', { expiresIn: 3600 });
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    const { provider, opened } = await interactive(mcp);
    await provider.ensureAuthorized();
    assert.equal(opened.length, 1);
    const grants = () =>
      as.seen
        .filter((request) => request.path === '/token')
        .map((request) => new URLSearchParams(request.body).get('grant_type'));
    // What the SDK's transport does with a 401 (here: the server's signing key rotated).
    const refused = (scope?: string) =>
      auth(provider, {
        serverUrl: `${mcp.url}/mcp`,
        resourceMetadataUrl: new URL(`${mcp.url}/.well-known/oauth-protected-resource/mcp`),
        ...(scope ? { scope } : {}),
      });
    await refused();
    assert.equal(opened.length, 1, 'no browser for a token the refresh token can replace');
    assert.deepEqual(grants(), ['authorization_code', 'refresh_token']);
    assert.equal((await provider.tokens())?.access_token, 'token-2');
    assert.equal(provider.authorizations, 2, 'the tool call that met the 401 is retried');

    await refused();
    assert.equal(opened.length, 2, 'the refreshed token refused too: a sign-in');
    assert.deepEqual(grants(), ['authorization_code', 'refresh_token', 'authorization_code']);

    await refused('mcp:access expenses:write');
    assert.equal(opened.length, 3, 'a step-up is a sign-in: a refresh cannot add scope');
    assert.equal(grants().length, 4);
    assert.match(new URL(opened[2] ?? '').searchParams.get('scope') ?? '', /expenses:write/);
  });

  test('a token refused before its expiry whose refresh is refused too (invalid_grant): the same authorization signs in', async () => {
    // Keycloak restarted with new keys refuses the access token and the refresh token alike: the
    // next token request (the refresh) is refused, the one after (the code exchange) answered.
    let refuseNext = false;
    const as = await authorizationServer(
      {},
      (): TokenEndpoint => {
        if (!refuseNext) return 'answers';
        refuseNext = false;
        return 'refuses the grant';
      },
      { expiresIn: 3600 },
    );
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    const { provider, opened } = await interactive(mcp);
    await provider.ensureAuthorized();
    const resourceMetadataUrl = new URL(`${mcp.url}/.well-known/oauth-protected-resource/mcp`);
    // A step-up first: the token holds expenses:write from then on.
    await auth(provider, { serverUrl: `${mcp.url}/mcp`, resourceMetadataUrl, scope: 'mcp:access expenses:write' });
    assert.equal(opened.length, 2);
    refuseNext = true;
    const afterRefusal = as.seen.length;
    await auth(provider, { serverUrl: `${mcp.url}/mcp`, resourceMetadataUrl });
    assert.equal(opened.length, 3, 'the browser, for this very authorization');
    assert.match(
      new URL(opened[2] ?? '').searchParams.get('scope') ?? '',
      /expenses:write/,
      'the sign-in asks again for the scope the dropped token held',
    );
    assert.deepEqual(
      as.seen
        .slice(afterRefusal)
        .filter((request) => request.path === '/token')
        .map((request) => new URLSearchParams(request.body).get('grant_type')),
      ['refresh_token', 'authorization_code'],
    );
    assert.equal(provider.authorizations, 3);
  });

  test('RFC 9207: the answer must name the authorization server as its iss, and must name one when the server says it does', async () => {
    const advertised = { authorization_response_iss_parameter_supported: true };
    const mixedUp = await signIn(advertised, (authorize) => ({
      code: 'c',
      state: stateOf(authorize),
      iss: 'https://attacker.example',
    }));
    assert.match(mixedUp.outcome, /^refused: the authorization answer came from https:\/\/attacker\.example/);
    assert.equal(mixedUp.codeExchanges, 0, 'the code was not exchanged');

    const unnamed = await signIn(advertised, approve);
    assert.match(unnamed.outcome, /^refused: the authorization answer names no issuer/);
    assert.equal(unnamed.codeExchanges, 0);

    // The same answers from the right issuer, or without iss from a server that never sends it, sign in.
    let issuer = '';
    const named = await signIn(advertised, (authorize) => {
      issuer = new URL(authorize.href).origin;
      return { code: 'c', state: stateOf(authorize), iss: issuer };
    });
    assert.equal(named.outcome, 'signed in');
    assert.equal(named.codeExchanges, 1);
    const silent = await signIn({}, approve);
    assert.equal(silent.outcome, 'signed in');
  });

  test('RFC 8414 3.3: metadata that names another issuer is not used: no registration, no browser', async () => {
    const as = await authorizationServer({ issuer: 'https://attacker.example' });
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    const { provider, opened } = await interactive(mcp);
    await assert.rejects(
      provider.ensureAuthorized(),
      /names the issuer https:\/\/attacker\.example: not used \(RFC 8414 3\.3\)/,
    );
    assert.deepEqual(opened, []);
    assert.deepEqual(
      as.seen.map((request) => request.path),
      ['/.well-known/oauth-authorization-server'],
      'only the metadata was read',
    );
  });

  test('a server that moves to another authorization server: registered and signed in there, the old tokens never sent to it', async () => {
    const { first, second, mcp, move } = await movingServer();
    const { provider } = await interactive(mcp);
    await provider.ensureAuthorized();
    assert.equal((await provider.tokens())?.access_token, 'token-1');
    assert.equal(provider.clientInformation()?.client_id, `client-of-${first.url}`);

    // The server now names the second one; its next 401 sends the MCP SDK back to auth(), which
    // answers REDIRECT though this provider has completed the sign-in by then.
    move();
    assert.equal(await auth(provider, { serverUrl: `${mcp.url}/mcp` }), 'REDIRECT');
    assert.equal(provider.clientInformation()?.client_id, `client-of-${second.url}`, 'registered with the second');
    assert.deepEqual(
      second.seen.filter((request) => request.path !== '/.well-known/oauth-authorization-server').map((r) => r.path),
      ['/register', '/token'],
    );
    const exchange = new URLSearchParams(second.seen.find((request) => request.path === '/token')?.body);
    assert.equal(exchange.get('grant_type'), 'authorization_code');
    assert.equal(exchange.get('client_id'), `client-of-${second.url}`);
    assert.ok(
      second.seen.every((request) => !request.body.includes(first.url.replace(/[:/]/g, (c) => encodeURIComponent(c)))),
      'nothing of the first server (its refresh token, its client id) went to the second',
    );
    assert.equal(provider.authorizations, 2);
  });

  test('a server that moves while its token is about to expire: the old refresh token is not sent to the new authorization server', async () => {
    const { first, second, mcp, move } = await movingServer();
    let clock = Date.now();
    const { provider } = await interactive(mcp, { now: () => clock });
    await provider.ensureAuthorized();
    assert.equal((await provider.tokens())?.access_token, 'token-1');
    // Past the refresh margin of the 300 s token: the next tokens() would refresh it.
    clock += 290_000;
    move();
    assert.equal(await auth(provider, { serverUrl: `${mcp.url}/mcp` }), 'REDIRECT');
    const toSecond = second.seen.filter((request) => request.path === '/token');
    assert.deepEqual(
      toSecond.map((request) => new URLSearchParams(request.body).get('grant_type')),
      ['authorization_code'],
      'only the new sign-in; no refresh at the second server',
    );
    assert.ok(
      second.seen.every((request) => !request.body.includes('refresh-1-from-')),
      "the first server's refresh token went nowhere else",
    );
    assert.equal(first.seen.filter((request) => request.path === '/token').length, 1, 'one exchange at the first');
  });

  test('a pre-registered confidential client: its secret goes to the token endpoint, never to disk', async () => {
    const as = await authorizationServer();
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    const first = await interactive(mcp, { clientId: 'pre-registered', clientSecret: 'the-client-secret' });
    await first.provider.ensureAuthorized();
    const exchange = as.seen.find((request) => request.path === '/token');
    const sent = `${basicOf(exchange as Seen) ?? ''} ${exchange?.body ?? ''}`;
    assert.match(sent, /the-client-secret/, 'the code exchange authenticated the client');
    const cached = await readFile(first.provider.cacheFile, 'utf8');
    assert.doesNotMatch(cached, /the-client-secret/);
    // Without MCP_CLIENT_SECRET the next run has no secret to send.
    const again = await interactive(mcp, { clientId: 'pre-registered', cacheDir: first.cacheDir });
    assert.equal((again.provider.clientInformation() as { client_secret?: string }).client_secret, undefined);
  });

  test('a pre-registered client whose server moved to another authorization server stops; nothing goes to the new one', async () => {
    const { second, mcp, move } = await movingServer();
    const { provider } = await interactive(mcp, { clientId: 'pre-registered', clientSecret: 'the-client-secret' });
    await provider.ensureAuthorized();
    move();
    await assert.rejects(
      auth(provider, { serverUrl: `${mcp.url}/mcp` }),
      /the pre-registered client pre-registered \(MCP_CLIENT_ID\) signed in at http:\/\/127\.0\.0\.1:\d+/,
    );
    assert.deepEqual(
      second.seen.map((request) => request.path),
      ['/.well-known/oauth-authorization-server'],
      'no registration, no token request: the secret stays with the first',
    );
  });

  test('a pre-registered client configured after a dynamic registration elsewhere signs in: that registration was not its own', async () => {
    const { second, mcp, move } = await movingServer();
    const dynamic = await interactive(mcp);
    await dynamic.provider.ensureAuthorized();
    move();
    const configured = await interactive(mcp, { clientId: 'pre-registered', cacheDir: dynamic.cacheDir });
    // Its first request is refused (the cached token is the first server's): the SDK calls auth().
    assert.equal(await auth(configured.provider, { serverUrl: `${mcp.url}/mcp` }), 'REDIRECT');
    const exchange = new URLSearchParams(second.seen.find((request) => request.path === '/token')?.body);
    assert.equal(exchange.get('client_id'), 'pre-registered');
  });

  test('a client refused at the code exchange (a wrong secret): one exchange, no new registration, the reason said', async () => {
    for (const clientId of ['pre-registered', undefined]) {
      const as = await authorizationServer({}, 'refuses the client');
      const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
      const { provider } = await interactive(mcp, { clientId, clientSecret: clientId && 'a-wrong-secret' });
      await assert.rejects(
        provider.ensureAuthorized(),
        /refused this client when the code was exchanged \(invalid_client\)/,
      );
      const paths = as.seen.map((request) => request.path);
      assert.equal(paths.filter((path) => path === '/token').length, 1, `${clientId}: ${paths}`);
      assert.equal(paths.filter((path) => path === '/register').length, clientId ? 0 : 1, `${clientId}: ${paths}`);
    }
  });

  test('RFC 9728 3.3: metadata that comes to name another resource is not stored; the next refresh asks for this server', async () => {
    const as = await authorizationServer();
    let resource: string | undefined;
    const mcp = await refusingMcpServer((base) => ({
      resource: resource ?? `${base}/mcp`,
      authorization_servers: [as.url],
    }));
    let clock = Date.now();
    const { provider, opened } = await interactive(mcp, { now: () => clock });
    await provider.ensureAuthorized();
    resource = 'https://other.example/mcp';
    // A step-up now: the SDK discovers afresh and is told of the other resource.
    await assert.rejects(
      auth(provider, { serverUrl: `${mcp.url}/mcp`, scope: 'expenses:write' }),
      /https:\/\/other\.example\/mcp/,
    );
    assert.equal(opened.length, 1, 'no sign-in for it');
    assert.doesNotMatch(await readFile(provider.cacheFile, 'utf8'), /other\.example/, 'nor is it cached');
    // Past the refresh margin of the 300 s token: tokens() refreshes it.
    clock += 290_000;
    assert.equal((await provider.tokens())?.access_token, 'token-2');
    const refresh = new URLSearchParams(as.seen.filter((request) => request.path === '/token').at(-1)?.body);
    assert.equal(refresh.get('grant_type'), 'refresh_token');
    assert.equal(refresh.get('resource'), `${mcp.url}/mcp`, 'a token for this server, not the other');
  });

  /**
   * A sign-in, the stored discovery edited as an older version could have written it, and a
   * new provider on that cache once the token is due for a refresh.
   */
  async function dueWithEditedDiscovery(edit: (discovery: Record<string, Record<string, unknown>>) => void) {
    const as = await authorizationServer();
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    let clock = Date.now();
    const first = await interactive(mcp, { now: () => clock });
    await first.provider.ensureAuthorized();
    const cached = JSON.parse(await readFile(first.provider.cacheFile, 'utf8'));
    edit(cached.discoveryState);
    await writeFile(first.provider.cacheFile, JSON.stringify(cached));
    clock += 290_000;
    const again = await interactive(mcp, { now: () => clock, cacheDir: first.cacheDir });
    const tokenGrants = () =>
      as.seen
        .filter((request) => request.path === '/token')
        .map((request) => new URLSearchParams(request.body).get('grant_type'));
    return { tokenGrants, cacheFile: first.provider.cacheFile, again };
  }

  test('a cached discovery naming another resource (an older version wrote it) is not refreshed with', async () => {
    const { tokenGrants, again } = await dueWithEditedDiscovery((discovery) => {
      (discovery.resourceMetadata as Record<string, unknown>).resource = 'https://other.example/mcp';
    });
    assert.equal(await again.provider.tokens(), undefined, 'no token: the next request signs in anew');
    assert.deepEqual(tokenGrants(), ['authorization_code'], 'no refresh was sent');
  });

  test('a cached discovery whose token endpoint is plain http to another host (an older version wrote it) gets no refresh token', async () => {
    const { tokenGrants, cacheFile, again } = await dueWithEditedDiscovery((discovery) => {
      (discovery.authorizationServerMetadata as Record<string, unknown>).token_endpoint =
        'http://attacker.example/token';
    });
    assert.equal(await again.provider.tokens(), undefined, 'no token: the next request signs in anew');
    assert.doesNotMatch(await readFile(cacheFile, 'utf8'), /refresh-1/, 'the refresh token is dropped');
    assert.deepEqual(tokenGrants(), ['authorization_code'], 'no refresh was sent');
  });

  test('a refresh without an answer (503, past its deadline) keeps the refresh token and fails; invalid_grant drops it', async () => {
    let tokenEndpoint: TokenEndpoint = 'answers';
    const as = await authorizationServer({}, () => tokenEndpoint);
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    let clock = Date.now();
    const { provider } = await interactive(mcp, { now: () => clock, requestTimeoutMs: 200 });
    await provider.ensureAuthorized();
    clock += 290_000;
    for (const trouble of ['fails (503)', 'hangs'] as const) {
      tokenEndpoint = trouble;
      await assert.rejects(
        provider.tokens(),
        /could not refresh the access token .*\(the refresh token is kept/,
        trouble,
      );
    }
    tokenEndpoint = 'answers';
    assert.equal((await provider.tokens())?.access_token, 'token-2', 'the kept refresh token, once it is answered');
    assert.deepEqual(
      as.seen
        .filter((request) => new URLSearchParams(request.body).get('grant_type') === 'refresh_token')
        .map((request) => new URLSearchParams(request.body).get('refresh_token')),
      Array(3).fill(`refresh-1-from-${as.url}`),
    );

    clock += 290_000;
    tokenEndpoint = 'refuses the grant';
    assert.equal(await provider.tokens(), undefined, 'refused: the next request signs in anew');
    assert.doesNotMatch(await readFile(provider.cacheFile, 'utf8'), /refresh-2-from/, 'the refused token is gone');
  });

  test('a stored refresh token is among the secrets to hide before it is sent, and so is every token saved', async () => {
    let tokenEndpoint: TokenEndpoint = 'answers';
    const as = await authorizationServer({}, () => tokenEndpoint);
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    const clock = Date.now();
    const { provider, cacheDir } = await interactive(mcp, { now: () => clock });
    await provider.ensureAuthorized();
    // A later run: the tokens come from the store, the access token has expired, and the token
    // endpoint's refusal could quote the refresh request.
    const known: string[] = [];
    const later = await InteractiveOAuthProvider.create({
      mcpUrl: `${mcp.url}/mcp`,
      scope: 'mcp:access',
      redirectPort: 0,
      cacheDir,
      print: () => {},
      openBrowser: async () => false,
      now: () => clock + 400_000,
      onSecret: (value) => known.push(value),
    });
    tokenEndpoint = 'fails (503)';
    await assert.rejects(later.tokens(), /could not refresh/);
    const sent = as.seen.filter((request) => new URLSearchParams(request.body).get('grant_type') === 'refresh_token');
    assert.equal(sent.length, 1);
    assert.ok(known.includes(`refresh-1-from-${as.url}`), 'the refresh token was known before the refusal');
    assert.ok(known.includes('token-1'));
    tokenEndpoint = 'answers';
    await later.tokens();
    assert.ok(known.includes('token-2') && known.includes(`refresh-2-from-${as.url}`), known.join());
  });

  test('oauth: a tool call outlasts a sign-in in the browser, which a step-up does inside it', async () => {
    const as = await authorizationServer();
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    const cacheDir = await mkdtemp(join(tmpdir(), 'agent-oauth-client-'));
    temporary.push(cacheDir);
    // The configuration as a user's environment gives it: oauth is the default mode.
    const config = loadConfig({
      API_HOST: 'ollama',
      MCP_SERVER_URL: `${mcp.url}/mcp`,
      MCP_CACHE_DIR: cacheDir,
      MCP_EXTRA_SERVERS: JSON.stringify({ tavily: { url: 'https://mcp.tavily.example/mcp' } }),
    });
    assert.equal(config.mcpAuth.mode, 'oauth');
    const prepared = await prepareConnections(config, { openBrowser: answeringBrowser([]), print: () => {} });
    const client = createMcpClient(prepared.connections);
    const { expenses, tavily } = client.config.mcpServers;
    assert.ok(
      (expenses?.defaultToolTimeout ?? 0) > LOGIN_TIMEOUT_MS,
      `tool timeout ${expenses?.defaultToolTimeout} ms, sign-in ${LOGIN_TIMEOUT_MS} ms`,
    );
    assert.equal(tavily?.defaultToolTimeout, undefined, 'other servers keep the SDK default');
    await client.close();
  });

  test('a refresh refused with another 4xx (the realm is gone: a 404 page, an error of its own): dropped, the next request signs in', async () => {
    for (const refusal of ['is gone (an HTML 404)', 'answers 400 with an error of its own'] as const) {
      let tokenEndpoint: TokenEndpoint = 'answers';
      const as = await authorizationServer({}, () => tokenEndpoint);
      const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
      let clock = Date.now();
      const { provider } = await interactive(mcp, { now: () => clock });
      await provider.ensureAuthorized();
      clock += 290_000;
      tokenEndpoint = refusal;
      assert.equal(await provider.tokens(), undefined, refusal);
      assert.doesNotMatch(
        await readFile(provider.cacheFile, 'utf8'),
        /refresh-1-from/,
        `${refusal}: gone from the cache`,
      );
    }
  });

  test('two authorizations at once (parallel tool calls meeting a 401): one browser, one exchange, with that page’s verifier', async () => {
    const as = await authorizationServer();
    const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [as.url] }));
    const { provider, opened } = await interactive(mcp);
    const outcomes = await Promise.allSettled([1, 2].map(() => auth(provider, { serverUrl: `${mcp.url}/mcp` })));
    assert.deepEqual(
      outcomes.map((outcome) => outcome.status),
      ['fulfilled', 'fulfilled'],
      JSON.stringify(outcomes.map((outcome) => (outcome.status === 'rejected' ? `${outcome.reason}` : 'ok'))),
    );
    assert.equal(opened.length, 1, 'one browser');
    const exchanges = as.seen.filter(
      (request) => new URLSearchParams(request.body).get('grant_type') === 'authorization_code',
    );
    assert.equal(exchanges.length, 1, 'one code exchange');
    // PKCE holds: the verifier sent is the one whose challenge the page opened carried.
    const challenge = new URL(opened[0] as string).searchParams.get('code_challenge');
    const verifier = new URLSearchParams(exchanges[0]?.body).get('code_verifier') ?? '';
    assert.equal(createHash('sha256').update(verifier).digest('base64url'), challenge);
    assert.equal(provider.authorizations, 1);
    assert.equal((await provider.tokens())?.access_token, 'token-1');
  });

  test('metadata that cannot be read for now: the sign-in is refused and the tokens in hand are kept', async () => {
    const as = await authorizationServer();
    let available = true;
    const mcp = await refusingMcpServer((base) =>
      available ? { resource: `${base}/mcp`, authorization_servers: [as.url] } : undefined,
    );
    const { provider, opened } = await interactive(mcp);
    await provider.ensureAuthorized();
    available = false;
    // A step-up now: the SDK finds no metadata and falls back to the server's own origin.
    await assert.rejects(
      auth(provider, { serverUrl: `${mcp.url}/mcp`, scope: 'expenses:write' }),
      /no authorization server metadata at/,
    );
    assert.equal(opened.length, 1, 'no second browser');
    assert.equal((await provider.tokens())?.access_token, 'token-1', 'the token in hand is kept');
  });
});

describe('checkEndpointTransport', () => {
  test('without a token_endpoint, the /token the SDK falls back to at the issuer is checked', () => {
    assert.throws(
      () =>
        checkEndpointTransport({ issuer: 'http://as.example', authorization_endpoint: 'https://as.example/authorize' }),
      /names token_endpoint http:\/\/as\.example\/token: not used/,
    );
    checkEndpointTransport({ issuer: 'http://127.0.0.1:8080/realms/mcp' });
    checkEndpointTransport({ issuer: 'https://as.example' });
  });
});

describe('checkIssuer (RFC 8414 3.3)', () => {
  test('the issuer must be the identifier it was looked up by; a bare origin may end in / on either side', () => {
    const at = (issuer: string) => ({ issuer });
    assert.doesNotThrow(() => checkIssuer('https://kc.example/realms/mcp', at('https://kc.example/realms/mcp')));
    assert.doesNotThrow(() => checkIssuer('https://as.example', at('https://as.example/')));
    assert.doesNotThrow(() => checkIssuer('https://as.example/', at('https://as.example')));
    assert.throws(() => checkIssuer('https://kc.example/realms/mcp', at('https://kc.example/realms/mcp/')), /RFC 8414/);
    assert.throws(
      () => checkIssuer('https://kc.example/realms/mcp', at('https://kc.example/realms/other')),
      /RFC 8414/,
    );
    assert.throws(() => checkIssuer('https://as.example', at('https://as.example.evil')), /RFC 8414/);
  });
});

describe('secrets obtained at run time', () => {
  /**
   * An MCP server behind client_credentials whose tool answers a debugging page: 400 quoting the
   * request's headers, the access token among them.
   */
  async function echoingMcpServer(as: string) {
    let base = '';
    const server = await recording((request, response) => {
      const path = new URL(request.url ?? '/', 'http://x').pathname;
      if (path === '/.well-known/oauth-protected-resource/mcp') {
        return json(response, 200, { resource: `${base}/mcp`, authorization_servers: [as] });
      }
      if (path !== '/mcp' || request.method !== 'POST') return json(response, 405, { error: 'no' });
      if (!request.headers.authorization) {
        return json(
          response,
          401,
          { error: 'invalid_token' },
          {
            'www-authenticate': `Bearer resource_metadata="${base}/.well-known/oauth-protected-resource/mcp"`,
          },
        );
      }
      const message = JSON.parse(server.seen.at(-1)?.body ?? '{}');
      if (message.id === undefined) return response.writeHead(202).end();
      const result = (value: unknown) => json(response, 200, { jsonrpc: '2.0', id: message.id, result: value });
      if (message.method === 'initialize') {
        return result({
          protocolVersion: message.params.protocolVersion,
          capabilities: { tools: {} },
          serverInfo: { name: 'echo', version: '1' },
        });
      }
      if (message.method === 'tools/list') {
        return result({
          tools: [
            {
              name: 'lookup',
              description: 'Looks up.',
              inputSchema: { type: 'object', properties: {} },
              annotations: { readOnlyHint: true },
            },
          ],
        });
      }
      response
        .writeHead(400, { 'content-type': 'text/plain' })
        .end(`Bad request. Request headers: authorization: ${request.headers.authorization}`);
    });
    base = server.url;
    return server;
  }

  test('an access token a server echoes reaches neither the model nor the turn’s record; the Basic credentials a token endpoint echoes are not in the start’s error', async () => {
    const llm = await startScriptedLlm();
    const as = await authorizationServer();
    const mcp = await echoingMcpServer(as.url);
    const env = {
      ...scriptedModelEnv(llm.baseUrl),
      MCP_AUTH: 'client_credentials',
      MCP_CLIENT_SECRET: 'the-client-secret',
      MCP_SERVER_URL: `${mcp.url}/mcp`,
    };
    const running = await startAgent(loadConfig(env));
    try {
      llm.script([{ toolCalls: [{ name: 'lookup', arguments: {} }] }, { content: 'done' }]);
      const turn = await running.agent.run('look it up');
      const sentToken = mcp.seen.find((request) => request.authorization?.startsWith('Bearer '))?.authorization;
      assert.equal(sentToken, 'Bearer token-1');
      assert.match(turn.toolCalls[0]?.result ?? '', /authorization: Bearer …/);
      const toModel = JSON.stringify(llm.requests.map(({ body }) => body));
      assert.match(toModel, /authorization: Bearer …/);
      assert.doesNotMatch(`${toModel} ${JSON.stringify(turn.toolCalls)}`, /token-1/);
    } finally {
      await running.close();
    }

    // A token endpoint that quotes its request's headers in its refusal.
    const echoing = await recording((request, response) =>
      response.writeHead(400, { 'content-type': 'text/plain' }).end(`headers: ${JSON.stringify(request.headers)}`),
    );
    const basic = Buffer.from('expenses-agent:the-client-secret').toString('base64');
    await assert.rejects(startAgent(loadConfig({ ...env, MCP_TOKEN_URL: `${echoing.url}/token` })), (error: Error) => {
      assert.equal(basicOf(echoing.seen[0] as Seen), 'expenses-agent:the-client-secret', 'the endpoint got them');
      assert.match(error.message, /answered 400/);
      assert.ok(!error.message.includes(basic), error.message);
      return true;
    });
    await llm.close();
  });
});

test('a token endpoint that echoes the Basic credentials across the cut of its quoted answer shows no part of them', async () => {
  const secret = 'S3cr3t-Value-01';
  const basic = Buffer.from(`expenses-agent:${secret}`).toString('base64');
  // The credentials start 20 characters before the 300 the error quotes.
  const echoing = await recording((_request, response) =>
    response
      .writeHead(400, { 'content-type': 'text/plain' })
      .end(`${'x'.repeat(259)}authorization: Basic ${basic} more`),
  );
  const mcp = await refusingMcpServer((base) => ({ resource: `${base}/mcp`, authorization_servers: [] }));
  const source = agentTokenSource(`${mcp.url}/mcp`, { tokenUrl: `${echoing.url}/token`, clientSecret: secret });
  await assert.rejects(source.accessToken(), (error: Error) => {
    assert.match(error.message, /answered 400: x+authorization: Basic …/);
    assert.ok(!error.message.includes(basic.slice(0, 12)), error.message);
    return true;
  });
});

test('a client secret is hidden as client_secret_post and client_secret_basic carry it', () => {
  const secret = 'Ab8Q~xYz_/kl+m= q';
  const hide = secretsHider(
    configuredSecrets({
      mcpServerUrl: 'http://localhost:8000/mcp',
      mcpAuth: {
        mode: 'oauth',
        scope: '',
        exactScope: false,
        clientId: 'pre-registered',
        clientSecret: secret,
        clientMetadataUrl: undefined,
        redirectPort: 0,
        cacheDir: '/tmp',
      },
      extraServers: [],
    }),
  );
  const post = new URLSearchParams({ s: secret }).toString().slice(2);
  const basic = Buffer.from(`pre-registered:${encodeURIComponent(secret)}`).toString('base64');
  for (const [shown, piece] of [
    [`client_secret=${post}&grant_type=authorization_code`, post],
    [`client_secret=${encodeURIComponent(secret)}`, encodeURIComponent(secret)],
    [`authorization: Basic ${basic}`, basic],
    [`secret: ${secret}`, secret],
  ] as const) {
    const hidden = hide(shown);
    assert.ok(!hidden.includes(piece) && hidden.includes('…'), `${shown} → ${hidden}`);
  }
});

test('the obtained secrets hidden are the newest eight tokens, each once', () => {
  const obtained = new ObtainedSecrets();
  for (let n = 1; n <= 10; n++) obtained.add(`token-${n}`);
  obtained.add('token-10');
  obtained.add('short');
  assert.deepEqual(obtained.values, [
    'token-10',
    'token-9',
    'token-8',
    'token-7',
    'token-6',
    'token-5',
    'token-4',
    'token-3',
  ]);
  const hide = secretsHider([], obtained);
  assert.equal(hide('Bearer token-9, Bearer token-2'), 'Bearer …, Bearer token-2');
  // A refresh token as a refresh request's form body carries it (and an answer quoting it).
  obtained.add('1//0gAbCdEf+0123456789=');
  assert.equal(
    hide('grant_type=refresh_token&refresh_token=1%2F%2F0gAbCdEf%2B0123456789%3D'),
    'grant_type=refresh_token&refresh_token=…',
  );
});
