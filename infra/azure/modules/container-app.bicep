// One container app, the same shape for every service: a user-assigned identity (image pull
// and Key Vault references), plain environment variables from an object, secret ones from
// Key Vault, health probes, and an HTTP scale rule. Adding a variable is one line in main.bicep.
param name string
param location string
param tags object
@description('The azd service this app deploys (tag azd-service-name).')
param serviceName string
param environmentResourceId string
param identityResourceId string
param registryLoginServer string
@description('Whether the app already exists (azd sets SERVICE_<NAME>_RESOURCE_EXISTS); then its current image is kept.')
param exists bool
@description('Port the container listens on; the ingress sends traffic there.')
param targetPort int
@description('Reachable from outside the environment (public, or the VNet in private mode).')
param external bool = true
@description('Variable name -> value.')
param env object = {}
@description('Variable name -> Key Vault secret name (the secret is referenced, never copied into the template).')
param secretEnv object = {}
@description('Key Vault secret name -> versionless URI.')
param secretUris object = {}
param probes array = []
param minReplicas int = 1
param maxReplicas int = 1
@description('Concurrent requests per replica before scaling out; 0: no HTTP scale rule.')
param concurrentRequests int = 0
param cpu string = '0.5'
param memory string = '1Gi'

// Until azd deploy pushes the service's image, a public placeholder runs (azd's convention).
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'
var usedSecrets = union(map(items(secretEnv), e => e.value), [])

module current 'fetch-container-image.bicep' = {
  name: '${serviceName}-current-image'
  params: { exists: exists, name: name }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityResourceId}': {} }
  }
  properties: {
    environmentId: environmentResourceId
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: external
        targetPort: targetPort
        transport: 'auto'
        allowInsecure: false
      }
      registries: [{ server: registryLoginServer, identity: identityResourceId }]
      secrets: [
        for secretName in usedSecrets: {
          name: secretName
          keyVaultUrl: secretUris[secretName]
          identity: identityResourceId
        }
      ]
    }
    template: {
      containers: [
        {
          name: serviceName
          image: current.outputs.containers[?0].?image ?? placeholderImage
          resources: { cpu: json(cpu), memory: memory }
          env: concat(
            map(items(env), e => { name: e.key, value: e.value }),
            map(items(secretEnv), e => { name: e.key, secretRef: e.value })
          )
          probes: probes
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: concurrentRequests > 0
          ? [{ name: 'http-requests', http: { metadata: { concurrentRequests: string(concurrentRequests) } } }]
          : []
      }
    }
  }
}

output name string = app.name
output fqdn string = app.properties.configuration.ingress.fqdn
output url string = 'https://${app.properties.configuration.ingress.fqdn}'
