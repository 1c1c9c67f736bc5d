#!/bin/bash
# The parts of the official postgres entrypoint docker-compose.yml uses: on an empty data
# directory, a cluster whose superuser is POSTGRES_USER with POSTGRES_PASSWORD (password needed
# over the network), the database POSTGRES_DB, then /docker-entrypoint-initdb.d/*.sql; the
# server runs as the postgres user, listening on every interface.
set -euo pipefail
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown -R postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}
  # UTF-8, as the official image's clusters (initdb would otherwise pick SQL_ASCII here).
  initdb -D "$PGDATA" -U "$user" --pwfile=<(printf '%s' "${POSTGRES_PASSWORD:?}") \
    --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo 'host all all all scram-sha-256' >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  database=${POSTGRES_DB:-$user}
  if [ "$database" != postgres ]; then psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -qc "CREATE DATABASE \"$database\""; fi
  for file in /docker-entrypoint-initdb.d/*.sql; do
    [ -e "$file" ] && psql -v ON_ERROR_STOP=1 -U "$user" -d "$database" -qf "$file"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
if [ "$1" = postgres ]; then shift; exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"; fi
exec "$@"
