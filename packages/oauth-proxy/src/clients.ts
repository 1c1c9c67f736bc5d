import {
  CLIENT_GRANT_TYPES,
  checkRegistration,
  isRegisteredRedirectUri,
  showsWhereItLeads,
} from '@mcp-auth-stack/auth';
import type pg from 'pg';
import { randomToken, sha256 } from './crypto.ts';
import { OAuthError } from './errors.ts';
import { SafeFetchError, safeFetchJson } from './ssrf.ts';

export type TokenEndpointAuthMethod = 'none' | 'client_secret_post' | 'client_secret_basic';

export interface ProxyClient {
  clientId: string;
  clientName: string | undefined;
  redirectUris: readonly string[];
  tokenEndpointAuthMethod: TokenEndpointAuthMethod;
  /** SHA-256 of the client secret, for confidential registered clients. */
  secretSha256: Buffer | undefined;
  /** The grants it registered (RFC 7591 `grant_types`): without `refresh_token` it gets no refresh token. */
  grantTypes: readonly string[];
  kind: 'registered' | 'metadata_document';
}

/** The proxy's one error type under the name the client checks have always exported. */
export { OAuthError as ClientError };

const AUTH_METHODS: readonly TokenEndpointAuthMethod[] = ['none', 'client_secret_post', 'client_secret_basic'];

/** RFC 7591 checks shared by DCR and CIMD: redirect URIs (loopback http or https), grants, auth method, name. */
export function validateClientMetadata(body: unknown): {
  redirectUris: string[];
  tokenEndpointAuthMethod: TokenEndpointAuthMethod;
  clientName: string | undefined;
  grantTypes: string[];
} {
  const problem = checkRegistration(body);
  if (problem) throw new OAuthError(problem.error, problem.description);
  const metadata = body as Record<string, unknown>;
  const method = metadata.token_endpoint_auth_method ?? 'none';
  if (typeof method !== 'string' || !AUTH_METHODS.includes(method as TokenEndpointAuthMethod)) {
    throw new OAuthError(
      'invalid_client_metadata',
      `token_endpoint_auth_method must be one of ${AUTH_METHODS.join(', ')}.`,
    );
  }
  // checkRegistration allowed only these grants and response type `code`.
  const grantTypes = [...((metadata.grant_types ?? CLIENT_GRANT_TYPES) as string[])];
  const name = metadata.client_name;
  if (name !== undefined && (typeof name !== 'string' || name.length > 200)) {
    throw new OAuthError('invalid_client_metadata', 'client_name must be a string of at most 200 characters.');
  }
  return {
    redirectUris: [...new Set(metadata.redirect_uris as string[])],
    tokenEndpointAuthMethod: method as TokenEndpointAuthMethod,
    clientName: name as string | undefined,
    grantTypes,
  };
}

/** Stores a DCR registration; returns the RFC 7591 response document. */
export async function registerClient(pool: pg.Pool, body: unknown): Promise<Record<string, unknown>> {
  const metadata = validateClientMetadata(body);
  const clientId = `mcp_${randomToken().slice(0, 32)}`;
  const secret = metadata.tokenEndpointAuthMethod === 'none' ? undefined : randomToken('mcps_');
  const issuedAt = Math.floor(Date.now() / 1000);
  const document: Record<string, unknown> = {
    client_id: clientId,
    client_id_issued_at: issuedAt,
    redirect_uris: metadata.redirectUris,
    token_endpoint_auth_method: metadata.tokenEndpointAuthMethod,
    grant_types: metadata.grantTypes,
    response_types: ['code'],
  };
  if (metadata.clientName !== undefined) document.client_name = metadata.clientName;
  // The name and redirect URIs have columns of their own: stored once, not again in the document.
  const { redirect_uris: _redirectUris, client_name: _clientName, ...rest } = document;
  await pool.query(
    `INSERT INTO oauth_proxy_clients (client_id, secret_sha256, client_name, redirect_uris, metadata)
     VALUES ($1, $2, $3, $4, $5)`,
    [clientId, secret === undefined ? null : sha256(secret), metadata.clientName ?? null, metadata.redirectUris, rest],
  );
  if (secret !== undefined) {
    document.client_secret = secret;
    document.client_secret_expires_at = 0;
  }
  return document;
}

export interface ClientResolverOptions {
  pool: pg.Pool;
  cimd: { enabled: boolean; maxBytes: number; timeoutMs: number; allowInsecure: boolean; maxCacheEntries: number };
}

