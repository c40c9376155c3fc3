#!/usr/bin/env bash
# Builds the ncsn image FROM scratch around a static binary compiled on the host.
#   deploy/docker/build.sh [IMAGE]        (default ncsn:dev; $GO picks the go command)
# The build context is a staging folder holding only the binary and an empty root skeleton,
# so the daemon receives a few MB instead of the repository, and no step needs the network.
set -euo pipefail
cd "$(dirname "$0")/../.."
image=${1:-ncsn:dev}
stage=bin/docker

ver=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
CGO_ENABLED=0 ${GO:-go} build -ldflags "-s -w -X main.version=$ver" -o "$stage/ncsn" ./cmd/ncsn
# The image cannot run a dynamically linked binary: there is no loader in it.
if command -v file >/dev/null && ! file "$stage/ncsn" | grep -q 'statically linked'; then
	echo "build.sh: $stage/ncsn is not statically linked" >&2
	exit 1
fi
rm -rf "$stage/rootfs"
mkdir -p "$stage/rootfs/out" "$stage/rootfs/tmp"
chmod 0755 "$stage/rootfs/out"
chmod 1777 "$stage/rootfs/tmp"
docker build -q -t "$image" -f deploy/docker/Dockerfile "$stage"
echo "built $image ($ver)"
