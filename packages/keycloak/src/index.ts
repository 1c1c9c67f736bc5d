export { type Distribution, defaultCacheDir, defaultDistUrl, ensureDistribution } from './distribution.ts';
export { findJava, type JavaRuntime, MINIMUM_JAVA_MAJOR } from './java.ts';
export {
  type BuildPolicyProviderOptions,
  buildPolicyProvider,
  installPolicyProvider,
  POLICY_PROVIDER_JAR,
  policyProviderDigest,
} from './provider.ts';
export {
  DEFAULT_MCP_RESOURCE_URL,
  DEMO_USERS,
  type DemoUser,
  KEYCLOAK_DATA_DIR_DEFAULT,
  KEYCLOAK_EGRESS_HOSTS,
  KEYCLOAK_VERSION,
  keycloakEgressProxyMappings,
  LOOPBACK_EGRESS_HOSTS,
  MCP_SCOPES,
  REALM_CLIENTS,
  REALM_FEATURES,
  REALM_FILE,
  REALM_NAME,
  servedUrls,
} from './realm.ts';
export {
  type KeycloakPhase,
  type KeycloakProgress,
  type RunningKeycloak,
  type StartKeycloakOptions,
  startKeycloak,
} from './start-keycloak.ts';
