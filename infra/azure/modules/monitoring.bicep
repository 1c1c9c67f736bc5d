// Log Analytics + workspace-based Application Insights (Azure Verified Modules), and a
// workbook for MCP tool calls built from the server's `tools/call <name>` spans.
param location string
param tags object
param logAnalyticsName string
param applicationInsightsName string

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.12.0' = {
  name: 'log-analytics'
  params: {
    name: logAnalyticsName
    location: location
    tags: tags
    dataRetention: 30
  }
}

module applicationInsights 'br/public:avm/res/insights/component:0.6.0' = {
  name: 'application-insights'
  params: {
    name: applicationInsightsName
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    kind: 'web'
    applicationType: 'web'
  }
}

// The spans arrive as `requests` (SPAN_KIND_SERVER) whose customDimensions carry the
// OpenTelemetry attributes; `dependencies` is included in case a span is exported as internal.
var toolCalls = '''
union requests, dependencies
| where timestamp {TimeRange}
| where tostring(customDimensions["gen_ai.operation.name"]) == "execute_tool"
| extend tool = tostring(customDimensions["gen_ai.tool.name"]), errorType = tostring(customDimensions["error.type"])
'''
var perToolQuery = '${toolCalls}| summarize calls = count(), errors = countif(success == false or isnotempty(errorType)), p50_ms = round(percentile(duration, 50), 1), p95_ms = round(percentile(duration, 95), 1), p99_ms = round(percentile(duration, 99), 1) by tool\n| extend error_rate = round(100.0 * errors / calls, 2)\n| order by calls desc'
var overTimeQuery = '${toolCalls}| summarize calls = count() by tool, bin(timestamp, {TimeRange:grain})\n| render timechart'
var errorsQuery = '${toolCalls}| where success == false or isnotempty(errorType)\n| summarize errors = count() by tool, errorType\n| order by errors desc'

var workbookContent = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      content: { json: '## MCP tool calls\nOne row per tool: calls, errors and latency percentiles, from the server\'s `tools/call <name>` spans (attributes `gen_ai.tool.name`, `gen_ai.operation.name`, `error.type`).' }
      name: 'title'
    }
    {
      type: 9
      content: {
        version: 'KqlParameterItem/1.0'
        parameters: [
          {
            id: 'time-range'
            version: 'KqlParameterItem/1.0'
            name: 'TimeRange'
            type: 4
            isRequired: true
            value: { durationMs: 86400000 }
            typeSettings: {
              selectableValues: [
                { durationMs: 3600000 }
                { durationMs: 86400000 }
                { durationMs: 604800000 }
                { durationMs: 2592000000 }
              ]
            }
          }
        ]
      }
      name: 'parameters'
    }
    {
      type: 3
      content: {
        version: 'KqlItem/1.0'
        query: perToolQuery
        size: 0
        title: 'Per tool: calls, errors, p50 / p95 / p99 (ms)'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
      }
      name: 'per-tool'
    }
    {
      type: 3
      content: {
        version: 'KqlItem/1.0'
        query: overTimeQuery
        size: 0
        title: 'Calls over time'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
      }
      name: 'over-time'
    }
    {
      type: 3
      content: {
        version: 'KqlItem/1.0'
        query: errorsQuery
        size: 0
        title: 'Errors by tool and type'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
      }
      name: 'errors'
    }
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsightsName, 'mcp-tool-calls')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'MCP tool calls'
    category: 'workbook'
    sourceId: applicationInsights.outputs.resourceId
    serializedData: string(workbookContent)
  }
}

output logAnalyticsWorkspaceResourceId string = logAnalytics.outputs.resourceId
output logAnalyticsWorkspaceName string = logAnalytics.outputs.name
output applicationInsightsConnectionString string = applicationInsights.outputs.connectionString
output applicationInsightsResourceId string = applicationInsights.outputs.resourceId
output applicationInsightsName string = applicationInsights.outputs.name
output workbookResourceId string = workbook.id
