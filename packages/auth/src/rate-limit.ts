import { isIP } from 'node:net';

/**
 * The caller's address, for per-address limits: the socket's peer, or, behind a reverse proxy
 * that is trusted (`trustForwardedFor`), the last entry of `X-Forwarded-For`. The last one,
 * because a proxy appends the address it saw to whatever the caller sent: the entries before it
 * are the caller's own words, and picking them would let a caller choose its key at will.
 */
export function clientAddress(
  request: Request,
  env: Record<string, unknown> | undefined,
  trustForwardedFor = false,
): string {
  if (trustForwardedFor) {
    const forwarded = request.headers.get('x-forwarded-for')?.split(',').at(-1)?.trim();
    if (forwarded) return limitKey(forwardedAddress(forwarded));
  }
  const incoming = env?.incoming as { socket?: { remoteAddress?: string } } | undefined;
  return limitKey(incoming?.socket?.remoteAddress ?? 'unknown');
}

/**
 * The address of an `X-Forwarded-For` entry that names its port too, as some proxies write it
 * (Azure Application Gateway: `203.0.113.7:51234`, `[2001:db8::1]:51234`): otherwise every
 * connection of one caller would count under a key of its own.
 */
function forwardedAddress(entry: string): string {
  const ipv4 = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(entry)?.[1];
  if (ipv4) return ipv4;
  return /^\[([0-9a-f:.]+)\](?::\d{1,5})?$/i.exec(entry)?.[1] ?? entry;
}

/**
 * The key a limit counts under: an IPv4 address as it is, an IPv6 address by its /64 (one
 * host holds a whole /64 and could otherwise take a new address for every request).
 */
function limitKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return mapped;
  if (isIP(address) !== 6) return address;
  const [head = '', tail = ''] = address.split('::');
  const headGroups = head ? head.split(':') : [];
  const tailGroups = address.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = address.includes('::')
    ? [...headGroups, ...Array(8 - headGroups.length - tailGroups.length).fill('0'), ...tailGroups]
    : headGroups;
  return `${groups
    .slice(0, 4)
    .map((group) => Number.parseInt(group, 16).toString(16))
    .join(':')}::/64`;
}

/**
 * At most `limit` events per key per window. A window opens with the first event after the last
 * one closed, not on the clock's minute, so a refusal can say when the window ends
 * (`retryAfterSeconds`). All keys share it and their counts are forgotten together: memory is
 * bounded by the keys seen in one window.
 */
export class FixedWindowLimiter {
  readonly #limit: number;
  readonly #windowMs: number;
  #opened = Number.NEGATIVE_INFINITY;
  #counts = new Map<string, number>();

  constructor(limit: number, windowMs: number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
  }

  /** Counts one event for `key`; false once the key is over its limit in this window. */
  allow(key: string): boolean {
    const now = Date.now();
    if (now - this.#opened >= this.#windowMs) {
      this.#opened = now;
      this.#counts = new Map();
    }
    const count = (this.#counts.get(key) ?? 0) + 1;
    this.#counts.set(key, count);
    return count <= this.#limit;
  }

  /** Whole seconds until the current window closes, at least 1: the `Retry-After` of a refusal. */
  retryAfterSeconds(): number {
    return Math.max(1, Math.ceil((this.#opened + this.#windowMs - Date.now()) / 1000));
  }
}
