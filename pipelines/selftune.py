"""`synth selftune`: rounds of train → score → extract → expand, resumable, run by a scheduler.

State folder (``--state DIR``)::

    selftune.json        the state: round, next step, stop reason, inputs, config hash, step times
    config.json          the resolved config in force (config.next.json: adopted at the next round)
    metrics.jsonl        one line per finished round (held-out mIoU, per-class IoU, mask counts, times)
    report.md, report.png
    base/labeled/        the labelled photos (photos-*.parquet), base/held_out/ the scored ones,
    base/composites/     composites of the hand-made cutouts (and their objects.parquet)
    round-001/train/     the segmenter's run (checkpoint.pt, tb/), finetune/ (its fine-tuning on the labelled
                         photos alone, when ``finetune_steps``), score/, extract/, composites/, search/

Round 0 prepares ``base/``. Round k trains a segmenter on the labelled photos, the composites of
round k-1 (hand-made + round k-1's automatic cutouts; round 0's are hand-made only) and, when
``extract.pseudo_labels``, round k-1's pseudo-labelled photos; with ``finetune_steps``, fine-tunes
it from those weights on the labelled photos alone (pseudo-labels as a first stage, then the
photos: above the same steps on the photos alone on every CCP seed, where mixing them in was
below); scores the round's segmenter (the fine-tuned one if any) on the held-out photos;
stops when the gain over round k-1 is below ``min_gain`` (or at ``max_rounds``); otherwise
extracts automatic masks from the unlabeled pool with it and expands the hand-made and the
accepted automatic cutouts into round k's composites.

Every step writes into ``NAME.partial/`` and renames it to ``NAME/`` when complete, and only
then is the state advanced (atomically), so a job killed at any point redoes that step from
scratch and never uses half-written output. Training, fine-tuning and extraction are the exceptions that
keep their partial folders: the loop's atomic checkpoints resume them exactly, and extract goes on from
its whole chunks of photos (:mod:`pipelines.extract_parts`). Steps are deterministic given
the config, so a resumed run reaches the same state and metrics as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from augment.atomic_files import atomic_write_text
from augment.imageio import InputError, list_images
from pipelines import selftune_config
from pipelines.selftune_metrics import record_metrics
from pipelines.selftune_report import write_report
from pipelines.selftune_steps import SelfTuneSteps
from train.checkpoint import CHECKPOINT_FILE, config_differences

logger = logging.getLogger(__name__)

STATE_FILE = "selftune.json"
CONFIG_FILE = "config.json"
NEXT_CONFIG_FILE = "config.next.json"
PREPARE_STEPS = ("labeled", "held_out", "composites")
ROUND_STEPS = ("train", "finetune", "score", "extract", "expand", "search", "report")
TRAINING_STEPS = ("train", "finetune")  # resumed from their own checkpoints, not redone
RESUMED_STEPS = (*TRAINING_STEPS, "extract")  # extract goes on from its done chunks (pipelines.extract_parts)
STATE_VERSION = 1


@dataclass
class Inputs:
    labeled: Path
    unlabeled: Path
    backgrounds: Path

    def to_dict(self) -> dict[str, str]:
        return {k: str(Path(v).resolve()) for k, v in self.__dict__.items()}


class SelfTune(SelfTuneSteps):
    """One state folder's self-tuning run. ``hook(round, step, moment)`` is called at the start
    (``"begin"``) and at the end (``"written"``, output complete but not yet recorded) of every
    step: tests raise from it to play a job killed there."""

    def __init__(self, state_dir: Path, inputs: Inputs, config: dict[str, Any] | None, *, force_config: bool = False,
                 workers: int = 1, hook: Callable[[int, str, str], None] | None = None,
                 show_progress: bool = False) -> None:
        self.dir = Path(state_dir)
        self.inputs = inputs
        self.workers = workers
        self.hook = hook or (lambda r, s, m: None)
        self.show_progress = show_progress
        self.state = self._open(config, force_config)

    # ------------------------------------------------------------------ state
    def _check_state_outside_inputs(self) -> None:
        """The state folder is not under the unlabeled photos or the backgrounds, which are read as
        folders of images (every image under them): its previews and report.png would be sampled as
        unlabeled photos or pasted on as backgrounds in the next round."""
        state = self.dir.resolve()
        for name in ("unlabeled", "backgrounds"):
            folder = Path(getattr(self.inputs, name)).resolve()
            if state == folder or folder in state.parents:
                raise InputError(f"{self.dir}: --state lies inside --{name} {getattr(self.inputs, name)} (its "
                                 "previews and report would be read as input images); choose a --state outside it")

    def _open(self, config: dict[str, Any] | None, force_config: bool) -> dict[str, Any]:
        state_path = self.dir / STATE_FILE
        if not state_path.is_file():
            if config is None:
                raise InputError(f"{self.dir}: no self-tuning state here yet; pass --config to start one")
            if self.dir.is_dir() and any(p for p in self.dir.iterdir() if not p.name.startswith(".") and p.name != CONFIG_FILE):
                raise InputError(f"{self.dir}: folder is not empty and holds no {STATE_FILE}; choose an empty --state")
            self._check_state_outside_inputs()
            self._check_inputs()  # before the state records them: a mistyped path would be pinned in it
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.dir / CONFIG_FILE, json.dumps(config, indent=2))
            state = {"version": STATE_VERSION, "round": 0, "step": PREPARE_STEPS[0], "finished": False,
                     "stop_reason": None, "inputs": self.inputs.to_dict(), "config_hash": selftune_config.config_hash(config),
                     "times": {}}
            self._save(state)
            return state
        self._check_state_outside_inputs()
        pending_path = self.dir / NEXT_CONFIG_FILE
        state = read_state_file(state_path)
        # A config file must be one synth wrote: a hand-edited or damaged one ({} or {"max_rounds": "lots"})
        # was read as a changed config, and config.next.json's adopted as config.json at the next round.
        # Both are checked; the one waiting for the next round (if any) is the one in force.
        configs = [self.dir / CONFIG_FILE, *([pending_path] if pending_path.is_file() else [])]
        in_force = [_stored_config(path) for path in configs][-1]
        if state.get("version") != STATE_VERSION:
            raise InputError(f"{state_path}: state version {state.get('version')} is not {STATE_VERSION}")
        shapes = {"round": int, "step": str, "finished": bool, "inputs": dict, "config_hash": str, "times": dict,
                  "stop_reason": (str, type(None))}
        wrong = [key for key, kind in shapes.items() if not isinstance(state.get(key), kind)]
        if "inputs" not in wrong:  # each of them named, or the message below was a KeyError
            wrong += [key for key in self.inputs.to_dict() if not isinstance(state["inputs"].get(key), str)]
        if "round" not in wrong and (isinstance(state["round"], bool) or state["round"] < 0):
            wrong.append("round")
        if wrong or state["step"] not in (PREPARE_STEPS if state["round"] == 0 else ROUND_STEPS):  # round 0 prepares
            raise InputError(f"{state_path}: unreadable self-tuning state ({', '.join(wrong) or 'step'} missing or "
                             "invalid); not a file synth wrote")
        for key, value in self.inputs.to_dict().items():
            if state["inputs"].get(key) != value:
                raise InputError(f"{self.dir}: this state was started with --{key} {state['inputs'][key]}, not {value}")
        # Top-level keys added since take their defaults; the training's, their off values.
        changed = config_differences(in_force, config) if config is not None else []
        if force_config and not changed:  # (--search on a state searching already, the same --config): said
            logger.warning("%s: --force-config has nothing to adopt: the state's config is the one asked for already",
                           self.dir)
        if changed and state["round"] == 0:
            # Round 0 has not ended: nothing was trained or scored with the stored config, and a run that
            # stopped on it (labeled.include matching no photo) could never go on, not even with
            # --force-config, whose config waits for round 1. The new one replaces it and round 0 starts over.
            atomic_write_text(self.dir / CONFIG_FILE, json.dumps(config, indent=2))
            pending_path.unlink(missing_ok=True)
            logger.warning("config changed before round 0 ended: %s; round 0 starts over with it", "; ".join(changed))
            state.update(step=PREPARE_STEPS[0], times={}, config_hash=selftune_config.config_hash(config))
            self._save(state)
            return state
        if changed:
            if not force_config:
                raise InputError(f"{self.dir}: made with another config ({'; '.join(changed[:3])}"
                                 f"{' ...' if len(changed) > 3 else ''}); pass --force-config to adopt the new one "
                                 "from the next round")
            atomic_write_text(pending_path, json.dumps(config, indent=2))
            logger.warning("config change adopted from the next round: %s", "; ".join(changed))
            if state["finished"]:  # a finished run goes on: its last round extracts and expands, then the new config
                state.update(finished=False, stop_reason=None)
                if self.step_dir(state["round"], "expand").is_dir():
                    state.update(round=state["round"] + 1, step="train")
                    self._adopt_pending_config()
                else:
                    state["step"] = "extract"
                self._save(state)
        return state

    def _save(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.dir / STATE_FILE, json.dumps(state, indent=2))

    @property
    def config(self) -> dict[str, Any]:
        return selftune_config.with_added_defaults(json.loads((self.dir / CONFIG_FILE).read_text()))

    def _advance(self, step_seconds: float) -> None:
        state = dict(self.state)
        round_index, step = state["round"], state["step"]
        state["times"] = {**state["times"], f"{round_index}:{step}": round(step_seconds, 2)}
        if round_index == 0:
            position = PREPARE_STEPS.index(step)
            if position + 1 < len(PREPARE_STEPS):
                state["step"] = PREPARE_STEPS[position + 1]
            else:
                state.update(round=1, step="train")
                self._adopt_pending_config()
        elif step == "report":
            if state["stop_reason"] is not None:
                state["finished"] = True
            else:
                state.update(round=round_index + 1, step="train")
                self._adopt_pending_config()
        else:
            state["step"] = self._next_round_step(round_index, step, state)
        self._save(state)
        self.state = state

    def _next_round_step(self, round_index: int, step: str, state: dict[str, Any]) -> str:
        config = self.config
        if step == "score":
            reason = self._stop_reason(round_index, config)
            state["stop_reason"] = reason
            if reason is not None:
                return "report"
        following = ROUND_STEPS[ROUND_STEPS.index(step) + 1]
        if following == "finetune" and not config["finetune_steps"]:
            following = "score"
        if following == "search" and not config["search"]:
            following = "report"
        return following

    def _adopt_pending_config(self) -> None:
        pending = self.dir / NEXT_CONFIG_FILE
        if pending.is_file():
            pending.replace(self.dir / CONFIG_FILE)

    def _stop_reason(self, round_index: int, config: dict[str, Any]) -> str | None:
        if round_index >= 2:
            gain = self.round_miou(round_index) - self.round_miou(round_index - 1)
            if gain < config["min_gain"]:
                return f"round {round_index} gained {gain:+.4f} mIoU, less than min_gain {config['min_gain']}"
        if round_index >= config["max_rounds"]:
            return f"max_rounds {config['max_rounds']} reached"
        return None

    # ------------------------------------------------------------------ paths
    def round_dir(self, round_index: int) -> Path:
        return self.dir / ("base" if round_index == 0 else f"round-{round_index:03d}")

    def step_dir(self, round_index: int, step: str) -> Path:
        return self.round_dir(round_index) / ("composites" if step == "expand" else step)

    def round_checkpoint(self, round_index: int) -> Path:
        """The round's segmenter: its fine-tuned weights when the round fine-tuned, else its training run's."""
        finetuned = self.step_dir(round_index, "finetune")
        return (finetuned if finetuned.is_dir() else self.step_dir(round_index, "train")) / CHECKPOINT_FILE

    def round_miou(self, round_index: int) -> float:
        return self.round_score(round_index)["miou"]

    def round_score(self, round_index: int) -> dict[str, Any]:
        return json.loads((self.step_dir(round_index, "score") / "score.json").read_text())

    def composites_dir(self, round_index: int) -> Path:
        return self.round_dir(round_index) / "composites"

    # ------------------------------------------------------------------ running
    def run(self, rounds: int | None = None) -> dict[str, Any]:
        """Run until finished, or until ``rounds`` rounds have ended in this call; returns the state."""
        self._check_inputs()
        ended = 0
        while not self.state["finished"] and (rounds is None or ended < rounds):
            round_index, step = self.state["round"], self.state["step"]
            logger.info("round %d: %s", round_index, step)
            started = time.perf_counter()
            self._run_step(round_index, step)
            self._advance(time.perf_counter() - started)
            ended += step == "report"
        return self.state

    def _check_inputs(self) -> None:
        for name, path in self.inputs.__dict__.items():
            if not Path(path).exists():
                raise InputError(f"{path}: no such file or directory (--{name})")
        if not self.unlabeled_images():
            raise InputError(f"{self.inputs.unlabeled}: no images in the unlabeled folder")

    def unlabeled_images(self) -> list[Path]:
        return list_images(self.inputs.unlabeled)[0]

    def _run_step(self, round_index: int, step: str) -> None:
        target = self.step_dir(round_index, step)
        partial = target.with_name(target.name + ".partial")
        if step == "report":  # files at the top of the state folder, each written atomically
            self.hook(round_index, step, "begin")
            lines = record_metrics(self, round_index, self.step_seconds(round_index))
            write_report(self.dir, lines, self.step_dir(round_index, "extract") / "previews")
            self.hook(round_index, step, "written")
            return
        if step not in RESUMED_STEPS and partial.exists():  # a killed attempt's output is never used
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        self.hook(round_index, step, "begin")
        getattr(self, f"_step_{step}")(round_index, partial)
        self.hook(round_index, step, "written")
        if target.exists():  # completed before, but the state was not saved: replaced by this attempt
            shutil.rmtree(target)
        partial.rename(target)

    def step_seconds(self, round_index: int) -> dict[str, float]:
        prefix = f"{round_index}:"
        return {k[len(prefix):]: v for k, v in self.state["times"].items() if k.startswith(prefix)}


def read_state_file(path: Path) -> dict[str, Any]:
    """One of a state folder's JSON files, which holds an object; else one line naming it."""
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable self-tuning state ({error})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: unreadable self-tuning state (must hold a JSON object)")
    return values


def state_config(state_dir: Path) -> dict[str, Any] | None:
    """The config a state folder's next round runs with (config.next.json where one waits, else
    config.json), checked; None where the folder holds none."""
    for name in (NEXT_CONFIG_FILE, CONFIG_FILE):
        path = Path(state_dir) / name
        if path.is_file():
            return _stored_config(path)
    return None


def _stored_config(path: Path) -> dict[str, Any]:
    """A state folder's config.json or config.next.json, read and checked to be a config ``synth
    selftune`` wrote (:func:`pipelines.selftune_config.resolve`'s output, with the keys added since at
    their defaults), as it is in force; anything else is one line naming the file."""
    values = read_state_file(path)
    try:
        return selftune_config.resolve(selftune_config.with_added_defaults(values), str(path))
    except InputError as error:
        remedy = (f"; remove it to go on with {CONFIG_FILE}'s config" if path.name == NEXT_CONFIG_FILE
                  else "")
        raise InputError(f"{error} (not a self-tuning config synth wrote{remedy})") from None
