import type { Env, Hono } from 'hono';
import type { Principal } from './principal.ts';

/**
 * The seam every access mode plugs into (`none`, `key`, and later `keycloak` and the OAuth
 * proxy): authenticate one request, say how to challenge a caller who failed, and optionally
 * add routes of its own (metadata, registration).
 */
export interface AuthProvider {
  readonly name: string;
  /**
   * Decides on one request. Throws `AuthUnavailableError` when it cannot decide right now (the
   * identity provider is unreachable): that is the server's problem, not the caller's token's.
   */
  authenticate(request: Request): Promise<AuthOutcome>;
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
