#!/bin/sh
# Generates Go code for every proto/*.proto into $1 (default: proto/), with pinned
# generator versions so that the output is reproducible.
set -eu
cd "$(dirname "$0")/.."
out=${1:-proto}
PROTOC_GEN_GO=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC=google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PROTOC_WANT="libprotoc 3.21.12"
have=$(protoc --version)
if [ "$have" != "$PROTOC_WANT" ]; then
	echo "protogen: want $PROTOC_WANT (Debian protobuf-compiler), have $have" >&2
	exit 1
fi
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install "$PROTOC_GEN_GO"
GOBIN=$bin go install "$PROTOC_GEN_GO_GRPC"
mkdir -p "$out"
protoc -I proto \
	--plugin=protoc-gen-go="$bin/protoc-gen-go" \
	--plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
	--go_out="$out" --go_opt=module=github.com/ncsn/ncsn/proto \
	--go-grpc_out="$out" --go-grpc_opt=module=github.com/ncsn/ncsn/proto \
	proto/*.proto
