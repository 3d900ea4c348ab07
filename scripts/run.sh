#!/usr/bin/env bash
# Builds and starts a local Switchboard cluster on loopback: nats-server,
# one switchboard-control, two switchboard-gateways and switchboard-http.
# Processes run in the background; logs and PIDs live in .run/.
#   scripts/run.sh          set up, build, (re)start, print what to do next
#   scripts/run.sh stop     stop what a previous run started
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUN=$ROOT/.run
CONFIG=${SWITCHBOARD_CONFIG:-config/switchboard.yaml}
NATS_PORT=4222
GW_PORTS=(8001 8002)
HTTP_PORT=8080
CONTROL_HEALTH_PORT=8081

# Running (not gone, and not a zombie: an exited process whose parent, here
# often PID 1 of a container, has not reaped it yet).
alive() {
  local state
  state=$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

stop_all() {
  [[ -d $RUN ]] || return 0
  for f in "$RUN"/*.pid; do
    [[ -e $f ]] || continue
    pid=$(cat "$f")
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

# Waits (with a deadline) for a line matching $2 in log $1.
wait_log() {
  local log=$1 pattern=$2 name=$3
  for _ in $(seq 1 150); do
    grep -qE "$pattern" "$log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run: $name did not start; see $log" >&2
  tail -n 20 "$log" >&2 || true
  exit 1
}

start() {  # name, log pattern, argv...
  local name=$1 pattern=$2; shift 2
  nohup "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  wait_log "$RUN/$name.log" "$pattern" "$name"
}

if [[ ${1:-} == stop ]]; then stop_all; echo "stopped"; exit 0; fi

bash scripts/setup.sh
bash scripts/build.sh build
# switchboard-http's credential towards control (control reads the same
# variable through http_proxy_token in the config).
export SWITCHBOARD_HTTP_PROXY_TOKEN=${SWITCHBOARD_HTTP_PROXY_TOKEN:-dev-http-proxy-token-change-me}
stop_all
mkdir -p "$RUN"

# NATS with one user per role and least permissions, from the same config.
build/cli/switchboardctl --config "$CONFIG" nats-config >"$RUN/nats.conf"
start nats 'Server is ready' nats-server -c "$RUN/nats.conf" -a 127.0.0.1 -p $NATS_PORT
# --dev: config/switchboard.yaml's secrets are the published placeholders
# ("…-change-me"), which every binary refuses without it.
start control 'READY port=' build/control/switchboard-control --dev --config "$CONFIG" \
  --health_listen "127.0.0.1:$CONTROL_HEALTH_PORT"
i=1
for port in "${GW_PORTS[@]}"; do
  start gateway-$i 'READY gateway_id=' build/gateway/switchboard-gateway --dev --config "$CONFIG" \
    --port "$port" --id "gw-$i" --workers 1 --operator_listen "127.0.0.1:$((port + 1000))"
  i=$((i + 1))
done
CONTROL=$(grep -oE 'READY port=[0-9]+' "$RUN/control.log" | cut -d= -f2)
start http 'READY port=' build/deploy/http-proxy/switchboard-http --dev --listen "127.0.0.1:$HTTP_PORT" \
  --control "127.0.0.1:$CONTROL"

cat <<MSG

Switchboard is running on loopback (logs and PIDs in .run/):
  nats-server          nats://127.0.0.1:$NATS_PORT
  switchboard-control  gRPC 127.0.0.1:$CONTROL   (API key: see api_keys in $CONFIG)
  gateway gw-1         ws://127.0.0.1:${GW_PORTS[0]}/connection/websocket
  gateway gw-2         ws://127.0.0.1:${GW_PORTS[1]}/connection/websocket
  switchboard-http     http://127.0.0.1:$HTTP_PORT   (HTTP/JSON API, grpc-gateway proxy)
  probes               GET /livez and /readyz with reasons on each gateway's operator port
                       (:$((GW_PORTS[0] + 1000)), :$((GW_PORTS[1] + 1000)); its clients' port says the status
                       alone), on :$HTTP_PORT and on control's http://127.0.0.1:$CONTROL_HEALTH_PORT
                       (control also serves grpc.health.v1)

Next:
  build/cli/switchboardctl gentoken --user 42          # a connection token for user 42 (--raw: token only)
  build/cli/switchboardctl gateways                    # the live fleet
  build/cli/switchboardctl connections --user 42       # user 42's sessions on every gateway
  build/cli/switchboardctl terminate --user 42         # close them all
  curl -H 'X-API-Key: dev-api-key-change-me' -d '{"user":"42"}' http://127.0.0.1:$HTTP_PORT/api/user_connections
  scripts/run.sh stop                                  # stop the cluster
See README.md for the full quick start.
MSG
