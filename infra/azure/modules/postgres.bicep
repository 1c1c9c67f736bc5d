// Azure Database for PostgreSQL Flexible Server with the `expenses` and `keycloak`
// databases. Entra authentication is enabled next to passwords, for people and, later, the
// apps' managed identities to sign in with tokens once an Entra administrator is added (none is
// set here: it needs a user name azd does not give). The apps use the generated password (kept
// in Key Vault) until the server reads tokens (see the README's Azure section).
param name string
param location string
param tags object
param administratorLogin string
@secure()
param administratorPassword string
param version string
param skuName string
param skuTier string
param storageSizeGB int
param databases array

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: skuName, tier: skuTier }
  properties: {
    version: version
    administratorLogin: administratorLogin
    administratorLoginPassword: administratorPassword
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Enabled'
      tenantId: tenant().tenantId
    }
    storage: { storageSizeGB: storageSizeGB, autoGrow: 'Disabled' }
    backup: { backupRetentionDays: 7, geoRedundantBackup: 'Disabled' }
    highAvailability: { mode: 'Disabled' }
    network: { publicNetworkAccess: 'Enabled' }
  }
}

// Connections from Azure services only (0.0.0.0 is Azure's convention for that); TLS is required.
resource allowAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: { startIpAddress: '0.0.0.0', endIpAddress: '0.0.0.0' }
}

@batchSize(1)
resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = [
  for databaseName in databases: {
    parent: server
    name: databaseName
    properties: { charset: 'UTF8', collation: 'en_US.utf8' }
  }
]

output name string = server.name
output host string = server.properties.fullyQualifiedDomainName
