#!/usr/bin/env bash
# Runs every test of the platform on a Debian machine: installs what the tests need
# (PostgreSQL, Chromium and its driver, redis-server, nats-server, HAProxy, Prometheus, the Kubernetes validation tools in a Python
# venv), starts a throwaway PostgreSQL that each test creates its own fresh database
# in, runs the Rust test suites, lints and validates the Helm chart, then validates
# the OpenAPI document and runs the API conformance run (schemathesis, every role).
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in postgresql chromium chromium-driver bubblewrap redis-server nats-server haproxy prometheus; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A throwaway PostgreSQL cluster on a free loopback port, tuned for tests (no fsync).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
work=$(mktemp -d /tmp/paas-test.XXXXXX)
chmod 755 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$work/pg"
run_pg "$pg_bin/initdb" -D "$work/pg/data" -U paas --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
run_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" start >/dev/null
cleanup() {
  run_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Each test makes its own database in this cluster (sqlx::test and the end-to-end tests).
export DATABASE_URL="postgres://paas@127.0.0.1:$port/postgres"
export PAAS_CHROMEDRIVER=${PAAS_CHROMEDRIVER:-/usr/bin/chromedriver}
export PAAS_CHROMIUM=${PAAS_CHROMIUM:-/usr/bin/chromium}
# Schemas and checkov for every object the Kubernetes driver renders (the corpus test).
k8s_venv=$(scripts/k8s-tools.sh)
export PAAS_K8S_PYTHON="$k8s_venv/bin/python"

# A build from a clean clone (CI) has nothing to reuse: incremental state would only
# take disk (several GiB) and time.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# `paas up` runs the middleware brokers found beside the `paas` executable; `cargo test`
# builds only the binaries of the package under test, so build every program first.
cargo build --workspace --bins --locked
cargo test --workspace --all-targets --locked

# The Helm chart: linted, rendered with real Helm, every object validated, RBAC checked.
"$PAAS_K8S_PYTHON" tests/k8s/chart.py

# The OpenAPI document must validate as OpenAPI 3.
python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator >/dev/null
./target/debug/paas openapi > "$work/openapi.json"
python3 -c "
import json, sys
from openapi_spec_validator import validate
doc = json.load(open('$work/openapi.json'))
validate(doc)
print('openapi: %s paths, valid OpenAPI %s' % (len(doc['paths']), doc['openapi']))
"

# The API conformance run: schemathesis against a throwaway platform, once per role.
scripts/conformance.sh

# Each middleware broker against the Open Service Broker API's OpenAPI document.
scripts/osb-conformance.sh
