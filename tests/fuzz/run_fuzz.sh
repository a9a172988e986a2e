#!/usr/bin/env bash
# Runs a libFuzzer target for a bounded time over a seed corpus.
# usage: run_fuzz.sh FUZZER SECONDS DICT|- SEEDS...
# SEEDS: directories (their *.journey files are seeds) or .jsonl files
# (each line is a seed).
# New inputs go to a scratch corpus, never into the repository. A crash,
# hang (>10 s on one input) or sanitizer report fails the run.
set -euo pipefail
fuzzer=$1 seconds=$2 dict=$3
shift 3
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
for d in "$@"; do
  if [[ -d $d ]]; then
    find "$d" -maxdepth 1 -name '*.journey' -exec cp {} "$corpus"/ \;
  else
    split -l 1 -a 5 "$d" "$corpus/$(basename "$d")."
  fi
done
dict_flag=()
[[ $dict != - ]] && dict_flag=(-dict="$dict")
echo "fuzz: $(ls "$corpus" | wc -l) seeds, ${seconds}s"
exec "$fuzzer" "$corpus" "${dict_flag[@]}" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="${TMPDIR:-/tmp}/waymark-fuzz-"
