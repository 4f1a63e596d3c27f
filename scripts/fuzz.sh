#!/usr/bin/env bash
# The nightly-style fuzzing job: every fuzz target of weir-fuzz for SECONDS each (default 60),
# in a release build; prints each target's inputs and findings and fails on a finding (the
# input is kept under fuzz/findings/). scripts/test.sh runs the same targets for 2 s each, as
# the weir-fuzz crate's test. Usage: scripts/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
cargo build --release -p weir-fuzz
target/release/weir-fuzz --seconds "$seconds" "$@"
