#!/bin/sh
# Initialises PGDATA on first start (superuser POSTGRES_USER / POSTGRES_PASSWORD, database
# POSTGRES_DB, and, if APP_USER is set, an ordinary role APP_USER / APP_PASSWORD owning it),
# and POSTGRES_INITDB_CONF (lines appended to postgresql.conf, e.g. "max_connections = 20"),
# then runs postgres as the postgres user. Settings given on postgres's command line (-c ...)
# would override ALTER SYSTEM: starting values belong in POSTGRES_INITDB_CONF instead.
# Configuration written later with ALTER SYSTEM (postgresql.auto.conf) lives in PGDATA, so a
# persistent volume keeps it across restarts.
set -eu
: "${PGDATA:?PGDATA must be set}" "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}" "${POSTGRES_DB:?}"
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile="$(mktemp)"; printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"; chown postgres "$pwfile"
  runuser -u postgres -- initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  printf '%s\n' "${POSTGRES_INITDB_CONF:-}" >>"$PGDATA/postgresql.conf"
  runuser -u postgres -- pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  runuser -u postgres -- psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q \
    -c "CREATE DATABASE \"$POSTGRES_DB\""
  if [ -n "${APP_USER:-}" ]; then
    runuser -u postgres -- psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q \
      -v user="$APP_USER" -v password="${APP_PASSWORD:?}" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
ALTER DATABASE :"db" OWNER TO :"user";
SQL
  fi
  runuser -u postgres -- pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "entrypoint: initialised $PGDATA"
fi
exec runuser -u postgres -- postgres -D "$PGDATA" -c listen_addresses='*' "$@"
