#!/usr/bin/env bash
# Set up (if needed), then run the main job end to end on sample_data/:
# expand the sample objects into composites, draw a contact sheet, train the search network
# briefly on the CPU, and evaluate it against the untrained network on held-out objects.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456
synth=.venv/bin/synth
out=${OUT:-runs/demo}
steps=${STEPS:-200}

"$synth" expand sample_data/objects --backgrounds sample_data/backgrounds --out "$out/shards" --num 600
rm -f "$out/contact_sheet.png"  # one an older synth drew carries no mark of a sheet: show would not replace it
"$synth" show "$out/shards" --out "$out/contact_sheet.png"

rm -rf "$out/run"  # a fresh short run each time (use `synth train --resume` to continue one)
"$synth" train --shards "$out/shards" --out "$out/run" --config configs/train_cpu.yaml --steps "$steps"
"$synth" eval --shards "$out/shards" --untrained --config configs/train_cpu.yaml --split eval --out "$out/eval_untrained.json"
"$synth" eval --shards "$out/shards" --checkpoint "$out/run/checkpoint.pt" --split eval --out "$out/eval_trained.json"
echo "contact sheet: $out/contact_sheet.png; metrics: $out/eval_untrained.json vs $out/eval_trained.json"
