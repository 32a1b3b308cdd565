"""Shared test set-up: the tests' own helpers import by plain name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The tests' tensors are tiny: a second intra-op thread gains nothing, and on a busy shared machine its
# hand-offs made a 20-step training 10x slower (143 s against 13 s).
import torch  # noqa: E402

torch.set_num_threads(1)
