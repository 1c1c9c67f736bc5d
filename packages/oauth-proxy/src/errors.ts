/**
 * One error type for everything the proxy refuses: its endpoints, client registration and
 * resolution, and the SSRF-safe fetch. `error` is the RFC 6749 section 5.2 / RFC 7591 section
 * 3.2.2 code, the message its `error_description`; `oauthErrorResponse` is the one place that
 * turns it into an HTTP answer.
 */
export class OAuthError extends Error {
  readonly error: string;
  readonly status: number;
  /** Extra response headers (e.g. `Retry-After` with a 429). */
  readonly headers: Readonly<Record<string, string>>;
  constructor(error: string, description: string, status = 400, headers: Record<string, string> = {}) {
    super(description);
    this.error = error;
    this.status = status;
    this.headers = headers;
  }
}

/** CORS for the endpoints a browser-based MCP client calls directly (metadata, register, token, revoke). */
export const CORS: Readonly<Record<string, string>> = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
  'Access-Control-Allow-Headers': 'authorization, content-type, mcp-protocol-version',
  'Access-Control-Max-Age': '86400',
};

/** RFC 6749 5.1: token responses, and everything that carries a secret, are not cached. */
export const NO_STORE: Readonly<Record<string, string>> = { 'Cache-Control': 'no-store', Pragma: 'no-cache' };

/**
 * The JSON error body of the token, revocation and registration endpoints. A 401 (failed
 * client authentication) carries the `WWW-Authenticate: Basic` challenge RFC 6749 5.2 asks for.
 */
export function oauthErrorResponse(error: OAuthError): Response {
  const headers: Record<string, string> = { ...NO_STORE, ...CORS, ...error.headers };
  if (error.status === 401) headers['WWW-Authenticate'] = 'Basic realm="oauth-proxy"';
  return Response.json({ error: error.error, error_description: error.message }, { status: error.status, headers });
}
