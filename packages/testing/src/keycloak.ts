/** A Keycloak realm's OIDC endpoints as the tests use them (no Keycloak is started here: see @mcp-auth-stack/testing-stack/keycloak). */
import { createPublicKey, verify } from 'node:crypto';

export interface TokenResponse {
  status: number;
  body: Record<string, unknown>;
}

/** A request to the realm's token endpoint, answered as it came: refusals are what some tests check. */
export async function postToken(realmUrl: string, form: Record<string, string>): Promise<TokenResponse> {
  const response = await fetch(`${realmUrl}/protocol/openid-connect/token`, {
    method: 'POST',
    body: new URLSearchParams(form),
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

/** Checks an RS256 signature against the realm's JWKS, so the tests read tokens Keycloak really signed. */
export async function verifyRs256(realmUrl: string, jwt: string): Promise<boolean> {
  const [header, payload, signature] = jwt.split('.');
  if (!header || !payload || !signature) return false;
  const { kid, alg } = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { kid: string; alg: string };
  if (alg !== 'RS256') return false;
  const jwks = (await (await fetch(`${realmUrl}/protocol/openid-connect/certs`)).json()) as {
    keys: (Record<string, unknown> & { kid: string })[];
  };
  const jwk = jwks.keys.find((key) => key.kid === kid);
  if (!jwk) return false;
  const key = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  return verify('sha256', Buffer.from(`${header}.${payload}`), key, Buffer.from(signature, 'base64url'));
}
