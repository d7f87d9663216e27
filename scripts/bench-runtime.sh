#!/usr/bin/env bash
# Benchmarks the local runtime against baselines measured in the same run and prints
# ratios: onboarding (P1, median of 5 and p99 of 20) and kill -9 recovery (P4, worst of
# 5) against a bare process start, throughput and p99 through the router against the
# instance directly for a close-per-request and a keep-alive backend (P9, wrk), and
# failed requests while the control plane is killed under load. Its last line is one
# JSON object with the keys issue 9 names; P6, P7 and P8 are null until their load
# generators exist. Needs PostgreSQL's binaries, python3 and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked --bin paas
exec python3 scripts/bench_runtime.py target/release/paas
