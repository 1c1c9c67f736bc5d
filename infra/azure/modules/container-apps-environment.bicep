// The Container Apps environment (workload profiles, Consumption). In private-network mode
// it lives in the given subnet with an internal load balancer, and a private DNS zone for
// its default domain resolves the apps' names inside the virtual network.
param name string
param location string
param tags object
param logAnalyticsWorkspaceName string
@description('Empty: public environment. Otherwise the subnet of an internal environment.')
param infrastructureSubnetId string = ''
@description('The virtual network to link the private DNS zone to (private mode only).')
param vnetId string = ''

var internal = !empty(infrastructureSubnetId)

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsWorkspaceName
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logAnalytics.properties.customerId
        sharedKey: logAnalytics.listKeys().primarySharedKey
      }
    }
    workloadProfiles: [{ name: 'Consumption', workloadProfileType: 'Consumption' }]
    vnetConfiguration: internal ? { infrastructureSubnetId: infrastructureSubnetId, internal: true } : null
    zoneRedundant: false
  }
}

module privateDns 'private-dns.bicep' = if (internal) {
  name: 'container-apps-private-dns'
  params: {
    zoneName: environment.properties.defaultDomain
    staticIp: environment.properties.staticIp
    vnetId: vnetId
    tags: tags
  }
}

output resourceId string = environment.id
output name string = environment.name
output defaultDomain string = environment.properties.defaultDomain
output staticIp string = environment.properties.staticIp
