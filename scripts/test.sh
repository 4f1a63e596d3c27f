#!/usr/bin/env bash
# The one test command: starts what the tests need, runs every test of the workspace, stops
# what it started. README and .ci/run call it.
#
# Services: each driver that needs one (Redis, RabbitMQ, moto, tansu, Docker; Chromium for the
# dashboard) has a `start_<name>` function here that uses a service already answering, else
# installs and starts one on loopback, exports its URL (WEIR_TEST_<NAME>_URL) and registers
# its stop in `cleanup`.
# Under CI=true a test whose service URL is missing fails; it never passes silently.
set -euo pipefail
cd "$(dirname "$0")/.."

STARTED=()
cleanup() {
  for stop in "${STARTED[@]:-}"; do
    [ -n "$stop" ] && eval "$stop" || true
  done
}
trap cleanup EXIT

# Installs Debian packages when missing (root, or sudo without a password).
apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
  $sudo apt-get install -y -q "$@" >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q "$@" >/dev/null; }
}

# Redis: use WEIR_TEST_REDIS_URL if set; else start a private redis-server on port 6390.
# The crash and TLS tests start redis-servers of their own, so the binary (and openssl, which
# makes the TLS test's CA) is needed even when WEIR_TEST_REDIS_URL points elsewhere.
start_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  command -v openssl >/dev/null || apt_install openssl
  if [ -n "${WEIR_TEST_REDIS_URL:-}" ]; then return; fi
  local port=6390
  if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
      --pidfile "/tmp/weir-test-redis-$port.pid" --logfile "/tmp/weir-test-redis-$port.log"
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    STARTED+=("redis-cli -p $port shutdown nosave >/dev/null 2>&1")
  fi
  export WEIR_TEST_REDIS_URL="redis://127.0.0.1:$port"
  echo "redis: $WEIR_TEST_REDIS_URL"
}

# RabbitMQ: use WEIR_TEST_AMQP_URL if set; else the local rabbitmq-server on 5672 (guest/guest),
# installed and started detached when nothing answers there. The connection-drop tests call
# `rabbitmqctl` of this local server.
start_rabbitmq() {
  if [ -n "${WEIR_TEST_AMQP_URL:-}" ]; then return; fi
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    rabbitmq-server -detached
    for _ in $(seq 1 30); do rabbitmqctl await_startup --timeout 10 >/dev/null 2>&1 && break; sleep 1; done
    rabbitmqctl await_startup --timeout 10 >/dev/null
    STARTED+=("rabbitmqctl stop >/dev/null 2>&1")
  fi
  export WEIR_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
  echo "rabbitmq: $WEIR_TEST_AMQP_URL"
}

# moto (a local SQS): use WEIR_TEST_SQS_URL if set; else a moto_server on 127.0.0.1:5000, from a
# venv under ~/.cache/weir-test/moto (created with python3-venv when missing), started in the
# background when nothing answers there. moto accepts any credentials: the URL carries dummy ones.
start_moto() {
  if [ -n "${WEIR_TEST_SQS_URL:-}" ]; then return; fi
  local port=5000 venv="${XDG_CACHE_HOME:-$HOME/.cache}/weir-test/moto"
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    if [ ! -x "$venv/bin/moto_server" ]; then
      python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
      "$venv/bin/pip" install -q 'moto[server]'
    fi
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/tmp/weir-test-moto.log 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "moto did not start: see /tmp/weir-test-moto.log"; exit 1; }
    STARTED+=("kill $pid >/dev/null 2>&1")
  fi
  export WEIR_TEST_SQS_URL="sqs://weirtest?region=us-east-1&endpoint=http://127.0.0.1:$port&access_key_id=test&secret_access_key=test"
  echo "moto (sqs): $WEIR_TEST_SQS_URL"
}

