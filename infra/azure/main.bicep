// The MCP auth stack on Azure Container Apps: `azd up` provisions this, then deploys the
// images of the services in azure.yaml (server, agent, keycloak) into the apps below.
targetScope = 'subscription'

// ---------------------------------------------------------------- parameters

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names and tags every resource.')
param environmentName string

@minLength(1)
@description('Region for every resource.')
@metadata({ azd: { type: 'location' } })
param location string

@description('Id of the user or service principal running azd (set by azd): may read the Key Vault secrets and call Azure OpenAI for local runs.')
param principalId string = ''

@allowed(['none', 'key', 'keycloak', 'entra_proxy'])
@description('How the MCP server authenticates callers (MCP_AUTH_PROVIDER).')
param mcpAuthProvider string = 'keycloak'

@allowed(['direct', 'workaround', 'off'])
@description('keycloak mode: how MCP clients get a client id (KEYCLOAK_REGISTRATION, see apps/server/src/config.ts).')
param keycloakRegistration string = 'direct'

@description('keycloak mode with KEYCLOAK_REGISTRATION=off: the pre-registered clients whose tokens the server accepts (ALLOWED_CLIENT_IDS); the agent is expenses-agent.')
param allowedClientIds string = 'vscode-mcp-client,expenses-agent'

@description('Private network (the talk\'s first approach): the Container Apps environment goes into a VNet with an internal load balancer; the apps are reachable only from that network.')
param privateNetwork bool = false

@minValue(0)
@maxValue(30)
param serverMinReplicas int = 1

// The database's connections bound it (see serverDatabasePoolSize).
@minValue(1)
@maxValue(30)
param serverMaxReplicas int = 4

@description('Concurrent requests per server replica before another one is added.')
param serverConcurrentRequests int = 50

@allowed(['debug', 'info', 'warn', 'error'])
param logLevel string = 'info'

@description('Azure OpenAI chat model for the agent.')
param chatModelName string = 'gpt-4.1-mini'
param chatModelVersion string = '2025-04-14'
param chatDeploymentSku string = 'GlobalStandard'
@description('Thousands of tokens per minute.')
param chatDeploymentCapacity int = 30

param postgresVersion string = '16'
param postgresSkuName string = 'Standard_B1ms'
param postgresSkuTier string = 'Burstable'
param postgresStorageSizeGB int = 32

@description('entra_proxy mode: client id of the Entra app registration (written by the preprovision hook).')
param entraProxyClientId string = ''

@secure()
@description('entra_proxy mode: its client secret (written by the preprovision hook).')
param entraProxyClientSecret string = ''

@secure()
@description('entra_proxy mode: the private JWK the proxy signs its own access tokens with, base64-encoded (generated once by the preprovision hook; azd pastes values into main.parameters.json unescaped, and a JWK has quotes).')
param oauthProxySigningKeyBase64 string = ''

@secure()
@description('entra_proxy mode: the 32-byte key that encrypts stored upstream tokens (generated once by the preprovision hook).')
param oauthProxyEncryptionKey string = ''

@description('key mode: an API key for the agent (create one after the first deploy, then `azd env set MCP_API_KEY ...` and `azd provision`).')
@secure()
param agentMcpApiKey string = ''

// azd sets these to true once a service has been deployed, so its image survives re-provisioning.
param serverExists bool = false
param agentExists bool = false
param keycloakExists bool = false

// Generated once by azd, stored in the azd environment, written to Key Vault below.
@secure()
@metadata({ azd: { type: 'generate', config: { length: 32, noSpecial: true } } })
param postgresAdminPassword string

@secure()
@metadata({ azd: { type: 'generate', config: { length: 24, noSpecial: true } } })
param keycloakAdminPassword string

@secure()
@metadata({ azd: { type: 'generate', config: { length: 40, noSpecial: true } } })
param keycloakAgentClientSecret string

@secure()
@metadata({ azd: { type: 'generate', config: { length: 40, noSpecial: true } } })
param keycloakProxyClientSecret string

