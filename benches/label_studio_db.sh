#!/usr/bin/env bash
# This server as the sync engine of an unchanged Label Studio 1.23.2 on
# PostgreSQL (--label-studio-database-url), against Label Studio's own sync:
# same machine, same run, same client (curl), same local files, both
# writing into the same Label Studio database (two projects). Files mode
# over N one-byte images; then, with M set, M files synced by this engine
# alone. Each sync is timed from its `POST …/sync` until Label Studio's API
# shows the storage `completed`, and its task count is asserted through
# Label Studio's API.
#
#   cargo build --release -p storage-server
#   scripts/postgres.sh install && scripts/postgres.sh start && eval "$(scripts/postgres.sh env)"
#   N=100000 M=1000000 benches/label_studio_db.sh
#
# Installs Label Studio into target/ls-venv on first use
# (scripts/label-studio.sh). Everything listens on 127.0.0.1 only.
set -euo pipefail

N=${N:-100000}
M=${M:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/target/ls-venv
SERVER=$ROOT/target/release/storage-server
LS_PORT=${LS_PORT:-17193}
OUR_PORT=${OUR_PORT:-17194}
TOKEN=label-studio-db-bench-token-0123456789

[ -x "$SERVER" ] || { echo "build it first: cargo build --release -p storage-server" >&2; exit 1; }
[ -n "${STORAGE_TEST_POSTGRES_URL:-}" ] || {
  echo "start PostgreSQL first: scripts/postgres.sh start && eval \"\$(scripts/postgres.sh env)\"" >&2; exit 1; }
"$ROOT/scripts/label-studio.sh" install

WORK=$(mktemp -d)
DB=ls_bench_$$
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$STORAGE_TEST_POSTGRES_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql -q "$STORAGE_TEST_POSTGRES_URL" -c "CREATE DATABASE $DB"
LS_DB_URL=$(python3 -c "import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(p._replace(path='/$DB').geturl())" "$STORAGE_TEST_POSTGRES_URL")
read -r PG_HOST PG_PORT PG_USER < <(python3 -c "import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print(p.hostname, p.port or 5432, p.username or 'postgres')" "$STORAGE_TEST_POSTGRES_URL")

FILES=$WORK/files
python3 - "$FILES" "$N" "$M" <<'PY'
import os, sys
root, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for folder, count in (("images", n), ("million", m)):
    if count:
        os.makedirs(os.path.join(root, folder))
    for i in range(count):
        with open(os.path.join(root, folder, f"img_{i:07}.jpg"), "wb") as f:
            f.write(b"x")
PY

DJANGO_DB=default POSTGRE_HOST=$PG_HOST POSTGRE_PORT=$PG_PORT POSTGRE_NAME=$DB POSTGRE_USER=$PG_USER \
  POSTGRE_PASSWORD= LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT=$FILES \
  "$VENV/bin/label-studio" start --no-browser --data-dir "$WORK/ls-data" \
  --internal-host 127.0.0.1 -p "$LS_PORT" --username admin@example.com --password 'Passw0rd!' \
  --user-token "$TOKEN" --enable-legacy-api-token --log-level WARNING >"$WORK/ls.log" 2>&1 &
pids+=($!)

api() { # base method path [body]
  curl -sS -f -X "$2" "$1$3" -H "Authorization: Token $TOKEN" -H 'Content-Type: application/json' \
    ${4:+-d "$4"}
}
LS=http://127.0.0.1:$LS_PORT
OURS=http://127.0.0.1:$OUR_PORT
for _ in $(seq 600); do api "$LS" GET /api/projects >/dev/null 2>&1 && break; sleep 0.5; done
api "$LS" GET /api/projects >/dev/null || { echo "Label Studio did not start:" >&2; cat "$WORK/ls.log" >&2; exit 1; }

STORAGE_ADDR=127.0.0.1:$OUR_PORT "$SERVER" --data-dir "$WORK/ours" \
  --label-studio-database-url "$LS_DB_URL" --label-studio-url "$LS" \
  --local-files-document-root "$FILES" >"$WORK/ours.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do curl -sf "$OURS/health" >/dev/null 2>&1 && break; sleep 0.1; done

field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
now() { date +%s.%N; }

# Prints the seconds one sync through `engine` took and the tasks it made;
# this engine must make exactly `count` (Label Studio's count is reported,
# whatever it is).
sync_once() { # engine folder count
  local engine=$1 folder=$2 count=$3 project storage started status
  project=$(api "$LS" POST /api/projects \
    "{\"title\": \"$folder by $engine\", \"label_config\": \"<View><Image name=\\\"image\\\" value=\\\"\$image\\\"/></View>\"}" | field "['id']")
  storage=$(api "$LS" POST /api/storages/localfiles \
    "{\"project\": $project, \"path\": \"$FILES/$folder\", \"use_blob_urls\": true}" | field "['id']")
  started=$(now)
  api "${!engine}" POST "/api/storages/localfiles/$storage/sync" >/dev/null
  while :; do
    status=$(api "$LS" GET "/api/storages/localfiles/$storage" |
      sed -n 's/.*"status": *"\([a-z_]*\)".*/\1/p')
    case $status in
      completed) break ;;
      failed|completed_with_errors) echo "sync $status by $engine" >&2; exit 1 ;;
    esac
    sleep 0.02
  done
  local took total
  took=$(python3 -c "print(f'{$(now) - $started:.2f}')")
  total=$(api "$LS" GET "/api/tasks?project=$project&page_size=1" | field "['total']")
  if [ "$engine" = OURS ] && [ "$total" != "$count" ]; then
    echo "this engine made $total tasks, not $count" >&2; exit 1
  fi
  echo "$took $total"
}

echo "| Label Studio 1.23.2 on PostgreSQL, Files mode | files | Label Studio's own sync (s) | tasks it made | this engine (s) | tasks it made | ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|"
# Command substitutions, not process substitutions: a failed sync stops the
# script (set -e) instead of printing an empty row.
result=$(sync_once LS images "$N")
read -r theirs theirs_tasks <<<"$result"
result=$(sync_once OURS images "$N")
read -r ours ours_tasks <<<"$result"
echo "| local folder | $N | $theirs | $theirs_tasks | $ours | $ours_tasks | $(python3 -c "print(f'{$theirs / $ours:.0f}x')") |"
if [ "$M" -gt 0 ]; then
  result=$(sync_once OURS million "$M")
  read -r alone alone_tasks <<<"$result"
  echo "| local folder, this engine alone | $M | — | — | $alone | $alone_tasks | — |"
fi
