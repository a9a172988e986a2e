#!/usr/bin/env bash
# Sets everything up and runs the main job on the embedded default:
# builds waymark, checks the bundled journeys and draws each one.
# (Until the engine lands this is `waymark check` + `waymark graph`; see
# README.md.)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWAYMARK_BENCH=ON >/dev/null
ninja -C build waymark >/dev/null
waymark=build/engine/cli/waymark

echo
echo "== waymark check journeys/ =="
$waymark check journeys

echo
echo "== waymark graph: state machines drawn to build/graphs/ =="
mkdir -p build/graphs
for j in journeys/*.journey; do
  name=$(basename "$j" .journey)
  $waymark graph "$j" --format dot > "build/graphs/$name.dot"
  dot -Tsvg "build/graphs/$name.dot" -o "build/graphs/$name.svg"
  $waymark graph "$j" --format mermaid > "build/graphs/$name.mmd"
  $waymark graph "$j" --format json > "build/graphs/$name.json"
  printf '  %-16s -> build/graphs/%s.svg (.dot, .mmd, compiled form in .json)\n' "$name" "$name"
done
