"""The real-data experiment of self-tuning on CCP: does it close the gap to the fully labelled ceiling?

    python benchmarks/segment_ccp.py [--work runs/ccp-experiment] [--config configs/ccp_selftune.yaml] [--data DIR]

Split (configs/ccp_selftune.yaml, the one place it is fixed): 100 labelled photos to train on,
200 held out and scored, the other 400 labelled photos used only by the ceiling. mIoU on the 200
held-out photos (at 224 px on the short side) of segmenters trained with the same config and
number of steps on:

  (a) the 100 labelled photos only;
  (b) self-tuning round 1: the photos and, if the config's mix names them, composites
      expanded from their hand-made cutouts (then fine-tuned on the photos, if it fine-tunes);
  (c) self-tuning rounds 2.. (best and last) on the unlabeled pool (photos 1005-2098):
      pseudo-labelled photos, automatic cutouts in the composites, as the mix says;
  (d) all 500 labelled photos that are not held out (the ceiling), less 0616 and 0671, which show
      the outfits of held-out 0223 and 0197 (benchmarks/ccp.py SHOOT_TWINS).

Then a confirmation: (a) and every round's segmenter scored again on the labelled photos that
only the ceiling trains on (0301-0700, 399 usable): every setting of the config was chosen on the 200 held-out
photos, so a gain that holds here is not one of choosing.

(a) and (d) train for as many steps as a round's segmenter: ``train.steps`` + ``finetune_steps``
(a round that fine-tunes is compared with the photos alone for the same total; their folders are
then named ``a-real100-{N}steps`` and ``d-ceiling500-{N}steps``).
Self-tuning runs as a scheduler would run it: `synth selftune ... --rounds 1` once per round.
Everything resumes: rerunning the script skips finished runs and continues unfinished ones. (a)
and (d) train on photos only, so they do not depend on the self-tuning settings of the config:
another config's work folder can start from copies of ``a-real100/``, ``d-ceiling500/`` and
``ceiling-photos/`` (same training keys otherwise) and only the rounds are run.
configs/ccp_selftune_v1.yaml, _v2.yaml, _v3.yaml are the earlier configurations (README gives every result).
Needs ../shared/data/ccp; exits with a message when it is absent. Torch runs on one thread
(OMP_NUM_THREADS=1: on this shared 2-core machine two threads were 2-3x slower) at nice 10.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# PYTHONPATH: the `synth selftune` subprocesses import this copy of the code (the script can run from
# a snapshot of the repository while the working tree changes).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
       "PYTHONPATH": str(ROOT)}
if __name__ == "__main__" and os.environ.get("PYTHONPATH") != str(ROOT):
    os.execve(sys.executable, [sys.executable, *sys.argv], ENV)  # the thread count is read at import

sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))  # after the repo: benchmarks/train.py must not shadow train/

from augment.config import SourceConfig  # noqa: E402
from augment.imageio import list_images  # noqa: E402
from augment.photo_shards import write_photo_shards  # noqa: E402
from augment.sources import limited  # noqa: E402
import ccp  # noqa: E402
from bench_args import Parser, existing_file  # noqa: E402
from pipelines import selftune_config  # noqa: E402


CCP = ROOT.parent / "shared" / "data" / "ccp"


def link_unlabeled(data: Path, folder: Path) -> Path:
    """A folder of links to the unlabeled photos (those of image_tags.json: no pixel labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in sorted(json.loads((data / "image_tags.json").read_text())):
        link = folder / f"{stem}.jpg"
        if not link.exists():
            link.symlink_to(data / "photos" / f"{stem}.jpg")
    return folder


def _stems_outside(data: Path, *splits: dict) -> list[str]:
    """The labelled photos (stems) that none of the config's ``splits`` (include / exclude globs) picks."""
    labels = list_images(data / "labels")[0]
    picked = {p.stem for split in splits
              for p in limited(labels, SourceConfig(include=split["include"], exclude=split["exclude"]))}
    return [p.stem for p in labels if p.stem not in picked]


def ceiling_stems(data: Path, config: dict) -> list[str]:
    """Every labelled photo that the config does not hold out, but for held-out photos' shoot twins
    (benchmarks/ccp.py :data:`~ccp.SHOOT_TWINS`: 0616 and 0671 show the outfits of held-out 0223
    and 0197)."""
    stems = _stems_outside(data, config["held_out"])
    held_out = {p.stem for p in list_images(data / "labels")[0]} - set(stems)
    twins = ccp.twins_of(held_out)
    return [stem for stem in stems if stem not in twins]


def confirmation_stems(data: Path, config: dict) -> list[str]:
    """The labelled photos neither held out nor trained on by (a) or the rounds (0301-0700): only the
    ceiling trains on them, so they never chose a self-tuning setting."""
    return _stems_outside(data, config["held_out"], config["labeled"])


def photo_shards(data: Path, config: dict, stems: list[str], folder: Path) -> dict:
    """The labelled photos ``stems`` as photo shards in ``folder`` at the config's stored size (reused
    when up to date); their manifest."""
    return write_photo_shards([data], folder, selftune_config.source_config(config, stems, []),
                              config["train"]["segment"]["store_short_side"])


def confirm(data: Path, config: dict, work: Path, checkpoints: dict[str, Path]) -> tuple[dict[str, float], int]:
    """mIoU of each checkpoint on the confirmation photos (:func:`confirmation_stems`), and how many
    of them were usable."""
    from train.evaluate import evaluate_shards, load_trained

    photos = work / "confirm-photos"
    manifest = photo_shards(data, config, confirmation_stems(data, config), photos)
    scores = {}
    for name, checkpoint in checkpoints.items():
        model, trained_config = load_trained(checkpoint)
        scores[name] = evaluate_shards(model, trained_config, photos, split="eval", num_workers=0)["metrics"]["miou"]
    return scores, manifest["num_rows"]


def run_selftune(args: argparse.Namespace, state: Path, unlabeled: Path, rounds: int | None) -> None:
    command = [sys.executable, "-m", "pipelines.cli", "--verbose", "selftune", "--state", str(state),
               "--labeled", str(args.data), "--unlabeled", str(unlabeled), "--backgrounds", str(unlabeled),
               "--config", str(args.config), "--workers", "2"]
    state_file = state / "selftune.json"
    while not (state_file.is_file() and json.loads(state_file.read_text())["finished"]):
        started = time.perf_counter()
        subprocess.run([*command, "--rounds", "1"], check=True, env=ENV)
        print(f"selftune round took {time.perf_counter() - started:.0f} s", flush=True)
        if rounds is not None:
            rounds -= 1
            if rounds == 0:
                return


def train_baseline(name: str, shards: Path, held_out: Path, config: dict, work: Path,
                   more: tuple[Path, ...] = (), mix: dict[str, float] | None = None, seed_offset: int = 0,
                   overrides: dict | None = None) -> dict:
    """Train with the self-tuning config's segmenter settings (on photos only by default); score on the held-out photos.

    ``more`` shard folders (e.g. composites) are streamed beside the photos in the ``mix``
    proportions; ``seed_offset`` is added to the training seed (a second seed of the same arm);
    ``overrides`` replace training keys (e.g. steps, init_checkpoint).
    """
    from train.checkpoint import CHECKPOINT_FILE, load_checkpoint
    from train.config import TrainConfig
    from train.evaluate import evaluate_shards, load_trained
    from train.loop import train

    values = dict(config["train"])
    values["seed"] += 1 + seed_offset  # as self-tuning round 1
    values["segment"] = {**values["segment"], "mix": dict(mix or {"photos": 1.0})}
    values.update(overrides or {})
    train_config = TrainConfig(**values)
    out = work / name
    checkpoint = out / CHECKPOINT_FILE
    resume = checkpoint.is_file()
    started = time.perf_counter()
    if not resume or load_checkpoint(checkpoint)["step"] < train_config.steps:
        train(train_config, [shards, *more], out, resume=resume, show_progress=False)
    seconds = time.perf_counter() - started
    model, trained_config = load_trained(checkpoint)
    metrics = evaluate_shards(model, trained_config, held_out, split="eval", num_workers=0)["metrics"]
    return {"miou": metrics["miou"], "per_class_iou": {k[4:]: v for k, v in metrics.items() if k.startswith("iou/")},
            "train_seconds_this_call": seconds}


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "ccp-experiment")
    parser.add_argument("--config", type=existing_file, default=ROOT / "configs" / "ccp_selftune.yaml")
    parser.add_argument("--data", type=Path, default=CCP, help="the CCP folder (default: ../shared/data/ccp)")
    args = parser.parse_args()
    args.data = args.data.resolve()
    if not (args.data / "labels").is_dir():
        print(f"skipped: {args.data / 'labels'} is absent (shared data not present)")
        return
    os.nice(10)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = selftune_config.load(args.config)
    work = args.work
    unlabeled = link_unlabeled(args.data, work / "unlabeled")
    state = work / "selftune"

    run_selftune(args, state, unlabeled, rounds=1)  # round 0 (the split's photo shards) and round 1 = (b)
    held_out = state / "base" / "held_out"
    steps = config["train"]["steps"] + config["finetune_steps"]  # a round's segmenter's: the baselines' too
    suffix, overrides = (f"-{steps}steps", {"steps": steps}) if config["finetune_steps"] else ("", None)
    results = {"a": train_baseline(f"a-real100{suffix}", state / "base" / "labeled", held_out, config, work,
                                   overrides=overrides)}
    print("(a)", json.dumps(results["a"]), flush=True)
    ceiling = work / "ceiling-photos"
    photo_shards(args.data, config, ceiling_stems(args.data, config), ceiling)
    results["d"] = train_baseline(f"d-ceiling500{suffix}", ceiling, held_out, config, work, overrides=overrides)
    print("(d)", json.dumps(results["d"]), flush=True)
    run_selftune(args, state, unlabeled, rounds=None)  # rounds 2.. = (c)

    lines = [json.loads(x) for x in (state / "metrics.jsonl").read_text().splitlines() if x.strip()]
    results["b"] = {"miou": lines[0]["miou"], "per_class_iou": lines[0]["per_class_iou"]}
    later = lines[1:]
    if later:
        best = max(later, key=lambda x: x["miou"])
        results["c_best"] = {"round": best["round"], "miou": best["miou"], "per_class_iou": best["per_class_iou"]}
        results["c_last"] = {"round": later[-1]["round"], "miou": later[-1]["miou"]}
    gap = results["d"]["miou"] - results["a"]["miou"]
    print(f"\nheld-out mIoU on 200 CCP photos (0101-0300), 224 px short side, {steps} training steps each:")
    for key, label in (("a", "(a) 100 labelled photos"), ("b", "(b) self-tuning round 1"),
                       ("c_best", "(c) + self-tuning, best round"), ("c_last", "(c) + self-tuning, last round"),
                       ("d", "(d) all 500 labelled photos")):
        if key in results:
            closed = (results[key]["miou"] - results["a"]["miou"]) / gap if gap > 0 else float("nan")
            round_note = f" (round {results[key]['round']})" if "round" in results[key] else ""
            print(f"  {label:32s} {results[key]['miou']:.4f}   gap closed {closed:+.0%}{round_note}")
    for line in lines:
        extract = line.get("extract")
        counts = (f"{extract['masks']} masks, {extract['accepted']} accepted, rejected {extract['rejected']}"
                  if extract else "no extraction (last round)")
        print(f"  round {line['round']}: mIoU {line['miou']:.4f}; {counts}; seconds {line['seconds']}")
    # The same segmenters on photos that chose no setting of the config (the ceiling trains on them).
    checkpoints = {"a": work / f"a-real100{suffix}" / "checkpoint.pt"}
    checkpoints.update({f"round {x['round']}": state / x["segmenter"] for x in lines if x.get("segmenter")})
    confirmed, photos = confirm(args.data, config, work, checkpoints)
    print(f"\nconfirmation: mIoU on the {photos} labelled photos only the "
          "ceiling trains on (they chose no setting):")
    for name, miou in confirmed.items():
        print(f"  {name:10s} {miou:.4f}   over (a) {miou - confirmed['a']:+.4f}")
    (work / "results.json").write_text(json.dumps({"results": results, "rounds": lines, "confirmation": confirmed},
                                                  indent=2))


if __name__ == "__main__":
    main()
