#!/usr/bin/env bash
# The benchmark: set-up, bubblewrap for the sandboxed baseline, a release
# build, then `pyclave bench` (extra arguments are passed on, e.g. --quick,
# --json, --concurrency 1,2).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if ! command -v bwrap >/dev/null && command -v apt-get >/dev/null; then
  apt-get install -y -qq bubblewrap >/dev/null || echo "bubblewrap could not be installed: its baseline is skipped" >&2
fi
cargo build --quiet --release --bins
exec target/release/pyclave bench --python .venv/bin/python "$@"
