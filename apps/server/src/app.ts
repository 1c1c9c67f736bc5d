import {
  type AuthProvider,
  AuthUnavailableError,
  type AuthVariables,
  type McpCall,
  type McpScopeRequirements,
  missingScopes,
  requireAuth,
  requireMcpScopes,
  reverifyAfterSlowBody,
  toAuthInfo,
} from '@mcp-auth-stack/auth';
import { type Database, isDatabaseContention, isDatabaseFull, isDatabaseUnavailable } from '@mcp-auth-stack/database';
import {
  createExpensesServer,
  EXPENSE_METHOD_SCOPES,
  EXPENSE_TOOL_SCOPES,
  ExpenseRepository,
  holds,
} from '@mcp-auth-stack/expenses';
import { createStatelessMcpEndpoint, originGuard } from '@mcp-auth-stack/mcp-hono';
import { httpTracing, mcpTracing } from '@mcp-auth-stack/telemetry';
import type { RegisteredTool } from '@modelcontextprotocol/sdk/server/mcp.js';
import { type Context, Hono } from 'hono';
import type { RequestIdVariables } from 'hono/request-id';
import type { ServerConfig } from './config.ts';
import { errorFields, type Logger } from './logger.ts';
import { DependencyState, within } from './outage.ts';
import { requestId } from './request-id.ts';

export interface AppDependencies {
  config: ServerConfig;
  database: Database;
  auth: AuthProvider;
  logger: Logger;
  /** Spans for HTTP exchanges and MCP operations; on only when telemetry exports somewhere. */
  tracing?: boolean;
  /** Set by the server when SIGTERM starts the drain: `/ready` answers 503 from then on. */
  lifecycle?: { readonly draining: boolean };
}

type Env = { Variables: AuthVariables & RequestIdVariables };

/** The scopes each MCP call needs, declared next to the tools in packages/expenses. */
const SCOPE_REQUIREMENTS: McpScopeRequirements = { tools: EXPENSE_TOOL_SCOPES, methods: EXPENSE_METHOD_SCOPES };

/** Whether this exchange's caller holds every scope the call needs (no caller: the check is elsewhere). */
function mayCall(c: Context<Env>, call: McpCall): boolean {
  const principal = c.get('principal');
  return !principal || missingScopes(principal, call, SCOPE_REQUIREMENTS, holds).length === 0;
}

/** The HTTP application: health, readiness and the authenticated MCP endpoint. */
export async function createApp({
  config,
  database,
  auth,
  logger,
  tracing = false,
  lifecycle = { draining: false },
}: AppDependencies) {
  const databaseState = new DependencyState(logger, 'database');
  const identityProviderState = new DependencyState(logger, 'identity provider');
  const diskState = new DependencyState(logger, 'database disk space');
  // Any query that got its answer means the database is back.
  database.pool.on('release', (error: Error | undefined) => {
    if (!error) databaseState.succeeded();
  });
  // The expenses tools' calls are run by the endpoint itself (docs/decisions.md #52).
  const tools = new Map<string, RegisteredTool>();
  const mcpServer = createExpensesServer(
    new ExpenseRepository(database.pool, { maxExpensesPerUser: config.maxExpensesPerUser }),
    {
      registeredTools: tools,
      onStorageError: (error, operation) => {
        // An outage is logged once, when it starts; anything else (a bug) every time. A full disk
        // is its own state: reads keep succeeding, which would end a database outage each time.
        if (isDatabaseFull(error)) diskState.failed(operation, error);
        else if (isDatabaseUnavailable(error)) databaseState.failed(operation, error);
        // Concurrent writes under SERIALIZABLE: the caller is told to try again; not a bug.
        else if (isDatabaseContention(error))
          logger.warn('storage busy', { operation, error: (error as Error).message });
        else logger.error('storage failed', { operation, ...errorFields(error) });
      },
      onLimitReached: (error) =>
        logger.warn('expense limit reached', { user_id: error.userId, limit: error.maxExpensesPerUser }),
      // Only an added expense shows there is room again (a delete writes into space it has).
      onStorageSuccess: (operation) => {
        if (operation === 'add_user_expense') diskState.succeeded();
      },
    },
  );
  const readiness = readinessCheck({ config, database, auth, databaseState, identityProviderState, lifecycle });
  const observedAuth = observeAuthentication(auth, config, databaseState, identityProviderState, readiness);
  const endpoint = await createStatelessMcpEndpoint(mcpServer, {
    maxBodyBytes: config.maxRequestBytes,
    directToolCalls: tools,
    // The key mode's header, whatever its name: tools never hold the credential.
    credentialHeaders: auth.credentialHeader ? [auth.credentialHeader] : [],
    authInfo: (c) => {
      const principal = c.get('principal');
      return principal ? toAuthInfo(principal) : undefined;
    },
    // The expenses tools are registered once, at start.
    staticToolList: true,
    // Money is exact: 12.340000000000000001 is refused, not quietly stored as 12.34.
    exactNumbers: true,
    // The listings show what the caller may call, read or get.
    toolVisible: (tool, c) => mayCall(c, { method: 'tools/call', name: tool }),
    resourceVisible: (uri, c) => mayCall(c, { method: 'resources/read', name: uri }),
    promptVisible: (prompt, c) => mayCall(c, { method: 'prompts/get', name: prompt }),
  });

  const app = new Hono<Env>();
  if (tracing) app.use(httpTracing());
  app.use(requestId());
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
        // The API key's id, or the OAuth client: which credential to revoke when one misbehaves.
        client_id: c.get('principal')?.clientId,
      });
    });
  }

  app.get('/health', (c) => c.json({ status: 'ok' }));
  app.get('/ready', async (c) => {
    const report = await readiness.check();
    return c.json(report.body, report.ready ? 200 : 503, { 'Cache-Control': 'no-store' });
  });

  auth.mount?.(app);
  const guard = originGuard({
    allowedHosts: config.allowedHosts,
    allowedOrigins: config.allowedOrigins,
    // Retry-After: a browser client waits as told when the database or the identity provider is away (503).
    exposeHeaders: ['WWW-Authenticate', 'X-Request-Id', 'Retry-After'],
  });
  // A URL pasted with a trailing slash is the endpoint's: sent there with its method and body
  // (308), so the client gets the endpoint's own answers and challenge, not a bare 404. Relative,
  // so it holds behind a proxy that serves the server under a path of its own. Behind the same
  // guard: a page of an allowed origin gets its preflight answered and may follow the redirect.
  app.use('/mcp/', guard);
  app.all('/mcp/', (c) => c.redirect(`../mcp${new URL(c.req.url).search}`, 308));
  app.use('/mcp', guard);
  app.use('/mcp', requireAuth(observedAuth));
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
  // The body is in: a credential revoked or expired while a slow client sent it does not run the call.
  app.use('/mcp', reverifyAfterSlowBody(observedAuth, { maxBodyBytes: config.maxRequestBytes }));
  app.all('/mcp', (c) => endpoint.handle(c));

  app.notFound((c) => c.json({ error: 'not_found' }, 404));
  app.onError((error, c) => {
    if (c.req.raw.signal.aborted) {
      // The client went away (its body cut short): no fault of the server, and nobody reads the answer.
      logger.info('request aborted by the client', { request_id: c.get('requestId'), path: c.req.path });
      return c.json({ error: 'client_closed_request', request_id: c.get('requestId') }, 400);
    }
    // The details go to the log, never to the client.
    logger.error('unhandled error', { request_id: c.get('requestId'), path: c.req.path, ...errorFields(error) });
    return c.json({ error: 'internal_error', request_id: c.get('requestId') }, 500);
  });

  return { app, close: () => endpoint.close() };
}

