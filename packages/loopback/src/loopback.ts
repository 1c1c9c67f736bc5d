import { isIP } from 'node:net';

/*
 * "Is this loopback" is asked of different things (a bind address, a URL's host, a redirect
 * URI's host, a resolved IP) for different permissions, so the answers differ on purpose: each
 * predicate below says where it draws the line and why.
 */

/**
 * How a client on this machine names the server in a URL (WHATWG `URL.hostname`, IPv6 in
 * brackets): the server's default `Host` allow-list, and the hosts of native-app redirect URIs.
 */
export const LOOPBACK_URL_HOSTS: readonly string[] = ['localhost', '127.0.0.1', '[::1]'];

/** 127.0.0.0/8 written as an IPv4 address (`URL` and the OS both normalize to this form). */
function isIpv4Loopback(address: string): boolean {
  return isIP(address) === 4 && address.startsWith('127.');
}

/**
 * A `HOST` to listen on that only this machine can reach: `localhost`, `::1`, 127.0.0.0/8.
 * Why: a listener there is safe without authentication (`none` mode, the agent's open `/chat`).
 */
export function isLoopbackBindAddress(host: string): boolean {
  return host === 'localhost' || host === '::1' || isIpv4Loopback(host);
}

/**
 * A URL's host (`URL.hostname`) that only this machine can reach: `localhost`, `[::1]`,
 * 127.0.0.0/8. Why: a base URL or issuer there is a developer's, so http and locally
 * generated keys are acceptable.
 */
export function isLoopbackUrlHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || isIpv4Loopback(hostname);
}

/**
 * A host a native app's `http` redirect URI may have (`URL.hostname`): the loopback IP literals
 * of RFC 8252 7.3, and `localhost`, which 8.3 only discourages and MCP clients register.
 * Why not all of 127.0.0.0/8: the RFC names these two literals, and clients use nothing else.
 */
export function isLoopbackRedirectHost(hostname: string): boolean {
  return LOOPBACK_URL_HOSTS.includes(hostname);
}

/**
 * Whether a redirect URI on this host matches a registered one whatever its port: only the
 * loopback IP literals (RFC 8252 7.3, kept by OAuth 2.1). Why not `localhost`: a name the hosts
 * file or DNS could point elsewhere gets exact matching, as every other redirect URI.
 */
export function redirectPortMayVary(hostname: string): boolean {
  return hostname === '127.0.0.1' || hostname === '[::1]';
}

/**
 * A resolved IP address (no brackets, no names) on loopback: 127.0.0.0/8 and `::1`, also written
 * as an IPv4-mapped or a fully expanded IPv6 address. Why all spellings: this guards what a
 * server-side fetch may reach after DNS, where an attacker picks the spelling.
 */
export function isLoopbackAddress(address: string): boolean {
  const ipv4 = /^(?:::ffff:)?(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (ipv4 !== undefined) return isIpv4Loopback(ipv4);
  return address === '::1' || /^(0{1,4}:){7}0{0,3}1$/.test(address);
}
