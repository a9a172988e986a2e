#!/usr/bin/env bash
# Sets everything up and runs the main job on the embedded default: builds
# waymark, checks and draws the bundled journeys, then runs them over the
# bundled sample events (six weeks of traffic, with the event clock) into a
# fresh SQLite store and file outbox, and prints what happened.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWAYMARK_BENCH=ON >/dev/null
ninja -C build waymark >/dev/null
waymark=$PWD/build/bin/waymark
out=build/demo

echo
echo "== waymark check journeys/ =="
$waymark check journeys

echo
echo "== waymark graph: state machines drawn to $out/graphs/ =="
rm -rf "$out"
mkdir -p "$out/graphs"
for j in journeys/*.journey; do
  name=$(basename "$j" .journey)
  $waymark graph "$j" --format dot > "$out/graphs/$name.dot"
  dot -Tsvg "$out/graphs/$name.dot" -o "$out/graphs/$name.svg"
  $waymark graph "$j" --format mermaid > "$out/graphs/$name.mmd"
  printf '  %-16s -> %s/graphs/%s.svg (and .dot, .mmd)\n' "$name" "$out" "$name"
done

echo
echo "== waymark run: journeys/sample_events.jsonl, event clock =="
$waymark run --events journeys/sample_events.jsonl --clock event --until-idle --advance 30d \
  --store "sqlite:$out/waymark.db" --transport "file:$out/outbox"

echo
echo "== waymark replay: every stored history through the step function again =="
$waymark replay --store "sqlite:$out/waymark.db"

echo
echo "== waymark replay --mode audit: the recorded events through an edited welcome_series =="
echo "   (its 'wait 4d' made 5d): which sends would change, per person"
rm -rf "$out/edited"
cp -r journeys "$out/edited"
sed -i '0,/^    wait 4d$/s//    wait 5d/' "$out/edited/welcome_series.journey"
$waymark replay --mode audit --journeys "$out/edited" --store "sqlite:$out/waymark.db" --limit 2

echo
echo "Why did (or didn't) someone get a message? For example:"
echo "  $waymark inspect password_reset leon.moreau@gmx.de --store sqlite:$out/waymark.db"
echo "What would pruning a week behind the latest event remove (nothing is removed)?"
echo "  $waymark prune --older-than 7d --dry-run --store sqlite:$out/waymark.db"
