import { Resolver } from 'node:dns/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { isLoopbackAddress } from '@mcp-auth-stack/loopback';
import { OAuthError } from './errors.ts';

/** Addresses a server-side fetch must never reach: private, loopback, link-local, CGNAT, multicast, reserved. */
const BLOCKED = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  BLOCKED.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  // IPv4-compatible (deprecated, `::127.0.0.1`; takes in `::` and `::1`): it embeds an IPv4
  // address. Site-local (deprecated, still routed inside some networks). IPv4-mapped addresses
  // are checked as the IPv4 address they carry (isPrivateAddress).
  ['::', 96],
  ['fec0::', 10],
  // NAT64 (well-known and local-use prefixes), 6to4 and Teredo embed an IPv4 address that a
  // relay would reach: any of them could carry a private one.
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  // IPv4-translated (SIIT, `::ffff:0:a.b.c.d`): a translator maps it to the IPv4 address.
  ['::ffff:0:0:0', 96],
  ['100::', 64],
  ['2001::', 32],
  ['2002::', 16],
  // Documentation (two prefixes), and SRv6 segment identifiers (routing, not hosts).
  ['2001:db8::', 32],
  ['3fff::', 20],
  ['5f00::', 16],
  // Benchmarking (RFC 5180): never a real host.
  ['2001:2::', 48],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  BLOCKED.addSubnet(network, prefix, 'ipv6');
}

/** True for an address that is not on the public internet (IPv4-mapped IPv6 checked as IPv4). */
export function isPrivateAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) return BLOCKED.check(mapped[1], 'ipv4');
  // The same in hex (`::ffff:7f00:1` is 127.0.0.1).
  const mappedHex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
  if (mappedHex?.[1] && mappedHex[2]) {
    const high = Number.parseInt(mappedHex[1], 16);
    const low = Number.parseInt(mappedHex[2], 16);
    return BLOCKED.check(`${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`, 'ipv4');
  }
  const family = isIP(address);
  if (family === 4) return BLOCKED.check(address, 'ipv4');
  if (family === 6) return BLOCKED.check(address, 'ipv6');
  return true;
}

/** A document the SSRF-safe fetch refused: an `invalid_client` when it was a client's metadata document. */
export class SafeFetchError extends OAuthError {
  override readonly name = 'SafeFetchError';
  constructor(reason: string) {
    super('invalid_client', reason);
  }
}

export interface SafeFetchOptions {
  maxBytes: number;
  timeoutMs: number;
  /**
   * Development only: permit http, and loopback addresses (where a developer serves a test
   * document). Other private, link-local and reserved ranges stay refused even then: a cloud
   * metadata service or a neighbour on the network is never a client's document.
   */
  allowInsecure: boolean;
  /** The DNS servers to ask (`host:port`), instead of the system's (`/etc/resolv.conf`): for tests. */
  dnsServers?: string[];
}

/**
 * The addresses of `hostname`, asked of the DNS servers themselves (c-ares, on the event loop),
 * not through the system's `getaddrinfo`: Node runs that on its thread pool, at most two at a
 * time beside everything else that waits there (every other lookup of the process: the upstream
 * identity provider's, the database's). A client id naming a host whose name server never
 * answers held one of the two for the resolver's whole timeout; 30 such ids from one address
 * (its limit a minute) stopped every sign-in. A query here costs a socket and a timer until the
 * fetch's deadline cancels it. `localhost` names are loopback without asking (RFC 6761).
 */
async function resolveAddresses(resolver: Resolver, hostname: string): Promise<{ address: string; family: number }[]> {
  const name = hostname.replace(/\.$/, '');
  if (name === 'localhost' || name.endsWith('.localhost')) {
    return [
      { address: '127.0.0.1', family: 4 },
      { address: '::1', family: 6 },
    ];
  }
  const [v4, v6] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]);
  if (v4.status === 'rejected' && v6.status === 'rejected') throw v4.reason;
  return [
    ...(v4.status === 'fulfilled' ? v4.value.map((address) => ({ address, family: 4 })) : []),
    ...(v6.status === 'fulfilled' ? v6.value.map((address) => ({ address, family: 6 })) : []),
  ];
}

