#!/usr/bin/env bash
# P5: placement at scale. 1,000 applications of 10 instances each placed onto 500
# simulated nodes in 3 zones through the local driver's own `apply` (the code path the
# reconciler takes, the store's reads and writes included), once without placement
# rules and once with required one-per-node anti-affinity and a zone spread that must
# hold, against a throwaway PostgreSQL of its own. Its last line is one JSON object
# with p5_placements_per_s_unconstrained, p5_placements_per_s_constrained and
# p5_constrained_ratio. Needs PostgreSQL's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p runtime-local --example bench_placement
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
work=$(mktemp -d)
chmod 755 "$work"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$work"; fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_postgres "$pg_bin/initdb" -D "$work/data" -U paas --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
as_postgres "$pg_bin/pg_ctl" -D "$work/data" -l "$work/log" -w \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1" start >/dev/null
trap 'as_postgres "$pg_bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
DATABASE_URL="postgres://paas@127.0.0.1:$port/postgres" PAAS_LOG=warn ${BENCH_WRAP:-} \
  target/release/examples/bench_placement
