/**
 * Reads a request body as text, refusing more than `limit` bytes whatever the client declares:
 * `undefined` when it is larger. A body without `Content-Length` (chunked) is read as a stream
 * and abandoned at the first chunk past the limit, so no caller can make the server hold more.
 * A fetched `Response` reads the same way (undici, like Node's parser, holds a body to its
 * declared length).
 */
export async function readBodyWithin(
  request: Pick<Request, 'headers' | 'body' | 'text'>,
  limit: number,
): Promise<string | undefined> {
  return (await readBytesWithin(request, limit))?.text;
}

/** `readBodyWithin`, with how many bytes the text was sent as (decoding changes the count). */
async function readBytesWithin(
  request: Pick<Request, 'headers' | 'body' | 'text'>,
  limit: number,
): Promise<{ text: string; bytes: number } | undefined> {
  const read = await readBytesOrStop(request, limit);
  if (read === undefined || 'text' in read) return read;
  await read.reader.cancel();
  return undefined;
}

/** A chunked body read up to a limit and stopped there: what was read, and the rest to read. */
interface StoppedBody {
  reader: ReadableStreamDefaultReader<Uint8Array>;
  chunks: Uint8Array[];
  size: number;
}

/**
 * The body within `limit`; `undefined` for a declared length over it (nothing read); for a
 * chunked body that passed it, the read stopped at the first chunk past the limit, to be
 * cancelled or read on by a reader with a larger limit.
 */
async function readBytesOrStop(
  request: Pick<Request, 'headers' | 'body' | 'text'>,
  limit: number,
): Promise<{ text: string; bytes: number } | StoppedBody | undefined> {
  const declared = request.headers.get('content-length');
  if (declared !== null) {
    // Node's HTTP parser holds the body to its declared length, so this check is enough, and
    // the length is the bytes sent.
    const bytes = Number(declared);
    if (!(bytes <= limit)) return undefined;
    return { text: await request.text(), bytes };
  }
  if (!request.body) return { text: '', bytes: 0 };
  return readOn({ reader: request.body.getReader(), chunks: [], size: 0 }, limit);
}

/** Reads a chunked body on to its end, or stops at the first chunk past `limit`. */
async function readOn(body: StoppedBody, limit: number): Promise<{ text: string; bytes: number } | StoppedBody> {
  const { reader, chunks } = body;
  let { size } = body;
  if (size > limit) return body;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    chunks.push(value);
    if (size > limit) return { reader, chunks, size };
  }
  return { text: UTF8.decode(Buffer.concat(chunks, size)), bytes: size };
}

/** WHATWG's UTF-8 decoding, as `Request.text()` does it: a BOM is dropped, bad bytes become U+FFFD. */
const UTF8 = new TextDecoder();

/**
 * A fetched answer's text within `limit` bytes, as `readBodyWithin` reads it; `undefined` when it
 * is larger, and then the rest is not downloaded (the body is cancelled and its connection freed).
 * For answers from servers this one calls: a misconfigured or hostile upstream must not make it
 * hold an unbounded body.
 */
export async function readResponseWithin(response: Response, limit: number): Promise<string | undefined> {
  const text = await readBodyWithin(response, limit);
  if (text === undefined) await response.body?.cancel().catch(() => {});
  return text;
}

interface ReadBody {
  text: string;
  /**
   * A chunked body an earlier reader stopped at its limit, kept for a reader with a larger one:
   * a middleware with a smaller limit (tracing) must not decide the endpoint's answer.
   */
  stopped?: StoppedBody;
  /**
   * Bytes the client sent: a second reader with a smaller limit compares these, not the text
   * encoded again (each invalid byte decodes to U+FFFD, three bytes: the same body was refused
   * after a scope check had read it, and taken without one).
   */
  bytes: number;
  json?: { ok: true; value: unknown } | { ok: false };
}

/** Bodies already read, by request: the scope check and the MCP endpoint share one read and one parse. */
const readBodies = new WeakMap<Request, ReadBody>();

/**
 * `readBodyWithin`, once per request: a later call for the same request (or for one that
 * `rememberBody` tied to it) gets the text read the first time, still held to its own `limit`.
 * A chunked body past this call's limit is not abandoned: a later call with a larger limit
 * reads on (a middleware with a smaller limit must not decide the endpoint's answer), so each
 * call's answer depends on the body's size alone, never on how it was cut into chunks. Whoever
 * answers 413 calls `discardBody`.
 */
