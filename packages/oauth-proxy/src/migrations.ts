import type { Migration } from '@mcp-auth-stack/database';

export const OAUTH_PROXY_NAMESPACE = 'oauth_proxy';

/**
 * Everything the proxy remembers lives here, so any replica can serve any step of a login.
 * Bearer secrets (states, CSRF tokens, codes, refresh tokens, client secrets) are stored as
 * SHA-256 hashes; upstream tokens as AES-256-GCM ciphertext.
 */
export const oauthProxyMigrations: Migration[] = [
  {
    version: 1,
    name: 'create oauth proxy tables',
    sql: `
      CREATE TABLE oauth_proxy_clients (
        client_id text PRIMARY KEY,
        secret_sha256 bytea,
        client_name text,
        redirect_uris text[] NOT NULL,
        metadata jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );

      -- An authorization request waiting for the user's decision on the consent page.
      CREATE TABLE oauth_proxy_consent_requests (
        id_sha256 bytea PRIMARY KEY,
        csrf_sha256 bytea NOT NULL,
        browser_sha256 bytea NOT NULL,
        client_id text NOT NULL,
        redirect_uri text NOT NULL,
        scopes text[] NOT NULL,
        client_state text,
        code_challenge text NOT NULL,
        resource text NOT NULL,
        expires_at timestamptz NOT NULL
      );
      CREATE INDEX oauth_proxy_consent_requests_expiry ON oauth_proxy_consent_requests (expires_at);

      -- A login in progress at the upstream provider; the upstream \`state\` is the key, single use.
      CREATE TABLE oauth_proxy_transactions (
        state_sha256 bytea PRIMARY KEY,
        browser_sha256 bytea NOT NULL,
        client_id text NOT NULL,
        redirect_uri text NOT NULL,
        scopes text[] NOT NULL,
        client_state text,
        code_challenge text NOT NULL,
        resource text NOT NULL,
        upstream_verifier text NOT NULL,
        nonce text NOT NULL,
        expires_at timestamptz NOT NULL
      );
      CREATE INDEX oauth_proxy_transactions_expiry ON oauth_proxy_transactions (expires_at);

      -- One user's authorization of one client; upstream tokens sealed with AES-256-GCM.
      CREATE TABLE oauth_proxy_grants (
        id text PRIMARY KEY,
        client_id text NOT NULL,
        user_id text NOT NULL,
        user_name text,
        scopes text[] NOT NULL,
        resource text NOT NULL,
        upstream_tokens bytea NOT NULL,
        upstream_expires_at timestamptz,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        revoked_at timestamptz
      );
      CREATE INDEX oauth_proxy_grants_expiry ON oauth_proxy_grants (expires_at);

      CREATE TABLE oauth_proxy_codes (
        code_sha256 bytea PRIMARY KEY,
        grant_id text NOT NULL REFERENCES oauth_proxy_grants (id) ON DELETE CASCADE,
        client_id text NOT NULL,
        redirect_uri text NOT NULL,
        code_challenge text NOT NULL,
        expires_at timestamptz NOT NULL,
        used_at timestamptz
      );
      CREATE INDEX oauth_proxy_codes_grant ON oauth_proxy_codes (grant_id);

      CREATE TABLE oauth_proxy_refresh_tokens (
        token_sha256 bytea PRIMARY KEY,
        grant_id text NOT NULL REFERENCES oauth_proxy_grants (id) ON DELETE CASCADE,
        client_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        used_at timestamptz
      );
      CREATE INDEX oauth_proxy_refresh_tokens_grant ON oauth_proxy_refresh_tokens (grant_id);
    `,
  },
  {
    version: 2,
    name: 'redirect_uri sent at /authorize (then required at /token)',
    sql: `
      ALTER TABLE oauth_proxy_consent_requests ADD COLUMN redirect_uri_sent boolean NOT NULL DEFAULT true;
      ALTER TABLE oauth_proxy_transactions ADD COLUMN redirect_uri_sent boolean NOT NULL DEFAULT true;
      ALTER TABLE oauth_proxy_codes ADD COLUMN redirect_uri_sent boolean NOT NULL DEFAULT true;
    `,
  },
  {
    version: 3,
    name: 'when a registered client last got tokens (for cleanup)',
    sql: `ALTER TABLE oauth_proxy_clients ADD COLUMN last_used_at timestamptz;`,
  },
  {
    version: 4,
    name: 'when a consent page was shown (an approval sooner than a reader could give is refused)',
    sql: `ALTER TABLE oauth_proxy_consent_requests ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();`,
  },
];
