import type { HttpBindings } from '@hono/node-server';
import { createMiddleware } from 'hono/factory';
import type { RequestIdVariables } from 'hono/request-id';

const HEADER = 'x-request-id';
const MAX_LENGTH = 255;

/**
 * Gives each exchange an id, `c.get('requestId')`, echoed as `X-Request-Id` on its reply: the
 * caller's own when it sends a plain token (letters, digits, `_`, `-`, `=`, at most 255), else a
 * new UUID. The same rule as `hono/request-id`, which sets the header with `c.header()`: that
 * makes a `Headers` object per request and every reply then merges into it (about 2 KB more
 * allocation per MCP request and a few MB more peak memory under load). Under
 * `@hono/node-server` the header goes on Node's response instead, which merges it into
 * whatever the reply carries; elsewhere (`app.request` in tests) it falls back to `c.header()`.
 */
export function requestId() {
  return createMiddleware<{ Variables: RequestIdVariables; Bindings: Partial<HttpBindings> }>(async (c, next) => {
    const sent = c.req.header(HEADER);
    const id = sent && sent.length <= MAX_LENGTH && !/[^\w\-=]/.test(sent) ? sent : crypto.randomUUID();
    c.set('requestId', id);
    const outgoing = c.env?.outgoing;
    if (outgoing) outgoing.setHeader(HEADER, id);
    else c.header(HEADER, id);
    await next();
  });
}
