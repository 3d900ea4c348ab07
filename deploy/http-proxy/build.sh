#!/usr/bin/env bash
# Builds switchboard-http offline in GOPATH mode from Debian's Go packages
# (golang-go, golang-github-grpc-ecosystem-grpc-gateway-dev and its
# dependencies under /usr/share/gocode).
#   build.sh SOURCE_DIR OUT_DIR [VERSION]
set -euo pipefail
src=$(cd "$1" && pwd)
out=$(mkdir -p "$2" && cd "$2" && pwd)
version=${3:-dev}
[[ $version != @* ]] || version=$(cat "${version#@}")  # @FILE: the version written by CMake
gocode=/usr/share/gocode
googleapis=$gocode/src/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis

export GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0
export GOPATH=$out/gopath:$gocode
export GOCACHE=${GOCACHE:-${HOME:-$out}/.cache/go-build}

mkdir -p "$out/bin" "$out/gopath/src"
if [[ ! -x $out/bin/protoc-gen-grpc-gateway ]]; then
  go build -o "$out/bin/protoc-gen-grpc-gateway" github.com/grpc-ecosystem/grpc-gateway/protoc-gen-grpc-gateway
fi
gen=$out/gopath/src
# Debian's well-known protos name the APIv2 Go packages; this generator
# (protoc-gen-go 1.3) and grpc-gateway 1.6 use the APIv1 ones.
wkt=Mgoogle/protobuf/struct.proto=github.com/golang/protobuf/ptypes/struct
wkt=$wkt,Mgoogle/protobuf/timestamp.proto=github.com/golang/protobuf/ptypes/timestamp
rm -rf "$gen/switchboard"
PATH=$out/bin:$PATH protoc -I "$src/proto" -I "$googleapis" \
  --go_out=plugins=grpc,"$wkt":"$gen" \
  --grpc-gateway_out=logtostderr=true:"$gen" \
  switchboard/v1/control.proto
# The OpenAPI (Swagger 2.0) document, generated from control.proto's HTTP
# annotations by Debian's protoc-gen-swagger (golang-grpc-gateway) and built
# into the binary (openapi.go adds the routes that are not gRPC methods).
swagger=$(command -v protoc-gen-swagger || true)
if [[ -z $swagger ]]; then
  echo "build.sh: protoc-gen-swagger not found: apt-get install golang-grpc-gateway" >&2
  exit 1
fi
main=$out/main
rm -rf "$main" && mkdir -p "$main"
protoc -I "$src/proto" -I "$googleapis" --plugin=protoc-gen-swagger="$swagger" \
  --swagger_out=logtostderr=true:"$main" switchboard/v1/control.proto
mv "$main/switchboard/v1/control.swagger.json" "$main/openapi.generated.json"
rm -rf "$main/switchboard"
cp "$src"/deploy/http-proxy/*.go "$src"/deploy/http-proxy/admin.html "$src"/deploy/http-proxy/openapi_extra.json "$main/"
cd "$main"
go build -ldflags "-X main.version=$version" -o "$out/switchboard-http" .
