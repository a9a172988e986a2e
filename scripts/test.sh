#!/usr/bin/env bash
# Sets everything up and runs the whole test suite:
#   0. starts the real servers the tests use (PostgreSQL, nats-server) on free loopback
#      ports (scripts/servers.sh), and stops them at the end, also on failure;
#   1. the full suite (ctest) in build/;
#   2. the language and engine unit tests again under ASan + UBSan (build-asan/,
#      unoptimised, with line tables only: reports name files and lines);
#   3. the engine's threads under ThreadSanitizer (build-tsan/): the engine tests and
#      the PostgreSQL reconnect tests;
#   4. the fuzzers (libFuzzer, clang), each for WAYMARK_FUZZ_SECONDS (default 45): the
#      journey language, and event input (ParseJson against nlohmann, the decoder).
# The builds of 2-4 run in the background, at the lowest CPU priority, from the start.
# Prints each ctest summary and a combined closing line; exits non-zero if
# anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=$(nproc)
fuzz_seconds=${WAYMARK_FUZZ_SECONDS:-45}

bash scripts/setup.sh || exit 2

# The tests' scratch files (their stores, outboxes, event files; not the
# servers' data, which stays in /tmp) go to tmpfs when /dev/shm has 4 GiB
# free: the crash tests SIGKILL processes and restart servers, which leaves
# the page cache intact, so writing through to a disk is not what they
# exercise; on the disk, the file transport's syncfs() waited on whatever
# else was being written, and the 100,000-event crash test took 219-396 s.
scratch=""
if avail=$(df --output=avail -k /dev/shm 2>/dev/null | tail -1) && ((avail > 4 * 1024 * 1024)); then
  scratch=$(mktemp -d /dev/shm/waymark-test.XXXXXX) && export TMPDIR=$scratch
fi

passed=0 failed=0 status=0
log=$(mktemp)
source scripts/servers.sh

# run_ctest DIR [ctest args...]: runs ctest, adds its counts to the totals.
run_ctest() {
  local dir=$1
  shift
  (cd "$dir" && ctest --output-on-failure -j"$jobs" "$@") 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local line
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)
  if [[ -n $line ]]; then
    local f t
    f=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    t=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    passed=$((passed + t - f))
    failed=$((failed + f))
  fi
  if ((rc != 0)); then status=1; fi
}

build() {  # build DIR [cmake args...]; NINJA_TARGETS limits what is built
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -G Ninja "$@" >/dev/null || return 1
  ninja -C "$dir" ${NINJA_TARGETS:-} || return 1
}

# The sanitizer and fuzzing builds run in the background at the lowest CPU
# priority from the start: they take the cycles the main build and the
# suite leave idle (the suite waits on servers, processes and its pacing
# tests more than it computes) and yield the CPU to them, one after the
# other in the order they are awaited (the fuzz build beside the ASan and
# TSan builds, tried once on 2026-11-30: the ASan tests began 4 minutes
# later, and the run took 24.3 minutes against 22.1). Each writes
# $side/NAME.log and then $side/NAME.status; await NAME prints the log and
# returns the status.
side=$(mktemp -d)
sanitizer_builds() {
  NINJA_TARGETS="tests/dsl/all tests/engine/all tests/plugins/all engine/cli/all" build build-asan \
    -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG=-g1 -DCMAKE_CXX_FLAGS_DEBUG=-g1 \
    -DWAYMARK_SANITIZE=ON -DWAYMARK_BENCH=OFF >"$side/asan.log" 2>&1
  echo $? >"$side/asan.status"
  NINJA_TARGETS="engine_test postgres_reconnect_test" build build-tsan -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS_DEBUG="-g1 -O1" -DCMAKE_CXX_FLAGS_DEBUG="-g1 -O1" -DWAYMARK_TSAN=ON \
    -DWAYMARK_BENCH=OFF >"$side/tsan.log" 2>&1
  echo $? >"$side/tsan.status"
  NINJA_TARGETS="parser_fuzz event_fuzz" build build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DWAYMARK_FUZZ=ON -DWAYMARK_BENCH=OFF \
    -DWAYMARK_FUZZ_SECONDS="$fuzz_seconds" >"$side/fuzz.log" 2>&1
  echo $? >"$side/fuzz.status"
}
await() {
  while [[ ! -s $side/$1.status ]]; do
    if ! kill -0 "$builds" 2>/dev/null && [[ ! -s $side/$1.status ]]; then
      cat "$side/$1.log" 2>/dev/null
      echo "the background builds ended before building $1"
      return 1
    fi
    sleep 1
  done
  cat "$side/$1.log"
  return "$(cat "$side/$1.status")"
}
set -m  # the builds in a process group of their own, which the trap can stop
(renice -n 19 -p $BASHPID >/dev/null; sanitizer_builds) &
builds=$!
set +m
trap 'kill -- -$builds 2>/dev/null; stop_servers; rm -rf "$log" "$side" $scratch' EXIT

start_postgres || { echo "could not start PostgreSQL"; exit 2; }
start_nats || { echo "could not start nats-server"; exit 2; }

echo "== build (RelWithDebInfo) =="
if build build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWAYMARK_BENCH=ON; then
  echo "== test suite =="
  run_ctest build
else
  echo "build failed"; status=1; failed=$((failed + 1))
fi

echo "== language and engine unit tests under ASan + UBSan (build-asan: unoptimised, line tables) =="
# Only what those tests run (their executables and the waymark binary the
# CLI tests call): the end-to-end tests are not built there.
if await asan; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    LSAN_OPTIONS=suppressions="$root/tests/lsan.supp" \
    run_ctest build-asan -L "dsl|engine"
else
  echo "sanitizer build failed"; status=1; failed=$((failed + 1))
fi

echo "== the engine's threads under TSan =="
# The engine thread and its committer (engine_test), and the PostgreSQL
# store reconnecting from both (postgres_reconnect_test).
if await tsan; then
  TSAN_OPTIONS=halt_on_error=1 run_ctest build-tsan -R "^(EngineTest|Partition|PostgresReconnect)\."
else
  echo "TSan build failed"; status=1; failed=$((failed + 1))
fi

echo "== fuzzing (${fuzz_seconds}s each) =="
if await fuzz; then
  run_ctest build-fuzz -L fuzz
else
  echo "fuzz build failed"; status=1; failed=$((failed + 1))
fi

echo
echo "total: $passed passed, $failed failed"
exit $status
