#!/usr/bin/env bash
# The nightly-style fuzzing job: every fuzz target of weir-fuzz for SECONDS each (default 60),
# in an optimized build with overflow checks; prints each target's inputs and findings and fails on a finding (the
# input is kept under fuzz/findings/). scripts/test.sh runs the same targets for 2 s each, as
# the weir-fuzz crate's test. Usage: scripts/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
if [[ "${1:-}" =~ ^[0-9]+([.][0-9]+)?$ ]]; then seconds="$1"; shift; fi
# The `fuzz` profile: optimized, with overflow checks and debug assertions kept (a release
# build would let an integer overflow in a parser pass silently).
cargo build --profile fuzz -p weir-fuzz
target/fuzz/weir-fuzz --seconds "$seconds" "$@"
