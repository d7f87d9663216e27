#!/usr/bin/env bash
# Makes (once) the Python venv with the pinned schemathesis the conformance runs use,
# and prints its path. A venv that no longer runs (moved, or made by another clone
# through a shared target directory) is made again.
set -euo pipefail
cd "$(dirname "$0")/.."

pin="4.32.5"
venv="${PAAS_CONFORMANCE_VENV:-$PWD/target/conformance-venv}"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$pin"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$pin" >&2
fi
echo "$venv"
