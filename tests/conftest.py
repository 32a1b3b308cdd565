"""Shared test set-up: the tests' own helpers import by plain name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
