import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { KEYCLOAK_EGRESS_HOSTS, keycloakEgressProxyMappings, LOOPBACK_EGRESS_HOSTS, REALM_FILE } from '../src/index.ts';

interface Executor {
  executor: string;
  configuration: Record<string, unknown>;
}

test("Keycloak's egress hosts are exactly the hosts the realm loads Client ID Metadata Documents from", () => {
  const realm = JSON.parse(readFileSync(REALM_FILE, 'utf8')) as {
    clientProfiles: { profiles: { executors: Executor[] }[] };
  };
  const cimd = realm.clientProfiles.profiles
    .flatMap((profile) => profile.executors)
    .find((executor) => executor.executor === 'client-id-metadata-document');
  const domains = cimd?.configuration['cimd-allow-permitted-domains'] as string[];
  assert.deepEqual([...domains].sort(), [...LOOPBACK_EGRESS_HOSTS, ...KEYCLOAK_EGRESS_HOSTS].sort());
});

test('the proxy mappings send the allowed hosts direct, whole names only, and everything else nowhere', () => {
  const deployed = keycloakEgressProxyMappings({ loopback: false }).split(',');
  assert.deepEqual(deployed, [
    '^vscode\\.dev$;NO_PROXY',
    '^insiders\\.vscode\\.dev$;NO_PROXY',
    '^code\\.visualstudio\\.com$;NO_PROXY',
    '.*;http://127.0.0.1:9',
  ]);
  const patterns = deployed.map((entry) => new RegExp((entry.split(';')[0] as string).replace(/^\.\*$/, '^.*$')));
  const firstMatch = (host: string) => deployed[patterns.findIndex((pattern) => pattern.test(host))];
  assert.equal(firstMatch('vscode.dev'), '^vscode\\.dev$;NO_PROXY');
  assert.equal(firstMatch('vscodexdev'), '.*;http://127.0.0.1:9', 'the dot is a dot');
  assert.equal(firstMatch('vscode.dev.attacker.example'), '.*;http://127.0.0.1:9');
  assert.equal(firstMatch('169.254.169.254'), '.*;http://127.0.0.1:9');
  assert.equal(firstMatch('localhost'), '.*;http://127.0.0.1:9', 'a deployed Keycloak reaches no loopback service');
  const local = keycloakEgressProxyMappings({ loopback: true }).split(',');
  assert.deepEqual(local.slice(0, 2), ['^localhost$;NO_PROXY', '^127\\.0\\.0\\.1$;NO_PROXY']);
});
