"""`synth eval`, `synth show`, `synth export` and friends as a demanding user meets them: option
values out of range, wrong file types, two runs at once. Small generated shards, CPU only."""

from __future__ import annotations

import pytest

from cli_checks import assert_one_line_error, run_cli
from shard_factory import make_shards


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda:x"])
def test_eval_with_an_unknown_device_is_one_line_not_a_torch_traceback(tmp_path, device):
    """--device tpu was torch's RuntimeError ("Expected one of cpu, cuda, ...") as a traceback."""
    make_shards(tmp_path / "shards", n_composites=4, rows_per_shard=4)
    result = run_cli("eval", "--shards", tmp_path / "shards", "--untrained", "--device", device, "--batches", 1)
    assert_one_line_error(result, 2, "--device", device)