# tansu (a Kafka-protocol broker written in Rust): use WEIR_TEST_KAFKA_URL if set; else a tansu
# broker with in-memory storage on 127.0.0.1:9092, installed with `cargo install` under
# ~/.cache/weir-test/tansu when missing (about 10 minutes of build, once per machine; the
# `dynostore` feature gives it the memory storage). The Kafka driver's other tests use
# librdkafka's mock cluster in-process.
start_tansu() {
  if [ -n "${WEIR_TEST_KAFKA_URL:-}" ]; then return; fi
  local port=9092 root="${XDG_CACHE_HOME:-$HOME/.cache}/weir-test/tansu"
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    if [ ! -x "$root/bin/tansu" ]; then
      echo "tansu: building it once (cargo install tansu 0.6.0, ~10 min)"
      cargo install -q --locked tansu --version 0.6.0 --features dynostore --root "$root"
    fi
    "$root/bin/tansu" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ \
      >/tmp/weir-test-tansu.log 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "tansu did not start: see /tmp/weir-test-tansu.log"; exit 1; }
    STARTED+=("kill $pid >/dev/null 2>&1")
  fi
  export WEIR_TEST_KAFKA_URL="kafka://127.0.0.1:$port"
  echo "tansu (kafka): $WEIR_TEST_KAFKA_URL"
}

# Docker: use WEIR_TEST_DOCKER_URL if set; else the local engine (DOCKER_HOST or the default
# socket), installed (docker.io) and started (dockerd) when none answers. No registry is
# reachable here: the tests build their images FROM scratch with Debian's static busybox.
start_docker() {
  command -v busybox >/dev/null && ! ldd "$(command -v busybox)" >/dev/null 2>&1 || apt_install busybox-static
  if [ -n "${WEIR_TEST_DOCKER_URL:-}" ]; then return; fi
  command -v dockerd >/dev/null || apt_install docker.io
  if ! docker info >/dev/null 2>&1; then
    dockerd >/tmp/weir-test-dockerd.log 2>&1 &
    local pid=$!
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start: see /tmp/weir-test-dockerd.log"; exit 1; }
    STARTED+=("kill $pid >/dev/null 2>&1")
  fi
  export WEIR_TEST_DOCKER_URL="${DOCKER_HOST:-unix:///var/run/docker.sock}"
  echo "docker: $WEIR_TEST_DOCKER_URL"
}

# Lambda: the shared moto (its simple backend: echoes, queued answers) is WEIR_TEST_LAMBDA_URL;
# a second moto in Docker mode on 127.0.0.1:5001 runs real function code (failures with a log
# tail, a sleeping function) in images built from scratch by drivers/lambda/tests/moto-docker.
start_lambda() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/weir-test/moto" port=5001
  export WEIR_TEST_LAMBDA_URL="${WEIR_TEST_LAMBDA_URL:-http://127.0.0.1:5000}"
  if [ -n "${WEIR_TEST_LAMBDA_DOCKER_URL:-}" ]; then return; fi
  drivers/lambda/tests/moto-docker/build-images.sh
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    MOTO_DOCKER_LAMBDA_IMAGE=weir-test/moto-lambda "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" \
      >/tmp/weir-test-moto-docker.log 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "moto (docker mode) did not start: see /tmp/weir-test-moto-docker.log"; exit 1; }
    STARTED+=("kill $pid >/dev/null 2>&1")
  fi
  export WEIR_TEST_LAMBDA_DOCKER_URL="http://127.0.0.1:$port"
  echo "moto (lambda): $WEIR_TEST_LAMBDA_URL, docker mode: $WEIR_TEST_LAMBDA_DOCKER_URL"
}

# Celery (the real client library, for the Celery adapter's tests): use WEIR_TEST_CELERY_PYTHON if
# set; else a venv under ~/.cache/weir-test/celery with celery[redis] 5.7 from PyPI.
start_celery() {
  if [ -n "${WEIR_TEST_CELERY_PYTHON:-}" ]; then return; fi
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/weir-test/celery"
  if ! "$venv/bin/python" -c 'import celery, redis' >/dev/null 2>&1; then
    python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q 'celery[redis]==5.7.*'
  fi
  export WEIR_TEST_CELERY_PYTHON="$venv/bin/python"
  echo "celery: $("$WEIR_TEST_CELERY_PYTHON" -c 'import celery; print(celery.__version__)') at $WEIR_TEST_CELERY_PYTHON"
}

