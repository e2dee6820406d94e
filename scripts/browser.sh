#!/usr/bin/env bash
# Installs what the browser test of Label Studio's UI needs
# (crates/storage-server/tests/label_studio.rs, tests/ui/): Debian's
# Chromium (when /usr/bin/chromium is missing; apt-get, so run it after
# other apt installs, not beside them) and Playwright for Python (pinned,
# tests/ui/requirements.txt) in target/ui-venv, driving that Chromium (no
# browser download).
#
#   scripts/browser.sh install
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/target/ui-venv"
requirements="$repo/tests/ui/requirements.txt"

script=browser.sh
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

case "${1:-}" in
  install)
    if [[ ! -x /usr/bin/chromium ]]; then
      ((EUID == 0)) || die "Chromium is not installed; as root: apt-get install chromium"
      log "installing Debian's chromium package"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
    log "$(/usr/bin/chromium --version 2>/dev/null || echo 'chromium: no version')"
    install_venv "$venv" "$(python3 --version 2>&1); $(sha256sum "$requirements" | cut -d' ' -f1)" \
      -r "$requirements"
    ;;
  *)
    die "usage: scripts/browser.sh install"
    ;;
esac
