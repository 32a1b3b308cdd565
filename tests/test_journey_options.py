"""Options a step of the train -> export journey would ignore without a word are one line."""

from __future__ import annotations

from cli_checks import assert_one_line_error, run_cli


def test_export_onnx_refuses_a_config_beside_a_checkpoint(tmp_path):
    """The checkpoint is exported with its own config (query and medium sizes included): a --config
    given with it was silently ignored, as `synth eval` refuses it."""
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    config = TrainConfig(model={"pretrained": False}, device="cpu", query_size=64)
    save_checkpoint(tmp_path / "checkpoint.pt", model=build_task(config).build_model(), optimizer=None, step=0,
                    config=config.to_dict(), config_hash=config.hash())
    (tmp_path / "other.yaml").write_text("query_size: 96\n")
    result = run_cli("export-onnx", "--checkpoint", tmp_path / "checkpoint.pt", "--config", tmp_path / "other.yaml",
                     "--out", tmp_path / "net.onnx", "--no-check")
    assert_one_line_error(result, 2, "--config applies without --checkpoint", "exported with its own config")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "other.yaml"]


def test_resume_on_its_own_shards_folder_rewritten_since_says_so(tmp_path):
    """`trained on --shards X (fingerprint a), not on X (b)` named no difference: the folder was rewritten."""
    import shutil

    from shard_factory import make_shards
    from test_trainer import tiny_config
    from train.loop import train

    shards = make_shards(tmp_path / "shards", n_composites=8, size=64, seed=0).folder
    run = tmp_path / "run"
    train(tiny_config(steps=1), shards, run, show_progress=False)
    shutil.rmtree(shards)
    make_shards(shards, n_composites=8, size=64, seed=1)  # an expand rerun with other inputs
    result = run_cli("train", "--shards", shards, "--out", run, "--resume", "--steps", 2)
    assert_one_line_error(result, 2, f"the shards in {shards} changed since the run was trained on them",
                          "resume with the shards it started with")
