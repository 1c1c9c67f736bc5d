/*
 * What only a server in front of Keycloak needs: the registration facade that repairs what
 * Keycloak 26.7.3's registration gets wrong, the login pass-through of the workaround way, and
 * the janitor of anonymously registered clients, and the check of a token's registered client. The checks any authorization server applies to
 * a registration (`checkRegistration`, `isRegisteredRedirectUri`) are @mcp-auth-stack/auth's.
 */

export {
  type KeycloakAdminApi,
  type KeycloakAdminApiOptions,
  KeycloakUnreachableError,
  keycloakAdminApi,
} from './admin-api.ts';
export {
  AUTHORIZATION_PASSTHROUGH_NAMESPACE,
  type AuthorizationPassThroughOptions,
  authorizationPassThrough,
  authorizationPassThroughMigrations,
  forgetPassThroughClients,
  PASSTHROUGH_CALLBACK_PATH,
} from './authorization-passthrough.ts';
export {
  type JanitorRun,
  KEYCLOAK_BUILT_IN_CLIENTS,
  KEYCLOAK_JANITOR_NAMESPACE,
  type KeycloakClientJanitorOptions,
  keycloakClientJanitor,
  keycloakJanitorMigrations,
} from './keycloak-client-janitor.ts';
export { DEFAULT_REDIRECT_HOSTS, isAllowedRedirectUri } from './redirect-hosts.ts';
export {
  type KeycloakRegisteredClientCheckOptions,
  keycloakRegisteredClientCheck,
} from './registered-client-check.ts';
export { type RegistrationFacadeOptions, registrationFacade, repairRegistration } from './registration-facade.ts';
