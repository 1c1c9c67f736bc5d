import { isLoopbackRedirectHost, redirectPortMayVary } from '@mcp-auth-stack/loopback';
import { jsonValueTooDeep } from '@mcp-auth-stack/mcp-hono';
import { displayNameProblem } from './plain-text.ts';

/*
 * The rules on an OAuth client's registration (RFC 7591) and redirect URIs (RFC 8252) that
 * every authorization server in front of MCP clients applies the same way: the Keycloak
 * registration facade (packages/keycloak-registration) and the OAuth proxy (packages/oauth-proxy).
 */

const MAX_REDIRECT_URIS = 10;
/** A registration is a flat object of strings and lists of strings; 8 levels leaves room for `jwks`. */
export const MAX_REGISTRATION_DEPTH = 8;
/**
 * Members naming a URL the identity provider itself would fetch or call (Keycloak fetches
 * `sector_identifier_uri` during registration, `jwks_uri` and `request_uris` later, and POSTs to
 * `backchannel_logout_uri` and a CIBA client's notification endpoint): from an anonymous caller,
 * each is a request Keycloak would make on its behalf (blind SSRF). MCP clients need none of them.
 */
const FETCHED_URI_MEMBERS = [
  'sector_identifier_uri',
  'jwks_uri',
  'request_uris',
  'backchannel_logout_uri',
  'backchannel_client_notification_endpoint',
] as const;
/**
 * The grants an MCP client needs. Any other is refused: the device grant (RFC 8628) and CIBA hand
 * a token to whoever holds the request, with no redirect at all, so a registrant could send a
 * user a sign-in link and collect the user's token (RFC 8628 section 5.4, remote phishing);
 * `client_credentials`, `password` and `implicit` have no place in an MCP client either.
 */
export const CLIENT_GRANT_TYPES: readonly string[] = ['authorization_code', 'refresh_token'];

/**
 * What is wrong with a registration, as an RFC 7591 error, or undefined: it must be a JSON
 * object of bounded depth, name no URL the provider would fetch, ask for `public` subjects only,
 * carry a `client_name` that reads as what it is, ask for the authorization code grant (and
 * perhaps refresh tokens) with response type `code` only, and list 1 to 10 redirect URIs, each `https` or
 * loopback `http` (RFC 8252 native clients). Custom schemes, plain http to other hosts and
 * fragments are refused before the provider sees them.
 */
export function checkRegistration(body: unknown): { error: string; description: string } | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { error: 'invalid_client_metadata', description: 'The registration must be a JSON object.' };
  }
  if (jsonValueTooDeep(body, MAX_REGISTRATION_DEPTH)) {
    return { error: 'invalid_client_metadata', description: 'The registration nests too deeply.' };
  }
  const members = body as Record<string, unknown>;
  for (const member of FETCHED_URI_MEMBERS) {
    if (members[member] !== undefined) {
      return {
        error: 'invalid_client_metadata',
        description: `${member} is not accepted: the authorization server would fetch it on the registrant's behalf.`,
      };
    }
  }
  if (members.subject_type !== undefined && members.subject_type !== 'public') {
    return { error: 'invalid_client_metadata', description: 'Only subject_type "public" is supported.' };
  }
  // The name is shown on consent pages, on one line: the rule of names people read (plain-text.ts).
  const nameProblem = typeof members.client_name === 'string' ? displayNameProblem(members.client_name) : undefined;
  if (nameProblem) return { error: 'invalid_client_metadata', description: `client_name ${nameProblem}.` };
  const grantTypes = members.grant_types ?? CLIENT_GRANT_TYPES;
  if (!Array.isArray(grantTypes) || !grantTypes.every((grant) => CLIENT_GRANT_TYPES.includes(grant as string))) {
    return {
      error: 'invalid_client_metadata',
      description: `grant_types may only contain ${CLIENT_GRANT_TYPES.join(' and ')}.`,
    };
  }
  // A client without the code grant could never use what it registers for (refresh tokens come from a code).
  if (!grantTypes.includes('authorization_code')) {
    return { error: 'invalid_client_metadata', description: 'grant_types must include authorization_code.' };
  }
  const responseTypes = members.response_types ?? ['code'];
  if (!Array.isArray(responseTypes) || !responseTypes.every((type) => type === 'code')) {
    return { error: 'invalid_client_metadata', description: 'response_types may only contain code.' };
  }
  const redirectUris = members.redirect_uris;
  if (!Array.isArray(redirectUris) || redirectUris.length === 0) {
    return { error: 'invalid_redirect_uri', description: 'redirect_uris must list at least one URI.' };
  }
  if (redirectUris.length > MAX_REDIRECT_URIS) {
    return { error: 'invalid_redirect_uri', description: `At most ${MAX_REDIRECT_URIS} redirect URIs.` };
  }
  for (const uri of redirectUris) {
    if (typeof uri !== 'string') {
      return { error: 'invalid_redirect_uri', description: 'Each redirect URI must be a string.' };
    }
    if (!allowedRedirect(uri)) {
      return {
        error: 'invalid_redirect_uri',
        description: `Redirect URI ${JSON.stringify(uri.slice(0, 200))} is neither loopback http nor https.`,
      };
    }
    if (!showsWhereItLeads(uri)) {
      return {
        error: 'invalid_redirect_uri',
        description: `Redirect URI ${JSON.stringify(uri.slice(0, 200))} must be printable ASCII, without a backslash, with its host written as it is reached (an international host in its xn-- form).`,
      };
    }
  }
  return undefined;
}

