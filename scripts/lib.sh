# Shared by the scripts in this folder: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`
# after setting `script` to the script's name (used as the log prefix).

log() {
  echo "$script: $*" >&2
}

die() {
  log "$*"
  exit 1
}

# Seconds (two decimals) since the $EPOCHREALTIME value $1.
elapsed() {
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}

# install_venv VENV WANT PIP_ARGS...: (re)builds the venv at VENV with
# `pip install PIP_ARGS` unless its marker file already records WANT (the
# python version and the pinned package list), so a changed pin or python
# rebuilds it from scratch and an unchanged one costs nothing.
install_venv() {
  local venv="$1" want="$2" marker="$1/.installed" t0
  shift 2
  if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
    log "venv up to date ($venv)"
    return
  fi
  log "installing into $venv: $*"
  t0=$EPOCHREALTIME
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  # --no-compile: byte-compiling botocore, pandas & co. at install costs
  # seconds of CPU that nothing here needs back.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-compile "$@"
  printf '%s' "$want" >"$marker"
  log "installed in $(elapsed "$t0") s"
}

# require_free_port PORT WHAT HINT: fails with a clear message, naming what
# needs the port and how to free it, if something listens on PORT.
require_free_port() {
  local port="$1" what="$2" hint="$3" listener
  if command -v ss >/dev/null; then
    listener="$(ss -Hltnp "sport = :$port" 2>/dev/null || true)"
  elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    listener="(something accepts connections)"
  else
    listener=""
  fi
  [[ -z "$listener" ]] || die "port $port (needed by $what) is already in use:
$listener
$hint"
}

# service_main "$@": the install|start|stop|env dispatch of a service script
# that defines cmd_install, cmd_start, cmd_stop and cmd_env.
service_main() {
  case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) cmd_env ;;
    *) die "usage: $0 install|start|stop|env" ;;
  esac
}
