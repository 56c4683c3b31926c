#!/usr/bin/env bash
# Debian's PostgreSQL server for a test cluster's pods, inside the cluster's network namespace:
# the local backend (cluster.sh) and the kind backend (hack/kind/cluster.sh) both use it.
# Source it; it sets no shell options. Functions return non-zero on failure and leave the
# reporting to the caller (initdb output: LOGDIR/postgres-init.log, server: LOGDIR/postgres.log).

NETNS_PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
NETNS_PG_PORT="${PG_PORT:-5432}"

_netns_pg() {  # _netns_pg NETNS_PATH CMD...: CMD as the postgres user inside the namespace
  local ns="$1"; shift
  nsenter --net="$ns" -- runuser -u postgres -- "$@"
}

# netns_pg_running NETNS_PATH DIR
netns_pg_running() {
  [ -e "$1" ] && [ -s "$2/data/PG_VERSION" ] && _netns_pg "$1" "$NETNS_PG_BIN/pg_ctl" -D "$2/data" status >/dev/null 2>&1
}

# netns_pg_start NETNS_PATH DIR LOGDIR HOST HBA_CIDR...
# The first time: initdb in DIR/data (peer auth locally, scram-sha-256 over TCP), a random
# password for role crontask (DIR/password), database crontask, no fsync (a test server).
# Then: listen on 127.0.0.1 and HOST inside the namespace only, accept scram logins from each
# HBA_CIDR, write DIR/database-url (postgresql://crontask:<pw>@HOST:PORT/crontask, mode 600)
# and wait until that URL logs in over TCP.
netns_pg_start() {
  local ns="$1" dir="$2" logs="$3" host="$4"; shift 4
  local data="$dir/data" sock="$dir/run" pw cidr t0
  mkdir -p "$sock" "$logs"
  chown postgres:postgres "$dir" "$sock"
  chmod 755 "$dir"   # the socket dir must be reachable; data/ stays 700
  if [ ! -s "$data/PG_VERSION" ]; then
    pw="$(openssl rand -hex 16)"
    ( umask 077; printf '%s\n' "$pw" > "$dir/password" )
    runuser -u postgres -- "$NETNS_PG_BIN/initdb" -D "$data" -U postgres --auth-local=peer \
      --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >> "$logs/postgres-init.log" 2>&1 || return 1
    {
      echo "# crontask test cluster: reachable inside its network namespace only"
      for cidr in "$@"; do echo "host all all ${cidr} scram-sha-256"; done
    } >> "$data/pg_hba.conf"
    cat >> "$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1,${host}'
port = ${NETNS_PG_PORT}
unix_socket_directories = '${sock}'
password_encryption = scram-sha-256
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
  fi
  touch "$logs/postgres.log"; chown postgres:postgres "$logs/postgres.log"
  if ! netns_pg_running "$ns" "$dir"; then
    _netns_pg "$ns" "$NETNS_PG_BIN/pg_ctl" -D "$data" -l "$logs/postgres.log" -w -t 60 start \
      >/dev/null 2>&1 9>&- || return 1
  fi
  pw="$(cat "$dir/password")"
  if ! _netns_pg "$ns" psql -h "$sock" -p "$NETNS_PG_PORT" -d postgres -tAc \
      "SELECT 1 FROM pg_roles WHERE rolname='crontask'" | grep -q 1; then
    _netns_pg "$ns" psql -v ON_ERROR_STOP=1 -q -h "$sock" -p "$NETNS_PG_PORT" -d postgres \
      -c "CREATE ROLE crontask LOGIN CREATEDB PASSWORD '${pw}'" \
      -c "CREATE DATABASE crontask OWNER crontask" >> "$logs/postgres-init.log" 2>&1 || return 1
  fi
  ( umask 077; echo "postgresql://crontask:${pw}@${host}:${NETNS_PG_PORT}/crontask" > "$dir/database-url" )
  # the URL must work over TCP with the password (scram), inside the namespace
  t0=$(date +%s)
  until nsenter --net="$ns" -- env PGPASSWORD="$pw" psql -h "$host" -p "$NETNS_PG_PORT" -U crontask \
      -d crontask -tAc 'select 1' >/dev/null 2>&1; do
    [ $(( $(date +%s) - t0 )) -lt 60 ] || return 1
    sleep 0.5
  done
}

# netns_pg_stop NETNS_PATH DIR
netns_pg_stop() {
  [ -s "$2/data/PG_VERSION" ] && [ -e "$1" ] || return 0
  _netns_pg "$1" "$NETNS_PG_BIN/pg_ctl" -D "$2/data" -m fast -w stop >/dev/null 2>&1 || true
}