export async function readBodyOnce(request: Request, limit: number): Promise<string | undefined> {
  const known = readBodies.get(request);
  if (known !== undefined && known.stopped === undefined) return known.bytes > limit ? undefined : known.text;
  const read = known?.stopped ? await readOn(known.stopped, limit) : await readBytesOrStop(request, limit);
  // A declared length over the limit: nothing read, a reader with a larger limit reads it.
  if (read === undefined) return undefined;
  // Read to its end, or stopped past this limit: every reader of this request sees the same
  // state, the whole text or where the read stopped (the body's bytes read so far).
  const state: ReadBody = 'text' in read ? read : { text: '', bytes: read.size, stopped: read };
  if (known === undefined) readBodies.set(request, state);
  else Object.assign(known, state, 'text' in read ? { stopped: undefined } : {});
  return 'text' in read ? read.text : undefined;
}

/**
 * Gives up a body read only partly (past every limit so far): the rest is not read, the stream
 * is cancelled, which frees its connection at once, and no later reader can have it. For the
 * handler that answers 413; without it the server would read and drop the rest after the answer.
 */
export async function discardBody(request: Request): Promise<void> {
  const known = readBodies.get(request);
  if (known?.stopped === undefined) return;
  const { reader } = known.stopped;
  Object.assign(known, { stopped: undefined, bytes: Number.POSITIVE_INFINITY });
  await reader.cancel().catch(() => {});
}

/**
 * `readBodyOnce` for a middleware: reads `req.raw`'s body, at most `limit` bytes, and puts in
 * `req.raw` a stand-in that answers the body methods from that text (`requestWithBody`), so the
 * handlers after it (Hono's `c.req.text()`/`json()`, the MCP endpoint's `readBodyOnce` and
 * `parseBodyOnce`) get the same text and parse without reading again. Undefined when the body
 * is larger than `limit`.
 */
export async function readBodyKeepingIt(req: { raw: Request }, limit: number): Promise<string | undefined> {
  const raw = req.raw;
  const text = await readBodyOnce(raw, limit);
  if (text === undefined) return undefined;
  // A stand-in put there by an earlier reader (its `bodyUsed` is false) is kept.
  if (raw.bodyUsed) {
    req.raw = requestWithBody(raw, text);
    rememberBody(req.raw, raw);
  }
  return text;
}

/**
 * The request with its consumed body replaced by `text`. A Proxy rather than a new Request:
 * constructing a native Request (headers copied, body stream) halved the throughput of the
 * whole route in measurements, while the Proxy costs nothing measurable. Everything but the
 * body is the original request's (headers, url, signal).
 */
export function requestWithBody(request: Request, text: string): Request {
  let stream: ReadableStream<Uint8Array> | null = null;
  const copy = () =>
    new Request(request.url, { method: request.method, headers: request.headers, body: text, signal: request.signal });
  return new Proxy(request, {
    get(target, property) {
      switch (property) {
        case 'text':
          return async () => text;
        case 'json':
          return async () => JSON.parse(text);
        case 'arrayBuffer':
          return async () => new TextEncoder().encode(text).buffer;
        case 'bytes':
          return async () => new TextEncoder().encode(text);
        case 'blob':
        case 'formData':
          return () => copy()[property]();
        case 'clone':
          return copy;
        case 'body':
          stream ??= new Response(text).body;
          return stream;
        case 'bodyUsed':
          return false;
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

/** Ties a body already read to another request object standing for the same request (a stand-in with the body). */
export function rememberBody(request: Request, from: Request): void {
  const known = readBodies.get(from);
  if (known !== undefined) readBodies.set(request, known);
}

/**
 * `JSON.parse` of the body `readBodyOnce` read, once per request; `{ ok: false }` when it is not
 * JSON (or was not read).
 */
export function parseBodyOnce(request: Request): { ok: true; value: unknown } | { ok: false } {
  const known = readBodies.get(request);
  if (known === undefined || known.stopped !== undefined) return { ok: false };
  if (known.json === undefined) {
    try {
      known.json = { ok: true, value: JSON.parse(known.text) };
    } catch {
      known.json = { ok: false };
    }
  }
  return known.json;
}
