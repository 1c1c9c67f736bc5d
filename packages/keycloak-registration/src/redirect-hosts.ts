import { isLoopbackRedirectHost } from '@mcp-auth-stack/loopback';

/**
 * Besides loopback, the hosts the realm lets an anonymous registration send codes to over https
 * (keycloak/realm-mcp.json, `anonymous-registration-safe-clients`): VS Code's web pages. The MCP
 * server's own host is added by whoever knows it.
 */
export const DEFAULT_REDIRECT_HOSTS: readonly string[] = ['vscode.dev', 'insiders.vscode.dev', 'code.visualstudio.com'];

/**
 * Whether `uri` sends codes to a loopback host (`http` or `https`), or over `https`
 * to one of `hosts`. Host names are compared as text (after URL parsing) and never resolved: Keycloak 26.7.3 asks
 * DNS whether a host is loopback, so a stranger's name that resolves to 127.0.0.1 while he
 * registers passes there (decision 74).
 */
export function isAllowedRedirectUri(uri: string, hosts: readonly string[]): boolean {
  // A backslash is a slash to a URL parser and not to Keycloak's (`http://localhost\@evil/`
  // names host evil there); whitespace is no part of a redirect URI; `*` is a wildcard to
  // Keycloak (`https://vscode.dev/*` matches every page there), as to the realm's executor.
  if (/[\\\s*]/.test(uri)) return false;
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return false;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
  if (url.username !== '' || url.password !== '') return false;
  if (isLoopbackRedirectHost(url.hostname)) return true;
  return url.protocol === 'https:' && hosts.includes(url.hostname);
}