@secure()
@metadata({ azd: { type: 'generate', config: { length: 40, noSpecial: true } } })
param keycloakMcpServerClientSecret string

@secure()
@metadata({ azd: { type: 'generate', config: { length: 40, noSpecial: true } } })
param keycloakJanitorClientSecret string

@secure()
@metadata({ azd: { type: 'generate', config: { length: 40, noSpecial: true } } })
param agentChatToken string

// ---------------------------------------------------------------- names

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var serverAppName = '${abbrs.appContainerApps}server-${resourceToken}'
var agentAppName = '${abbrs.appContainerApps}agent-${resourceToken}'
var keycloakAppName = '${abbrs.appContainerApps}keycloak-${resourceToken}'
var postgresAdminLogin = 'mcpadmin'
var realmName = 'mcp'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// ---------------------------------------------------------------- shared infrastructure

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
  }
}

module network 'modules/network.bicep' = if (privateNetwork) {
  name: 'network'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    location: location
    tags: tags
  }
}

module environment 'modules/container-apps-environment.bicep' = {
  name: 'container-apps-environment'
  scope: rg
  params: {
    name: '${abbrs.appManagedEnvironments}${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceName: monitoring.outputs.logAnalyticsWorkspaceName
    infrastructureSubnetId: privateNetwork ? network!.outputs.containerAppsSubnetId : ''
    vnetId: privateNetwork ? network!.outputs.vnetId : ''
  }
}

// One identity per app, so each gets exactly its own permissions.
module serverIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'server-identity'
  scope: rg
  params: { name: '${abbrs.managedIdentityUserAssignedIdentities}server-${resourceToken}', location: location, tags: tags }
}

module agentIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'agent-identity'
  scope: rg
  params: { name: '${abbrs.managedIdentityUserAssignedIdentities}agent-${resourceToken}', location: location, tags: tags }
}

module keycloakIdentity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'keycloak-identity'
  scope: rg
  params: { name: '${abbrs.managedIdentityUserAssignedIdentities}keycloak-${resourceToken}', location: location, tags: tags }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  scope: rg
  params: {
    name: '${abbrs.containerRegistryRegistries}${resourceToken}'
    location: location
    tags: tags
    pullPrincipalIds: [
      serverIdentity.outputs.principalId
      agentIdentity.outputs.principalId
      keycloakIdentity.outputs.principalId
    ]
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  scope: rg
  params: {
    name: '${abbrs.dBforPostgreSQLServers}${resourceToken}'
    location: location
    tags: tags
    administratorLogin: postgresAdminLogin
    administratorPassword: postgresAdminPassword
    version: postgresVersion
    skuName: postgresSkuName
    skuTier: postgresSkuTier
    storageSizeGB: postgresStorageSizeGB
    databases: ['expenses', 'keycloak']
  }
}

module openAi 'modules/openai.bicep' = {
  name: 'openai'
  scope: rg
  params: {
    name: '${abbrs.cognitiveServicesAccounts}${resourceToken}'
    location: location
    tags: tags
    chatDeploymentName: chatModelName
    chatModelName: chatModelName
    chatModelVersion: chatModelVersion
    chatDeploymentSku: chatDeploymentSku
    chatDeploymentCapacity: chatDeploymentCapacity
    userPrincipalIds: [agentIdentity.outputs.principalId]
    developerPrincipalId: principalId
  }
}

// ---------------------------------------------------------------- secrets

var databaseUrl = 'postgres://${postgresAdminLogin}:${uriComponent(postgresAdminPassword)}@${postgres.outputs.host}:5432/expenses?sslmode=verify-full'

