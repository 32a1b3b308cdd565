"""synth's commands and what they orchestrate (search, temporal video search, self-tuning)."""

import os

# OpenMP threads that spin while they wait turn a CPU shared with other work into a 20-30x
# slowdown (measured: the temporal mode's 160-px windows took 1.2 s a frame instead of 50 ms with
# two torch threads on a 2-core machine running one other job); passive waiting costs little when
# the CPU is free. Set before torch loads OpenMP; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
