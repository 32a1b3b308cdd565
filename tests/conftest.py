"""Shared test set-up: the tests' own helpers import by plain name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The tests' tensors are tiny: a second intra-op thread gains nothing, and on a busy shared machine its
# hand-offs made a 20-step training 10x slower (143 s against 13 s).
import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def selftune_one_round(tmp_path_factory):
    """`synth selftune --rounds 1` of segment_factory's tiny config on its generated photos, as cron runs it:
    (state folder, inputs, the command's result). Read only: test_selftune's one-round tests and
    test_qa_terminal's cron line share it (each ran the same round, ~2 s)."""
    import yaml
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.selftune import Inputs
    from segment_factory import make_noise_backgrounds, make_scene_photos, make_unlabeled, tiny_selftune_config

    root = tmp_path_factory.mktemp("selftune-one-round")
    inputs = Inputs(make_scene_photos(root / "labeled"), make_unlabeled(root / "unlabeled"),
                    make_noise_backgrounds(root / "backgrounds"))
    (root / "c.yaml").write_text(yaml.safe_dump(tiny_selftune_config()))
    result = CliRunner().invoke(app, ["selftune", "--state", root / "state", "--labeled", inputs.labeled,
                                      "--unlabeled", inputs.unlabeled, "--backgrounds", inputs.backgrounds,
                                      "--config", root / "c.yaml", "--rounds", "1"])
    return root / "state", inputs, result