interface ReadinessDependencies {
  config: ServerConfig;
  database: Database;
  auth: AuthProvider;
  databaseState: DependencyState;
  identityProviderState: DependencyState;
  lifecycle: { readonly draining: boolean };
}

/**
 * Readiness means "this replica can serve authenticated requests now": not draining, the
 * database answers (every tool and the key check need it), and credentials can be verified.
 * An identity provider that is down does not make a replica unready when it can still verify
 * tokens: Keycloak mode with its signing keys cached, the proxy modes with their own keys.
 * Taking every replica out for that would turn a Keycloak restart into a full outage.
 */
function readinessCheck({
  config,
  database,
  auth,
  databaseState,
  identityProviderState,
  lifecycle,
}: ReadinessDependencies) {
  let keysCached = false;
  return {
    /** A token was verified: the signing keys are in memory. */
    keysUsed() {
      keysCached = true;
    },
    async check(): Promise<{ ready: boolean; body: Record<string, unknown> }> {
      if (lifecycle.draining) return { ready: false, body: { status: 'draining' } };
      const bound = config.readyTimeoutMs;
      const [databaseCheck, provider] = await Promise.all([
        within(database.pool.query('SELECT 1'), bound, 'the database').then(
          () => 'ok',
          (error: unknown) => {
            databaseState.failed('readiness check', error);
            return 'unreachable';
          },
        ),
        auth.ready ? within(auth.ready(), bound, 'the identity provider').catch(() => undefined) : undefined,
      ]);
      const checks: Record<string, string> = { database: databaseCheck };
      const degraded: string[] = [];
      let ready = databaseCheck === 'ok';
      if (auth.ready) {
        const providerChecks = provider?.checks ?? { identity_provider: `no answer within ${bound} ms` };
        // The proxy's own database check is this one.
        const { database: _same, ...own } = providerChecks;
        Object.assign(checks, own);
        if (provider?.ok) identityProviderState.succeeded();
        else identityProviderState.failed('readiness check', new Error(JSON.stringify(own)));
        if (config.authMode === 'keycloak') {
          if (own.jwks === 'ok') keysCached = true;
          if (own.issuer_metadata === 'issuer mismatch')
            ready = false; // a configuration error, not an outage
          else if (!keysCached)
            ready = false; // no key to verify any token with yet
          else if (!provider?.ok) degraded.push('identity provider unreachable: verifying tokens with the cached keys');
        } else if (!provider?.ok && own.upstream !== 'ok') {
          degraded.push('upstream identity provider unreachable: tokens already issued work, new sign-ins fail');
        }
      }
      return {
        ready,
        body: { status: ready ? 'ready' : 'unavailable', checks, ...(degraded.length > 0 ? { degraded } : {}) },
      };
    },
  };
}

/**
 * The provider as `requireAuth` uses it, with the outcome of each check recorded: a 503 from
 * the credential check is logged (once per outage) with its cause, which `requireAuth` does not see.
 */
function observeAuthentication(
  auth: AuthProvider,
  config: ServerConfig,
  databaseState: DependencyState,
  identityProviderState: DependencyState,
  readiness: { keysUsed(): void },
): AuthProvider {
  // The key check reads the database; the token modes verify locally with the provider's keys.
  const dependency = config.authMode === 'key' ? databaseState : identityProviderState;
  return {
    ...auth,
    challengeParameters: () => auth.challengeParameters(),
    async verify(credential) {
      try {
        const outcome = await auth.verify(credential);
        if (outcome.ok && config.authMode === 'keycloak') readiness.keysUsed();
        return outcome;
      } catch (error) {
        if (error instanceof AuthUnavailableError) {
          const cause = error.cause ?? error;
          (isDatabaseUnavailable(cause) ? databaseState : dependency).failed('credential check', cause);
        }
        throw error;
      }
    },
  };
}
