import {
  type AuthProvider,
  type AuthVariables,
  isToolAllowed,
  type McpScopeRequirements,
  requireAuth,
  requireMcpScopes,
  toAuthInfo,
} from '@mcp-auth-stack/auth';
import type { Database } from '@mcp-auth-stack/database';
import {
  createExpensesServer,
  EXPENSE_METHOD_SCOPES,
  EXPENSE_TOOL_SCOPES,
  ExpenseRepository,
  holds,
} from '@mcp-auth-stack/expenses';
import { createStatelessMcpEndpoint, originGuard } from '@mcp-auth-stack/mcp-hono';
import { httpTracing, mcpTracing } from '@mcp-auth-stack/telemetry';
import { Hono } from 'hono';
import { type RequestIdVariables, requestId } from 'hono/request-id';
import type { ServerConfig } from './config.ts';
import { errorFields, type Logger } from './logger.ts';

export interface AppDependencies {
  config: ServerConfig;
  database: Database;
  auth: AuthProvider;
  logger: Logger;
  /** Spans for HTTP exchanges and MCP operations; on only when telemetry exports somewhere. */
  tracing?: boolean;
}

type Env = { Variables: AuthVariables & RequestIdVariables };

/** The HTTP application: health, readiness and the authenticated MCP endpoint. */
/** The scopes each MCP call needs, declared next to the tools in packages/expenses. */
const SCOPE_REQUIREMENTS: McpScopeRequirements = { tools: EXPENSE_TOOL_SCOPES, methods: EXPENSE_METHOD_SCOPES };

export async function createApp({ config, database, auth, logger, tracing = false }: AppDependencies) {
  const mcpServer = createExpensesServer(new ExpenseRepository(database.pool), {
    onStorageError: (error, operation) => logger.error('storage failed', { operation, ...errorFields(error) }),
  });
  const endpoint = await createStatelessMcpEndpoint(mcpServer, {
    maxBodyBytes: config.maxRequestBytes,
    authInfo: (c) => {
      const principal = c.get('principal');
      return principal ? toAuthInfo(principal) : undefined;
    },
    // The expenses tools are registered once, at start.
    staticToolList: true,
    // Money is exact: 12.340000000000000001 is refused, not quietly stored as 12.34.
    exactNumbers: true,
    // tools/list shows what the caller may call.
    toolVisible: (tool, c) => {
      const principal = c.get('principal');
      return !principal || isToolAllowed(principal, tool, SCOPE_REQUIREMENTS, holds);
    },
  });

  const app = new Hono<Env>();
  if (tracing) app.use(httpTracing());
  app.use(requestId({ headerName: 'x-request-id' }));
  if (logger.enabled('info')) {
    app.use(async (c, next) => {
      const started = performance.now();
      await next();
      logger.info('request', {
        request_id: c.get('requestId'),
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        duration_ms: Math.round((performance.now() - started) * 100) / 100,
        user_id: c.get('principal')?.userId,
      });
    });
  }

  app.get('/health', (c) => c.json({ status: 'ok' }));
  app.get('/ready', async (c) => {
    const checks: Record<string, string> = {};
    let ok = true;
    try {
      await database.pool.query('SELECT 1');
      checks.database = 'ok';
    } catch (error) {
      ok = false;
      checks.database = 'unreachable';
      logger.warn('readiness check failed', { request_id: c.get('requestId'), ...errorFields(error) });
    }
    // The identity provider's metadata and keys; the provider caches the result.
    const idp = await auth.ready?.();
    if (idp) {
      ok &&= idp.ok;
      Object.assign(checks, idp.checks);
    }
    return c.json({ status: ok ? 'ready' : 'unavailable', checks }, ok ? 200 : 503);
  });

  auth.mount?.(app);
  app.use('/mcp', originGuard({ allowedHosts: config.allowedHosts, allowedOrigins: config.allowedOrigins }));
  app.use('/mcp', requireAuth(auth));
  // Before the scope check, so a call refused with 403 has its span too.
  if (tracing) app.use('/mcp', mcpTracing({ maxBodyBytes: config.maxRequestBytes }));
  // HTTP-level step-up: 403 insufficient_scope with every scope the call needs.
  app.use(
    '/mcp',
    requireMcpScopes({
      requirements: SCOPE_REQUIREMENTS,
      provider: auth,
      hasScope: holds,
      maxBodyBytes: config.maxRequestBytes,
    }),
  );
  app.all('/mcp', (c) => endpoint.handle(c));

  app.notFound((c) => c.json({ error: 'not_found' }, 404));
  app.onError((error, c) => {
    // The details go to the log, never to the client.
    logger.error('unhandled error', { request_id: c.get('requestId'), path: c.req.path, ...errorFields(error) });
    return c.json({ error: 'internal_error', request_id: c.get('requestId') }, 500);
  });

  return { app, close: () => endpoint.close() };
}
