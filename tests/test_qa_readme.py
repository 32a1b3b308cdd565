"""A newcomer follows README.md to the letter: what its commands print and what it says of each option."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_option_a_commands_help_lists_is_named_in_the_readme() -> None:
    """README named no `show --rows/--columns/--tile`, `eval --batches`, `export-onnx --no-check`,
    `calibrate --min-area` nor `photo-shards --short-side`: a reader of README alone never learned of them."""
    import typer

    from pipelines.cli import app

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", readme))
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    options = [(name, [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--") and o != "--help"])
               for name, command in commands.items() for param in command.params]
    missing = [f"synth {name} {'/'.join(flags)}" for name, flags in options if flags and not set(flags) & named]
    assert len(commands) >= 13 and not missing, missing


def test_expand_summary_says_one_worker_and_a_slow_runs_rate_in_significant_digits(tmp_path, monkeypatch) -> None:
    """`synth expand` of the CCP photos (32 composites after 500 s of cutting) said '0 composites/s
    overall', and one worker was 'local, 1 workers'."""
    from cli_checks import run_cli

    import pipelines.cli as cli

    real = cli.run_guarded

    def slow(*args, **kwargs):
        result = real(*args, **kwargs)
        if hasattr(result, "manifest"):  # the expansion (not another guarded call)
            result.seconds = 500.0  # as long as cutting the CCP photos' 3,274 cutouts took
        return result

    monkeypatch.setattr(cli, "run_guarded", slow)
    result = run_cli("expand", REPO / "sample_data" / "objects", "--backgrounds", REPO / "sample_data" / "backgrounds",
                     "--out", tmp_path / "out", "--num", 2, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "local, 1 worker " in result.output and "(0.004 composites/s overall)" in result.output, result.output


def test_segment_and_extract_summaries_count_in_the_singular(tmp_path) -> None:
    """`synth segment` of one photo said 'segmented 1 images', `synth extract` '1 photos ... 1 cutouts'."""
    from cli_checks import run_cli
    from segment_factory import make_unlabeled, save_untrained_segmenter

    from pipelines.extract import summary_counts

    photos = make_unlabeled(tmp_path / "photos", count=1)
    checkpoint = save_untrained_segmenter(tmp_path / "seg.pt")
    result = run_cli("segment", photos, "--checkpoint", checkpoint, "--out", tmp_path / "labelled", "--device", "cpu")
    assert result.exit_code == 0 and "segmented 1 image in" in " ".join(result.output.split()), result.output
    line = summary_counts({"images": 1, "skipped": [], "masks": 1, "accepted": 1, "rejected": {"small": 0},
                           "cutouts": 1})
    assert line.startswith("1 photo (0 skipped): 1 mask, 1 accepted") and line.endswith("; 1 cutout"), line


def test_show_export_and_photo_shards_count_one_in_the_singular(tmp_path) -> None:
    """'wrote sheet.png (1 composites)', 'wrote coco: 1 images, 1 annotations, 1 categorys' (the helper's
    plain 's'), 'wrote 1 labelled photos to ... (1 shards, ...)'."""
    from cli_checks import run_cli
    from segment_factory import make_scene_photos
    from shard_factory import make_shards

    shards = make_shards(tmp_path / "shards", n_composites=1, rows_per_group=1).folder
    shown = run_cli("show", shards, "--out", tmp_path / "sheet.png", "--rows", 1, "--columns", 1)
    assert shown.exit_code == 0 and "(1 composite)" in shown.output, shown.output
    exported = run_cli("export", shards, "--out", tmp_path / "coco")
    assert exported.exit_code == 0 and re.search(r": 1 image, \d+ annotations?, \d+ categor(y|ies)\b",
                                                 exported.output), exported.output
    photos = make_scene_photos(tmp_path / "labelled", count=1)
    written = run_cli("photo-shards", photos, "--out", tmp_path / "photos")
    assert written.exit_code == 0 and "wrote 1 labelled photo to" in written.output, written.output
    assert "(1 shard, 0 inputs skipped)" in " ".join(written.output.split()), written.output


def test_eval_help_says_what_it_measures_of_a_segmenter() -> None:
    """README: `synth eval --checkpoint runs/seg/checkpoint.pt --shards data/held_out  # mIoU, per-class IoU`;
    `synth --help` and `synth eval --help` named the search network's metrics alone."""
    from cli_checks import run_cli

    listed, own = run_cli("--help"), run_cli("eval", "--help")
    assert "mIoU" in " ".join(own.output.split()), own.output
    assert "mIoU" in " ".join(listed.output.split()), listed.output
