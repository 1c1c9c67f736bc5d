import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, join, relative } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CONFIG_VARIABLES as AGENT_VARIABLES } from '@mcp-auth-stack/agent/config';
import { SHUTDOWN_TIMEOUT_MS as AGENT_SHUTDOWN_TIMEOUT_MS } from '@mcp-auth-stack/agent/http';
import { keycloakEgressProxyMappings, POLICY_PROVIDER_JAR, REALM_FEATURES, REALM_FILE } from '@mcp-auth-stack/keycloak';
import { CONFIG_VARIABLES, loadConfig, STACK_AUTH_MODE } from '@mcp-auth-stack/server/config';
import { parse } from 'yaml';

/**
 * docker-compose.yml checked without a container engine: it parses, everything it names (build
 * paths, mounted files, variables, flags) exists in the repository and agrees with what the
 * tests run, and its health checks, run here against stand-in endpoints, tell ready from not
 * ready. scripts/ci/containers.sh brings the file up for real.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url));

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  healthcheck?: { test: string[] | string };
  depends_on?: Record<string, { condition: string }>;
  stop_grace_period?: string;
}
const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const services = compose.services;
const server = services.server as Service;
const keycloak = services.keycloak as Service;

describe('docker-compose.yml', () => {
  test("has the stack's services", () => {
    assert.deepEqual(Object.keys(services).sort(), ['agent', 'keycloak', 'postgres', 'server']);
    assert.deepEqual((services.agent as Service & { profiles?: string[] }).profiles, ['agent']);
  });

  test('every service has a health check and waits for healthy dependencies', () => {
    for (const [name, service] of Object.entries(services)) {
      assert.ok(service.healthcheck?.test, `${name} has a healthcheck`);
      for (const [dependency, { condition }] of Object.entries(service.depends_on ?? {})) {
        assert.ok(services[dependency], `${name} depends on ${dependency}, which exists`);
        assert.equal(condition, 'service_healthy', `${name} waits for ${dependency} to be healthy`);
      }
    }
  });

  test('every build path and mounted file exists; named volumes are declared', () => {
    for (const [name, service] of Object.entries(services)) {
      if (service.build) {
        assert.ok(existsSync(join(ROOT, service.build.context, service.build.dockerfile)), `${name} Dockerfile`);
      }
      for (const volume of service.volumes ?? []) {
        const source = volume.split(':')[0] as string;
        if (source.startsWith('./')) assert.ok(existsSync(join(ROOT, source)), `${name} mounts ${source}`);
        else assert.ok(source in compose.volumes, `${name} uses declared volume ${source}`);
      }
    }
  });

  test("the server runs the image's own command with variables its config module reads", () => {
    assert.equal(server.command, undefined);
    const known = new Set<string>(CONFIG_VARIABLES);
    for (const variable of Object.keys(server.environment ?? {})) {
      assert.ok(known.has(variable), `${variable} is read by apps/server/src/config.ts`);
    }
    assert.match(server.environment?.DATABASE_URL ?? '', /^postgres:\/\/mcp:.*@postgres:5432\/expenses$/);
  });

  test("the agent runs its image's command with variables its config module reads, as a service account", () => {
    const agent = services.agent as Service;
    assert.equal(agent.command, undefined);
    const known = new Set<string>(AGENT_VARIABLES);
    for (const variable of Object.keys(agent.environment ?? {})) assert.ok(known.has(variable), variable);
    assert.equal(agent.environment?.MCP_AUTH, 'client_credentials');
    const host = new URL(agent.environment?.MCP_SERVER_URL ?? '').hostname;
    assert.ok((server.environment?.ALLOWED_HOSTS ?? '').split(',').includes(host), `the server accepts Host ${host}`);
    // It calls the server by its compose name; tokens name the server's public resource.
    assert.equal(agent.environment?.MCP_RESOURCE, `${server.environment?.MCP_SERVER_BASE_URL}/mcp`);
    // Whichever API_HOST a user sets, its settings reach the container (the README says: set API_HOST and its key).
    const modelVariables = AGENT_VARIABLES.filter((name) =>
      /^(API_HOST|OPENAI_|AZURE_OPENAI_|GITHUB_|OLLAMA_)/.test(name),
    );
    assert.ok(modelVariables.length >= 11, modelVariables.join(' '));
    for (const variable of modelVariables) {
      assert.match(agent.environment?.[variable] ?? '', new RegExp(`^\\$\\{${variable}:-`), variable);
    }
  });

  test('each client secret Keycloak is given reaches the container that uses it, from the same variable', () => {
    // A user who sets KEYCLOAK_PROXY_CLIENT_SECRET (the README says to change the demo secrets)
    // must not leave the server on the demo one: every sign-in would get invalid_client.
    const agent = services.agent as Service;
    const pairs: [string, Service, string][] = [
      ['KEYCLOAK_PROXY_CLIENT_SECRET', server, 'OAUTH_PROXY_UPSTREAM_CLIENT_SECRET'],
      ['KEYCLOAK_JANITOR_CLIENT_SECRET', server, 'KEYCLOAK_JANITOR_CLIENT_SECRET'],
      ['KEYCLOAK_AGENT_CLIENT_SECRET', agent, 'MCP_CLIENT_SECRET'],
    ];
    for (const [realmVariable, user, userVariable] of pairs) {
      const given = keycloak.environment?.[realmVariable];
      assert.match(given ?? '', new RegExp(`^\\$\\{${realmVariable}:-[^}]+\\}$`), realmVariable);
      assert.equal(user.environment?.[userVariable], given, `${userVariable} follows ${realmVariable}`);
    }
  });

  test('the server runs the mode pnpm start and azd run unless MCP_AUTH_PROVIDER says otherwise', () => {
    assert.equal(server.environment?.MCP_AUTH_PROVIDER, `\${MCP_AUTH_PROVIDER:-${STACK_AUTH_MODE}}`);
  });

  test('in keycloak mode the server knows the issuer browsers see and where it reaches the realm itself', () => {
    assert.equal(server.environment?.KEYCLOAK_REALM_URL, 'http://localhost:8080/realms/mcp');
    assert.equal(server.environment?.KEYCLOAK_REALM_INTERNAL_URL, 'http://keycloak:8080/realms/mcp');
    assert.ok((keycloak.command ?? []).includes('--hostname-backchannel-dynamic=true'));
  });

  test("Keycloak starts as pnpm keycloak and the tests start it, with the repository's realm", () => {
    const command = keycloak.command ?? [];
    assert.equal(command[0], 'start-dev');
    assert.ok(command.includes('--import-realm'));
    assert.ok(command.includes('--health-enabled=true'));
    assert.ok(command.includes(`--features=${[...REALM_FEATURES].sort().join(',')}`));
    assert.ok(
      keycloak.volumes?.includes(
        `./keycloak/${basename(REALM_FILE)}:/opt/keycloak/data/import/${basename(REALM_FILE)}:ro`,
      ),
    );
    // The realm's own executor, which the realm file names.
    assert.ok(
      keycloak.volumes?.includes(
        `./${relative(ROOT, POLICY_PROVIDER_JAR)}:/opt/keycloak/providers/${basename(POLICY_PROVIDER_JAR)}:ro`,
      ),
      JSON.stringify(keycloak.volumes),
    );
    assert.equal(keycloak.environment?.KC_DB, 'postgres');
    // Outgoing requests only to the realm's public CIMD hosts (compose writes $ as $$).
    assert.equal(
      keycloak.environment?.KC_SPI_CONNECTIONS_HTTP_CLIENT__DEFAULT__PROXY_MAPPINGS?.replaceAll('$$', '$'),
      keycloakEgressProxyMappings({ loopback: false }),
    );
  });

  test("the audience Keycloak puts in tokens is the server's own MCP URL", () => {
    assert.equal(keycloak.environment?.MCP_SERVER_RESOURCE_URL, `${server.environment?.MCP_SERVER_BASE_URL}/mcp`);
    const realm = readFileSync(REALM_FILE, 'utf8');
    assert.match(realm, /\$\{MCP_SERVER_RESOURCE_URL:/);
  });

  test("every variable the Keycloak service sets is Keycloak's own (KC_*) or a placeholder of the realm", () => {
    const realm = readFileSync(REALM_FILE, 'utf8');
    const placeholders = new Set([...realm.matchAll(/\$\{([A-Z0-9_]+)(?::[^}]*)?\}/g)].map((match) => match[1]));
    for (const name of Object.keys(keycloak.environment ?? {})) {
      if (name.startsWith('KC_')) continue;
      assert.ok(placeholders.has(name), `${name} is a \${...} placeholder in ${basename(REALM_FILE)}`);
    }
    // And the secret the agent service sends is the one the realm is given.
    const agent = services.agent as { environment?: Record<string, string> };
    assert.equal(agent.environment?.MCP_CLIENT_SECRET, keycloak.environment?.KEYCLOAK_AGENT_CLIENT_SECRET);
  });

  test('published ports are the ones the README names', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    for (const service of Object.values(services)) {
      for (const port of service.ports ?? []) {
        const published = port.split(':').at(-2) as string;
        assert.match(readme, new RegExp(`localhost:${published}`), `README mentions port ${published}`);
      }
    }
  });
});

/** A loopback HTTP server answering every request with `status` and `body`; closed after `use`. */
async function answering<T>(status: number, body: string, use: (port: number) => Promise<T> | T): Promise<T> {
  const server = createServer((_request, response) => {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    return await use((server.address() as AddressInfo).port);
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

/**
 * A CMD-SHELL health check as the engine runs it (compose's `$$` is a literal `$`): its exit
 * code. Asynchronous, so the stand-in endpoint in this process can answer it.
 */
function runHealthcheck(
  service: Service,
  shell: string,
  rewrite: (command: string) => string,
  env: Record<string, string> = {},
): Promise<number | null> {
  const [form, command] = (service.healthcheck?.test ?? []) as string[];
  assert.equal(form, 'CMD-SHELL');
  const child = spawn(shell, ['-c', rewrite((command as string).replaceAll('$$', '$'))], {
    env: { ...process.env, ...env },
    stdio: 'ignore',
    timeout: 10_000,
  });
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

describe('docker-compose.yml health checks', () => {
  const keycloakCheck = (port: number) =>
    runHealthcheck(keycloak, 'bash', (command) => {
      assert.match(command, /\/dev\/tcp\/127\.0\.0\.1\/9000/);
      return command.replace('/dev/tcp/127.0.0.1/9000', `/dev/tcp/127.0.0.1/${port}`);
    });

  test('Keycloak is healthy only when /health/ready answers 200, not while the realm import makes it 503', async () => {
    // What Keycloak's management port answers during the import: 503, with one check still "UP".
    const importing = JSON.stringify({
      status: 'DOWN',
      checks: [
        { name: 'Keycloak database connections health check', status: 'UP' },
        { name: 'Graceful Shutdown Health Check', status: 'UP' },
        { name: 'Keycloak initialization', status: 'DOWN' },
      ],
    });
    assert.equal(await answering(503, importing, keycloakCheck), 1);
    const ready = JSON.stringify({ status: 'UP', checks: [{ name: 'Keycloak initialization', status: 'UP' }] });
    assert.equal(await answering(200, ready, keycloakCheck), 0);
  });

  for (const [name, port] of [
    ['agent', '8001'],
    ['server', '8000'],
  ] as const) {
    test(`the ${name} is healthy only when /ready answers 200 (alive but not ready is not healthy)`, async () => {
      const service = services[name] as Service;
      assert.equal(service.environment?.PORT, port);
      const check = (listening: number) =>
        runHealthcheck(service, 'sh', (command) => command, { PORT: String(listening) });
      // /health answers 200 and /ready 503, as an agent does while it cannot reach its MCP server.
      const aliveNotReady = createServer((request, response) => {
        response.writeHead(request.url === '/health' ? 200 : 503).end('{}');
      });
      await new Promise<void>((resolve) => aliveNotReady.listen(0, '127.0.0.1', resolve));
      try {
        assert.equal(await check((aliveNotReady.address() as AddressInfo).port), 1);
      } finally {
        await new Promise((resolve) => aliveNotReady.close(resolve));
      }
      assert.equal(await answering(200, '{"status":"ready"}', check), 0);
    });
  }
});

describe('stopping', () => {
  test("the server's stop grace period outlasts its drain and the pool's close, at their defaults", () => {
    const config = loadConfig({ MCP_AUTH_PROVIDER: 'none', HOST: '127.0.0.1' });
    const grace = /^(\d+)s$/.exec(server.stop_grace_period ?? '')?.[1];
    assert.ok(grace, `stop_grace_period in seconds: ${server.stop_grace_period}`);
    assert.ok(
      Number(grace) * 1000 > config.shutdownTimeoutMs + config.databaseCloseTimeoutMs,
      `${grace} s against ${config.shutdownTimeoutMs} + ${config.databaseCloseTimeoutMs} ms`,
    );
  });

  test("the agent's stop grace period outlasts the time it gives busy connections", () => {
    const agent = services.agent as Service;
    const grace = /^(\d+)s$/.exec(agent.stop_grace_period ?? '')?.[1];
    assert.ok(grace, `stop_grace_period in seconds: ${agent.stop_grace_period}`);
    assert.ok(Number(grace) * 1000 > AGENT_SHUTDOWN_TIMEOUT_MS, `${grace} s against ${AGENT_SHUTDOWN_TIMEOUT_MS} ms`);
  });
});

describe('docker-compose.yml and the Dockerfiles agree', () => {
  test('Keycloak runs the version keycloak/Dockerfile builds on, bound to every interface explicitly', () => {
    const dockerfile = readFileSync(join(ROOT, 'keycloak/Dockerfile'), 'utf8');
    const bases = [...dockerfile.matchAll(/^FROM\s+(\S+)/gm)]
      .map((match) => match[1])
      .filter((base) => base?.startsWith('quay.io/keycloak/'));
    assert.ok(bases.length > 0);
    for (const base of bases) assert.equal(keycloak.image, base);
    assert.match(keycloak.image ?? '', /:\d+\.\d+\.\d+$/, 'a full version, not a floating tag');
    assert.ok((keycloak.command ?? []).includes('--http-host=0.0.0.0'));
  });
});
