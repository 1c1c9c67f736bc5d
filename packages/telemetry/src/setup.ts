import { createRequire } from 'node:module';
import type { SpanExporter, SpanProcessor } from '@opentelemetry/sdk-trace-base';

// The SDK, the exporters and the Postgres instrumentation cost about 44 MB and 260 ms at start
// (measured): they are loaded only when spans go somewhere. `require`, not `import()`, because
// setup must finish synchronously, before anything loads `pg`.
const require = createRequire(import.meta.url);
const load = {
  azureMonitor: () =>
    require('@azure/monitor-opentelemetry-exporter') as typeof import('@azure/monitor-opentelemetry-exporter'),
  otlp: () =>
    require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http'),
  instrumentation: () => require('@opentelemetry/instrumentation') as typeof import('@opentelemetry/instrumentation'),
  pg: () => require('@opentelemetry/instrumentation-pg') as typeof import('@opentelemetry/instrumentation-pg'),
  resources: () => require('@opentelemetry/resources') as typeof import('@opentelemetry/resources'),
  traceBase: () => require('@opentelemetry/sdk-trace-base') as typeof import('@opentelemetry/sdk-trace-base'),
  traceNode: () => require('@opentelemetry/sdk-trace-node') as typeof import('@opentelemetry/sdk-trace-node'),
  conventions: () =>
    require('@opentelemetry/semantic-conventions') as typeof import('@opentelemetry/semantic-conventions'),
};

/** Where spans go: chosen by the environment, `none` when nothing is configured. */
export type TelemetryDestination = 'azure-monitor' | 'otlp' | 'none';

export interface TelemetryOptions {
  /** `service.name` of the resource, unless OTEL_SERVICE_NAME overrides it. */
  serviceName: string;
  serviceVersion?: string;
  env?: Record<string, string | undefined>;
  /**
   * Extra processors (tests pass a SimpleSpanProcessor over an InMemorySpanExporter). With
   * any, a tracer provider is registered even when no exporter is configured.
   */
  spanProcessors?: SpanProcessor[];
  /** Postgres spans through @opentelemetry/instrumentation-pg (default true). */
  instrumentPg?: boolean;
}

export interface Telemetry {
  destination: TelemetryDestination;
  /**
   * Whether Postgres spans are recorded. The instrumentation patches `pg` as Node's `require`
   * loads it: a copy of pg inside a bundle is not patched, so a bundle must then take pg from
   * its package (apps/server/build.ts).
   */
  instrumentsPg: boolean;
  /**
   * Flushes pending spans and stops exporting; call on shutdown. Waits at most `timeoutMs`
   * (2 s) and never rejects: a collector that is away must neither hold a stop (the exporter
   * waits 10 s for it) nor fail one. Resolves with why spans may not have gone out, if so.
   */
  shutdown(timeoutMs?: number): Promise<string | undefined>;
}

/** A telemetry variable that cannot be used; its message names it. */
export class TelemetryConfigError extends Error {
  override name = 'TelemetryConfigError';
}

/** The destination the environment selects; Azure Monitor wins when both are set. */
export function telemetryDestination(env: Record<string, string | undefined> = process.env): TelemetryDestination {
  if (env.APPLICATIONINSIGHTS_CONNECTION_STRING?.trim()) return 'azure-monitor';
  if (env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim()) return 'otlp';
  return 'none';
}

export function spanExporterFor(
  destination: TelemetryDestination,
  env: Record<string, string | undefined>,
): SpanExporter | null {
  switch (destination) {
    case 'azure-monitor': {
      const connectionString = env.APPLICATIONINSIGHTS_CONNECTION_STRING?.trim() ?? '';
      // The exporter's own refusal says no connection string was given, with a stack trace.
      if (!/(^|;)\s*InstrumentationKey\s*=\s*[^;\s]/i.test(connectionString)) {
        throw new TelemetryConfigError(
          'APPLICATIONINSIGHTS_CONNECTION_STRING has no InstrumentationKey=…: copy the whole connection string from the Application Insights resource (InstrumentationKey=…;IngestionEndpoint=…), or unset it.',
        );
      }
      return new (load.azureMonitor().AzureMonitorTraceExporter)({ connectionString });
    }
    case 'otlp':
      // The exporter takes any text and then exports nothing, saying nothing.
      for (const name of ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT']) {
        const value = env[name]?.trim();
        if (value && !isHttpUrl(value)) {
          throw new TelemetryConfigError(
            `${name} must be an http(s) URL of an OTLP/HTTP collector (e.g. http://localhost:4318), or unset.`,
          );
        }
      }
      // The exporter reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT and _HEADERS itself.
      return new (load.otlp().OTLPTraceExporter)();
    case 'none':
      return null;
  }
}

function isHttpUrl(value: string): boolean {
  try {
    const { protocol } = new URL(value);
    return protocol === 'http:' || protocol === 'https:';
  } catch {
    return false;
  }
}

let active: Telemetry | undefined;

/** The telemetry `setupTelemetry` set up in this process, if it ran. */
export function activeTelemetry(): Telemetry | undefined {
  return active;
}

/**
 * Sets up tracing once per process. Without APPLICATIONINSIGHTS_CONNECTION_STRING or
 * OTEL_EXPORTER_OTLP_ENDPOINT (and without test processors) nothing is registered: the
 * OpenTelemetry API stays a no-op and the spans the middlewares start cost next to nothing.
 *
 * Postgres spans need the `pg` module to be loaded after this runs: import
 * `@mcp-auth-stack/telemetry/register` (or call this) before anything that imports `pg`.
 */
export function setupTelemetry(options: TelemetryOptions): Telemetry {
  if (active) return active;
  const env = options.env ?? process.env;
  const destination = telemetryDestination(env);
  const exporter = spanExporterFor(destination, env);
  const processors = [
    ...(exporter ? [new (load.traceBase().BatchSpanProcessor)(exporter)] : []),
    ...(options.spanProcessors ?? []),
  ];
  if (processors.length === 0) {
    active = { destination, instrumentsPg: false, shutdown: async () => undefined };
    return active;
  }
  const { resourceFromAttributes } = load.resources();
  const { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } = load.conventions();
  const provider = new (load.traceNode().NodeTracerProvider)({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: env.OTEL_SERVICE_NAME?.trim() || options.serviceName,
      ...(options.serviceVersion ? { [ATTR_SERVICE_VERSION]: options.serviceVersion } : {}),
    }),
    spanProcessors: processors,
  });
  provider.register();
  const unregister =
    options.instrumentPg === false
      ? () => {}
      : load.instrumentation().registerInstrumentations({
          tracerProvider: provider,
          instrumentations: [
            new (load.pg().PgInstrumentation)({
              // Statement text only (parameterised, so no values); never the bound parameters.
              enhancedDatabaseReporting: false,
              // Only queries made while serving something; no spans for idle pool traffic.
              requireParentSpan: true,
            }),
          ],
        });
  active = {
    destination,
    instrumentsPg: options.instrumentPg !== false,
    async shutdown(timeoutMs = 2_000) {
      unregister();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve(`the exporter did not finish within ${timeoutMs} ms`), timeoutMs);
      });
      try {
        return await Promise.race([
          provider.shutdown().then(
            () => undefined,
            (error: unknown) => (error instanceof Error ? error.message : String(error)),
          ),
          late,
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
  return active;
}
