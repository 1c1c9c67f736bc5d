#!/usr/bin/env bash
# Installs PostgreSQL from Debian's packages if it is missing, starts a cluster on loopback,
# and creates the role the tests use (it may create databases: each test file gets its own).
# Prints the TEST_DATABASE_URL to use. Needs root (CI runs as root; elsewhere use sudo).
set -euo pipefail
# Everything but the URL goes to stderr, so callers can capture stdout as the URL.
exec 3>&1 1>&2

# The postmaster keeps every descriptor it inherits open for its whole life: fd 3 here is the
# pipe of the caller's `TEST_DATABASE_URL=$(...)`, which would then wait forever, and a CI
# runner's own pipes would keep the job from ending. So whatever may start the server (apt's
# postinst, pg_ctlcluster) runs with nothing above stderr open.
without_inherited_fds() {
  (
    for fd_path in /proc/self/fd/*; do
      fd=${fd_path##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec "$@"
  )
}

set_up_cluster() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    without_inherited_fds apt-get install -y -qq postgresql >/dev/null
  fi

  local version
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  if ! pg_lsclusters -h | grep -q .; then
    pg_createcluster "$version" main >/dev/null
  fi
  read -r cluster_version cluster_name port _ < <(pg_lsclusters -h | head -n 1)
  without_inherited_fds pg_ctlcluster "$cluster_version" "$cluster_name" start || true
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
}
set_up_cluster

echo "postgres://mcp_test:mcp_test@127.0.0.1:${port}/postgres" >&3