# The Faktory clients (the reference for the Faktory adapter's tests; no Faktory server can be
# installed here): the Python client (PyPI `faktory`) in a venv under ~/.cache/weir-test/faktory,
# unless WEIR_TEST_FAKTORY_PYTHON is set.
start_faktory_clients() {
  if [ -z "${WEIR_TEST_FAKTORY_PYTHON:-}" ]; then
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/weir-test/faktory"
    if ! "$venv/bin/python" -c 'import faktory' >/dev/null 2>&1; then
      python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
      "$venv/bin/pip" install -q 'faktory==1.0.*'
    fi
    export WEIR_TEST_FAKTORY_PYTHON="$venv/bin/python"
  fi
  echo "faktory (python client): $("$WEIR_TEST_FAKTORY_PYTHON" -c 'import faktory; print(faktory.__version__)') at $WEIR_TEST_FAKTORY_PYTHON"
  # The Node client (npm `faktory-worker` 4), with Node from Debian when there is none.
  if [ -z "${WEIR_TEST_FAKTORY_NODE_PATH:-}" ]; then
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    local dir="${XDG_CACHE_HOME:-$HOME/.cache}/weir-test/faktory-node"
    if [ ! -f "$dir/node_modules/faktory-worker/package.json" ]; then
      mkdir -p "$dir"
      (cd "$dir" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --silent 'faktory-worker@4')
    fi
    export WEIR_TEST_FAKTORY_NODE_PATH="$dir/node_modules"
  fi
  echo "faktory (node client): $(NODE_PATH="$WEIR_TEST_FAKTORY_NODE_PATH" node -e 'console.log(require("faktory-worker/package.json").version)') in $WEIR_TEST_FAKTORY_NODE_PATH"
}

# Chromium and chromedriver from Debian, for the dashboard's browser tests (cli/tests/dashboard.rs).
start_chromium() {
  if [ -z "${WEIR_TEST_CHROMEDRIVER:-}" ]; then
    { command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || apt_install chromium chromium-driver
  fi
  echo "chromium: $(chromium --version 2>/dev/null); $(${WEIR_TEST_CHROMEDRIVER:-chromedriver} --version 2>/dev/null | head -1)"
}

echo "== services"
start_chromium
start_redis
start_rabbitmq
start_moto
start_tansu
start_docker
start_lambda
start_celery
start_faktory_clients
# WASM test modules are Rust crates built for WASI.
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

echo "== build"
cargo build --workspace --all-targets --all-features --locked

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --locked --no-fail-fast
  # The RabbitMQ restart test stops the shared RabbitMQ, so it runs alone, after the rest.
  cargo nextest run -p weir-broker-amqp --locked --run-ignored only rabbitmq_restart
  # nextest does not run doctests
  cargo test --workspace --all-features --locked --doc
else
  cargo test --workspace --all-features --locked --no-fail-fast
  cargo test -p weir-broker-amqp --locked --test reconnect -- --ignored rabbitmq_restart
fi

echo "== examples/custom-driver (a third-party driver built against the workspace crates)"
# Not a workspace member: pointed at the workspace's target/, it reuses the dependencies built
# above instead of compiling them all again.
custom() { CARGO_TARGET_DIR="$PWD/target" cargo "$@"; }
custom test --manifest-path examples/custom-driver/Cargo.toml --locked
custom_help=$(custom run -q --manifest-path examples/custom-driver/Cargo.toml --locked -- --help)
grep -q 'runtimes .*shell (a line of sh -c' <<<"$custom_help" || { echo "weir-custom --help lists no shell runtime"; exit 1; }
custom_run=$(custom run -q --manifest-path examples/custom-driver/Cargo.toml --locked -- \
  run examples/signup --event examples/signup/event.json --json)
grep -q '"status": "completed"' <<<"$custom_run" || { echo "weir-custom run: $custom_run"; exit 1; }
custom run -q --manifest-path examples/custom-driver/Cargo.toml --locked -- \
  run examples/custom-driver/functions/hello-shell --event examples/custom-driver/functions/hello-shell/event.json

echo "== README command 1 (the signup example on the embedded default)"
cargo run -q -p weir --locked -- run examples/signup --event examples/signup/event.json

echo "== all tests passed"
