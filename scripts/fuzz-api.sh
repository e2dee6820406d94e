#!/usr/bin/env bash
# Fuzzes the HTTP API from its own OpenAPI document with Schemathesis: the
# storage server must never answer 5xx, and its answers must match the
# document (status codes, content types, response schemas).
#
# Usage: scripts/fuzz-api.sh
#
#   1. installs the pinned Schemathesis into target/fuzz-venv (once; skipped
#      when the marker records the same pin)
#   2. uses target/debug/storage-server as built by
#      `cargo build --workspace --all-targets` (scripts/test does this first);
#      FUZZ_API_BUILD=1 runs that build here first
#   3. in a new network namespace with only loopback (`unshare -n`, so no
#      request ever leaves the machine: bucket storages point at AWS and
#      Google by default), starts the server on a free 127.0.0.1 port with a
#      throw-away data dir, a fixed token and a document root holding a few
#      files; checks that /api/schema is docs/openapi.json; creates a
#      project, tasks, an annotation and local storages so ids exist
#   4. runs Schemathesis against /api/schema for a bounded number of cases,
#      stops the server and exits non-zero on any failure
#
# Without network namespaces (no root, no user namespaces) the operations
# that could open outbound connections (creating, validating, changing and
# syncing bucket storages) are left out, and the script says so.
#
# Knobs (environment): FUZZ_API_MAX_EXAMPLES (default 30 per operation, 4x
# that for creating and validating bucket storages), FUZZ_API_SEED (default
# 1: fixed, so CI runs repeat), FUZZ_API_DIR (JUnit and NDJSON reports of the
# last run and the server log; default target/fuzz-api).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# Pinned: bump deliberately and re-run; check names in --checks still exist.
schemathesis_pin="schemathesis==4.32.5"
venv="$repo/target/fuzz-venv"
server_bin="${CARGO_TARGET_DIR:-$repo/target}/debug/storage-server"
out_dir="${FUZZ_API_DIR:-$repo/target/fuzz-api}"
max_examples="${FUZZ_API_MAX_EXAMPLES:-30}"
seed="${FUZZ_API_SEED:-1}"
token="fuzz-token-0123456789abcdef"

script=fuzz-api.sh
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

install() {
  install_venv "$venv" "$(python3 --version 2>&1); $schemathesis_pin" "$schemathesis_pin"
}

# Part one, on the host network: install, build, then re-enter in a network
# namespace of our own.
if [[ -z "${FUZZ_API_STAGE:-}" ]]; then
  started="$EPOCHREALTIME"
  install
  if [[ "${FUZZ_API_BUILD:-}" == "1" ]]; then
    cargo build --workspace --all-targets --locked
  fi
  [[ -x "$server_bin" ]] ||
    die "$server_bin is missing: run \`cargo build --workspace --all-targets\` (or FUZZ_API_BUILD=1 $0)"
  mkdir -p "$out_dir"
  rm -f "$out_dir"/junit-*.xml "$out_dir"/ndjson-*.ndjson
  if unshare -n true 2>/dev/null; then
    FUZZ_API_STAGE=netns FUZZ_API_STARTED="$started" exec unshare -n bash "$0" "$@"
  fi
  log "WARNING: cannot create a network namespace (unshare -n); leaving out the bucket operations that could connect out"
  FUZZ_API_STAGE=host FUZZ_API_STARTED="$started" exec bash "$0" "$@"
fi

started="$FUZZ_API_STARTED"
py="$venv/bin/python"

if [[ "$FUZZ_API_STAGE" == "netns" ]]; then
  # A new namespace has loopback down; bring it up (SIOCGIFFLAGS/SIOCSIFFLAGS,
  # so no iproute2 is needed).
  "$py" - <<'EOF'
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, struct.pack("16sh", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 1))
EOF
fi

data="$(mktemp -d "${TMPDIR:-/tmp}/fuzz-api.XXXXXX")"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
root="$data/local-files"
mkdir -p "$root/images/nested" "$root/tasks" "$root/export"
printf 'jpeg-0' >"$root/images/a.jpg"
printf 'png-1' >"$root/images/b.png"
printf 'deep' >"$root/images/nested/c.jpg"
printf '[{"data": {"image": "/data/local-files/?d=images/a.jpg"}}, {"data": {"text": "two"}}]' >"$root/tasks/tasks.json"
printf '{"data": {"text": "three"}}\n{"text": "four"}\n' >"$root/tasks/more.jsonl"

