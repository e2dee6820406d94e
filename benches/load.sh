#!/usr/bin/env bash
# Load held while a sync runs: wrk against the storage list and the task
# list of the storage-server binary (release build) on loopback for
# $LOAD_SECONDS (30) seconds each, at the same time, while a Tasks-mode sync
# of a $LOAD_JSONL_MIB (1024) MiB JSON Lines file runs. Prints wrk's
# figures (requests/s, latency percentiles, non-2xx count) and checks at
# the end that the sync completed with exactly one task per line.
#
# Needs: wrk (Debian package `wrk`), python3, and
#   cargo build --release -p storage-server
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${LOAD_SECONDS:-30}"
mib="${LOAD_JSONL_MIB:-1024}"
server=target/release/storage-server
token=load-token-0123456789
command -v wrk >/dev/null || { echo "load.sh: wrk is missing (apt-get install wrk)" >&2; exit 1; }
[[ -x "$server" ]] || { echo "load.sh: $server is missing (cargo build --release -p storage-server)" >&2; exit 1; }

data="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"' EXIT
mkdir -p "$data/local-files/load"
lines="$(python3 - "$data/local-files/load/tasks.jsonl" "$mib" <<'EOF'
import sys
path, mib = sys.argv[1], int(sys.argv[2])
written = lines = 0
with open(path, "w") as f:
    while written < mib << 20:
        line = f'{{"text": "Task {lines}: the quick brown fox jumps over the lazy dog, again and again", "n": {lines}}}\n'
        f.write(line)
        written += len(line)
        lines += 1
print(lines)
EOF
)"

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
RUST_LOG=warn STORAGE_API_TOKEN="$token" "$server" --addr "127.0.0.1:$port" --data-dir "$data" >"$data/server.log" 2>&1 &
pid=$!
until curl -sf -o /dev/null "$base/api/storages/types" -H "Authorization: Token $token"; do sleep 0.1; done

api() { curl -sf -H "Authorization: Token $token" -H 'Content-Type: application/json' "$@"; }
project="$(api -X POST "$base/api/projects" -d '{"title": "load", "label_config": "<View><Text name=\"t\" value=\"$text\"/></View>"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
storage="$(api -X POST "$base/api/storages/localfiles" -d "{\"project\": $project, \"path\": \"$data/local-files/load\", \"use_blob_urls\": false}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
api -X POST "$base/api/storages/localfiles/$storage/sync" >/dev/null
started="$(date +%s.%N)"

echo "== $lines tasks syncing; wrk for ${seconds}s on two endpoints at once (1 thread, 16 connections each)"
wrk -t1 -c16 -d"${seconds}s" --latency -H "Authorization: Token $token" "$base/api/storages/localfiles?project=$project" >"$data/storages.txt" &
wrk -t1 -c16 -d"${seconds}s" --latency -H "Authorization: Token $token" "$base/api/tasks?project=$project&page=1&page_size=100" >"$data/tasks.txt"
wait %2 2>/dev/null || wait
status="$(api "$base/api/storages/localfiles/$storage" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')"
echo "-- sync status when the load ended: $status"
for name in storages tasks; do
  echo "-- GET /api/$name"
  grep -E "Requests/sec|Latency  |  50%|  99%|Non-2xx|Socket errors|requests in" "$data/$name.txt"
done

while :; do
  state="$(api "$base/api/storages/localfiles/$storage")"
  case "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["status"])' "$state")" in
    completed) break ;;
    failed|completed_with_errors) echo "load.sh: sync failed: $state" >&2; exit 1 ;;
  esac
  sleep 0.5
done
count="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["last_sync_count"])' "$state")"
echo "-- sync completed in $(python3 -c "import time; print(round(time.time() - $started, 1))") s with $count tasks (expected $lines)"
[[ "$count" == "$lines" ]] || { echo "load.sh: task count mismatch" >&2; exit 1; }
if grep -qiE "panick|ERROR" "$data/server.log"; then
  echo "load.sh: the server logged errors:" >&2
  grep -iE "panick|ERROR" "$data/server.log" | head >&2
  exit 1
fi
