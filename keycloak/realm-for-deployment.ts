/**
 * The realm file as a deployment imports it (keycloak/Dockerfile, the image `azd up` runs): the
 * realm-mcp.json that `pnpm start`, compose and the tests import, without its people. alice, bob
 * and carol sign in with passwords printed in this repository, carol as an administrator; on a
 * public Keycloak they would be anyone's accounts. Only the clients' service accounts stay (the
 * agent's and the janitor's), which sign in with the secrets the deployment sets.
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

/** The realm with every user that is not a client's service account left out. */
export function realmForDeployment<Realm extends { users?: RealmUser[] }>(realm: Realm): Realm {
  return { ...realm, users: (realm.users ?? []).filter((user) => Boolean(user.serviceAccountClientId)) };
}

if (argv[1] === fileURLToPath(import.meta.url)) {
  const file = argv[2];
  if (!file) throw new Error('usage: node realm-for-deployment.ts <realm file>');
  stdout.write(`${JSON.stringify(realmForDeployment(JSON.parse(readFileSync(file, 'utf8'))), null, 2)}\n`);
}
