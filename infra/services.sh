#!/usr/bin/env bash
# Throwaway Redis and PostgreSQL servers for the export tests (and for trying exports by hand), on free
# loopback ports in a directory of their own:
#   infra/services.sh install        # Debian's redis-server, postgresql, chromium and chromium-driver, when
#                                    # missing (needs root / apt-get); the browser opens the HTML report in a test
#   infra/services.sh start DIR      # start both; writes DIR/services.env (ATTNREC_REDIS_*, ATTNREC_PG_*)
#   infra/services.sh stop DIR       # stop both and remove DIR
# Passwords are random, live in DIR/services.env (mode 600) and reach the servers through files, never
# through a command line. PostgreSQL's initdb refuses root: as root, the cluster belongs to user postgres.
set -euo pipefail

PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"

need_install() {
  ! command -v redis-server >/dev/null 2>&1 || [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ] \
    || ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1
}

install() {
  need_install || return 0
  command -v apt-get >/dev/null 2>&1 || {
    echo "error: install redis-server, postgresql, chromium and chromium-driver (Debian packages)" >&2; exit 1; }
  echo "installing redis-server, postgresql, chromium and chromium-driver from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    redis-server postgresql chromium chromium-driver >/dev/null
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(18))'; }

as_pg_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local dir="$1"
  install
  mkdir -p "$dir" && chmod 755 "$dir"
  local redis_port pg_port redis_pw pg_pw
  redis_port=$(free_port); pg_port=$(free_port); redis_pw=$(secret); pg_pw=$(secret)
  umask 077
  cat >"$dir/redis.conf" <<EOF
bind 127.0.0.1
port $redis_port
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
requirepass $redis_pw
EOF
  redis-server "$dir/redis.conf"
  mkdir -p "$dir/pg"
  printf '%s\n' "$pg_pw" >"$dir/pg/pwfile"
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$dir/pg"; fi
  as_pg_owner "$PG_BIN/initdb" -D "$dir/pg/data" -U attnrec --pwfile="$dir/pg/pwfile" -A scram-sha-256 >"$dir/pg/initdb.log"
  rm -f "$dir/pg/pwfile"
  as_pg_owner "$PG_BIN/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w \
    -o "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  cat >"$dir/services.env" <<EOF
ATTNREC_REDIS_HOST=127.0.0.1
ATTNREC_REDIS_PORT=$redis_port
ATTNREC_REDIS_PASSWORD=$redis_pw
ATTNREC_PG_HOST=127.0.0.1
ATTNREC_PG_PORT=$pg_port
ATTNREC_PG_DB=postgres
ATTNREC_PG_USER=attnrec
ATTNREC_PG_PASSWORD=$pg_pw
EOF
  for _ in $(seq 50); do
    [ -f "$dir/redis.pid" ] && break
    sleep 0.1
  done
  echo "redis on 127.0.0.1:$redis_port, postgresql on 127.0.0.1:$pg_port; settings in $dir/services.env" >&2
}

stop() {
  local dir="$1"
  [ -d "$dir" ] || return 0
  if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
  if [ -d "$dir/pg/data" ]; then as_pg_owner "$PG_BIN/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$dir"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:?usage: services.sh start DIR}" ;;
  stop) stop "${2:?usage: services.sh stop DIR}" ;;
  *) echo "usage: infra/services.sh install | start DIR | stop DIR" >&2; exit 2 ;;
esac
