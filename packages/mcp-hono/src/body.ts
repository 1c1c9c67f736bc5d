/**
 * Reads a request body as text, refusing more than `limit` bytes whatever the client declares:
 * `undefined` when it is larger. A body without `Content-Length` (chunked) is read as a stream
 * and abandoned at the first chunk past the limit, so no caller can make the server hold more.
 */
export async function readBodyWithin(request: Request, limit: number): Promise<string | undefined> {
  const declared = request.headers.get('content-length');
  if (declared !== null) {
    // Node's HTTP parser holds the body to its declared length, so this check is enough.
    if (!(Number(declared) <= limit)) return undefined;
    return await request.text();
  }
  if (!request.body) return '';
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      return undefined;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, size).toString('utf8');
}
