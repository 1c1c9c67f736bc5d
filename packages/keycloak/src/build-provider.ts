import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ensureDistribution } from './distribution.ts';
import { findJava } from './java.ts';
import { buildPolicyProvider, POLICY_PROVIDER_JAR } from './provider.ts';

const USAGE = `Usage: pnpm keycloak:provider [--out FILE]

Compiles the realm's own Keycloak extension (keycloak/provider/src/main) against the Keycloak
distribution the runner uses and writes the jar (default: ${POLICY_PROVIDER_JAR}), the one
Compose, keycloak/Dockerfile and pnpm keycloak install. Needs a JDK (javac), found as pnpm
keycloak finds Java. Commit the jar with the sources it was built from.`;

const { values } = parseArgs({
  options: { out: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } },
});
if (values.help) {
  console.log(USAGE);
} else {
  const outFile = values.out === undefined ? POLICY_PROVIDER_JAR : resolve(values.out);
  const [java, distribution] = await Promise.all([findJava(), ensureDistribution()]);
  await buildPolicyProvider({ javaHome: java.javaHome, keycloakHome: distribution.home, outFile });
  console.log(`wrote ${outFile} (javac of ${java.javaHome}, Keycloak ${distribution.version})`);
}
