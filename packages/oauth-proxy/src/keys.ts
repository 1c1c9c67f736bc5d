import { type CryptoKey, calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';

export type Alg = 'ES256' | 'EdDSA';

/** The access-token signing key, loaded once: both halves imported, the public JWK ready for `jwks_uri`. */
export interface SigningMaterial {
  alg: Alg;
  kid: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  publicJwk: JWK;
}

/** A fresh private signing key as a JWK (store it as `OAUTH_PROXY_SIGNING_KEY`). */
export async function generateSigningKey(alg: Alg = 'ES256'): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, {
    extractable: true,
    ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}),
  });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, alg, kid: await calculateJwkThumbprint(jwk) };
}

export async function loadSigningKey(jwk: JWK): Promise<SigningMaterial> {
  if (!jwk.d) throw new Error('The signing key must be a private JWK (with "d").');
  let alg: Alg;
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') alg = 'ES256';
  else if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') alg = 'EdDSA';
  else throw new Error('The signing key must be EC P-256 (ES256) or OKP Ed25519 (EdDSA).');
  if (jwk.alg !== undefined && jwk.alg !== alg && !(alg === 'EdDSA' && jwk.alg === 'Ed25519')) {
    throw new Error(`The signing key says alg ${jwk.alg}, but it is a ${alg} key.`);
  }
  const { d: _private, ...publicPart } = jwk;
  const kid = jwk.kid ?? (await calculateJwkThumbprint(publicPart));
  const publicJwk: JWK = { ...publicPart, alg, kid, use: 'sig' };
  delete publicJwk.key_ops;
  return {
    alg,
    kid,
    privateKey: (await importJWK({ ...jwk, alg }, alg)) as CryptoKey,
    publicKey: (await importJWK(publicJwk, alg)) as CryptoKey,
    publicJwk,
  };
}
