#!/usr/bin/env bash
# Runs Label Studio's official Python SDK (tests/sdk, pinned in
# tests/sdk/requirements.txt) against the storage-server binary.
#
#   1. venv at target/sdk-venv with tests/sdk/requirements.txt (skipped when
#      its marker records the same python and requirements);
#   2. tests/sdk/doubles.py: a GCS write shim in front of fake-gcs, an IAM
#      Credentials double (for gcs_sa) answering Google STS (gcswif) and
#      Microsoft Entra (azure_spi) too, and a plain-HTTP front of the HTTPS
#      Azurite (which takes Entra tokens), and a Databricks Files API double,
#      on random loopback ports;
#   3. target/debug/storage-server on a random loopback port, with a
#      throw-away data dir and local-files root, a known token,
#      --allow-private-endpoints, the doubles' endpoints, the Azure front as
#      the Azure blob endpoint (azure and azure_spi) and moto as the STS
#      endpoint (s3s);
#   4. pytest tests/sdk (extra arguments go to pytest); then stops what it
#      started, and exits non-zero on any failure.
#
# `scripts/sdk-test.sh install` does step 1 only (to overlap it with a build).
#
# Needs the emulators and Redis (scripts/test starts them):
#   scripts/emulators.sh install && scripts/emulators.sh start &&
#     eval "$(scripts/emulators.sh env)" && scripts/redis.sh install &&
#     scripts/redis.sh start && eval "$(scripts/redis.sh env)" && scripts/sdk-test.sh
# and the server binary: cargo build --workspace --all-targets (or
# cargo build -p storage-server).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="$repo/target/sdk-venv"
requirements="$repo/tests/sdk/requirements.txt"
server_bin="${CARGO_TARGET_DIR:-$repo/target}/debug/storage-server"
key_pem="$repo/crates/storage-testing/fixtures/test-service-account-key.pem"
token="sdk-test-token-0123456789"
base_email="sdk-server@sdk-server-project.iam.gserviceaccount.com"
target_email="sdk-reader@sdk-data-project.iam.gserviceaccount.com"
# What the server's platform would hand it for Workload Identity Federation.
wif_subject_token="sdk-platform-oidc-token"
# The Microsoft Entra application of the azure_spi case (tests/sdk/test_sdk.py).
entra_tenant="72f988bf-86f1-41af-91ab-2d7cd011db47"
entra_client="sdk-test-entra-app"
entra_secret="sdk-test-entra-secret"
# The personal access token the Databricks double accepts.
databricks_token="dapi-sdk-test-token"
ready_timeout_s=30

script=sdk-test.sh
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

install_venv_sdk() {
  install_venv "$venv" "$(python3 --version 2>&1); $(sha256sum "$requirements" | cut -d' ' -f1)" \
    -r "$requirements"
}

case "${1:-}" in
  install)
    install_venv_sdk
    exit 0
    ;;
esac

for var in STORAGE_TEST_MOTO_ENDPOINT STORAGE_TEST_GCS_ENDPOINT STORAGE_TEST_AZURITE_OAUTH_ENDPOINT STORAGE_TEST_BUCKET \
  STORAGE_TEST_REDIS_URL; do
  [[ -n "${!var:-}" ]] || die "$var is not set: the SDK test needs the emulators and Redis. Run it from scripts/test, or:
  scripts/emulators.sh install && scripts/emulators.sh start && eval \"\$(scripts/emulators.sh env)\" &&
  scripts/redis.sh install && scripts/redis.sh start && eval \"\$(scripts/redis.sh env)\" && scripts/sdk-test.sh"
done
curl -sf --max-time 5 -o /dev/null "$STORAGE_TEST_MOTO_ENDPOINT/moto-api/" &&
  curl -sf --max-time 5 -o /dev/null "$STORAGE_TEST_GCS_ENDPOINT/storage/v1/b" ||
  die "the emulators do not answer at $STORAGE_TEST_MOTO_ENDPOINT and $STORAGE_TEST_GCS_ENDPOINT: start them (scripts/emulators.sh start)"
# Azurite answers 400 to a request without a container; any answer will do.
curl -sk --max-time 5 -o /dev/null "$STORAGE_TEST_AZURITE_OAUTH_ENDPOINT/" ||
  die "the HTTPS Azurite does not answer at $STORAGE_TEST_AZURITE_OAUTH_ENDPOINT: start it (scripts/emulators.sh start)"
[[ -x "$server_bin" ]] ||
  die "$server_bin is missing: build it first (cargo build --workspace --all-targets, as scripts/test does, or cargo build -p storage-server)"
[[ -f "$key_pem" ]] || die "$key_pem is missing"

# 1. The venv.
install_venv_sdk

work="$(mktemp -d "${TMPDIR:-/tmp}/sdk-test.XXXXXX")"
doubles_pid=""
server_pid=""

stop_pid() {
  local pid="$1"
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.05
  done
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  stop_pid "$server_pid"
  stop_pid "$doubles_pid"
  rm -rf "$work"
}
trap cleanup EXIT