module keyVault 'modules/key-vault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    userPrincipalId: principalId
    secrets: {
      'database-url': databaseUrl
      'postgres-admin-password': postgresAdminPassword
      'keycloak-admin-password': keycloakAdminPassword
      'keycloak-agent-client-secret': keycloakAgentClientSecret
      'keycloak-proxy-client-secret': keycloakProxyClientSecret
      'keycloak-mcp-server-client-secret': keycloakMcpServerClientSecret
      'keycloak-janitor-client-secret': keycloakJanitorClientSecret
      'entra-proxy-client-secret': entraProxyClientSecret
      'oauth-proxy-signing-key': empty(oauthProxySigningKeyBase64) ? '' : base64ToString(oauthProxySigningKeyBase64)
      'oauth-proxy-encryption-key': oauthProxyEncryptionKey
      'agent-chat-token': agentChatToken
      'agent-mcp-api-key': agentMcpApiKey
    }
    readers: union(
      {
        'database-url': [serverIdentity.outputs.principalId]
        'postgres-admin-password': [keycloakIdentity.outputs.principalId]
        'keycloak-admin-password': [keycloakIdentity.outputs.principalId]
        'keycloak-agent-client-secret': [keycloakIdentity.outputs.principalId, agentIdentity.outputs.principalId]
        'keycloak-proxy-client-secret': [keycloakIdentity.outputs.principalId]
        'keycloak-mcp-server-client-secret': [keycloakIdentity.outputs.principalId]
        // The server removes unused anonymously registered clients with it (docs/security.md).
        'keycloak-janitor-client-secret': [keycloakIdentity.outputs.principalId, serverIdentity.outputs.principalId]
        'agent-chat-token': [agentIdentity.outputs.principalId]
      },
      empty(entraProxyClientSecret) ? {} : { 'entra-proxy-client-secret': [serverIdentity.outputs.principalId] },
      empty(oauthProxySigningKeyBase64) ? {} : { 'oauth-proxy-signing-key': [serverIdentity.outputs.principalId] },
      empty(oauthProxyEncryptionKey) ? {} : { 'oauth-proxy-encryption-key': [serverIdentity.outputs.principalId] },
      empty(agentMcpApiKey) ? {} : { 'agent-mcp-api-key': [agentIdentity.outputs.principalId] }
    )
  }
}

// ---------------------------------------------------------------- URLs

var serverUrl = 'https://${serverAppName}.${environment.outputs.defaultDomain}'
// Outside keycloak mode its ingress is internal, which Container Apps names `<app>.internal.<domain>`.
var keycloakUrl = mcpAuthProvider == 'keycloak'
  ? 'https://${keycloakAppName}.${environment.outputs.defaultDomain}'
  : 'https://${keycloakAppName}.internal.${environment.outputs.defaultDomain}'
var realmUrl = '${keycloakUrl}/realms/${realmName}'
var mcpUrl = '${serverUrl}/mcp'

// ---------------------------------------------------------------- database connections
// The Burstable B1ms server admits 50 connections, 15 of them kept for Azure: 35 for the apps.
// At most serverMaxReplicas x (the pool + the key cache's listening connection) for the server,
// Keycloak's pool, one app's more while a deploy starts its new revision beside the old (single
// revision mode; azd deploys one service at a time: a server replica's 5 or Keycloak's 6), and
// two operator sessions (psql, `pnpm keys`): 4 x 5 + 6 + 6 + 2 = 34 (infra/test checks the sum).
// A larger SKU admits more.
var serverDatabasePoolSize = 4
var keycloakDatabasePoolSize = 6

// ---------------------------------------------------------------- the MCP server
// Every name set here must be one apps/server/src/config.ts reads (CONFIG_VARIABLES) or the
// telemetry package reads; infra/test checks both, and that each mode starts with them.

var serverEnv = union(
  {
    HOST: '0.0.0.0'
    PORT: '8000'
    MCP_SERVER_BASE_URL: serverUrl
    MCP_AUTH_PROVIDER: mcpAuthProvider
    LOG_LEVEL: logLevel
    DATABASE_POOL_SIZE: string(serverDatabasePoolSize)
    // Behind the Container Apps ingress, which sets X-Forwarded-For.
    TRUST_PROXY: 'true'
    APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.applicationInsightsConnectionString
    OTEL_SERVICE_NAME: 'mcp-expenses-server'
  },
  serverEnvByMode[mcpAuthProvider]
)

