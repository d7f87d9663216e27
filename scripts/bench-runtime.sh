#!/usr/bin/env bash
# Benchmarks the local runtime against baselines measured in the same run and prints
# ratios: onboarding and kill -9 recovery against a bare process start, throughput and
# p99 through the router against the instance directly (wrk), and failed requests while
# the control plane is killed under load. Needs PostgreSQL's binaries, python3 and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked --bin paas
exec python3 scripts/bench_runtime.py target/release/paas