server_log="$out_dir/server.log"
# Only the flags below configure the server: no credentials or endpoints
# from the caller's environment.
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE \
  -u GOOGLE_APPLICATION_CREDENTIALS -u DATABASE_URL -u STORAGE_HOST -u STORAGE_STS_ENDPOINT \
  -u STORAGE_GCS_BASE_URL -u STORAGE_IAM_ENDPOINT -u STORAGE_ALLOW_PRIVATE_ENDPOINTS \
  -u LOCAL_FILES_SERVING_ENABLED -u LOCAL_FILES_DOCUMENT_ROOT -u STORAGE_API_TOKEN \
  RUST_LOG="${RUST_LOG:-warn}" RUST_BACKTRACE=1 \
  "$server_bin" --addr "127.0.0.1:$port" --data-dir "$data" --token "$token" --sync-workers 2 \
  >"$server_log" 2>&1 &
server_pid=$!

# Waits for the server, checks the served document against docs/openapi.json
# and creates what the fuzzer's ids can point at.
"$py" - "$base" "$token" "$root" "$repo/docs/openapi.json" <<'EOF'
import json, sys, time, urllib.error, urllib.request

base, token, root, docs = sys.argv[1:]

def call(method, path, body=None, auth=True):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, raw.decode(errors="replace")

deadline = time.time() + 60
while True:
    try:
        status, served = call("GET", "/api/schema", auth=False)
        break
    except (urllib.error.URLError, ConnectionError):
        if time.time() > deadline:
            sys.exit("fuzz-api.sh: the server did not start within 60 s (see its log)")
        time.sleep(0.1)
assert status == 200, (status, served)
with open(docs) as f:
    if json.load(f) != served:
        sys.exit("fuzz-api.sh: /api/schema differs from docs/openapi.json: "
                 "regenerate it with `INSTA_UPDATE=always cargo test -p storage-server --test openapi`")

def ok(expected, method, path, body=None):
    status, answer = call(method, path, body)
    if status != expected:
        sys.exit(f"fuzz-api.sh: seeding {method} {path} answered {status}: {answer}")
    return answer

config = '<View><Image name="image" value="$image"/><Text name="text" value="$text"/></View>'
project = ok(201, "POST", "/api/projects", {"title": "fuzz", "label_config": config})["id"]
ok(201, "POST", f"/api/projects/{project}/import", [{"data": {"text": "one"}}, {"text": "two"}])
task = ok(200, "GET", f"/api/tasks?project={project}")["tasks"][0]["id"]
ok(201, "POST", f"/api/tasks/{task}/annotations", {"result": [], "lead_time": 1.5})
for body in ({"path": f"{root}/images", "use_blob_urls": True, "recursive_scan": True},
             {"path": f"{root}/tasks", "regex_filter": ".*json.*"}):
    storage = ok(201, "POST", "/api/storages/localfiles", {"project": project, "title": "fuzz", **body})
    ok(200, "POST", f"/api/storages/localfiles/{storage['id']}/sync")
ok(201, "POST", "/api/storages/export/localfiles", {"project": project, "path": f"{root}/export", "can_delete_objects": True})
# A second project so ids 1 and 2 both exist.
ok(201, "POST", "/api/projects", {"title": "fuzz 2"})
EOF

# Values the fuzzer mixes into what it generates (half the time), so
# requests also reach objects that exist (ids 1-6: the projects, tasks,
# annotation and storages above) and paths inside and around the root.
config="$data/schemathesis.toml"
"$py" - "$root" "$max_examples" >"$config" <<'EOF'
import base64, json, sys
root = sys.argv[1]
def b64(uri):
    return base64.urlsafe_b64encode(uri.encode()).decode()
dictionaries = {
    "ids": [1, 2, 3, 4, 5, 6, 0, -1, 2**63 - 1],
    "dirs": [f"{root}/images", f"{root}/tasks", f"{root}/export", f"{root}/images/nested", root,
             f"{root}/..", f"{root}/images/../../..", f"{root}/images/a.jpg", "/etc", "images", "",
             f"{root}/missing", f"{root}/images\u0000x"],
    "files": ["images/a.jpg", "images/nested/c.jpg", "images", "images/missing.jpg", "../../../etc/passwd",
              f"{root}/images/a.jpg", "/etc/passwd", "images/%2e%2e/%2e%2e/x", "tasks/tasks.json", "\u0000"],
    "uris": [b64("s3://fuzz-bucket/a.jpg"), b64("gs://fuzz-bucket/a.jpg"), "s3://fuzz-bucket/a.jpg",
             b64("s3://"), b64("gs:///"), "czM6Ly8", "!!", b64("s3://b/" + "k" * 2000)],
    "regexes": [".*", "[unclosed", "(a+)+$", ".*\\.jpg", "\\", "(?<=a)b"],
    "buckets": ["fuzz-bucket", "Bad_Bucket", "a", "b" * 300, "arn:aws:s3:us-east-1:1:accesspoint/x",
                "arn:aws:s3:us-east-1:1:accesspoint/a b", "arn:aws:s3:us-east-1:1:outpost/\u0000"],
    "endpoints": ["http://127.0.0.1:1", "http://localhost", "ftp://x", "http://user:pw@example.com",
                  "http://0x7f000001", "http://[::1]:9000", "not a url", "https://"],
    # Values that end up in request hosts and headers of the bucket clients.
    "regions": ["us-east-1", "auto", "a b", "eu\nwest", "\u00fc", "x/y", "x#y", "-"],
    "header_values": ["AKIAFUZZ", "line\nbreak", "tab\tbed", "\u00fc", "nul\u0000", " "],
    "credentials": ["{}", "not json", '{"type": "service_account"}',
                    '{"type": "service_account", "client_email": "a@b", "private_key": "x"}'],
    # Mostly valid values, for the focused bucket section below.
    "projects": [1, 2],
    "good_buckets": ["fuzz-bucket", "fuzz.bucket-2", "arn:aws:s3:us-east-1:123456789012:accesspoint/a b",
                     "arn:aws:s3:us-east-1:123456789012:outpost/x\u0000"],
    "good_regexes": [".*", ".*\\.json", "images/.*"],
}
max_examples = int(sys.argv[2])
# No state carried between runs (and no .schemathesis/ in the work tree).
print("[cache]")
print("enabled = false")
print("[generation]")
print(f"max-examples = {max_examples}")
print("[dictionaries]")
for name, values in dictionaries.items():
    print(f"{name} = {{ values = {json.dumps(values)} }}")
