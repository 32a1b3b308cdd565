"""What each step of `synth selftune` does: round 0's labelled, held-out and composite shards, and a
round's training, fine-tuning, scoring, extraction, expansion and search (each writes into the folder
it is given: :class:`pipelines.selftune.SelfTune` runs them into ``NAME.partial/`` and records them).

:class:`SelfTuneSteps` is the mixin :class:`~pipelines.selftune.SelfTune` takes them from; they read
its ``config``, ``inputs``, ``workers``, ``show_progress`` and its paths (``step_dir``,
``composites_dir``, ``round_checkpoint``, ``unlabeled_images``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from augment.atomic_files import atomic_write_text, json_safe
from augment.config import ExpandConfig
from augment.imageio import InputError
from augment.photo_shards import write_photo_shards
from augment.schema import MANIFEST_FILE, OBJECTS_FILE
from pipelines import selftune_config
from train.checkpoint import CHECKPOINT_FILE


def round_sample(images: list[Path], count: int, seed: int, round_index: int) -> list[Path]:
    """The unlabeled photos a round extracts from: a seeded sample of ``count`` (0: all), in order."""
    if 0 < count < len(images):
        picked = np.random.default_rng([seed, round_index]).choice(len(images), count, replace=False)
        images = [images[i] for i in sorted(picked)]
    return images


class SelfTuneSteps:
    """The steps of a self-tuning run (a mixin of :class:`pipelines.selftune.SelfTune`)."""

    # ------------------------------------------------------------------ round 0
    def _step_labeled(self, round_index: int, out: Path) -> None:
        split = self.config["labeled"]
        write_photo_shards([self.inputs.labeled], out, selftune_config.source_config(
            self.config, split["include"], split["exclude"]), self._train_config().segment_config().store_short_side)

    def _step_held_out(self, round_index: int, out: Path) -> None:
        split = self.config["held_out"]
        source = Path(split["source"]) if split["source"] else self.inputs.labeled
        write_photo_shards([source], out, selftune_config.source_config(self.config, split["include"], split["exclude"]),
                           self._train_config().segment_config().store_short_side)
        labeled = _row_ids(self.step_dir(0, "labeled"))
        overlap = sorted(labeled & _row_ids(out))
        if overlap:
            raise InputError(f"held-out photos are also labelled training photos: {', '.join(overlap[:5])}"
                             f"{' ...' if len(overlap) > 5 else ''} (check labeled/held_out in the config)")

    def _step_composites(self, round_index: int, out: Path) -> None:
        split = self.config["labeled"]
        expand = self._expand_config(0)
        expand.sources.include, expand.sources.exclude = list(split["include"]), list(split["exclude"])
        self._expand([self.inputs.labeled], out, expand)

    # ------------------------------------------------------------------ rounds
    def _train_config(self, round_index: int = 0, key: str = "train"):
        from train.config import TrainConfig

        values = dict(self.config[key])
        values["seed"] = values["seed"] + round_index  # each round's network starts afresh, from its own seed
        return TrainConfig(**values)

    def _segmenter_config(self, round_index: int):
        """The round's segmenter training; with ``finetune_schedule: continue`` its cosine decays over
        training and fine-tuning together (the training stops part-way down it, the fine-tuning goes on)."""
        config = self._train_config(round_index)
        if self.config["finetune_steps"] and self.config["finetune_schedule"] == "continue" and not config.decay_steps:
            config = dataclasses.replace(config, decay_steps=config.steps + self.config["finetune_steps"])
        return config

    def training_shards(self, round_index: int) -> list[Path]:
        shards = [self.step_dir(0, "labeled"), self.composites_dir(round_index - 1)]
        if round_index >= 2 and self.config["extract"]["pseudo_labels"]:
            shards.append(self.step_dir(round_index - 1, "extract"))
        return shards

    def _train(self, config, shards: list[Path], out: Path, scored: bool = True) -> None:
        """Train into ``out``, resuming from its checkpoint when a killed attempt left one."""
        from train.loop import train

        train(config, shards, out, eval_shards=self.step_dir(0, "held_out") if scored else None,
              resume=(out / CHECKPOINT_FILE).is_file(), show_progress=self.show_progress)

    def _step_train(self, round_index: int, out: Path) -> None:
        self._train(self._segmenter_config(round_index), self.training_shards(round_index), out)

    def _finetune_config(self, round_index: int):
        """The round's training config, from its trained weights, on the labelled photos alone."""
        from train.config import TrainConfig

        values = self._segmenter_config(round_index).to_dict()["values"]
        if self.config["finetune_schedule"] == "continue":  # the training's schedule and optimizer go on
            values.update(schedule_offset=values["steps"], init_optimizer=True)
        values.update(steps=self.config["finetune_steps"], segment={**values["segment"], "mix": {"photos": 1.0}},
                      init_checkpoint=str((self.step_dir(round_index, "train") / CHECKPOINT_FILE).resolve()))
        return TrainConfig(**values)

    def _step_finetune(self, round_index: int, out: Path) -> None:
        self._train(self._finetune_config(round_index), [self.step_dir(0, "labeled")], out)

    def _step_score(self, round_index: int, out: Path) -> None:
        from train.evaluate import evaluate_shards, load_trained

        model, config = load_trained(self.round_checkpoint(round_index))
        report = evaluate_shards(model, config, self.step_dir(0, "held_out"), split="eval", num_workers=0)
        metrics = report["metrics"]
        score = {"miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"], "loss": metrics["loss"],
                 "per_class_iou": {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("iou/")},
                 "held_out_photos": json.loads((self.step_dir(0, "held_out") / MANIFEST_FILE).read_text())["num_rows"]}
        atomic_write_text(out / "score.json", json.dumps(json_safe(score), indent=2, allow_nan=False))

    def round_images(self, round_index: int) -> list[Path]:
        return round_sample(self.unlabeled_images(), self.config["unlabeled_per_round"], self.config["seed"], round_index)

    def _step_extract(self, round_index: int, out: Path) -> None:
        from pipelines.extract import ExtractConfig, run_extract
        from pipelines.segmenter import Segmenter

        config = self.config
        device = config["train"]["device"]
        segmenter = Segmenter(self.round_checkpoint(round_index), device)
        reference = None
        if config["stability_view"] == "previous_round" and round_index >= 2:
            reference = Segmenter(self.round_checkpoint(round_index - 1), device)
        run_extract(segmenter, self.round_images(round_index), out, ExtractConfig(**config["extract"]),
                    round_index=round_index, reference=reference, workers=self.workers)

    def _expand_config(self, round_index: int) -> ExpandConfig:
        expand = ExpandConfig.from_dict(self.config["expand"], origin="expand")
        expand.seed = expand.seed + round_index
        return expand

    def _step_expand(self, round_index: int, out: Path) -> None:
        """Hand-made cutouts (round 0's objects table) and this round's accepted automatic ones."""
        expand = self._expand_config(round_index)
        expand.sources.format = "objects"
        expand.sources.include, expand.sources.exclude, expand.sources.limit = [], [], 0
        sources = [self.composites_dir(0)]
        extracted = self.step_dir(round_index, "extract")
        if _table_rows(extracted / OBJECTS_FILE):
            sources.append(extracted)
        self._expand(sources, out, expand)

    def _expand(self, sources: list[Path], out: Path, config: ExpandConfig) -> None:
        from augment.expand import run_expand

        run_expand(sources, self.inputs.backgrounds, out, config, workers=self.workers)

    def _step_search(self, round_index: int, out: Path) -> None:
        from train.evaluate import evaluate_shards, load_trained

        composites = self.composites_dir(round_index)
        self._train(self._train_config(round_index, "search_train"), [composites], out, scored=False)
        model, config = load_trained(out / CHECKPOINT_FILE)
        report = evaluate_shards(model, config, composites, split="eval", num_workers=0)
        atomic_write_text(out / "score.json", json.dumps(json_safe(report["metrics"]), indent=2, allow_nan=False))


def _row_ids(folder: Path) -> set[str]:
    import pyarrow.parquet as pq

    from augment.shards import find_shards

    return {row_id for path in find_shards(folder) for row_id in pq.read_table(path, columns=["id"]).column("id").to_pylist()}


def _table_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows if path.is_file() else 0
