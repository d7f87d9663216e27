#!/usr/bin/env bash
# P2: from a load step to a new instance serving through the router, on one machine's
# platform (`paas up`), against a bare start of the same application measured in the
# same run. A service with a requests-per-second rule (1 s samples) gets three times its
# target; the time until a request through the router is answered by a new instance,
# median of 5. Its last line is one JSON object with `p2_load_step_to_serving_s` and
# `p2_ratio` (the step ÷ (sample interval + bare start)). Needs python3 and
# PostgreSQL's binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin paas
python3 scripts/bench_autoscaling.py target/release/paas
