#!/bin/sh
# Builds the two local images moto's Docker-mode Lambda needs, from scratch (no registry):
#   busybox:latest                           moto copies each function's code into a volume with it
#   weir-test/moto-lambda:provided.al2023    runs the function (see ./entrypoint)
# Needs a Docker engine and busybox-static (apt-get install -y busybox-static).
# Start moto for these tests with MOTO_DOCKER_LAMBDA_IMAGE=weir-test/moto-lambda (Docker mode is
# moto's default; do not POST use_docker=false to that server).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
busybox=$(command -v busybox || echo /bin/busybox)
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "a static busybox is needed: apt-get install -y busybox-static" >&2
    exit 1
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$busybox" "$ctx/busybox"
cp "$here/entrypoint" "$ctx/entrypoint"
if ! docker image inspect busybox:latest >/dev/null 2>&1; then
    cat > "$ctx/Dockerfile.busybox" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["sh"]
DOCKERFILE
    docker build -q -t busybox:latest -f "$ctx/Dockerfile.busybox" "$ctx" >/dev/null
fi
cat > "$ctx/Dockerfile.lambda" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY entrypoint /var/runtime/entrypoint
ENTRYPOINT ["/var/runtime/entrypoint"]
DOCKERFILE
docker build -q -t weir-test/moto-lambda:provided.al2023 -f "$ctx/Dockerfile.lambda" "$ctx" >/dev/null
echo "built busybox:latest and weir-test/moto-lambda:provided.al2023"
