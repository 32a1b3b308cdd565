"""synth's commands and what they orchestrate (search, temporal video search, self-tuning)."""

import augment  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads: see augment/__init__.py)
