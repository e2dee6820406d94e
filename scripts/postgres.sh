#!/usr/bin/env bash
# Installs, starts and stops the throw-away PostgreSQL server the PostgreSQL
# tests run against (storage-db's repository tests, storage-api's scale_out).
#
# Usage: scripts/postgres.sh install|start|stop|env
#
#   install  `apt-get install postgresql` (Debian's package), only when no
#            initdb is found in /usr/lib/postgresql/*/bin or on PATH
#   start    stops a server left by an earlier start, checks that the port is
#            free, creates a data directory under /tmp (mktemp), initdb's it,
#            starts the server on 127.0.0.1:$port only (trust authentication:
#            local test use only), waits until it accepts connections and
#            creates the database `storage`
#   env      prints the `export STORAGE_TEST_POSTGRES_URL=...` line the tests read
#   stop     stops the server and removes its data directory; idempotent
#
# The tests create one database per test on this server (so they run in
# parallel); `stop` throws them away with the data directory.
# By hand:
#   scripts/postgres.sh install && scripts/postgres.sh start &&
#     eval "$(scripts/postgres.sh env)" && cargo test -p storage-db
#   scripts/postgres.sh stop
#
# PostgreSQL refuses to run as root: as root, the data directory belongs to
# the `postgres` user (created by Debian's package) and the server runs as it
# (runuser). As another user, it runs as that user.
#
# Durability is off (fsync, synchronous_commit, full_page_writes): the data
# is thrown away, and the tests need no crash safety from the disk.
# POSTGRES_DURABLE=1 keeps PostgreSQL's defaults (for measurements that
# should reflect a production server, see docs/scaling.md).
#
# The path of the current data directory is kept in $POSTGRES_DIR/datadir
# (default <repo>/target/postgres, git-ignored).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
POSTGRES_DIR="${POSTGRES_DIR:-$repo/target/postgres}"
state="$POSTGRES_DIR/datadir"

# Below the Linux ephemeral range, next to the emulators' ports (17130-17160).
port=17170
database=storage
superuser=postgres
ready_timeout_s=60

script=postgres.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Directory of initdb/pg_ctl: the newest /usr/lib/postgresql/<major>/bin, or PATH.
bin_dir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [[ -n "$dir" && -x "$dir/initdb" ]]; then
    echo "$dir"
  elif command -v initdb >/dev/null; then
    dirname "$(command -v initdb)"
  else
    return 1
  fi
}

# Runs "$@" as the user the server runs as.
as_server_user() {
  if ((EUID == 0)); then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cmd_install() {
  local dir
  if dir="$(bin_dir)"; then
    log "PostgreSQL found ($dir)"
    return
  fi
  ((EUID == 0)) || die "PostgreSQL is not installed; as root: apt-get install postgresql"
  log "installing Debian's postgresql package"
  # Debian's package would create and start a cluster "main" on port 5432;
  # the tests need only the one `start` makes.
  mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/storage-tests.conf
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  bin_dir >/dev/null || die "initdb still not found after installing postgresql"
}

cmd_start() {
  local bin data t0
  bin="$(bin_dir)" || die "PostgreSQL is not installed: run scripts/postgres.sh install"
  cmd_stop
  require_free_port "$port" PostgreSQL "Stop that process (scripts/postgres.sh stop, if it is another run's server) and try again."
  t0=$EPOCHREALTIME
  mkdir -p "$POSTGRES_DIR"
  data="$(mktemp -d /tmp/storage-postgres.XXXXXX)"
  echo "$data" >"$state"
  if ((EUID == 0)); then
    id postgres >/dev/null 2>&1 || die "no user \`postgres\` to run the server as (Debian's package creates it)"
    chown postgres: "$data"
  fi
  chmod 700 "$data"
  as_server_user "$bin/initdb" -D "$data" --username="$superuser" --auth=trust \
    --encoding=UTF8 --no-locale --no-sync >"$data.initdb.log" 2>&1 || {
    cat "$data.initdb.log" >&2
    rm -f "$data.initdb.log"
    die "initdb failed"
  }
  rm -f "$data.initdb.log"
  local -a settings=(
    -c listen_addresses=127.0.0.1 -c port="$port"
    -c unix_socket_directories="$data" -c max_connections=200
  )
  if [[ "${POSTGRES_DURABLE:-0}" != 1 ]]; then
    settings+=(-c fsync=off -c synchronous_commit=off -c full_page_writes=off)
  fi
  # -w waits until the server accepts connections. Not detached: a CI runner
  # that kills the process group kills it too.
  if ! as_server_user "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t "$ready_timeout_s" \
    -o "${settings[*]}" start >/dev/null; then
    tail -n 30 "$data/server.log" >&2 || true
    cmd_stop
    die "the server did not start (log above)"
  fi
  as_server_user "$bin/psql" -h 127.0.0.1 -p "$port" -U "$superuser" -d postgres -qAt \
    -c "CREATE DATABASE $database" >/dev/null || {
    cmd_stop
    die "could not create the database $database"
  }
  log "PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') ready on 127.0.0.1:$port in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s (data: $data)"
}

cmd_stop() {
  local bin data
  [[ -f "$state" ]] || return 0
  data="$(cat "$state")"
  if [[ -f "$data/postmaster.pid" ]] && bin="$(bin_dir)"; then
    as_server_user "$bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      log "pg_ctl stop failed for $data (already stopped?)"
  fi
  # Only what `start` made: a mktemp directory of ours.
  if [[ "$data" == /tmp/storage-postgres.* ]]; then
    rm -rf "$data"
  fi
  rm -f "$state"
}

cmd_env() {
  echo "export STORAGE_TEST_POSTGRES_URL=postgres://$superuser@127.0.0.1:$port/$database"
}

service_main "$@"
