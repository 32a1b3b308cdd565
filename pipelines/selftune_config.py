"""The configuration of `synth selftune`: one YAML file, resolved into one JSON-able mapping.

``configs/ccp_selftune.yaml`` is the documented example. The resolved mapping (every key of the
segmenter's training config, of `synth expand` and of `synth extract`, with defaults filled in)
is what a state folder stores and what a later run is compared with, key by key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from augment.config import ExpandConfig, SourceConfig, read_yaml_mapping
from augment.imageio import InputError
from augment.validation import is_int, is_number
from pipelines.extract import extract_config
from train.config import MAX_SEED, TrainConfig

STABILITY_VIEWS = ("flip", "previous_round")
FINETUNE_SCHEDULES = ("restart", "continue")
# Top-level keys and their defaults (``train_config`` is a path, resolved relative to the YAML file).
DEFAULTS: dict[str, Any] = {
    "train_config": None,  # the segmenter's training config (task segment); its keys can be overridden under train:
    "train": {},  # TrainConfig keys over train_config's (in model: and segment:, key by key)
    "expand": {},  # ExpandConfig mapping: composites made each round (num, composition, distortions, sources filters)
    "extract": {},  # ExtractConfig keys: the filters of the automatic masks
    "finetune_steps": 0,  # then fine-tune each round's segmenter on the labelled photos alone for this many steps
    # restart: the fine-tuning's learning-rate schedule starts afresh (warm-up, then the full decay);
    # continue: one schedule over training and fine-tuning (the training stops part-way down it,
    # the fine-tuning goes on from there with the training's optimizer state)
    "finetune_schedule": "restart",
    "labeled": {"include": [], "exclude": []},  # which photos of --labeled are the labelled training set (globs on stems)
    "held_out": {"source": None, "include": [], "exclude": []},  # photos scored each round (source default: --labeled)
    "unlabeled_per_round": 0,  # photos of the unlabeled pool extracted per round (0 = all; a seeded sample otherwise)
    "stability_view": "flip",  # second view of the stability filter: flip | previous_round (the last round's checkpoint)
    "max_rounds": 5,  # stop after this many rounds
    "min_gain": 0.005,  # stop when a round's held-out mIoU gains less than this over the previous round's
    "search": False,  # also retrain the query-search network on each round's composites (--search)
    "search_train": {},  # TrainConfig keys of that query-search training
    "seed": 0,
}


def _mapping(value: Any, origin: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{origin}: expected a mapping, got {value!r}")
    return value


def _globs(values: dict[str, Any], origin: str, defaults: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise InputError(f"{origin}: unknown key(s) {', '.join(unknown)} (known: {', '.join(defaults)})")
    resolved = {}
    for key, default in defaults.items():
        value = values.get(key, default)
        if key in ("include", "exclude"):
            value = value or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InputError(f"{origin}.{key}: expected a list of glob patterns")
        elif key == "source" and value is not None and not isinstance(value, str):
            # 5 or a list was taken here and a TypeError traceback once a round scored its photos
            raise InputError(f"{origin}.{key}: expected a folder of labelled photos or null, got {value!r}")
        resolved[key] = value
    return resolved


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it; the keys of a section (model:, segment:) are replaced one by one."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _train_config(values: dict[str, Any], base: Path | None, origin: str, task: str) -> TrainConfig:
    try:
        if base is not None:
            TrainConfig.from_yaml(base)  # names the base file in its errors
            values = _merged(read_yaml_mapping(base), values)
    except TypeError as error:
        raise InputError(f"{origin}: {error}") from None
    try:
        config = TrainConfig(**{"task": task, **values})
    except (TypeError, InputError) as error:  # TrainConfig names the key, not the file or section
        raise InputError(f"{origin}: {error}") from None
    if config.task != task:
        raise InputError(f"{origin}: task must be {task}, not {config.task}")
    return config


def resolve(values: dict[str, Any], origin: str = "config", folder: Path | None = None) -> dict[str, Any]:
    """Every key with its value (defaults filled in, sub-configs validated); raises InputError naming a bad key."""
    values = _mapping(values, origin)
    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise InputError(f"{origin}: unknown key(s) {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    merged = {**DEFAULTS, **values}
    base = None
    if merged["train_config"] is not None:
        if not (isinstance(merged["train_config"], str) and merged["train_config"]):  # Path(5) was a traceback
            raise InputError(f"{origin}: train_config must be the path of a training YAML, got {merged['train_config']!r}")
        base = Path(merged["train_config"])
        if not base.is_absolute() and folder is not None and (folder / base).is_file():
            base = folder / base
    train = _train_config(_mapping(merged["train"], f"{origin}: train"), base, f"{origin}: train", "segment")
    if train.segment_config().eval_fraction:  # e.g. from a train_config made for `synth train` alone
        # Its hash split kept that share of the labelled photos out of every round's training, and
        # scored each round on that share of the held-out photos, all of them counted as scored.
        raise InputError(f"{origin}: train: segment.eval_fraction must be 0 in selftune, not "
                         f"{train.segment_config().eval_fraction} (held_out: holds the scored photos out)")
    expand = ExpandConfig.from_dict(_mapping(merged["expand"], f"{origin}: expand"), origin=f"{origin}: expand")
    extract = extract_config(_mapping(merged["extract"], f"{origin}: extract"), f"{origin}: extract")
    search = _train_config(_mapping(merged["search_train"], f"{origin}: search_train"), None,
                           f"{origin}: search_train", "query_search")
    checks = [
        (merged["stability_view"] in STABILITY_VIEWS, f"stability_view must be one of {', '.join(STABILITY_VIEWS)}"),
        (is_int(merged["max_rounds"]) and merged["max_rounds"] >= 1, "max_rounds must be an integer >= 1"),
        (is_number(merged["min_gain"]), "min_gain must be a finite number"),
        (is_int(merged["unlabeled_per_round"]) and merged["unlabeled_per_round"] >= 0,
         "unlabeled_per_round must be an integer >= 0"),
        (is_int(merged["finetune_steps"]) and merged["finetune_steps"] >= 0,
         "finetune_steps must be an integer >= 0"),
        (merged["finetune_schedule"] in FINETUNE_SCHEDULES,
         f"finetune_schedule must be one of {', '.join(FINETUNE_SCHEDULES)}"),
        # 'continue' decays the training's cosine over steps + finetune_steps (selftune_steps): past its warm-up
        (merged["finetune_schedule"] != "continue" or not is_int(merged["finetune_steps"])
         or not merged["finetune_steps"] or train.decay_steps
         or train.steps + merged["finetune_steps"] > train.warmup_steps,
         f"finetune_schedule continue decays over train.steps + finetune_steps ({train.steps} + "
         f"{merged['finetune_steps']}), which must exceed train.warmup_steps ({train.warmup_steps})"),
        (isinstance(merged["search"], bool), "search must be true or false"),
        (is_int(merged["seed"]) and 0 <= merged["seed"] <= MAX_SEED, "seed must be an integer from 0 to 2**63 - 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(f"{origin}: {message}")
    held_out = _globs(_mapping(merged["held_out"], f"{origin}.held_out"), f"{origin}.held_out", DEFAULTS["held_out"])
    if held_out["source"] is None and not held_out["include"]:
        raise InputError(f"{origin}: held_out needs include patterns (photos of --labeled kept for scoring) or a source")
    resolved = {
        "train": train.to_dict()["values"],
        "expand": expand.to_dict(),
        "extract": dataclasses.asdict(extract),
        "labeled": _globs(_mapping(merged["labeled"], f"{origin}.labeled"), f"{origin}.labeled", DEFAULTS["labeled"]),
        "held_out": held_out,
        "finetune_steps": merged["finetune_steps"],
        "finetune_schedule": merged["finetune_schedule"],
        "unlabeled_per_round": merged["unlabeled_per_round"],
        "stability_view": merged["stability_view"],
        "max_rounds": merged["max_rounds"],
        "min_gain": float(merged["min_gain"]),
        "search": merged["search"],
        "search_train": search.to_dict()["values"],
        "seed": merged["seed"],
    }
    return json.loads(json.dumps(resolved))  # tuples -> lists: what is stored compares equal to what is fresh


def load(path: Path | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve a YAML config file (None: the defaults, which lack a class map and so fail clearly)."""
    values = read_yaml_mapping(path) if path is not None else {}
    values = {**values, **(overrides or {})}
    return resolve(values, str(path or "config"), Path(path).parent if path is not None else None)


