#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests: a new cluster in a temporary directory, owned by an
# unprivileged user (the server refuses to run as root), listening on a free loopback port only.
#
#   bash .ci/postgres.sh run COMMAND...   start it, run COMMAND with CARDSYNC_TEST_POSTGRES set
#                                         to its URL, stop it and remove it (COMMAND's exit code)
#   bash .ci/postgres.sh start            start it; print `export CARDSYNC_TEST_POSTGRES=…` and
#                                         `export CARDSYNC_TEST_POSTGRES_DIR=…` for eval
#   bash .ci/postgres.sh stop DIR         stop the one started in DIR and remove it
#   bash .ci/postgres.sh halt DIR         stop the server started in DIR, keeping its data (an
#                                         outage, for the tests that ride one out)
#   bash .ci/postgres.sh resume DIR       start it again after `halt`
#
# PostgreSQL comes from the distribution's packages: installed with apt-get when missing.
set -euo pipefail

bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

install_if_missing() {
  if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/initdb" ]; then
    echo "installing PostgreSQL from the distribution's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
  fi
}

# Who owns the cluster: `postgres` when it exists, else a system user made for it. When not
# root, the current user.
owner() {
  if [ "$(id -u)" != 0 ]; then
    id -un
  elif id postgres >/dev/null 2>&1; then
    echo postgres
  else
    useradd --system --no-create-home --shell /usr/sbin/nologin cardsync-pg >/dev/null 2>&1 || true
    echo cardsync-pg
  fi
}

as_owner() {
  local user=$1
  shift
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

start() {
  install_if_missing
  local bin user dir port
  bin=$(bindir)
  user=$(owner)
  dir=$(mktemp -d /tmp/cardsync-pg.XXXXXX)
  chmod 700 "$dir"
  [ "$(id -u)" = 0 ] && chown "$user" "$dir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$user" "$bin/initdb" --pgdata="$dir/data" --username=cardsync --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
  }
  # In the configuration file, not on the command line, so that `resume` starts it the same way.
  printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\nmax_connections = 200\n" \
    "$port" "$dir" >>"$dir/data/postgresql.conf"
  as_owner "$user" "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
    start >/dev/null || {
    cat "$dir/server.log" >&2
    exit 1
  }
  as_owner "$user" "$bin/createdb" --host=127.0.0.1 --port="$port" --username=cardsync cardsync
  echo "export CARDSYNC_TEST_POSTGRES=postgres://cardsync@127.0.0.1:$port/cardsync"
  echo "export CARDSYNC_TEST_POSTGRES_DIR=$dir"
}

stop() {
  local dir=${1:?usage: postgres.sh stop DIR}
  local user
  user=$(stat -c %U "$dir")
  as_owner "$user" "$(bindir)/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

halt() {
  local dir=${1:?usage: postgres.sh halt DIR}
  as_owner "$(stat -c %U "$dir")" "$(bindir)/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null
}

resume() {
  local dir=${1:?usage: postgres.sh resume DIR}
  as_owner "$(stat -c %U "$dir")" "$(bindir)/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" \
    --wait --timeout=60 start >/dev/null
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
halt) halt "${2:-}" ;;
resume) resume "${2:-}" ;;
run)
  shift
  eval "$(start)"
  trap 'stop "$CARDSYNC_TEST_POSTGRES_DIR"' EXIT
  export CARDSYNC_TEST_POSTGRES
  "$@"
  ;;
*)
  echo "usage: postgres.sh start | stop DIR | halt DIR | resume DIR | run COMMAND..." >&2
  exit 2
  ;;
esac
