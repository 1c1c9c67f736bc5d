/**
 * The realm file as a deployment imports it (keycloak/Dockerfile, the image `azd up` runs): the
 * realm-mcp.json that `pnpm start`, compose and the tests import, with two things taken out.
 *
 * - Its people. alice, bob and carol sign in with passwords printed in this repository, carol as
 *   an administrator; on a public Keycloak they would be anyone's accounts. Only the clients'
 *   service accounts stay (the agent's and the janitor's), which sign in with the secrets the
 *   deployment sets.
 * - The placeholders' defaults. `${KEYCLOAK_AGENT_CLIENT_SECRET:expenses-agent-demo-secret-…}`
 *   would give a Keycloak started without that variable the public demo secret, and
 *   `${KEYCLOAK_CIMD_ALLOW_HTTP:true}` plain-HTTP metadata documents. Deployed, each placeholder
 *   is a bare `${NAME}`, and the image's entrypoint (start-deployed.sh) refuses to start while
 *   any of them is unset.
 *
 * Run by the image's build with Node alone (no dependencies): `node realm-for-deployment.ts
 * realm-mcp.json > out.json`.
 */
import { readFileSync } from 'node:fs';
import { argv, stdout } from 'node:process';
import { fileURLToPath } from 'node:url';

interface RealmUser {
  username?: string;
  serviceAccountClientId?: string;
}

/** `${NAME:default}` as Keycloak's import reads it (the default runs to the first `}`). */
const PLACEHOLDER_WITH_DEFAULT = /\$\{([A-Z][A-Z0-9_]*):[^}]*\}/g;

/** The realm without its people and without its placeholders' defaults. */
export function realmForDeployment<Realm extends { users?: RealmUser[] }>(realm: Realm): Realm {
  const withoutDefaults = withoutPlaceholderDefaults(realm) as Realm;
  return {
    ...withoutDefaults,
    users: (withoutDefaults.users ?? []).filter((user) => Boolean(user.serviceAccountClientId)),
  };
}

/** Every string in `value` with each `${NAME:default}` made `${NAME}`. */
function withoutPlaceholderDefaults(value: unknown): unknown {
  if (typeof value === 'string') return value.replace(PLACEHOLDER_WITH_DEFAULT, '$${$1}');
  if (Array.isArray(value)) return value.map(withoutPlaceholderDefaults);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, withoutPlaceholderDefaults(item)]));
  }
  return value;
}

if (argv[1] === fileURLToPath(import.meta.url)) {
  const file = argv[2];
  if (!file) throw new Error('usage: node realm-for-deployment.ts <realm file>');
  stdout.write(`${JSON.stringify(realmForDeployment(JSON.parse(readFileSync(file, 'utf8'))), null, 2)}\n`);
}
