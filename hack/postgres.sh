#!/usr/bin/env bash
# A throwaway local PostgreSQL 15 server, for the demo and the database tests.
#   hack/postgres.sh start   initdb (first time) and start; prints the libpq URL on stdout
#   hack/postgres.sh url     prints the URL of the running server
#   hack/postgres.sh stop    stops the server (the data directory is kept)
#   hack/postgres.sh destroy stops the server and removes the data directory
# Environment: CRONTASK_PG_DIR (default /tmp/crontask-pg), CRONTASK_PG_PORT (default: a free
# port chosen at first start and remembered in the directory), CRONTASK_PG_OPTS (more server
# options, appended to ours so they win, e.g. "-c max_connections=8" for the fault tier). The server listens on 127.0.0.1
# only, with trust authentication for the superuser `postgres`: it is a disposable test server,
# never a production one. initdb refuses to run as root, so as root it runs as the `postgres`
# OS user (created by Debian's postgresql package).
set -euo pipefail

bin=${CRONTASK_PG_BIN:-/usr/lib/postgresql/15/bin}
dir=${CRONTASK_PG_DIR:-/tmp/crontask-pg}
data="$dir/data"

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

port() {
  if [ -n "${CRONTASK_PG_PORT:-}" ]; then
    echo "$CRONTASK_PG_PORT"
  elif [ -f "$dir/port" ]; then
    cat "$dir/port"
  else
    free_port | tee "$dir/port"
  fi
}

url() { echo "postgresql://postgres@127.0.0.1:$(port)/postgres"; }

start() {
  [ -x "$bin/initdb" ] || { echo "postgres.sh: $bin/initdb not found (run hack/setup.sh)" >&2; exit 1; }
  mkdir -p "$dir"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
  local p; p=$(port)
  [ "$(id -u)" -ne 0 ] || chown postgres: "$dir/port"
  if [ ! -f "$data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  if as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    url
    return
  fi
  # Durability is worthless for a throwaway server; speed is not.
  as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start -o \
    "-c listen_addresses=127.0.0.1 -p $p -k $dir -c fsync=off -c synchronous_commit=off \
     -c full_page_writes=off -c max_connections=200 -c shared_buffers=256MB \
     ${CRONTASK_PG_OPTS:-}" >/dev/null \
    || { tail -n 20 "$dir/server.log" >&2; exit 1; }
  url
}

stop() {
  [ -f "$data/PG_VERSION" ] || return 0
  as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  destroy) stop; rm -rf "$dir" ;;
  *) echo "usage: $0 start|stop|url|destroy" >&2; exit 2 ;;
esac
