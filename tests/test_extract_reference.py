"""`synth extract --reference` of another class map: its regions are matched by class index, so it was
silently compared as if its classes were the checkpoint's. Now one line (exit 2) before --out is touched."""

from __future__ import annotations

import pytest

from augment.imageio import InputError
from cli_checks import assert_one_line_error, run_cli
from pipelines.extract import ExtractConfig, run_extract
from pipelines.segmenter import Segmenter
from segment_factory import make_unlabeled, save_untrained_segmenter, tiny_train_values


def _other_class_map(path):
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig
    from train.tasks import build_task

    values = tiny_train_values()
    values["segment"]["classes"] = [{"name": "background"}, {"name": "person", "source_labels": ["person"]}]
    config = TrainConfig(**values)
    save_checkpoint(path, model=build_task(config).build_model(), optimizer=None, step=0, config=config.to_dict(),
                    config_hash=config.hash())
    return path


def test_a_reference_of_another_class_map_is_one_line_before_out_is_touched(tmp_path):
    photos = make_unlabeled(tmp_path / "photos", count=2, size=40)
    model, other = save_untrained_segmenter(tmp_path / "model.pt"), _other_class_map(tmp_path / "other.pt")
    result = run_cli("extract", photos, "--checkpoint", model, "--reference", other, "--out", tmp_path / "out",
                     "--device", "cpu")
    assert_one_line_error(result, 2, f"--reference {other}: its classes (background, person) are not the checkpoint's "
                          "(background, disc, box)")
    assert not (tmp_path / "out").exists()

    out = tmp_path / "earlier"
    run_extract(Segmenter(model, "cpu"), sorted(photos.iterdir()), out, ExtractConfig())
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(InputError, match="reference: its classes"):
        run_extract(Segmenter(model, "cpu"), sorted(photos.iterdir()), out, ExtractConfig(),
                    reference=Segmenter(other, "cpu"))
    assert sorted(p.name for p in out.iterdir()) == before
    # The same class map is fine.
    run_extract(Segmenter(model, "cpu"), sorted(photos.iterdir()), out, ExtractConfig(),
                reference=Segmenter(model, "cpu"))
