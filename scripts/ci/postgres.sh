#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages if it is missing, starts a cluster on loopback,
# and creates the role the tests use (it may create databases: each test file gets its own).
# Prints the TEST_DATABASE_URL to use. Needs root (CI runs as root; elsewhere use sudo).
set -euo pipefail
# Everything but the URL goes to stderr, so callers can capture stdout as the URL.
exec 3>&1 1>&2

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | grep -q .; then
  pg_createcluster "$version" main >/dev/null
fi
read -r cluster_version cluster_name port _ < <(pg_lsclusters -h | head -n 1)
pg_ctlcluster "$cluster_version" "$cluster_name" start || true
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p "$port" >/dev/null

runuser -u postgres -- psql -q -p "$port" -v ON_ERROR_STOP=1 <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mcp_test') THEN
    CREATE ROLE mcp_test LOGIN CREATEDB PASSWORD 'mcp_test'; -- test-only credentials
  END IF;
END $$;
SQL

echo "postgres://mcp_test:mcp_test@127.0.0.1:${port}/postgres" >&3
