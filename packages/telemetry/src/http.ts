import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { TRACER_NAME } from './mcp.ts';

const headerGetter = {
  keys: (headers: Headers) => [...headers.keys()],
  get: (headers: Headers, key: string) => headers.get(key) ?? undefined,
};

/**
 * Hono middleware: one HTTP server span per request, `METHOD /route` (the matched route
 * pattern, not the raw path, so names stay few), continuing an incoming W3C `traceparent`.
 * Attributes: method, route, path, scheme, status. No header, query string or body is
 * recorded, so neither `Authorization` nor a token in a URL can reach a span.
 */
export function httpTracing(): MiddlewareHandler {
  return async (c, next) => {
    const tracer = trace.getTracer(TRACER_NAME);
    const parent = propagation.extract(context.active(), c.req.raw.headers, headerGetter);
    const url = new URL(c.req.url);
    const span = tracer.startSpan(
      c.req.method,
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': c.req.method,
          'url.path': url.pathname,
          'url.scheme': url.protocol.replace(/:$/, ''),
        },
      },
      parent,
    );
    try {
      await context.with(trace.setSpan(parent, span), next);
    } catch (error) {
      span.setAttribute('error.type', error instanceof Error ? error.name : 'Error');
      span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
      throw error;
    }
    const route = routePath(c, -1);
    if (route && route !== '*' && route !== '/*') {
      span.setAttribute('http.route', route);
      span.updateName(`${c.req.method} ${route}`);
    }
    const status = c.res.status;
    span.setAttribute('http.response.status_code', status);
    if (status >= 500) {
      span.setAttribute('error.type', String(status));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  };
}
