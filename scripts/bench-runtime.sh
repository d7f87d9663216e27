#!/usr/bin/env bash
# Benchmarks the platform against baselines measured in the same run and prints ratios.
# First the control plane at scale (bench_scale.py): P6, the console's applications page
# of a tenant with 10,000 applications against /healthz; P7, creating an application
# against a single-row insert; P8, 500 simulated nodes and 10,000 instances. Then one
# machine's platform (bench_runtime.py): onboarding (P1, median of 20 and p99) and
# kill -9 recovery (P4, worst of 5) against a bare process start, throughput and p99
# through the router against the instance directly for a close-per-request and a
# keep-alive backend (P9, wrk), and failed requests while the control plane is killed
# under load. Its last line is one JSON object with the keys issue 9 names. Needs
# PostgreSQL's binaries (with pgbench), python3 and wrk.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked --bin paas --bin paas-simnodes
scale_out=$(mktemp)
trap 'rm -f "$scale_out"' EXIT
python3 scripts/bench_scale.py target/release/paas target/release/paas-simnodes | tee "$scale_out"
PAAS_BENCH_SCALE_JSON=$(tail -n 1 "$scale_out") python3 scripts/bench_runtime.py target/release/paas
