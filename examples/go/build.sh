#!/usr/bin/env bash
# Builds the Go example offline from Debian's Go packages (golang-go,
# golang-google-grpc-dev, golang-goprotobuf-dev / protoc-gen-go, and
# golang-github-grpc-ecosystem-grpc-gateway-dev for googleapis), in GOPATH
# mode: the stubs are generated into OUT/gopath, the program is OUT/sessions.
#   bash examples/go/build.sh [OUT]      (default: examples/go/out)
# With Go modules and the network instead: protoc-gen-go + protoc-gen-go-grpc
# and `go mod init`; the program itself is the same.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/out}" && cd "${1:-$here/out}" && pwd)
gocode=/usr/share/gocode
googleapis=$gocode/src/github.com/grpc-ecosystem/grpc-gateway/third_party/googleapis
export GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0
export GOPATH=$out/gopath:$gocode
export GOCACHE=${GOCACHE:-${HOME:-$out}/.cache/go-build}
gen=$out/gopath/src
rm -rf "$gen/switchboard" && mkdir -p "$gen"
# Debian's well-known protos name the APIv2 Go packages; protoc-gen-go 1.3
# and grpc-go 1.33 use the APIv1 ones.
wkt=Mgoogle/protobuf/struct.proto=github.com/golang/protobuf/ptypes/struct
wkt=$wkt,Mgoogle/protobuf/timestamp.proto=github.com/golang/protobuf/ptypes/timestamp
wkt=$wkt,Mgoogle/api/annotations.proto=google.golang.org/genproto/googleapis/api/annotations
protoc -I "$here/../../proto" -I "$googleapis" --go_out=plugins=grpc,"$wkt":"$gen" switchboard/v1/control.proto
go build -o "$out/sessions" "$here/main.go"
echo "built $out/sessions"
