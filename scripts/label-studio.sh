#!/usr/bin/env bash
# Installs Label Studio itself (pinned: label-studio==1.23.2) into
# target/ls-venv, for the tests that run this server on Label Studio's own
# database (crates/storage-server/tests/label_studio.rs) and for
# benches/label_studio.sh. Each test starts its own Label Studio from it, on
# 127.0.0.1 with a throw-away data directory.
#
#   scripts/label-studio.sh install
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/target/ls-venv"
version="1.23.2"

script=label-studio.sh
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

case "${1:-}" in
  install)
    install_venv "$venv" "$(python3 --version 2>&1); label-studio==$version" "label-studio==$version"
    ;;
  *)
    die "usage: scripts/label-studio.sh install"
    ;;
esac
