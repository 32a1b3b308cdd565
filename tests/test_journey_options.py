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
