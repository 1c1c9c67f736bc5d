import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CryptoKey, generateKeyPair, SignJWT } from 'jose';

export interface FakeUser {
  sub: string;
  oid: string;
  name: string;
}

export const ALICE: FakeUser = { sub: 'alice-sub', oid: 'alice-oid', name: 'Alice' };

/**
 * A stand-in OIDC provider on 127.0.0.1 that has no DCR: one confidential client, authorization
 * code + PKCE, refresh with rotation. `/authorize` "logs in" `nextUser` at once and redirects back.
 * Any path ending in /authorize or /token works, so it can also play Entra's tenant-scoped paths.
 */
export class FakeUpstream {
  readonly #server: Server;
  base = '';
  issuer = '';
  /** `iss` of issued ID tokens (default `issuer`). */
  idTokenIssuer: string | undefined;
  /** `aud` of issued ID tokens (default `clientId`). */
  idTokenAudience: string | undefined;
  /** `exp` of issued ID tokens, in seconds since the epoch (default five minutes from issue). */
  idTokenExpiresAt: number | undefined;
  /** More claims of issued ID tokens (e.g. Entra's `tid`). */
  extraIdTokenClaims: Record<string, unknown> = {};
  readonly clientId = 'mcp-proxy';
  readonly clientSecret = 'proxy-secret-123';
  nextUser: FakeUser = ALICE;
  denyNext = false;
  /** The `nonce` to put in the next ID token instead of the one the login sent (`null`: none). */
  nonceOverride: string | null | undefined;
  /** Its answers to a code leave the ID token out (an OpenID Connect provider gone wrong, or an attacker's). */
  omitsLoginIdToken = false;
  /** `expires_in` of the token answers; undefined leaves it out (RFC 6749 5.1 only recommends it). */
  accessTokenTtl: number | undefined = 300;
  /** Token answers that succeed carry a megabyte of padding, sent chunked (an upstream gone wrong). */
  oversizedAnswers = false;
  /** What the next refresh gets instead of tokens (a 429, Entra's 401 invalid_client); then cleared. */
  nextRefreshRefusal: { status: number; error: string } | undefined;
  /** `scopes_supported` of its discovery document; undefined leaves the member out. */
  scopesSupported: string[] | undefined;
  /** RFC 9207: its metadata announces `iss` on authorization answers (as Keycloak's does). */
  announcesIss = false;
  /** The `iss` its authorization answers carry (Keycloak: its issuer); undefined sends none. */
  sendsIss: string | undefined;
  /** When set, refresh answers name this user instead of the one signed in (an upstream gone wrong). */
  refreshUserOverride: FakeUser | undefined;
  /** When set, refresh answers wait for it (the upstream slow to answer). */
  refreshesHeldUntil: Promise<void> | undefined;
  /** Every token it handed out, to check none is stored in plaintext. */
  issued: string[] = [];
  authorizeRequests: URLSearchParams[] = [];
  tokenRequests: URLSearchParams[] = [];

  /** How many token requests of this grant type it has answered (refreshes: its `refresh_token`). */
  tokenRequestCount(grantType: 'authorization_code' | 'refresh_token'): number {
    return this.tokenRequests.filter((form) => form.get('grant_type') === grantType).length;
  }
  #codes = new Map<string, { redirectUri: string; challenge: string; nonce: string; user: FakeUser; scope: string }>();
  #refresh = new Map<string, { user: FakeUser; scope: string }>();
  #key!: CryptoKey;

