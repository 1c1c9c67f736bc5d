export { httpTracing } from './http.ts';
export {
  MCP_ATTRIBUTES,
  type McpOutcome,
  type McpRequestInfo,
  type McpTracingOptions,
  mcpOutcome,
  mcpSpanAttributes,
  mcpSpanName,
  mcpTracing,
  TRACER_NAME,
  traceMcpRequest,
} from './mcp.ts';
export {
  activeTelemetry,
  setupTelemetry,
  spanExporterFor,
  type Telemetry,
  TelemetryConfigError,
  type TelemetryDestination,
  type TelemetryOptions,
  telemetryDestination,
} from './setup.ts';
export { TELEMETRY_VARIABLES } from './variables.ts';
