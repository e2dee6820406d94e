#!/usr/bin/env bash
# Installs, starts and stops the throw-away Redis server the Redis tests run
# against (storage-redis's tests, storage-server's tests/redis.rs).
#
# Usage: scripts/redis.sh install|start|stop|env
#
#   install  `apt-get install redis-server` (Debian's package), only when no
#            redis-server is on PATH (as root; otherwise says what to run)
#   start    stops a server left by an earlier start, checks that the port is
#            free, makes a directory under /tmp (mktemp), starts redis-server
#            on 127.0.0.1:$port only, without persistence (no RDB snapshot,
#            no AOF) and with a fixed test password (`requirepass`), and waits
#            until it answers PING
#   env      prints the `export STORAGE_TEST_REDIS_URL=...` line the tests read
#            (redis://:<password>@127.0.0.1:<port>)
#   stop     stops the server and removes its directory; idempotent
#
# Tests use their own databases and unique key prefixes, so they share the
# server. By hand:
#   scripts/redis.sh install && scripts/redis.sh start &&
#     eval "$(scripts/redis.sh env)" && cargo test -p storage-redis
#   scripts/redis.sh stop
#
# The path of the current directory is kept in $REDIS_DIR/dir
# (default <repo>/target/redis, git-ignored).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REDIS_DIR="${REDIS_DIR:-$repo/target/redis}"
state="$REDIS_DIR/dir"

# Next to PostgreSQL (17170) and Azurite (17180), below the ephemeral range.
port=17190
# A test password: the server is a throw-away one on loopback. Tests prove
# that a wrong one is refused and that this one never shows in a response.
password=storage-test-redis-pw
ready_timeout_s=30

script=redis.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd_install() {
  if command -v redis-server >/dev/null; then
    log "redis-server found ($(command -v redis-server))"
    return
  fi
  ((EUID == 0)) || die "redis-server is not installed; as root: apt-get install redis-server"
  log "installing Debian's redis-server package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  command -v redis-server >/dev/null || die "redis-server still not found after installing it"
  # Debian's package may start a server on 6379; the tests need only ours.
  if command -v systemctl >/dev/null; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
}

cmd_start() {
  local dir t0 i
  command -v redis-server >/dev/null || die "redis-server is not installed: run scripts/redis.sh install"
  cmd_stop
  require_free_port "$port" Redis "Stop that process (scripts/redis.sh stop, if it is another run's server) and try again."
  t0=$EPOCHREALTIME
  mkdir -p "$REDIS_DIR"
  dir="$(mktemp -d /tmp/storage-redis.XXXXXX)"
  echo "$dir" >"$state"
  chmod 700 "$dir"
  # Not --daemonize: a child of this shell that a CI runner killing the
  # process group kills too; its pid is kept for `stop`.
  redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes \
    --save '' --appendonly no --dir "$dir" --requirepass "$password" \
    --logfile "$dir/server.log" --pidfile "$dir/redis.pid" --daemonize no \
    </dev/null >/dev/null 2>&1 &
  echo $! >"$dir/pid"
  for ((i = 0; i < ready_timeout_s * 10; i++)); do
    if REDISCLI_AUTH="$password" redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
      log "Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2) ready on 127.0.0.1:$port in $(elapsed "$t0") s (dir: $dir)"
      return
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      tail -n 30 "$dir/server.log" >&2 || true
      cmd_stop
      die "the server exited (log above)"
    fi
    sleep 0.1
  done
  tail -n 30 "$dir/server.log" >&2 || true
  cmd_stop
  die "the server did not answer PING within $ready_timeout_s s (log above)"
}

cmd_stop() {
  local dir pid i
  [[ -f "$state" ]] || return 0
  dir="$(cat "$state")"
  if [[ -f "$dir/pid" ]]; then
    pid="$(cat "$dir/pid")"
    if kill "$pid" 2>/dev/null; then
      for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    fi
  fi
  # Only what `start` made: a mktemp directory of ours.
  if [[ "$dir" == /tmp/storage-redis.* ]]; then
    rm -rf "$dir"
  fi
  rm -f "$state"
}

cmd_env() {
  echo "export STORAGE_TEST_REDIS_URL=redis://:$password@127.0.0.1:$port"
}

service_main "$@"
