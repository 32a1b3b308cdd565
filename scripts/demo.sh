#!/usr/bin/env bash
# Set up (if needed), then run the main job end to end on sample_data/:
# expand the sample objects into composites, draw a contact sheet, train briefly, evaluate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456
synth=.venv/bin/synth
out=${OUT:-runs/demo}
"$synth" expand sample_data/objects --backgrounds sample_data/backgrounds --out "$out/shards" --num 600
"$synth" show "$out/shards" --out "$out/contact_sheet.png"
echo "contact sheet: $out/contact_sheet.png"
