import type { Context, Env, Hono } from 'hono';

const WELL_KNOWN = '/.well-known/oauth-protected-resource';

export interface ProtectedResourceMetadataOptions {
  /** The resource's canonical URL, e.g. `https://mcp.example.com/mcp` (the audience tokens must carry). */
  resource: string;
  /** Issuer URLs of the authorization servers clients should get tokens from. */
  authorizationServers: readonly string[];
  scopesSupported?: readonly string[] | undefined;
  resourceName?: string | undefined;
  resourceDocumentation?: string | undefined;
  /** More members of the document (RFC 9728 section 2), e.g. `resource_policy_uri`. */
  additionalMetadata?: Readonly<Record<string, unknown>> | undefined;
  /** Also serve the document at the root form `/.well-known/oauth-protected-resource` (default true). */
  serveAtRoot?: boolean | undefined;
  /** `Cache-Control: max-age` of the document, in seconds (default 300). */
  maxAgeSeconds?: number | undefined;
}

/**
 * Checks a resource identifier (RFC 8707 section 2: absolute, no fragment; query-less here,
 * since clients derive the metadata URL from it) and returns it parsed.
 */
export function parseResourceUrl(resource: string): URL {
  let url: URL;
  try {
    url = new URL(resource);
  } catch {
    throw new Error(`The resource ${JSON.stringify(resource)} is not an absolute URL.`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new Error(`The resource ${resource} must be an http or https URL.`);
  }
  if (url.hash !== '' || url.search !== '' || resource.includes('#') || resource.includes('?')) {
    throw new Error(`The resource ${resource} must have no query and no fragment.`);
  }
  return url;
}

/**
 * The path-aware metadata URL of a resource (RFC 9728 section 3.1): the well-known segment goes
 * between the host and the path, so `https://h/mcp` has `https://h/.well-known/oauth-protected-resource/mcp`.
 */
export function protectedResourceMetadataUrl(resource: string): string {
  const url = parseResourceUrl(resource);
  return `${url.origin}${metadataPath(url)}`;
}

function metadataPath(url: URL): string {
  return url.pathname === '/' ? WELL_KNOWN : `${WELL_KNOWN}${url.pathname}`;
}

/** The metadata document itself (RFC 9728 section 2). */
export function protectedResourceMetadata(options: ProtectedResourceMetadataOptions): Record<string, unknown> {
  parseResourceUrl(options.resource);
  if (options.authorizationServers.length === 0) throw new Error('Name at least one authorization server.');
  const document: Record<string, unknown> = {
    ...options.additionalMetadata,
    resource: options.resource,
    authorization_servers: [...options.authorizationServers],
    bearer_methods_supported: ['header'],
  };
  if (options.scopesSupported) document.scopes_supported = [...options.scopesSupported];
  if (options.resourceName !== undefined) document.resource_name = options.resourceName;
  if (options.resourceDocumentation !== undefined) document.resource_documentation = options.resourceDocumentation;
  return document;
}

/**
 * Serves the Protected Resource Metadata of one resource at its path-aware URL and (unless
 * `serveAtRoot: false`) at the root form, with GET, HEAD and OPTIONS. The document is public,
 * so any origin may read it: browser-based clients (the MCP Inspector) discover from a page.
 */
export function mountProtectedResourceMetadata<E extends Env>(
  app: Hono<E>,
  options: ProtectedResourceMetadataOptions,
): void {
  const body = JSON.stringify(protectedResourceMetadata(options));
  const url = parseResourceUrl(options.resource);
  const paths = new Set([metadataPath(url)]);
  if (options.serveAtRoot ?? true) paths.add(WELL_KNOWN);
  const cacheControl = `public, max-age=${options.maxAgeSeconds ?? 300}`;

  const serve = (c: Context<E>) =>
    c.body(body, 200, {
      'Content-Type': 'application/json',
      'Cache-Control': cacheControl,
      'Access-Control-Allow-Origin': '*',
    });
  const preflight = (c: Context<E>) =>
    c.body(null, 204, {
      'Access-Control-Allow-Origin': '*',
      'Access-Control-Allow-Methods': 'GET, HEAD, OPTIONS',
      // Clients send MCP-Protocol-Version with discovery requests; any header is harmless here.
      'Access-Control-Allow-Headers': c.req.header('access-control-request-headers') ?? '*',
      'Access-Control-Max-Age': '86400',
      Vary: 'Access-Control-Request-Headers',
      Allow: 'GET, HEAD, OPTIONS',
    });
  for (const path of paths) {
    // Hono answers HEAD with the GET route, without the body.
    app.get(path, serve);
    app.options(path, preflight);
  }
}