var serverEnvByMode = {
  // Only behind the private network is "no authentication" acceptable; on a public ingress
  // the server refuses to start in this mode (its config check), which is the point.
  none: { ALLOW_UNAUTHENTICATED_REMOTE: string(privateNetwork) }
  key: {}
  keycloak: union(
    { KEYCLOAK_REALM_URL: realmUrl, KEYCLOAK_REGISTRATION: keycloakRegistration },
    keycloakRegistration == 'off' ? { ALLOWED_CLIENT_IDS: allowedClientIds } : {}
  )
  entra_proxy: { ENTRA_PROXY_AZURE_CLIENT_ID: entraProxyClientId, AZURE_TENANT_ID: tenant().tenantId }
}

var serverSecretEnv = union(
  { DATABASE_URL: 'database-url' },
  mcpAuthProvider == 'entra_proxy'
    ? {
        ENTRA_PROXY_AZURE_CLIENT_SECRET: 'entra-proxy-client-secret'
        OAUTH_PROXY_SIGNING_KEY: 'oauth-proxy-signing-key'
        OAUTH_PROXY_ENCRYPTION_KEY: 'oauth-proxy-encryption-key'
      }
    : {},
  mcpAuthProvider == 'keycloak' ? { KEYCLOAK_JANITOR_CLIENT_SECRET: 'keycloak-janitor-client-secret' } : {}
)

module server 'modules/container-app.bicep' = {
  name: 'server'
  scope: rg
  params: {
    name: serverAppName
    serviceName: 'server'
    location: location
    tags: tags
    environmentResourceId: environment.outputs.resourceId
    identityResourceId: serverIdentity.outputs.resourceId
    registryLoginServer: registry.outputs.loginServer
    exists: serverExists
    targetPort: 8000
    env: serverEnv
    secretEnv: serverSecretEnv
    secretUris: keyVault.outputs.secretUris
    minReplicas: serverMinReplicas
    maxReplicas: serverMaxReplicas
    concurrentRequests: serverConcurrentRequests
    cpu: '0.5'
    memory: '1Gi'
    // Liveness: the process answers (/health). Readiness: this replica can serve authenticated
    // requests now (/ready: the database answers within READY_TIMEOUT_MS, 2 s, below the probe's
    // 3 s; a Keycloak outage does not fail it while the signing keys are cached; 503 from SIGTERM
    // on). The same split as compose's healthcheck and docs/decisions.md.
    probes: [
      // The server listens once its database answers and the schema is migrated: a minute for a
      // cold database and a migration over a large table, not 30 s (a restart would roll it back).
      { type: 'Startup', httpGet: { path: '/health', port: 8000 }, initialDelaySeconds: 2, periodSeconds: 6, failureThreshold: 10 }
      { type: 'Liveness', httpGet: { path: '/health', port: 8000 }, periodSeconds: 15, failureThreshold: 3, timeoutSeconds: 3 }
      { type: 'Readiness', httpGet: { path: '/ready', port: 8000 }, periodSeconds: 10, failureThreshold: 3, timeoutSeconds: 3 }
    ]
  }
}

// ---------------------------------------------------------------- Keycloak
// `start --optimized --import-realm` (the image's command, see keycloak/Dockerfile) on the
// Postgres database `keycloak`. TLS ends at the ingress, which sets X-Forwarded-*.

var keycloakEnv = {
  KC_DB_URL: 'jdbc:postgresql://${postgres.outputs.host}:5432/keycloak?sslmode=require'
  KC_DB_USERNAME: postgresAdminLogin
  KC_DB_POOL_MAX_SIZE: string(keycloakDatabasePoolSize)
  KC_HOSTNAME: keycloakUrl
  KC_PROXY_HEADERS: 'xforwarded'
  KC_HTTP_ENABLED: 'true'
  KC_HTTP_PORT: '8080'
  KC_BOOTSTRAP_ADMIN_USERNAME: 'admin'
  KC_LOG_LEVEL: 'info'
  // The realm file's placeholders (keycloak/README.md), read when the realm is first imported.
  MCP_SERVER_RESOURCE_URL: mcpUrl
  MCP_OAUTH_PROXY_CALLBACK_URL: '${serverUrl}/auth/callback'
  MCP_SERVER_HOST: '${serverAppName}.${environment.outputs.defaultDomain}'
  KEYCLOAK_CIMD_ALLOW_HTTP: 'false'
  // Outgoing requests only to the realm's CIMD hosts; any other host (a sector_identifier_uri an
  // anonymous registration names) goes to a proxy that does not exist (docs/security.md).
  KC_SPI_CONNECTIONS_HTTP_CLIENT__DEFAULT__PROXY_MAPPINGS: '^vscode\\.dev$;NO_PROXY,^insiders\\.vscode\\.dev$;NO_PROXY,^code\\.visualstudio\\.com$;NO_PROXY,.*;http://127.0.0.1:9'
}

