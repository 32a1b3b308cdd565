"""synth's training side: datasets, tasks, models, losses and the loop."""

import augment  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads: see augment/__init__.py)
