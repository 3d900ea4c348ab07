#!/usr/bin/env bash
# Switchboard on any machine with Docker (macOS, Windows, any Linux) or
# podman: builds the images from the public Debian base if they are missing
# (plain `docker build` of deploy/images/Containerfile.*, about ten minutes
# the first time), then starts deploy/compose/compose.yaml and says what to
# do next.
#   bash deploy/compose/up.sh          # start (building what is missing)
#   bash deploy/compose/up.sh --build  # rebuild the images first
#   bash deploy/compose/up.sh down     # stop and remove the containers
set -euo pipefail
cd "$(dirname "$0")/../.."
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
  engine=docker compose=(docker compose)
elif command -v podman >/dev/null && command -v podman-compose >/dev/null; then
  engine=podman compose=(podman-compose)
else
  echo "up.sh: needs Docker with the compose plugin, or podman and podman-compose" >&2
  exit 1
fi
file=deploy/compose/compose.yaml
if [[ ${1:-} == down ]]; then
  exec "${compose[@]}" -p switchboard -f "$file" down
fi
version=$(sed -n 's/^project(switchboard VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
base=${BASE:-debian:bookworm-slim}
full=$(bash scripts/version.sh)
exists() { "$engine" image inspect "$1" >/dev/null 2>&1; }
if [[ ${1:-} == --build ]] || ! exists "localhost/switchboard/control:$version" ||
   ! exists "localhost/switchboard/gateway:$version" || ! exists "localhost/switchboard/http:$version" ||
   ! exists "localhost/switchboard/nats:$version"; then
  echo "up.sh: building the images on $base with $engine"
  "$engine" build -f deploy/images/Containerfile.build --build-arg BASE="$base" \
    --build-arg SWITCHBOARD_VERSION="$full" -t localhost/switchboard/build:dev .
  for name in control gateway http nats; do
    "$engine" build -f "deploy/images/Containerfile.$name" --build-arg BASE="$base" \
      --build-arg BUILD=localhost/switchboard/build:dev --build-arg VERSION="$full" \
      -t "localhost/switchboard/$name:$version" .
  done
fi
"${compose[@]}" -p switchboard -f "$file" up -d
cat <<EOT

Switchboard is starting (${compose[*]} -p switchboard -f $file ps):
  gRPC API      127.0.0.1:${SWITCHBOARD_GRPC_PORT:-50051}   (metadata authorization: apikey dev-api-key-change-me)
  HTTP API      http://127.0.0.1:${SWITCHBOARD_HTTP_PORT:-8080}   (/openapi.json describes it)
  gateways      ws://127.0.0.1:${SWITCHBOARD_GATEWAY_1_PORT:-8001}/connection/websocket and :${SWITCHBOARD_GATEWAY_2_PORT:-8002}

A token for user 42 (HS256, the demo app's dev secret), from inside the control container:
  ${compose[*]} -p switchboard -f $file exec control switchboardctl gentoken --raw --user 42 --config /etc/switchboard/switchboard.yaml
List user 42's sessions:
  curl -H 'X-API-Key: dev-api-key-change-me' http://127.0.0.1:${SWITCHBOARD_HTTP_PORT:-8080}/apps/demo/users/42/connections
Examples in Python, Go, Node and curl: examples/README.md. Stop: bash deploy/compose/up.sh down
EOT