def with_added_defaults(stored: dict[str, Any]) -> dict[str, Any]:
    """A state folder's stored config with the keys added since it was written at their defaults (the
    value that keeps the old behaviour), so older states run on: the top-level keys, and those inside
    ``expand`` and ``extract`` (a state of stop 20 lacked ``expand.composition.object_scale_mode`` and
    ``expand.backgrounds``, and was refused as 'made with another config' by the very config it was
    made with). The training's are compared at their off values (:func:`train.checkpoint.config_differences`)."""
    config = {**{k: v for k, v in DEFAULTS.items() if k != "train_config"}, **stored}
    fresh = json.loads(json.dumps({"expand": ExpandConfig().to_dict(),
                                   "extract": dataclasses.asdict(extract_config({}, "extract"))}))
    for section, defaults in fresh.items():
        if isinstance(config.get(section), dict):
            config[section] = _under_defaults(defaults, config[section])
    return config


def _under_defaults(defaults: Any, stored: Any) -> Any:
    """``stored`` with the keys of ``defaults`` it lacks, at any depth (a mapping's values as stored)."""
    if not (isinstance(defaults, dict) and isinstance(stored, dict)):
        return stored
    return {**defaults, **{key: _under_defaults(defaults.get(key), value) for key, value in stored.items()}}


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def source_config(config: dict[str, Any], include: list[str], exclude: list[str]) -> SourceConfig:
    """The expand config's source settings with a split's include/exclude patterns."""
    values = {**config["expand"]["sources"], "include": list(include), "exclude": list(exclude)}
    return SourceConfig(**values)
