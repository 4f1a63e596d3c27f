#!/usr/bin/env bash
# The one test command: starts what the tests need, runs every test of the workspace, stops
# what it started. README and .ci/run call it.
#
# Services: this stage of weir needs none (memory state and broker, process and http steps).
# Drivers that need a service (Redis, RabbitMQ, moto, Docker, …) add a `start_<name>` function
# here that uses a service already answering, else installs and starts one on loopback, exports
# its URL (WEIR_TEST_<NAME>_URL) and registers its stop in `cleanup`. Under CI=true a test whose
# service URL is missing fails; it never passes silently.
set -euo pipefail
cd "$(dirname "$0")/.."

STARTED=()
cleanup() {
  for stop in "${STARTED[@]:-}"; do
    [ -n "$stop" ] && eval "$stop" || true
  done
}
trap cleanup EXIT

echo "== build"
cargo build --workspace --all-targets --all-features --locked

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --locked --no-fail-fast
  # nextest does not run doctests
  cargo test --workspace --all-features --locked --doc
else
  cargo test --workspace --all-features --locked --no-fail-fast
fi

echo "== README command 1 (the signup example on the embedded default)"
cargo run -q -p weir --locked -- run examples/signup --event examples/signup/event.json

echo "== all tests passed"
