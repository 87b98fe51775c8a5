#!/usr/bin/env bash
# Runs every test: set-up (idempotent), then the Rust unit and integration
# tests (real supervisors, real workers, real cgroups), then the Python
# client's tests against a real supervisor. Needs root (cgroups).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --all-targets 2>&1
.venv/bin/python -m pytest -q tests/python
