#!/usr/bin/env bash
# The pipeline benchmark (bench/pipeline_bench.cc) on real servers: starts
# nats-server and PostgreSQL on free loopback ports (scripts/servers.sh),
# runs it, stops them. Arguments go to pipeline_bench: [EVENTS] [BATCH].
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 2
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWAYMARK_BENCH=ON >/dev/null &&
  ninja -C build pipeline_bench waymark >/dev/null || exit 2
source scripts/servers.sh
trap stop_servers EXIT
start_nats >/dev/null && start_postgres >/dev/null || exit 2
build/bench/pipeline_bench "$@"
