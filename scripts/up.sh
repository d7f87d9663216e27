#!/usr/bin/env bash
# Sets up and runs the platform on a fresh Debian machine: installs PostgreSQL's server
# binaries and bubblewrap when missing, builds the `paas` binary and runs `paas up`, which
# prints the console's URL and, on first start, the demo accounts' passwords. Stopping it
# stops the control plane; `./target/release/paas down` stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
if [ -z "${DATABASE_URL:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing PostgreSQL (the platform runs its own cluster from the system's binaries)"
  missing+=(postgresql)
fi
if ! command -v bwrap >/dev/null; then
  echo "installing bubblewrap (the sandbox the local runtime runs instances in)"
  missing+=(bubblewrap)
fi
if ! command -v redis-server >/dev/null; then
  echo "installing redis-server (the cache service's servers)"
  missing+=(redis-server)
fi
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  echo "installing nats-server (the message-queue service's servers)"
  missing+=(nats-server)
fi
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  echo "installing haproxy (the API gateway service's servers)"
  missing+=(haproxy)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is needed to build the platform: https://rustup.rs" >&2
  exit 1
fi
# The platform and the brokers it runs beside itself (found next to `paas`).
cargo build --release --locked --bin paas --bin paas-cache-broker --bin paas-database-broker --bin paas-queue-broker --bin paas-gateway-broker
exec ./target/release/paas up "$@"
