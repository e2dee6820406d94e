#!/usr/bin/env bash
# Label Studio 1.23.2 and this server side by side: same machine, same run,
# same client (curl), same files. Files mode over a local folder of N one-byte
# images, then Tasks mode over N one-task JSON files; each timed from the
# `POST …/sync` to `completed` (Label Studio without Redis syncs inside that
# request; this server answers `queued` at once and the script polls the
# storage every 20 ms). Each sync asserts its task count.
#
#   cargo build --release -p storage-server
#   N=10000 benches/label_studio.sh
#
# Installs Label Studio into target/ls-venv on first use (scripts/label-studio.sh,
# pinned, ~2 min).
# Everything listens on 127.0.0.1 only.
set -euo pipefail

N=${N:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/target/ls-venv
SERVER=$ROOT/target/release/storage-server
LS_PORT=${LS_PORT:-17190}
OUR_PORT=${OUR_PORT:-17191}
TOKEN=side-by-side-token-0123456789abcdef

[ -x "$SERVER" ] || { echo "build it first: cargo build --release -p storage-server" >&2; exit 1; }
"$ROOT/scripts/label-studio.sh" install

WORK=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

FILES=$WORK/files
python3 - "$FILES" "$N" <<'EOF'
import json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
for sub in ("images", "tasks"):
    os.makedirs(os.path.join(root, sub))
for i in range(n):
    with open(os.path.join(root, "images", f"img_{i:06}.jpg"), "wb") as f:
        f.write(b"x")
    with open(os.path.join(root, "tasks", f"task_{i:06}.json"), "w") as f:
        json.dump({"data": {"image": f"https://example.com/img_{i:06}.jpg"}}, f)
EOF

LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT=$FILES \
  "$VENV/bin/label-studio" start --no-browser --data-dir "$WORK/ls-data" \
  --internal-host 127.0.0.1 -p "$LS_PORT" --username admin@example.com --password 'Passw0rd!' \
  --user-token "$TOKEN" --enable-legacy-api-token --log-level WARNING >"$WORK/ls.log" 2>&1 &
pids+=($!)
STORAGE_API_TOKEN=$TOKEN "$SERVER" --addr "127.0.0.1:$OUR_PORT" --data-dir "$WORK/ours" \
  --local-files-document-root "$FILES" --local-files-serving-enabled true >"$WORK/ours.log" 2>&1 &
pids+=($!)

api() { # base method path [body]
  curl -sS -f -X "$2" "$1$3" -H "Authorization: Token $TOKEN" -H 'Content-Type: application/json' \
    ${4:+-d "$4"}
}
wait_up() { # base name
  for _ in $(seq 600); do api "$1" GET /api/projects >/dev/null 2>&1 && return; sleep 0.5; done
  echo "$2 did not start; its log:" >&2; cat "$WORK/$2.log" >&2; exit 1
}
wait_up "http://127.0.0.1:$LS_PORT" ls
wait_up "http://127.0.0.1:$OUR_PORT" ours

field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
now() { date +%s.%N; }

# Prints the seconds one sync took; asserts N tasks.
sync_once() { # base folder use_blob_urls
  local base=$1 project storage started status
  project=$(api "$base" POST /api/projects \
    '{"title": "side by side", "label_config": "<View><Image name=\"image\" value=\"$image\"/></View>"}' | field "['id']")
  storage=$(api "$base" POST /api/storages/localfiles \
    "{\"project\": $project, \"path\": \"$FILES/$2\", \"use_blob_urls\": $3}" | field "['id']")
  started=$(now)
  api "$base" POST "/api/storages/localfiles/$storage/sync" >/dev/null
  while :; do
    # sed, not python: a poll should cost a request, not an interpreter.
    status=$(api "$base" GET "/api/storages/localfiles/$storage" |
      sed -n 's/.*"status": *"\([a-z_]*\)".*/\1/p')
    case $status in
      completed) break ;;
      failed|completed_with_errors) echo "sync $status on $base" >&2; exit 1 ;;
    esac
    sleep 0.02
  done
  local took
  took=$(python3 -c "print(f'{$(now) - $started:.2f}')")
  local total
  total=$(api "$base" GET "/api/tasks?project=$project&page_size=1" | field "['total']")
  [ "$total" = "$N" ] || { echo "$base made $total tasks, not $N" >&2; exit 1; }
  echo "$took"
}

echo "| mode | files | Label Studio 1.23.2 (s) | this server (s) | ratio |"
echo "|---|---:|---:|---:|---:|"
for mode in "Files:images:true" "Tasks:tasks:false"; do
  IFS=: read -r name folder blob <<<"$mode"
  theirs=$(sync_once "http://127.0.0.1:$LS_PORT" "$folder" "$blob")
  ours=$(sync_once "http://127.0.0.1:$OUR_PORT" "$folder" "$blob")
  echo "| $name | $N | $theirs | $ours | $(python3 -c "print(f'{$theirs / $ours:.0f}x')") |"
done
