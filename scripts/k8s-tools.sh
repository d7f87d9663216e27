#!/usr/bin/env bash
# Installs the Kubernetes manifest validation tools into a Python virtualenv and
# prints its path. Used by tests/k8s/chart.py and tests/k8s/validate.py (and CI).
#
#   venv=$(scripts/k8s-tools.sh) && "$venv/bin/python" tests/k8s/chart.py
#
# The venv lives at ${PAAS_TOOLS_VENV:-$PWD/target/k8s-tools}. Re-running is cheap:
# nothing is installed when the pinned versions are already there.
set -euo pipefail

venv="${PAAS_TOOLS_VENV:-$PWD/target/k8s-tools}"

# helm-sdkpy needs Python >= 3.12. Use $PYTHON if given, else the first 3.12+ found
# (PATH, then pyenv's installs), else fail saying so.
find_python() {
  local c
  for c in ${PYTHON:-} python3.13 python3.12 python3 \
           "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
    if command -v "$c" >/dev/null 2>&1 \
       && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$c"
      return 0
    fi
  done
  return 1
}

# Pinned: bump deliberately, the checks and schemas move with these versions.
pins=(
  "kubernetes-validate==1.37.0"
  "checkov==3.3.30"
  "helm-sdkpy==0.1.32"
  "PyYAML==6.0.2"
)

# A venv made by an older Python (say 3.11) cannot hold helm-sdkpy: remake it.
if [ -x "$venv/bin/python" ] \
   && ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  echo "k8s-tools: $venv has Python < 3.12, recreating it" >&2
  rm -rf "$venv"
fi

if [ ! -x "$venv/bin/python" ]; then
  if ! python=$(find_python); then
    echo "k8s-tools: need Python >= 3.12 (helm-sdkpy requires it); set PYTHON=/path/to/python3.12" >&2
    exit 1
  fi
  echo "k8s-tools: creating venv at $venv with $python" >&2
  "$python" -m venv "$venv"
fi

# Which pins are missing (name==version as pip reports it; names compared case- and
# -/_-insensitively).
missing=$("$venv/bin/python" - "${pins[@]}" <<'PY'
import sys
from importlib import metadata

def norm(n):
    return n.lower().replace("_", "-").replace(".", "-")

have = {norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    if have.get(norm(name)) != version:
        print(pin)
PY
)

if [ -n "$missing" ]; then
  echo "k8s-tools: installing $(echo $missing)" >&2
  start=$(date +%s)
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}" >&2
  echo "k8s-tools: installed in $(( $(date +%s) - start ))s" >&2
fi

echo "$venv"