/**
 * Whether a URL reads as where it leads: printable ASCII only (an international host written in
 * its `xn--` form), no backslash, and its host written as the host a browser goes to. A consent
 * page shows redirect URIs and URL client ids as written; a look-alike letter (`vscоde.dev` with
 * a Cyrillic о), an encoded dot (`vscode.dev%2eevil.com`) or a number spelled otherwise
 * (`127.1`) would show one host and lead to another.
 */
export function showsWhereItLeads(uri: string): boolean {
  if (!/^[\x21-\x7e]+$/.test(uri) || uri.includes('\\')) return false;
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return false;
  }
  const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(uri)?.[1];
  return authority !== undefined && authority.replace(/:\d*$/, '').toLowerCase() === url.hostname;
}

/** An `https` URI, or an `http` one on a loopback host (RFC 8252 7.3); no fragment, no credentials. */
function allowedRedirect(uri: string): boolean {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return false;
  }
  if (url.hash || url.username || url.password) return false;
  if (url.protocol === 'https:') return true;
  return url.protocol === 'http:' && isLoopbackRedirectHost(url.hostname);
}

/**
 * Whether `requested` is one of the client's redirect URIs: the same string, or, for an http
 * loopback IP literal, the same in all but the port (RFC 8252 7.3: a native app listens on
 * whatever port is free when it starts). Compared as text with the port taken out, not after
 * URL parsing: a parser reads `127.1`, `0x7f.0.0.1`, `/x/../callback` and a bare `?` as the
 * registered URI too, and the consent page would show those spellings as where the code goes.
 */
export function isRegisteredRedirectUri(registered: readonly string[], requested: string): boolean {
  if (registered.includes(requested)) return true;
  // showsWhereItLeads also refuses what a URL parser drops (`/call\nback` would match `/callback`
  // while the consent page and the token request see another string).
  if (!showsWhereItLeads(requested)) return false;
  const wanted = new URL(requested);
  if (wanted.protocol !== 'http:' || !redirectPortMayVary(wanted.hostname)) return false;
  if (wanted.hash || wanted.username || wanted.password) return false;
  const unported = withoutAuthorityPort(requested);
  return registered.some((uri) => uri.startsWith('http://') && withoutAuthorityPort(uri) === unported);
}

/** `http://host:port/rest` as `http://host/rest`: the authority's port, and only that, taken out. */
function withoutAuthorityPort(uri: string): string {
  return uri.replace(/^(http:\/\/(?:\[[^\]/]*\]|[^/?#:]*))(?::\d*)?/i, '$1');
}
