#!/usr/bin/env bash
# Set up (if needed), then run the whole test suite with pytest. Extra arguments go to pytest.
# The whole suite runs in SYNTH_TEST_WORKERS pytest-xdist worker processes (default 2; 1 runs it in this one),
# each test file in one worker (tests/conftest.py groups them; the Ray tests share one worker). A run that names
# its tests (a file, a folder, a test id) runs in one process, as does one given `-n`/`-p no:xdist` of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456
workers=${SYNTH_TEST_WORKERS:-2}
case "$workers" in
  "" | *[!0-9]*) echo "error: SYNTH_TEST_WORKERS=$workers: expected a number of worker processes (1: none)" >&2; exit 2 ;;
esac
for arg in "$@"; do
  case "$arg" in
    tests | tests/* | ./tests* | *.py | *.py::* | -n | -n* | --numprocesses* | no:xdist | -pno:xdist) workers=1 ;;
  esac
done
parallel=()
if [ "$workers" -gt 1 ]; then
  parallel=(-n "$workers" --dist loadfile)
fi
exec .venv/bin/python -m pytest -q "${parallel[@]}" "$@"
