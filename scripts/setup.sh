#!/usr/bin/env bash
# One-time (idempotent) set-up for a fresh machine: the Python venv the
# zygote runs in (pandas, pyarrow, numpy, protobuf) with the pyclave client
# installed, and a debug build of the supervisor (what the tests use).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/pip install --quiet --disable-pip-version-check -e python/
cargo build --quiet --bins
