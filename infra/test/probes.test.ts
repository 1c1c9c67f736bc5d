import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '@mcp-auth-stack/server/config';
import { parse } from 'yaml';
import { evaluate, moduleParams, objectProperty, parseBicep } from './bicep.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Azure's probes, compose's healthcheck and the server agree on what readiness is and on its
 * time: /ready answers within READY_TIMEOUT_MS, so every probe of it must wait longer than
 * that, or a slow-but-bounded answer would count as a failure.
 */
test("the server's probes: liveness on /health, readiness on /ready, each waiting longer than /ready's bound", async () => {
  const readyTimeoutMs = loadConfig({}).readyTimeoutMs;
  const main = await parseBicep(join(ROOT, 'infra/azure/main.bicep'));
  const server = main.modules.find((m) => m.name === 'server');
  assert.ok(server);
  const probes = evaluate(main, objectProperty(moduleParams(server), 'probes') as never, {}) as {
    type: string;
    httpGet: { path: string };
    timeoutSeconds?: number;
  }[];
  const byType = Object.fromEntries(probes.map((p) => [p.type, p]));
  // The server listens only after its database answers and the migrations ran: a minute at least
  // (Container Apps' defaults: 10 s between checks, 3 failures).
  const startup = byType.Startup as { initialDelaySeconds?: number; periodSeconds?: number; failureThreshold?: number };
  assert.equal(byType.Startup?.httpGet.path, '/health');
  const startupSeconds =
    (startup.initialDelaySeconds ?? 0) + (startup.periodSeconds ?? 10) * (startup.failureThreshold ?? 3);
  assert.ok(startupSeconds >= 60, `the startup probe gives up after ${startupSeconds} s`);
  assert.equal(byType.Liveness?.httpGet.path, '/health');
  assert.equal(byType.Readiness?.httpGet.path, '/ready');
  // Container Apps' default probe timeout is 1 s.
  assert.ok((byType.Readiness?.timeoutSeconds ?? 1) * 1000 > readyTimeoutMs, 'Azure readiness timeout');

  const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as {
    services: { server: { healthcheck: { test: string[]; timeout: string } } };
  };
  const { healthcheck } = compose.services.server;
  // The check asks /ready on the port the server listens on (PORT, 8000 by default).
  assert.match(healthcheck.test.join(' '), /http:\/\/127\.0\.0\.1:' \+ \(process\.env\.PORT \|\| 8000\) \+ '\/ready/);
  assert.ok(Number.parseInt(healthcheck.timeout, 10) * 1000 > readyTimeoutMs, 'compose healthcheck timeout');
});
