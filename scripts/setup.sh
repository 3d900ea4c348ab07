#!/usr/bin/env bash
# Installs every system package Switchboard needs (Debian 12), then the
# node test clients. Idempotent: only missing packages are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential cmake pkg-config ccache git curl ca-certificates clang libclang-rt-14-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libwebsockets-dev libwebsockets-evlib-uv libuv1-dev
  libnats-dev nats-server libjwt-dev libyaml-cpp-dev libspdlog-dev
  nlohmann-json3-dev libssl-dev libgtest-dev libgmock-dev
  python3 python3-grpcio python3-protobuf python3-jwt python3-yaml
  golang-go golang-github-grpc-ecosystem-grpc-gateway-dev golang-grpc-gateway python3-swagger-spec-validator
  libc-ares-dev dnsmasq-base iptables chromium haproxy
  prometheus-cpp-dev prometheus
  golang-github-prometheus-client-golang-dev golang-github-grpc-ecosystem-go-grpc-prometheus-dev
  nodejs npm
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# node/npm may come from outside Debian (already on PATH): do not replace them.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=()
  for p in "${missing[@]}"; do [[ "$p" == nodejs || "$p" == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# kubectl (kustomize) renders the Kubernetes manifests in the test suite. On
# this machine kind it comes from the distribution's kubectl package source.
if ! command -v kubectl >/dev/null; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl ||
    { echo "setup: kubectl is needed (kubectl kustomize) and could not be installed" >&2; exit 1; }
fi
if [[ ! -d deploy/k8s/check/node_modules ]] || \
   [[ deploy/k8s/check/package-lock.json -nt deploy/k8s/check/node_modules ]]; then
  (cd deploy/k8s/check && npm ci --no-audit --no-fund --loglevel=error)
fi

if [[ ! -d examples/node/node_modules ]] || [[ examples/node/package-lock.json -nt examples/node/node_modules ]]; then
  (cd examples/node && npm ci --no-audit --no-fund --loglevel=error)
fi
if [[ -f tests/integration/node/package.json ]]; then
  if [[ ! -d tests/integration/node/node_modules ]] || \
     [[ tests/integration/node/package-lock.json -nt tests/integration/node/node_modules ]]; then
    (cd tests/integration/node && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