/** A Client ID Metadata Document URL: https (http too in development), with a path, no fragment or credentials. */
export function isMetadataDocumentUrl(clientId: string, allowInsecure: boolean): boolean {
  if (!/^https?:\/\//i.test(clientId)) return false;
  try {
    const url = new URL(clientId);
    if (url.protocol !== 'https:' && !(allowInsecure && url.protocol === 'http:')) return false;
    return (
      url.pathname !== '/' &&
      url.hash === '' &&
      !clientId.includes('#') &&
      !url.username &&
      !url.password &&
      // The consent page shows the id as its identity: it must name the host it is fetched from,
      // and the path (CIMD draft 3: no `.` or `..` segment; `/app/../evil.json` is `/evil.json`).
      showsWhereItLeads(clientId) &&
      !hasDotSegment(clientId)
    );
  } catch {
    return false;
  }
}

/** A `.` or `..` path segment, written so or with `%2e`, in the URL as written. */
function hasDotSegment(url: string): boolean {
  const path = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*([^?#]*)/i.exec(url)?.[1] ?? '';
  return path.split('/').some((segment) => /^(\.|%2e){1,2}$/i.test(segment));
}

const REFUSED_DOCUMENT_SECONDS = 60;

/** Finds clients: registered ones in Postgres, CIMD ones by fetching their document (cached per replica). */
export class ClientResolver {
  readonly #options: ClientResolverOptions;
  readonly #cache = new Map<string, { client: ProxyClient; until: number }>();
  /** Documents that were refused, kept a minute: a failing URL is not fetched on every request. */
  readonly #refused = new Map<string, { error: OAuthError; until: number }>();

  constructor(options: ClientResolverOptions) {
    this.#options = options;
  }

  /**
   * The client with this id, or undefined when no such client is registered. A URL client id
   * is a metadata document: `mayFetch`, asked before a fetch the cache cannot spare, may refuse
   * it (a per-address limit).
   */
  async resolve(clientId: string, options: { mayFetch?: () => boolean } = {}): Promise<ProxyClient | undefined> {
    if (/^https?:\/\//i.test(clientId)) return this.#fromDocument(clientId, options.mayFetch);
    // Registered ids are printable ASCII (and PostgreSQL text cannot hold a NUL).
    if (clientId.length > 100 || !/^[\x21-\x7e]+$/.test(clientId)) return undefined;
    const { rows } = await this.#options.pool.query<{
      client_name: string | null;
      redirect_uris: string[];
      secret_sha256: Buffer | null;
      metadata: { token_endpoint_auth_method?: TokenEndpointAuthMethod; grant_types?: string[] };
    }>('SELECT client_name, redirect_uris, secret_sha256, metadata FROM oauth_proxy_clients WHERE client_id = $1', [
      clientId,
    ]);
    const row = rows[0];
    if (!row) return undefined;
    return {
      clientId,
      clientName: row.client_name ?? undefined,
      redirectUris: row.redirect_uris,
      tokenEndpointAuthMethod: row.metadata.token_endpoint_auth_method ?? 'none',
      secretSha256: row.secret_sha256 ?? undefined,
      grantTypes: row.metadata.grant_types ?? CLIENT_GRANT_TYPES,
      kind: 'registered',
    };
  }

  async #fromDocument(clientId: string, mayFetch?: () => boolean): Promise<ProxyClient> {
    const { cimd } = this.#options;
    if (!cimd.enabled) throw new OAuthError('invalid_client', 'Client ID Metadata Documents are not accepted here.');
    if (!isMetadataDocumentUrl(clientId, cimd.allowInsecure)) {
      throw new OAuthError('invalid_client', 'A URL client id must be an https URL with a path and no fragment.');
    }
    const cached = this.#cache.get(clientId);
    if (cached && cached.until > Date.now()) return cached.client;
    const refused = this.#refused.get(clientId);
    if (refused && refused.until > Date.now()) throw refused.error;
    if (mayFetch && !mayFetch()) {
      throw new OAuthError('invalid_client', 'Too many client metadata lookups from this address; try again later.');
    }
    try {
      return await this.#fetchDocument(clientId);
    } catch (error) {
      if (error instanceof OAuthError) {
        if (this.#refused.size >= cimd.maxCacheEntries) this.#refused.clear();
        this.#refused.set(clientId, { error, until: Date.now() + REFUSED_DOCUMENT_SECONDS * 1000 });
      }
      throw error;
    }
  }

  async #fetchDocument(clientId: string): Promise<ProxyClient> {
    const { cimd } = this.#options;
    let fetched: Awaited<ReturnType<typeof safeFetchJson>>;
    try {
      fetched = await safeFetchJson(clientId, cimd);
    } catch (error) {
      const reason = error instanceof SafeFetchError ? error.message : 'it could not be fetched';
      throw new OAuthError('invalid_client', `The client metadata document was refused: ${reason}.`);
    }
    const document = fetched.body as Record<string, unknown> | null;
    if (typeof document !== 'object' || document === null || document.client_id !== clientId) {
      throw new OAuthError('invalid_client', 'The client metadata document must name its own URL as client_id.');
    }
    for (const member of ['client_secret', 'client_secret_expires_at']) {
      if (member in document)
        throw new OAuthError('invalid_client', `A client metadata document must not contain ${member}.`);
    }
    let metadata: ReturnType<typeof validateClientMetadata>;
    try {
      metadata = validateClientMetadata(document);
    } catch (error) {
      throw new OAuthError('invalid_client', (error as Error).message);
    }
    if (metadata.tokenEndpointAuthMethod !== 'none') {
      throw new OAuthError(
        'invalid_client',
        'A client metadata document client must use token_endpoint_auth_method none.',
      );
    }
    const client: ProxyClient = {
      clientId,
      clientName: metadata.clientName,
      redirectUris: metadata.redirectUris,
      tokenEndpointAuthMethod: 'none',
      secretSha256: undefined,
      grantTypes: metadata.grantTypes,
      kind: 'metadata_document',
    };
    const maxAge = /max-age=(\d+)/.exec(fetched.cacheControl ?? '')?.[1];
    const seconds = Math.min(Math.max(maxAge === undefined ? 300 : Number(maxAge), 60), 86_400);
    if (this.#cache.size >= cimd.maxCacheEntries) this.#cache.delete(this.#cache.keys().next().value as string);
    this.#cache.set(clientId, { client, until: Date.now() + seconds * 1000 });
    return client;
  }
}

/** The RFC 8252 7.3 redirect URI rule, shared with the Keycloak pass-through (one definition, in packages/auth). */
export { isRegisteredRedirectUri };