bindings = {
    "path.id": "ids", "query.project": "ids", "query.page": "ids", "query.page_size": "ids",
    "query.d": "files", "query.fileuri": "uris",
    "body.project": "ids", "body.id": "ids", "body.path": "dirs", "body.regex_filter": "regexes",
    "body.bucket": "buckets", "body.s3_endpoint": "endpoints", "body.region_name": "regions",
    "body.aws_access_key_id": "header_values", "body.aws_secret_access_key": "header_values",
    "body.aws_session_token": "header_values", "body.aws_sse_kms_key_id": "header_values",
    "body.external_id": "header_values", "body.google_project_id": "header_values",
    "body.google_application_credentials": "credentials",
}
def table(bindings, probability):
    return ", ".join(f'"{key}" = {{ dictionary = "{name}", probability = {probability} }}'
                     for key, name in bindings.items())
print("[parameters]")
for key, name in bindings.items():
    print(f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}')
# Creating and validating bucket storages only reaches the bucket client
# when every other field is valid: there, the fields that must pass are
# nearly always valid and the rest is fuzzed, with more examples.
focused = {**bindings, "body.project": "projects", "body.bucket": "good_buckets",
           "body.regex_filter": "good_regexes"}
print("[[operations]]")
print('include-operation-id-regex = "^api_storages(_export)?_(s3|gcs|gcs_sa)_(create|validate_create)$"')
print(f"generation = {{ max-examples = {max_examples * 4}, mode = \"positive\" }}")
print(f"parameters = {{ {table(focused, 0.9)} }}")
EOF

# Bucket operations that would connect out, for the no-namespace fallback.
exclude=()
if [[ "$FUZZ_API_STAGE" == "host" ]]; then
  exclude=(--exclude-operation-id-regex '^api_storages(_export)?_(s3|gcs|gcs_sa)_(create|validate_create|partial_update|sync_create)$')
fi

# Checks: no 5xx, and every answer as documented. Not run:
# negative_data_rejection / positive_data_acceptance (the API accepts more
# than the schema promises, as Label Studio's does: numbers for strings,
# "true" for booleans; and valid-looking bucket settings are refused when
# the bucket cannot be reached), use_after_free / ensure_resource_availability
# (stateful checks of a CRUD model the fuzzer cannot know: sync jobs, host
# tasks). ignored_auth sends requests without the token and wants 401.
# One worker: with two, Hypothesis' ast.parse in parallel threads hit a
# CPython 3.11 bug ("AST constructor recursion depth mismatch").
checks="not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth,unsupported_method,missing_required_header"
fuzz_started="$EPOCHREALTIME"
status=0
"$venv/bin/schemathesis" --config-file "$config" run "$base/api/schema" \
  --header "Authorization: Token $token" \
  --checks "$checks" \
  --phases examples,coverage,fuzzing,stateful \
  --seed "$seed" \
  --generation-database none \
  --request-timeout 20 \
  --max-failures 50 \
  --workers 1 \
  --no-color \
  --report junit,ndjson --report-dir "$out_dir" \
  "${exclude[@]}" || status=$?

if ! kill -0 "$server_pid" 2>/dev/null; then
  log "the server died during the run; its log:"
  tail -n 50 "$server_log" >&2
  status=1
fi
if grep -q "panicked" "$server_log"; then
  log "the server panicked; its log:"
  grep -n -A5 "panicked" "$server_log" | head -n 60 >&2
  status=1
fi
log "schemathesis took $(elapsed "$fuzz_started") s, the whole script $(elapsed "$started") s; reports in $out_dir"
if [[ "$status" != 0 ]]; then
  log "FAILED (exit $status); server log: $server_log"
fi
exit "$status"
