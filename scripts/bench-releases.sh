#!/usr/bin/env bash
# P3: releases under load, on one machine's platform (`paas up`). A keep-alive service
# of 4 instances behind the router; the router's maximum measured first (wrk, 32
# connections), then each strategy released under a steady load (wrk, 8 connections,
# at least 100,000 requests) against the same load's p99 with no release, in the same
# run; then kill -9 of the control plane in the middle of a rolling release under 200
# req/s. Its last line is one JSON object with p3_failed_rolling, p3_failed_inplace,
# p3_failed_canary, p3_requests_min, p3_p99_ratio_max, canary_abort_intervals and
# cp_kill_release_failed (null where the strategy does not exist yet). Needs python3,
# wrk and PostgreSQL's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked --bin paas
python3 scripts/bench_releases.py target/release/paas
