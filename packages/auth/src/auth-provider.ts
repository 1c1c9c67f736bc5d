import type { Env, Hono } from 'hono';
import type { Principal } from './principal.ts';

/**
 * The seam every access mode plugs into (`none`, `key`, `keycloak`, the OAuth proxy): verify one
 * credential, say how to challenge a caller who failed, and optionally add routes of its own
 * (metadata, registration). Taking the credential from the request, and answering a request
 * without one or with a malformed one, is `requireAuth`'s (`authenticateRequest`), as in Hono's
 * `bearerAuth({ verifyToken })` and the MCP SDK's `verifyAccessToken(token)`.
 */
export interface AuthProvider {
  readonly name: string;
  /**
   * Decides on one credential (from `Authorization: Bearer`, or `credentialHeader`). Throws
   * `AuthUnavailableError` when it cannot decide right now (the identity provider is
   * unreachable): that is the server's problem, not the caller's credential's.
   */
  verify(credential: string): Promise<AuthOutcome>;
  /** A header that may carry the credential instead of `Authorization: Bearer` (the key mode's `x-api-key`). */
  readonly credentialHeader?: string | undefined;
  /** What the credential is called in the answer to a malformed `Authorization` header (default `access token`). */
  readonly credentialName?: string | undefined;
  /**
   * Decides a request that carries no credential at all. Without it, such a request gets the
   * 401 without `error` (RFC 6750 3.1); the development mode `none` lets everything in.
   */
  withoutCredential?(): Promise<AuthOutcome>;
  /** Parameters of the `WWW-Authenticate: Bearer` challenge besides `error` (realm, resource_metadata, scope). */
  challengeParameters(): Record<string, string>;
  /** Routes this provider serves itself, mounted before the protected routes. */
  mount?<E extends Env>(app: Hono<E>): void;
  /** Whether what the provider depends on (identity provider metadata, keys) is reachable, for `/ready`. */
  ready?(): Promise<{ ok: boolean; checks: Record<string, string> }>;
  /** Releases what the provider holds open (a listening connection), at shutdown. */
  close?(): Promise<void>;
}

export type AuthOutcome =
  | { ok: true; principal: Principal }
  | {
      ok: false;
      /**
       * RFC 6750 section 3.1: no `error` when the request carried no credentials at all;
       * `invalid_token` when it carried one that failed; `invalid_request` when it was malformed.
       */
      error?: 'invalid_token' | 'invalid_request';
      description?: string;
    };

/**
 * A provider could not verify a credential for reasons on the server's side (signing keys or
 * issuer unreachable). `requireAuth` answers 503, so clients retry instead of re-authorizing.
 */
export class AuthUnavailableError extends Error {
  /** Seconds after which a retry may succeed (`Retry-After`). */
  readonly retryAfterSeconds: number;

  constructor(message: string, options: { cause?: unknown; retryAfterSeconds?: number } = {}) {
    super(message, { cause: options.cause });
    this.name = 'AuthUnavailableError';
    this.retryAfterSeconds = options.retryAfterSeconds ?? 5;
  }
}

/** Anything that serves routes of its own (a registration facade, another provider). */
export interface RouteSource {
  mount<E extends Env>(app: Hono<E>): void;
}

/**
 * The provider, also serving the routes of `extras` (after its own): e.g. a registration
 * facade beside the token verifier. Everything else is the provider's.
 */
export function withRoutes<P extends AuthProvider>(provider: P, ...extras: RouteSource[]): P {
  return {
    ...provider,
    mount<E extends Env>(app: Hono<E>) {
      provider.mount?.(app);
      for (const extra of extras) extra.mount(app);
    },
  };
}
