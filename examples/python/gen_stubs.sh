#!/usr/bin/env bash
# Generates the Python gRPC stubs for the Switchboard API into ./gen (or $1)
# with Debian's protoc and grpc_python_plugin (apt-get install
# protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf
# golang-github-grpc-ecosystem-grpc-gateway-dev, which ships googleapis).
# With pip instead: python3 -m grpc_tools.protoc with the same arguments.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/gen}
proto=$here/../../proto
googleapis=${GOOGLEAPIS:-/usr/share/gocode/src/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis}
mkdir -p "$out"
protoc -I "$proto" -I "$googleapis" --python_out="$out" --grpc_out="$out" \
  --plugin=protoc-gen-grpc="$(command -v grpc_python_plugin)" switchboard/v1/control.proto
protoc -I "$googleapis" --python_out="$out" google/api/annotations.proto google/api/http.proto
touch "$out/switchboard/__init__.py" "$out/switchboard/v1/__init__.py"
echo "stubs in $out"
