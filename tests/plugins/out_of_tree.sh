#!/bin/bash
# The plugin guide's example, built out of tree against an installed
# Waymark: `cmake --install` into a temporary prefix, the example
# configured with find_package(Waymark), built and installed into the
# prefix's plugin directory, listed by the installed `waymark plugins`,
# and used by `waymark run` as its transport.
# usage: out_of_tree.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
tmp=$(mktemp -d /tmp/wm_out_of_tree_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"

# The guide shows the example's files as they are.
/usr/bin/python3 - "$src" <<'PY'
import sys
src = sys.argv[1]
guide = open(f"{src}/docs/plugins.md").read()
for f in ["sink.c", "sink.schema.json", "CMakeLists.txt"]:
    text = open(f"{src}/plugins/examples/sink/{f}").read()
    if text not in guide:
        sys.exit(f"docs/plugins.md does not show plugins/examples/sink/{f} as it is")
PY

cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
test -f "$tmp/prefix/include/waymark/transport_plugin.h"
cmake -S "$src/plugins/examples/sink" -B "$tmp/sink" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_BUILD_TYPE=Release > "$tmp/configure.log"
cmake --build "$tmp/sink" > "$tmp/build.log"
cmake --install "$tmp/sink" > /dev/null
plugins=$tmp/prefix/lib/waymark/plugins
echo "installed: $(cd "$plugins" && ls | tr '\n' ' ')"

# Only the descriptor is exported.
exported=$(readelf --dyn-syms -W "$plugins/sink.so" | awk '$7 != "UND" && $8 != "" && NR > 3 {print $8}')
test "$exported" = "waymark_transport_plugin" || { echo "exports: $exported"; exit 1; }

"$tmp/prefix/bin/waymark" plugins | tee "$tmp/plugins.txt"
grep -q "^  sink *0.1.0 *ABI 1\.[0-9]* *ok: accepts everything, keeps nothing" "$tmp/plugins.txt"
grep -q "^  file .*ok:" "$tmp/plugins.txt"

cd "$tmp"
"$tmp/prefix/bin/waymark" run --journeys "$src/journeys" --schemas "$src/schemas" \
  --events "$src/journeys/sample_events.jsonl" --clock event --until-idle --advance 30d \
  --store "sqlite:$tmp/w.db" --transport sink: --json > "$tmp/run.json" 2> "$tmp/run.err"
/usr/bin/python3 - "$tmp/run.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print("run:", json.dumps({k: s[k] for k in ("sends", "outbox") if k in s})[:400])
accepted = sum(by.get("accepted", 0) for by in s["sends"].values())
assert accepted > 100, accepted
assert s["outbox"] == "nowhere (sink plugin)", s["outbox"]
PY
grep -q "transport 'sink': info: ready" "$tmp/run.err"
echo "out-of-tree plugin: ok"
