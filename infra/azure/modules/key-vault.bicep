// Key Vault (RBAC mode) holding every generated secret. Each app identity may read only the
// secrets it uses: "Key Vault Secrets User" is assigned on the single secret, not the vault.
param name string
param location string
param tags object
@secure()
@description('Secret name -> value. Empty values are skipped.')
param secrets object
@description('Secret name -> principal ids allowed to read that secret.')
param readers object
@description('A user (the one running azd) who may read every secret, e.g. the Keycloak admin password. Empty: nobody.')
param userPrincipalId string = ''

var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
var secretNames = filter(objectKeys(secrets), n => !empty(secrets[n]))
var grants = flatten(map(objectKeys(readers), n => map(readers[n], p => { secret: n, principalId: p })))

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // No purge protection: `azd down --purge` must be able to remove it for good.
    publicNetworkAccess: 'Enabled'
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [
  for secretName in secretNames: {
    parent: vault
    name: secretName
    properties: { value: secrets[secretName], contentType: 'text/plain' }
  }
]

resource grantedSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [
  for grant in grants: {
    parent: vault
    name: grant.secret
  }
]

resource secretReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (grant, i) in grants: {
    name: guid(vault.id, grant.secret, grant.principalId, secretsUserRoleId)
    scope: grantedSecret[i]
    properties: {
      principalId: grant.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    }
    dependsOn: [secret]
  }
]

resource userReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(vault.id, userPrincipalId, secretsUserRoleId)
  scope: vault
  properties: {
    principalId: userPrincipalId
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
@description('Secret name -> versionless secret URI, for container app Key Vault references.')
output secretUris object = toObject(secretNames, n => n, n => '${vault.properties.vaultUri}secrets/${n}')
