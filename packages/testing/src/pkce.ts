import { createHash, randomBytes } from 'node:crypto';

/** A PKCE pair (RFC 7636): the verifier the client keeps, the S256 challenge it sends. */
export interface Pkce {
  verifier: string;
  challenge: string;
}

/** A fresh PKCE pair: 256 random bits as the verifier (43 characters), its S256 challenge. */
export function createPkce(): Pkce {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}