  private constructor() {
    this.#server = createServer((request, response) => {
      this.#handle(request.method ?? 'GET', request.url ?? '/', request, response).catch((error) => {
        response.writeHead(500).end(String(error));
      });
    });
  }

  static async start(): Promise<FakeUpstream> {
    const idp = new FakeUpstream();
    idp.#key = (await generateKeyPair('ES256')).privateKey;
    await new Promise<void>((resolve) => idp.#server.listen(0, '127.0.0.1', resolve));
    const { port } = idp.#server.address() as AddressInfo;
    idp.base = `http://127.0.0.1:${port}`;
    idp.issuer = `${idp.base}/realms/upstream`;
    return idp;
  }

  get discoveryUrl(): string {
    return `${this.issuer}/.well-known/openid-configuration`;
  }

  async #handle(
    method: string,
    rawUrl: string,
    request: import('node:http').IncomingMessage,
    response: import('node:http').ServerResponse,
  ) {
    const url = new URL(rawUrl, this.base);
    const json = (status: number, body: unknown) => {
      response.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      response.end(JSON.stringify(body));
    };
    const tokenAnswer = (body: Record<string, unknown>) => {
      if (!this.oversizedAnswers) return json(200, body);
      response.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      // Two writes: no Content-Length, so the reader only learns the size by reading.
      response.write(`${JSON.stringify(body).slice(0, -1)},"pad":"`);
      response.end(`${'x'.repeat(1024 * 1024)}"}`);
    };
    if (url.pathname === '/realms/upstream/.well-known/openid-configuration') {
      return json(200, {
        issuer: this.issuer,
        authorization_endpoint: `${this.issuer}/protocol/openid-connect/auth/authorize`,
        token_endpoint: `${this.issuer}/protocol/openid-connect/token`,
        userinfo_endpoint: `${this.issuer}/protocol/openid-connect/userinfo`,
        code_challenge_methods_supported: ['S256'],
        ...(this.announcesIss ? { authorization_response_iss_parameter_supported: true } : {}),
        ...(this.scopesSupported ? { scopes_supported: this.scopesSupported } : {}),
      });
    }
    if (method === 'GET' && url.pathname.endsWith('/authorize')) {
      const query = url.searchParams;
      this.authorizeRequests.push(query);
      const redirectUri = query.get('redirect_uri') ?? '';
      const target = new URL(redirectUri);
      if (query.get('client_id') !== this.clientId || query.get('code_challenge_method') !== 'S256') {
        response.writeHead(400).end('bad authorization request');
        return;
      }
      if (this.denyNext) {
        this.denyNext = false;
        target.searchParams.set('error', 'access_denied');
      } else {
        const code = randomBytes(16).toString('hex');
        this.#codes.set(code, {
          redirectUri,
          challenge: query.get('code_challenge') ?? '',
          nonce: this.nonceOverride === undefined ? (query.get('nonce') ?? '') : (this.nonceOverride ?? ''),
          user: this.nextUser,
          scope: query.get('scope') ?? '',
        });
        target.searchParams.set('code', code);
      }
      target.searchParams.set('state', query.get('state') ?? '');
      if (this.sendsIss !== undefined) target.searchParams.set('iss', this.sendsIss);
      response.writeHead(302, { location: target.toString() }).end();
      return;
    }
    if (method === 'POST' && url.pathname.endsWith('/token')) {
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      const form = new URLSearchParams(Buffer.concat(chunks).toString());
      this.tokenRequests.push(form);
      if (form.get('client_id') !== this.clientId || form.get('client_secret') !== this.clientSecret) {
        return json(401, { error: 'invalid_client' });
      }
      if (form.get('grant_type') === 'authorization_code') {
        const entry = this.#codes.get(form.get('code') ?? '');
        this.#codes.delete(form.get('code') ?? '');
        const verifier = form.get('code_verifier') ?? '';
        const challenge = createHash('sha256').update(verifier).digest('base64url');
        if (!entry || entry.redirectUri !== form.get('redirect_uri') || entry.challenge !== challenge) {
          return json(400, { error: 'invalid_grant' });
        }
        const { id_token: _idToken, ...withoutIdToken } = await this.#tokens(entry.user, entry.scope, entry.nonce);
        return tokenAnswer(this.omitsLoginIdToken ? withoutIdToken : { ...withoutIdToken, id_token: _idToken });
      }
      if (form.get('grant_type') === 'refresh_token') {
        const refusal = this.nextRefreshRefusal;
        if (refusal) {
          this.nextRefreshRefusal = undefined;
          return json(refusal.status, { error: refusal.error });
        }
        await this.refreshesHeldUntil;
        const entry = this.#refresh.get(form.get('refresh_token') ?? '');
        if (!entry) return json(400, { error: 'invalid_grant' });
        this.#refresh.delete(form.get('refresh_token') ?? '');
        return tokenAnswer(await this.#tokens(this.refreshUserOverride ?? entry.user, entry.scope, undefined));
      }
      return json(400, { error: 'unsupported_grant_type' });
    }
    if (url.pathname.endsWith('/userinfo')) {
      return json(200, { sub: this.nextUser.sub, name: this.nextUser.name });
    }
    response.writeHead(404).end();
  }

  async #tokens(user: FakeUser, scope: string, nonce: string | undefined) {
    const accessToken = `up_at_${randomBytes(24).toString('base64url')}`;
    const refreshToken = `up_rt_${randomBytes(24).toString('base64url')}`;
    const claims: Record<string, unknown> = {
      ...this.extraIdTokenClaims,
      sub: user.sub,
      oid: user.oid,
      name: user.name,
    };
    if (nonce) claims.nonce = nonce;
    const idToken = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256' })
      .setIssuer(this.idTokenIssuer ?? this.issuer)
      .setAudience(this.idTokenAudience ?? this.clientId)
      .setIssuedAt()
      .setExpirationTime(this.idTokenExpiresAt ?? '5m')
      .sign(this.#key);
    this.#refresh.set(refreshToken, { user, scope });
    this.issued.push(accessToken, refreshToken, idToken);
    return {
      access_token: accessToken,
      refresh_token: refreshToken,
      id_token: idToken,
      token_type: 'Bearer',
      expires_in: this.accessTokenTtl,
      scope,
    };
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
