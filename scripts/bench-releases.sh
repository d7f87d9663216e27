#!/usr/bin/env bash
# P3: releases under load, on one machine's platform (`paas up`). A keep-alive service
# of 4 instances behind the router; the router's maximum measured first (wrk, 32
# connections), then the p99 of a steady load at 60% of it (oha at a fixed rate with
# latency correction; wrk's closed loop, at the maximum, where oha is missing). Then, for
# each strategy (rolling, in-place, canary to 100%), the same load for long enough to
# reach 100,000 requests (30 to 150 s) while the service is released again and again,
# back to back, so that the whole run is "during a release". Then a canary that answers
# 500 to one request in five, under 200 req/s: the analysis checks (2 s each) until it
# is rolled back, and whether a stable instance restarted. Then kill -9 of the control
# plane in the middle of a slow rolling release under 200 req/s (the release must finish
# after the restart, with exactly 4 instances left). Its last line is one JSON object
# with p3_failed_rolling, p3_failed_inplace, p3_failed_canary, p3_requests_min,
# p3_p99_ratio_max, canary_abort_intervals and cp_kill_release_failed. Needs python3,
# wrk, PostgreSQL's binaries, and oha (`cargo install oha`) for the fixed-rate load.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked --bin paas
python3 scripts/bench_releases.py target/release/paas
