#!/usr/bin/env bash
# Fuzzes the task-file parser (storage_core::parse) with cargo-fuzz/libFuzzer
# for a bounded time: target `task_parser` (fuzz/fuzz_targets/task_parser.rs)
# feeds arbitrary bytes to `parse_tasks` and, split at an arbitrary point, to
# `TaskParser` in two pushes, and fails on a panic or when the two disagree.
#
# Usage: scripts/fuzz-parser.sh
#
#   1. installs the pinned cargo-fuzz into target/fuzz-tools (skipped when it
#      is there already)
#   2. builds the target with the stable toolchain: cargo-fuzz passes
#      nightly-only flags (-Z...), which RUSTC_BOOTSTRAP=1 allows on stable
#   3. runs it from the committed seeds (fuzz/corpus/task_parser, read only)
#      plus a working corpus in target/fuzz/corpus; a crashing input is kept
#      in target/fuzz/artifacts and the script exits non-zero
#
# Knobs (environment): FUZZ_PARSER_SECONDS (default 60), FUZZ_PARSER_SEED
# (libFuzzer -seed; default 1 so CI runs are repeatable), FUZZ_PARSER_JOBS
# (parallel fuzzing processes; default 1).
#
# A crash found here: reproduce with
#   RUSTC_BOOTSTRAP=1 target/fuzz-tools/bin/cargo-fuzz run --fuzz-dir fuzz \
#     --target-dir target/fuzz/build --sanitizer none task_parser <artifact>
# and keep it as a unit test in crates/storage-core/src/parse.rs.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# Pinned: fuzz/Cargo.toml pins the libfuzzer-sys of this release.
cargo_fuzz_version="0.13.2"
tools="$repo/target/fuzz-tools"
cargo_fuzz="$tools/bin/cargo-fuzz"
work="$repo/target/fuzz"
seconds="${FUZZ_PARSER_SECONDS:-60}"
seed="${FUZZ_PARSER_SEED:-1}"
jobs="${FUZZ_PARSER_JOBS:-1}"

log() {
  echo "fuzz-parser.sh: $*" >&2
}

if [[ ! -x "$cargo_fuzz" ]] || ! "$cargo_fuzz" --version | grep -qF " $cargo_fuzz_version"; then
  log "installing cargo-fuzz $cargo_fuzz_version into $tools"
  started=$SECONDS
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked --root "$tools" --force
  log "cargo-fuzz installed in $((SECONDS - started)) s"
fi

mkdir -p "$work/corpus" "$work/artifacts"
export RUSTC_BOOTSTRAP=1
# Safe Rust only (unsafe_code is forbidden): AddressSanitizer would find
# nothing more than the panics and disagreements the target asserts, at
# twice the cost per run. Debug assertions stay on (cargo-fuzz default).
fuzz_args=(--fuzz-dir fuzz --target-dir "$work/build" --sanitizer none)

started=$SECONDS
# cargo-fuzz has no --locked: check fuzz/Cargo.lock is current first, as
# the workspace build does with --locked.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
"$cargo_fuzz" build "${fuzz_args[@]}" task_parser
log "built in $((SECONDS - started)) s"

libfuzzer_args=(-max_total_time="$seconds" -seed="$seed" -artifact_prefix="$work/artifacts/" -print_final_stats=1)
if ((jobs > 1)); then
  libfuzzer_args+=(-jobs="$jobs" -workers="$jobs")
fi
started=$SECONDS
"$cargo_fuzz" run "${fuzz_args[@]}" task_parser "$work/corpus" fuzz/corpus/task_parser -- "${libfuzzer_args[@]}"
log "fuzzed for $((SECONDS - started)) s without a crash"