/**
 * GET of a JSON document for server-side use, against SSRF: https only; the address is checked
 * after DNS resolution inside the connection's own lookup, so the checked address is the one
 * connected to (no DNS-rebinding gap); no redirects; a byte limit and an overall deadline.
 */
export function safeFetchJson(
  target: string,
  options: SafeFetchOptions,
): Promise<{ body: unknown; cacheControl: string | undefined }> {
  return new Promise((resolve, reject) => {
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      return reject(new SafeFetchError('not a URL'));
    }
    if (url.protocol !== 'https:' && !(options.allowInsecure && url.protocol === 'http:')) {
      return reject(new SafeFetchError('only https URLs are fetched'));
    }
    if (url.username || url.password) return reject(new SafeFetchError('URLs with credentials are refused'));
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const refused = (address: string) =>
      isPrivateAddress(address) && !(options.allowInsecure && isLoopbackAddress(address));
    if (isIP(host) && refused(host)) {
      return reject(new SafeFetchError('the address is private, loopback or reserved'));
    }
    // A retry for a lost packet: half the deadline, then (c-ares doubles it) the whole. The
    // fetch's deadline comes first, cancels the query and says what happened.
    const resolver = new Resolver({ timeout: Math.max(1, Math.ceil(options.timeoutMs / 2)), tries: 2 });
    if (options.dnsServers) resolver.setServers(options.dnsServers);
    const checkedLookup: LookupFunction = (hostname, lookupOptions, callback) => {
      resolveAddresses(resolver, hostname).then(
        (list) => {
          // Every address is checked, whichever family the connection asks for.
          const bad = list.find((entry) => refused(entry.address));
          const wanted = list.filter((entry) => !lookupOptions.family || entry.family === lookupOptions.family);
          if (wanted.length === 0 || bad) {
            return callback(new SafeFetchError('the host resolves to a private, loopback or reserved address'), '', 0);
          }
          if (lookupOptions.all) return callback(null, wanted as never);
          const first = wanted[0] as { address: string; family: number };
          callback(null, first.address, first.family);
        },
        (error: NodeJS.ErrnoException) => callback(error, '', 0),
      );
    };
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    let settled = false;
    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolver.cancel();
      request.destroy();
      // A network error's own text names addresses, ports and DNS answers (`connect ECONNREFUSED
      // ::1:8080`, `getaddrinfo ENOTFOUND`): told to the caller it would be a port and DNS oracle.
      reject(error instanceof SafeFetchError ? error : new SafeFetchError('the host could not be reached'));
    };
    const request = send(
      url,
      { method: 'GET', lookup: checkedLookup, headers: { accept: 'application/json' }, agent: false },
      (response) => {
        if (response.statusCode !== 200) {
          response.resume();
          return fail(
            new SafeFetchError(`the document answered HTTP ${response.statusCode} (redirects are not followed)`),
          );
        }
        // CIMD draft: a document served as anything but JSON is an error (a paste site's text/plain is no client's identity).
        const mediaType = (response.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
        if (mediaType !== 'application/json' && !/^application\/[^/]+\+json$/.test(mediaType)) {
          response.resume();
          return fail(new SafeFetchError('the document is not served as application/json'));
        }
        const declared = Number(response.headers['content-length'] ?? '0');
        if (declared > options.maxBytes)
          return fail(new SafeFetchError(`the document exceeds ${options.maxBytes} bytes`));
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > options.maxBytes)
            return fail(new SafeFetchError(`the document exceeds ${options.maxBytes} bytes`));
          chunks.push(chunk);
        });
        response.on('error', fail);
        response.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          try {
            const cacheControl = response.headers['cache-control'];
            resolve({ body: JSON.parse(Buffer.concat(chunks).toString('utf8')), cacheControl });
          } catch {
            reject(new SafeFetchError('the document is not JSON'));
          }
        });
      },
    );
    const timer = setTimeout(
      () => fail(new SafeFetchError(`no complete answer within ${options.timeoutMs} ms`)),
      options.timeoutMs,
    );
    request.on('error', fail);
    request.end();
  });
}
