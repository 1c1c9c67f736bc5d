import type { Env, Hono } from 'hono';
import type { Principal } from './principal.ts';

/**
 * The seam every access mode plugs into (`none`, `key`, and later `keycloak` and the OAuth
 * proxy): authenticate one request, say how to challenge a caller who failed, and optionally
 * add routes of its own (metadata, registration).
 */
export interface AuthProvider {
  readonly name: string;
  authenticate(request: Request): Promise<AuthOutcome>;
  /** Parameters of the `WWW-Authenticate: Bearer` challenge besides `error` (realm, resource_metadata, scope). */
  challengeParameters(): Record<string, string>;
  /** Routes this provider serves itself, mounted before the protected routes. */
  mount?<E extends Env>(app: Hono<E>): void;
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
