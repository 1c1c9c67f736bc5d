import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';

/** Who is calling, as every provider describes it. Tools read this and nothing else. */
export interface Principal {
  /** Stable id of the user the data belongs to (a key's user, a token's `sub` or `oid`). */
  userId: string;
  /** What the credential allows; empty means "no scopes were granted". */
  scopes: readonly string[];
  /** How the caller authenticated. */
  method: 'none' | 'api_key' | 'oauth';
  /** The OAuth client (`azp`/`client_id`) or the API key's id. */
  clientId?: string | undefined;
  name?: string | undefined;
  roles?: readonly string[] | undefined;
}

/**
 * The MCP SDK hands tools an `AuthInfo`; the principal rides in its `extra`. The raw
 * credential is never put there: a tool has no reason to hold the caller's token.
 */
export function toAuthInfo(principal: Principal): AuthInfo {
  return {
    token: '[redacted]',
    clientId: principal.clientId ?? principal.userId,
    scopes: [...principal.scopes],
    extra: { principal },
  };
}

export function principalFromAuthInfo(authInfo: AuthInfo | undefined): Principal | undefined {
  const principal = authInfo?.extra?.principal as Principal | undefined;
  return principal && typeof principal.userId === 'string' ? principal : undefined;
}

/** For tool handlers: the caller, or an error when the transport ran without authentication. */
export function requirePrincipal(authInfo: AuthInfo | undefined): Principal {
  const principal = principalFromAuthInfo(authInfo);
  if (!principal) throw new Error('This tool needs an authenticated caller.');
  return principal;
}
