import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';

export interface SigningKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  jwk: JWK;
}

export async function signingKey(kid: string, alg = 'RS256'): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicKey, jwk };
}

/**
 * A stand-in identity provider on 127.0.0.1: OIDC discovery metadata and a JWKS, counting
 * requests, with keys that tests can rotate. Issuer `http://127.0.0.1:<port>/realms/test`.
 */
export class FakeIdp {
  readonly #server: Server;
  issuer = '';
  jwksUri = '';
  jwksFetches = 0;
  metadataFetches = 0;
  published: SigningKey[] = [];
  /** What the metadata document claims as issuer (defaults to the real one). */
  advertisedIssuer: string | undefined;

  private constructor() {
    this.#server = createServer((request, response) => {
      const send = (body: unknown) => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify(body));
      };
      if (request.url === '/realms/test/protocol/openid-connect/certs') {
        this.jwksFetches += 1;
        return send({ keys: this.published.map((key) => key.jwk) });
      }
      if (request.url === '/realms/test/.well-known/openid-configuration') {
        this.metadataFetches += 1;
        return send({ issuer: this.advertisedIssuer ?? this.issuer, jwks_uri: this.jwksUri });
      }
      response.writeHead(404).end();
    });
  }

  static async start(published: SigningKey[]): Promise<FakeIdp> {
    const idp = new FakeIdp();
    idp.published = published;
    await new Promise<void>((resolve) => idp.#server.listen(0, '127.0.0.1', resolve));
    const { port } = idp.#server.address() as AddressInfo;
    idp.issuer = `http://127.0.0.1:${port}/realms/test`;
    idp.jwksUri = `${idp.issuer}/protocol/openid-connect/certs`;
    return idp;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

export const RESOURCE = 'http://localhost:8000/mcp';
export const now = () => Math.floor(Date.now() / 1000);

/** A signed access token; `claims` override the defaults, `undefined` removes a claim. */
export async function accessToken(
  idp: FakeIdp,
  key: SigningKey,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const payload: Record<string, unknown> = {
    iss: idp.issuer,
    aud: RESOURCE,
    sub: 'alice-sub',
    azp: 'vscode',
    scope: 'mcp:access expenses:read',
    iat: now(),
    exp: now() + 300,
    ...claims,
  };
  for (const [name, value] of Object.entries(payload)) if (value === undefined) delete payload[name];
  return await new SignJWT(payload as JWTPayload)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...header })
    .sign(key.privateKey);
}

export function base64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}
