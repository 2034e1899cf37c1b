#!/usr/bin/env bash
# `pip install .` (not editable) into a fresh virtual environment gives a working vecdoctor that
# reads nothing from the source tree: its version, then the main job on the built-in sample, run
# from an empty folder elsewhere. Extras install too (`all` here; `scale` is the Ray test's).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
pip="$work/venv/bin/python -m pip"
$pip install -q --upgrade pip
$pip install -q "torch==2.13.0"            # the CPU build on this disk, never a CUDA one
$pip install -q "$src[all]"                # a wheel built from the tree, not an editable link
cd "$work"                                  # nothing below may read the source tree
"$work/venv/bin/python" - "$src" <<'PY'
import sys, pathlib, vecdoctor
where = pathlib.Path(vecdoctor.__file__).resolve()
assert pathlib.Path(sys.argv[1]) not in where.parents, f"imported from the source tree: {where}"
print("vecdoctor imported from", where.parent)
PY
"$work/venv/bin/vecdoctor" --version
"$work/venv/bin/vecdoctor" -q checkup --sample python-docs --quick -m minilm -o "$work/out" > "$work/summary.json"
test -s "$work/out/report.html" && test -s "$work/out/pipeline.json"
echo "installed vecdoctor ran the quick checkup: $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['recommended']['mode'])" "$work/summary.json") retrieval recommended"
