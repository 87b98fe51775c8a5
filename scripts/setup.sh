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

# Rootless mode (tests/rootless.rs): newuidmap/newgidmap, and an unprivileged
# user with a subordinate id range, as rootless container hosts have.
if [ "$(id -u)" = 0 ]; then
  if ! command -v newuidmap >/dev/null && command -v apt-get >/dev/null; then
    apt-get install -y -qq uidmap >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq uidmap >/dev/null; }
  fi
  if ! id -u pyclave-rootless >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin pyclave-rootless
  fi
  grep -q '^pyclave-rootless:' /etc/subuid 2>/dev/null || echo 'pyclave-rootless:1200000:65536' >> /etc/subuid
  grep -q '^pyclave-rootless:' /etc/subgid 2>/dev/null || echo 'pyclave-rootless:1200000:65536' >> /etc/subgid
fi
