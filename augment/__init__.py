"""synth's data side: sources, cutouts, composites, shards (and process-wide settings)."""

import os

# OpenMP threads that spin while they wait turn a CPU shared with other work into a 10-30x
# slowdown (measured: the temporal mode's 160-px windows took 1.2 s a frame instead of 50 ms with
# two torch threads on a 2-core machine running one other job; 20 CCP scenes searched at two
# threads beside two other jobs: 1131 ms a scene spinning, 109 ms passive; two temporal searches at
# once: 10.8 s each passive, 42.5 s each even with a short spin, GOMP_SPINCOUNT=30000). On a free
# CPU passive waiting costs the still-image search about 45% at two threads (90 vs 61 ms a CCP
# scene): set OMP_WAIT_POLICY=ACTIVE where one search runs at a time. It must be set before torch
# loads OpenMP, so every synth package sets it on import (train and pipelines import this one); a
# value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from augment.system import threads_within_quota  # noqa: E402

threads_within_quota(os.environ)  # a container's CPU quota, which torch, OpenMP and OpenBLAS do not read