var keycloakSecretEnv = {
  KC_DB_PASSWORD: 'postgres-admin-password'
  KC_BOOTSTRAP_ADMIN_PASSWORD: 'keycloak-admin-password'
  KEYCLOAK_AGENT_CLIENT_SECRET: 'keycloak-agent-client-secret'
  KEYCLOAK_PROXY_CLIENT_SECRET: 'keycloak-proxy-client-secret'
  KEYCLOAK_MCP_SERVER_CLIENT_SECRET: 'keycloak-mcp-server-client-secret'
  KEYCLOAK_JANITOR_CLIENT_SECRET: 'keycloak-janitor-client-secret'
}

module keycloak 'modules/container-app.bicep' = {
  name: 'keycloak'
  scope: rg
  params: {
    name: keycloakAppName
    serviceName: 'keycloak'
    location: location
    tags: tags
    environmentResourceId: environment.outputs.resourceId
    identityResourceId: keycloakIdentity.outputs.resourceId
    registryLoginServer: registry.outputs.loginServer
    exists: keycloakExists
    targetPort: 8080
    // Only keycloak mode sends browsers and clients to it. In the other modes it still deploys (one
    // azure.yaml for every mode) but stays inside the environment: no public admin console,
    // anonymous registration or master-realm login for a Keycloak that nothing uses.
    external: mcpAuthProvider == 'keycloak'
    env: keycloakEnv
    secretEnv: keycloakSecretEnv
    secretUris: keyVault.outputs.secretUris
    // Sessions and caches are per node (the image is built with --cache=local); one replica keeps it simple and cheap.
    minReplicas: 1
    maxReplicas: 1
    cpu: '1.0'
    memory: '2Gi'
    // A first start creates Keycloak's schema and imports the realm on one vCPU and a burstable
    // database; a startup probe that gives up midway leaves the migration lock held and the next
    // start waiting on it. Container Apps caps failureThreshold at 10, so the period is long.
    probes: [
      { type: 'Startup', httpGet: { path: '/health/started', port: 9000 }, initialDelaySeconds: 30, periodSeconds: 30, failureThreshold: 10, timeoutSeconds: 5 }
      { type: 'Liveness', httpGet: { path: '/health/live', port: 9000 }, periodSeconds: 20, failureThreshold: 3, timeoutSeconds: 5 }
      { type: 'Readiness', httpGet: { path: '/health/ready', port: 9000 }, periodSeconds: 10, failureThreshold: 3, timeoutSeconds: 5 }
    ]
  }
}

// ---------------------------------------------------------------- the agent
// Names as apps/agent/src/config.ts reads them; Azure OpenAI without keys (AZURE_CLIENT_ID
// selects the app's identity for DefaultAzureCredential).

// How the deployed agent signs in to the server. entra_proxy admits only people who sign in at
// a browser, and key mode has no key until one is created after the first deploy: there the
// agent runs with no credential, stays up but not ready, and says why on POST /chat.
var agentMcpAuth = {
  none: { MCP_AUTH: 'none' }
  key: empty(agentMcpApiKey) ? { MCP_AUTH: 'none' } : { MCP_AUTH: 'key' }
  keycloak: { MCP_AUTH: 'client_credentials', MCP_CLIENT_ID: 'expenses-agent', MCP_TOKEN_URL: '${realmUrl}/protocol/openid-connect/token' }
  entra_proxy: { MCP_AUTH: 'none' }
}

