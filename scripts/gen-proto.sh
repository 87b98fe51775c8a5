#!/usr/bin/env bash
# Regenerates the committed Python protobuf modules from proto/ with the same
# protoc the Rust build uses (the protoc-bin-vendored crate).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fetch --quiet
protoc=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*protoc-bin-vendored-linux-x86_64-*/bin/protoc' | sort | tail -n 1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$protoc" --python_out="$out" -I proto pyclave/v1/api.proto pyclave/v1/worker.proto
cp "$out/pyclave/v1/api_pb2.py" python/pyclave/_proto/api_pb2.py
cp "$out/pyclave/v1/worker_pb2.py" worker/pyclave_worker/worker_pb2.py
