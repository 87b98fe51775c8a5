#!/usr/bin/env bash
# The main job, end to end: sets up, starts a supervisor with the default
# config, sends a real pandas transform through its socket with the Python
# client, prints the result, and stops the supervisor.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --quiet --release --bins
export PATH="$PWD/.venv/bin:$PATH"   # the default config runs `python3` from PATH
dir=$(mktemp -d)
socket="$dir/pyclave.sock"
target/release/pyclave serve --socket "$socket" &
supervisor=$!
trap 'kill "$supervisor" 2>/dev/null; wait "$supervisor" 2>/dev/null; rm -rf "$dir"' EXIT
python examples/demo.py "$socket"