var agentEnv = union(
  {
    HOST: '0.0.0.0'
    PORT: '8001'
    LOG_LEVEL: logLevel
    API_HOST: 'azure'
    AZURE_OPENAI_ENDPOINT: openAi.outputs.endpoint
    AZURE_OPENAI_CHAT_DEPLOYMENT: openAi.outputs.chatDeploymentName
    AZURE_CLIENT_ID: agentIdentity.outputs.clientId
    MCP_SERVER_URL: mcpUrl
  },
  agentMcpAuth[mcpAuthProvider]
)

var agentSecretEnv = union(
  { AGENT_CHAT_TOKEN: 'agent-chat-token' },
  mcpAuthProvider == 'keycloak' ? { MCP_CLIENT_SECRET: 'keycloak-agent-client-secret' } : {},
  mcpAuthProvider == 'key' && !empty(agentMcpApiKey) ? { MCP_API_KEY: 'agent-mcp-api-key' } : {}
)

module agent 'modules/container-app.bicep' = {
  name: 'agent'
  scope: rg
  params: {
    name: agentAppName
    serviceName: 'agent'
    location: location
    tags: tags
    environmentResourceId: environment.outputs.resourceId
    identityResourceId: agentIdentity.outputs.resourceId
    registryLoginServer: registry.outputs.loginServer
    exists: agentExists
    targetPort: 8001
    env: agentEnv
    secretEnv: agentSecretEnv
    secretUris: keyVault.outputs.secretUris
    minReplicas: 0
    // One: a turn waiting for its caller's confirmation lives in the replica that asked, and an
    // answer that reached another one would find nothing (404, nothing done); Container Apps'
    // sticky sessions follow a cookie, which API callers do not keep. At most 4 turns run at
    // once (DEFAULT_MAX_CONCURRENT_CHATS; more get 429).
    maxReplicas: 1
    // The HTTP rule wakes it from zero.
    concurrentRequests: 3
    cpu: '0.5'
    memory: '1Gi'
    probes: [
      { type: 'Startup', httpGet: { path: '/health', port: 8001 }, initialDelaySeconds: 2, periodSeconds: 3, failureThreshold: 10 }
      // No readiness probe on /ready: an agent without a credential it can use (entra_proxy, or
      // key mode before a key exists) would never take traffic, and POST /chat could not say why.
      { type: 'Liveness', httpGet: { path: '/health', port: 8001 }, periodSeconds: 30, failureThreshold: 3 }
    ]
  }
}

// ---------------------------------------------------------------- outputs (azd env values)

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_CONTAINER_APPS_ENVIRONMENT_NAME string = environment.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.endpoint
output AZURE_OPENAI_CHAT_DEPLOYMENT string = openAi.outputs.chatDeploymentName
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.applicationInsightsConnectionString
output APPLICATIONINSIGHTS_WORKBOOK_ID string = monitoring.outputs.workbookResourceId
output POSTGRES_HOST string = postgres.outputs.host
output MCP_AUTH_PROVIDER string = mcpAuthProvider
output PRIVATE_NETWORK bool = privateNetwork
output SERVICE_SERVER_NAME string = server.outputs.name
output SERVICE_AGENT_NAME string = agent.outputs.name
output SERVICE_KEYCLOAK_NAME string = keycloak.outputs.name
output MCP_SERVER_URL string = mcpUrl
output MCP_SERVER_BASE_URL string = serverUrl
output MCP_OAUTH_CALLBACK_URL string = '${serverUrl}/auth/callback'
output AGENT_URL string = 'https://${agentAppName}.${environment.outputs.defaultDomain}'
output KEYCLOAK_URL string = keycloakUrl
output KEYCLOAK_REALM_URL string = realmUrl
output KEYCLOAK_ADMIN_CONSOLE_URL string = '${keycloakUrl}/admin/master/console/#/${realmName}'
output KEYCLOAK_ADMIN_USERNAME string = 'admin'
output KEYCLOAK_ADMIN_PASSWORD_SECRET string = 'keycloak-admin-password'