# Waits until file $2 has a line matching $3, while process $1 lives; prints the line.
wait_line() {
  local pid="$1" file="$2" pattern="$3" what="$4" deadline=$((SECONDS + ready_timeout_s)) line
  until line="$(grep -m1 -E "$pattern" "$file" 2>/dev/null)"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$what exited during start-up; its output:"
      cat "$file" "$file.err" >&2 2>/dev/null || true
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "$what was not ready after $ready_timeout_s s; its output:"
      cat "$file" "$file.err" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.05
  done
  echo "$line"
}

# 2. The doubles.
"$venv/bin/python" tests/sdk/doubles.py --gcs-upstream "$STORAGE_TEST_GCS_ENDPOINT" \
  --base-email "$base_email" --target-email "$target_email" --wif-subject-token "$wif_subject_token" \
  --azure-upstream "$STORAGE_TEST_AZURITE_OAUTH_ENDPOINT" \
  --entra-tenant "$entra_tenant" --entra-client "$entra_client" --entra-secret "$entra_secret" \
  --databricks-token "$databricks_token" \
  </dev/null >"$work/doubles.out" 2>"$work/doubles.out.err" &
doubles_pid=$!
endpoints="$(wait_line "$doubles_pid" "$work/doubles.out" '^\{' "tests/sdk/doubles.py")"
gcs_shim="$("$venv/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1])["gcs_shim"])' "$endpoints")"
iam="$("$venv/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1])["iam"])' "$endpoints")"
azure_front="$("$venv/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1])["azure_front"])' "$endpoints")"
databricks="$("$venv/bin/python" -c 'import json,sys; print(json.loads(sys.argv[1])["databricks"])' "$endpoints")"

# 3. The server. Its own Google identity (the base of gcs_sa impersonation) is
# a key file with the throw-away test key; the IAM double accepts its JWTs.
"$venv/bin/python" - "$key_pem" "$base_email" >"$work/identity.json" <<'EOF'
import json, sys
print(json.dumps({"type": "service_account", "project_id": "sdk-server-project",
                  "private_key_id": "sdk-server-key", "private_key": open(sys.argv[1]).read(),
                  "client_email": sys.argv[2]}))
EOF
mkdir -p "$work/data" "$work/files"
printf '%s\n' "$wif_subject_token" >"$work/wif-token"
# Variables the server would read in place of a flag: a developer's own
# credentials or database must not leak into the run.
env -u DATABASE_URL -u STORAGE_API_TOKEN -u STORAGE_HOST -u AWS_ACCESS_KEY_ID \
  -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u GOOGLE_APPLICATION_CREDENTIALS \
  -u STORAGE_STS_ENDPOINT -u STORAGE_AZURE_BLOB_ENDPOINT -u AZURE_AUTHORITY_HOST \
  -u AZURE_FEDERATED_TOKEN_FILE -u AZURE_TENANT_ID -u AZURE_CLIENT_ID -u LOCAL_FILES_SERVING_ENABLED \
  "$server_bin" --addr 127.0.0.1:0 --data-dir "$work/data" \
  --local-files-document-root "$work/files" --token "$token" \
  --allow-private-endpoints true --gcs-base-url "$gcs_shim" --iam-endpoint "$iam" \
  --azure-blob-endpoint "$azure_front/{account}" --azure-authority-host "$iam" \
  --gcs-wif-subject-token-file "$work/wif-token" --google-sts-endpoint "$iam" \
  --google-application-credentials "$work/identity.json" --log-json false \
  --sts-endpoint "$STORAGE_TEST_MOTO_ENDPOINT" \
  </dev/null >"$work/server.out" 2>"$work/server.out.err" &
server_pid=$!
listening="$(wait_line "$server_pid" "$work/server.out" '^Listening on http://' "the storage server")"
url="${listening#Listening on }"
log "server at $url, GCS shim at $gcs_shim, IAM/STS/Entra doubles at $iam, Azure front at $azure_front, Databricks double at $databricks"

# 4. The tests.
status=0
SDK_TEST_URL="$url" SDK_TEST_TOKEN="$token" SDK_TEST_DOCUMENT_ROOT="$work/files" \
  SDK_TEST_GCS_SHIM="$gcs_shim" SDK_TEST_GCS_KEY_PEM="$key_pem" SDK_TEST_GCS_SA_TARGET="$target_email" SDK_TEST_IAM="$iam" \
  SDK_TEST_AZURE_ENDPOINT="$azure_front" SDK_TEST_ENTRA_TENANT="$entra_tenant" SDK_TEST_ENTRA_CLIENT="$entra_client" \
  SDK_TEST_ENTRA_SECRET="$entra_secret" SDK_TEST_DATABRICKS="$databricks" SDK_TEST_DATABRICKS_TOKEN="$databricks_token" \
  PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@" tests/sdk || status=$?
if ((status != 0)); then
  log "pytest failed (exit $status); last lines of the server's log:"
  tail -n 40 "$work/server.out.err" >&2 || true
fi
exit "$status"
