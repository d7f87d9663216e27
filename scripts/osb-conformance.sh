#!/usr/bin/env bash
# The brokers' conformance run: each middleware broker (cache, database, queue,
# gateway) is started on its own with a throwaway state directory and checked by
# schemathesis (every check, every phase) against the Open Service Broker API's
# OpenAPI document, with basic authentication and `X-Broker-API-Version: 2.17`.
#
# The document is the one the specification publishes. It leaves out answers the
# specification's text gives every operation, so the run adds them before checking:
# `401` ("MUST return a 401 Unauthorized response if the authentication fails"), `400`
# for a request without `X-Broker-API-Version` ("MAY reject the request with 400 Bad
# Request") and `412` for a version the broker does not speak.
#
#   scripts/osb-conformance.sh        # after `cargo build --workspace --bins`
#   PAAS_OSB_OPENAPI=/path/to/openapi.yaml scripts/osb-conformance.sh
set -euo pipefail
cd "$(dirname "$0")/.."

document="${PAAS_OSB_OPENAPI:-../shared/reference/osb/openapi.yaml}"
if [ ! -f "$document" ]; then
  echo "osb conformance: SKIPPED: no OSB OpenAPI document at $document (set PAAS_OSB_OPENAPI)"
  exit 0
fi
venv=$(scripts/conformance-venv.sh)
bin_dir="${PAAS_BIN_DIR:-./target/debug}"
examples="${PAAS_CONFORMANCE_EXAMPLES:-40}"
work=$(mktemp -d /tmp/paas-osb-conformance.XXXXXX)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop EXIT

"$venv/bin/python" - "$document" "$work/openapi.yaml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for path in doc["paths"].values():
    for method, operation in path.items():
        if isinstance(operation, dict) and "responses" in operation:
            responses = operation["responses"]
            error = {"$ref": "#/components/schemas/Error"} if "Error" in doc.get("components", {}).get("schemas", {}) else {"type": "object"}
            body = {"application/json": {"schema": error}}
            responses.setdefault("401", {"description": "Authentication failed (the specification's Authentication section)"})
            responses.setdefault("400", {"description": "No X-Broker-API-Version header (the specification's API Version Header section)", "content": body})
            responses.setdefault("412", {"description": "A version the broker does not speak (the specification's API Version Header section)", "content": body})
yaml.safe_dump(doc, open(sys.argv[2], "w"))
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
status=0
for broker in cache database queue gateway; do
  port=$(free_port)
  # No platform behind it: a provision the run manages to make fails in the
  # background, which is what the run may then poll.
  PAAS_BROKER_PASSWORD="$password" PAAS_PLATFORM_PASSWORD=none RUST_LOG=warn \
    "$bin_dir/paas-$broker-broker" --listen "127.0.0.1:$port" --state-dir "$work/$broker" \
    --platform-url http://127.0.0.1:9 --platform-username none >"$work/$broker.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 50); do
    curl -sf -o /dev/null -u "platform:$password" -H 'X-Broker-API-Version: 2.17' "http://127.0.0.1:$port/v2/catalog" && break
    sleep 0.1
  done
  echo "osb conformance: $broker"
  if ! "$venv/bin/st" --config-file tests/conformance/osb.toml run "$work/openapi.yaml" \
      --url "http://127.0.0.1:$port" --auth "platform:$password" -H 'X-Broker-API-Version: 2.17' \
      --checks all --max-examples "$examples" --workers 1 \
      --seed "${PAAS_CONFORMANCE_SEED:-20261207}" --no-color >"$work/$broker.txt" 2>&1; then
    status=1
    cat "$work/$broker.txt"
  fi
  grep -A1 "^Test cases:" "$work/$broker.txt" | tail -n 1 || true
  tail -n 1 "$work/$broker.txt"
done
exit "$status"
