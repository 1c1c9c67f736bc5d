import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';

/** 256 random bits, base64url (43 characters), optionally behind a recognisable prefix. */
export function randomToken(prefix = ''): string {
  return prefix + randomBytes(32).toString('base64url');
}

/** Only hashes of bearer secrets (codes, refresh tokens, states, CSRF tokens) are stored. */
export function sha256(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** PKCE S256 (RFC 7636 section 4.2). */
export function s256(verifier: string): string {
  return createHash('sha256').update(verifier).digest('base64url');
}

/** RFC 7636 section 4.1: 43 to 128 characters of the unreserved set. */
export const PKCE_VERIFIER = /^[A-Za-z0-9\-._~]{43,128}$/;
/** An S256 challenge is a base64url SHA-256: exactly 43 characters. */
export const PKCE_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;

export function safeEqual(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

/** Reads a 32-byte key given as base64, base64url or hex. */
export function parseKey(value: string | Uint8Array, what: string): Buffer {
  let key: Buffer;
  if (typeof value !== 'string') key = Buffer.from(value);
  else if (/^[0-9a-fA-F]{64}$/.test(value)) key = Buffer.from(value, 'hex');
  else key = Buffer.from(value.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (key.length !== 32) {
    throw new Error(`${what} must be 32 bytes (base64, base64url or hex); it has ${key.length}.`);
  }
  return key;
}

/** A key for one purpose, derived from the configured secret (HKDF-SHA256), so no key serves two uses. */
export function deriveKey(secret: Buffer, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), `mcp-auth-stack/oauth-proxy/${purpose}`, 32));
}

const VERSION = 1;

/**
 * AES-256-GCM with a random 96-bit nonce; `context` is authenticated additional data (the row
 * the ciphertext belongs to), so a ciphertext copied into another row does not decrypt.
 * Layout: version (1 byte) | nonce (12) | tag (16) | ciphertext.
 */
export function encrypt(key: Buffer, plaintext: string, context: string): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(context));
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return Buffer.concat([Buffer.from([VERSION]), iv, cipher.getAuthTag(), body]);
}

export function decrypt(key: Buffer, sealed: Buffer, context: string): string {
  if (sealed.length < 29 || sealed[0] !== VERSION) throw new Error('Unknown ciphertext format.');
  const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(1, 13));
  decipher.setAAD(Buffer.from(context));
  decipher.setAuthTag(sealed.subarray(13, 29));
  return Buffer.concat([decipher.update(sealed.subarray(29)), decipher.final()]).toString('utf8');
}

/** `payload.signature`, both base64url; HMAC-SHA256. */
export function sign(key: Buffer, payload: unknown): string {
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`;
}

export function verifySigned(key: Buffer, value: string): unknown {
  const [body, signature, extra] = value.split('.');
  if (!body || !signature || extra !== undefined) return undefined;
  if (!safeEqual(signature, createHmac('sha256', key).update(body).digest('base64url'))) return undefined;
  try {
    return JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}
