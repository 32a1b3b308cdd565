"""Copy-paste onto labelled photos on CCP: do such composites help a segmenter trained on 100 photos?

    python benchmarks/segment_copy_paste.py [--work runs/ccp-copy-paste] [--config configs/ccp_copy_paste.yaml]
        [--data DIR] [--base DIR] [--arms e ...] [--seeds 0 1]

Split and training settings: configs/ccp_selftune.yaml (named by the copy-paste config). mIoU on the
200 held-out photos (0101-0300, at 224 px on the short side) of segmenters trained with the same
config, steps and seed on:

  (a) the 100 labelled photos only (as benchmarks/segment_ccp.py);
  (e) the same photos + composites made by `synth expand` with the garments cut out of those 100
      photos pasted onto those same 100 labelled photos (backgrounds.format label_map): every pixel
      of a composite is labelled, by a visible garment or by the background photo's own labels.
      One arm per entry of ``arms`` in the config: its segment.mix and, optionally, changes to the
      expand config (such an arm gets composites of its own).

``--labeled GLOB...`` replaces the split's 100 labelled photos (globs on stems; ``'000?' '001?'
'002[0-5]'``: the 25-photo regime, where copy-paste is said to help most): the photos and the
composites' garments and backgrounds all come from those; the held-out photos stay. A work folder
records its labelled photos and refuses another set (give each set its own ``--work``).

An arm may also name ``pseudo: N``: N unlabeled photos (1005-2098, the seeded sample of
self-tuning's round 1) labelled by `synth extract` with (a)'s first-seed checkpoint as the teacher
and the self-tuning config's ``extract`` filters; its ``mix`` gives them the ``pseudo`` share
(self-training, no composites: what self-tuning does without its expansion). ``init: ARM`` starts
the arm from ARM's checkpoint of the same seed (train on composites, then fine-tune on the photos);
``steps: N`` replaces the training steps (the same number of steps in all, for such a comparison).

``--seeds 0 1`` trains every arm again with the training seed + 1 (the noise check). ``--base``
reuses photo shards of the split written before (``labeled/`` and ``held_out/``, as
benchmarks/segment_ccp.py writes them under ``selftune/base/``). Everything resumes: finished
runs are read back, not trained again. Torch runs on one thread at nice 10 (as segment_ccp.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
if __name__ == "__main__" and os.environ.get("PYTHONPATH") != str(ROOT):
    os.execve(sys.executable, [sys.executable, *sys.argv], ENV)  # the thread count is read at import

sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))  # after the repo: benchmarks/train.py must not shadow train/

from augment.atomic_files import atomic_write_text  # noqa: E402
from augment.config import ExpandConfig, read_yaml_mapping  # noqa: E402
from augment.imageio import InputError  # noqa: E402
from augment.photo_shards import write_photo_shards  # noqa: E402
from benchmarks.segment_ccp import CCP, train_baseline  # noqa: E402
from bench_args import Parser, at_least, existing_file  # noqa: E402
from pipelines import selftune_config  # noqa: E402


@dataclass
class Arm:
    mix: dict[str, float]
    expand: ExpandConfig | None  # None: the arm trains on no composites
    composites: str | None  # folder name under the work folder
    pseudo: int = 0  # unlabeled photos labelled by (a)'s checkpoint (0: none)
    init: str | None = None  # the arm whose checkpoint (same seed) starts this one
    steps: int | None = None  # training steps instead of the config's

    @property
    def pseudo_folder(self) -> str:
        return f"pseudo-{self.pseudo}"


def _merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load(path: Path, labeled_include: list[str] | None = None) -> tuple[dict, dict[str, Arm]]:
    """The self-tuning config (split, training) and the arms (mix, expand config with the split's
    photos); ``labeled_include`` replaces the split's labelled photos (globs on stems, no exclude)."""
    values = read_yaml_mapping(path)
    unknown = set(values) - {"selftune_config", "expand", "arms"}
    if unknown or "selftune_config" not in values:
        raise InputError(f"{path}: needs selftune_config, expand and arms (unknown: {sorted(unknown)})")
    config = selftune_config.load(path.parent / values["selftune_config"])
    if labeled_include is not None:
        config["labeled"] = {"include": list(labeled_include), "exclude": []}
    labeled = config["labeled"]
    source = selftune_config.source_config(config, labeled["include"], labeled["exclude"])  # as (b)'s cutouts
    expand = dict(values.get("expand") or {})
    expand["sources"] = {**source.__dict__, **(expand.get("sources") or {})}
    expand["backgrounds"] = {**(expand.get("backgrounds") or {}), "include": list(labeled["include"]),
                             "exclude": list(labeled["exclude"])}
    arms: dict[str, Arm] = {}
    for name, entry in (values.get("arms") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("mix"), dict) or \
                set(entry) - {"mix", "expand", "pseudo", "init", "steps"}:
            raise InputError(f"{path}: arms.{name} must hold mix (a segment.mix mapping) and optionally expand, "
                             "pseudo, init, steps")
        pseudo = entry.get("pseudo", 0)
        if not isinstance(pseudo, int) or isinstance(pseudo, bool) or pseudo < 0 or (pseudo > 0) != ("pseudo" in entry["mix"]):
            raise InputError(f"{path}: arms.{name}.pseudo must be a photo count, given with a pseudo share in mix")
        steps = entry.get("steps")
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            raise InputError(f"{path}: arms.{name}.steps must be a whole number of steps")
        changes = entry.get("expand") or {}
        if changes and "composites" not in entry["mix"]:
            raise InputError(f"{path}: arms.{name} has expand changes but no composites share in mix")
        expand_config, composites = None, None
        if "composites" in entry["mix"]:
            expand_config = ExpandConfig.from_dict(_merged(expand, changes), f"{path}: arms.{name}.expand")
            composites = f"composites-{name}" if changes else "composites"
        arms[name] = Arm(entry["mix"], expand_config, composites, pseudo, entry.get("init"), steps)
    for name, arm in arms.items():
        if arm.init is not None and (arm.init not in arms or arms[arm.init].init is not None):
            raise InputError(f"{path}: arms.{name}.init must name another arm of the config (one without init)")
    if not arms:
        raise InputError(f"{path}: no arms")
    return config, arms


def _check_split(data: Path, config: dict, work: Path) -> None:
    """Exit with one line where the labelled photos match none or overlap the held-out ones, or where
    ``work`` holds runs of another labelled set; else record this set there."""
    from fnmatch import fnmatch

    stems = sorted(p.stem for p in (data / "labels").iterdir())

    def chosen(split: dict) -> set[str]:
        return {s for s in stems if any(fnmatch(s, g) for g in split["include"])
                and not any(fnmatch(s, g) for g in split["exclude"])}

    labeled, held_out = chosen(config["labeled"]), chosen(config["held_out"])
    if not labeled:
        sys.exit(f"error: --labeled {' '.join(config['labeled']['include'])} matches no photo of {data / 'labels'}")
    if labeled & held_out:
        sys.exit(f"error: --labeled takes held-out photos ({', '.join(sorted(labeled & held_out)[:3])}...)")
    record = work / "labeled.json"
    wanted = {"include": config["labeled"]["include"], "photos": len(labeled)}
    if record.is_file() and json.loads(record.read_text()) != wanted:
        sys.exit(f"error: {work} holds runs of another labelled set ({record}); give --work another folder")
    if not record.is_file() and (work / "results.json").is_file():
        sys.exit(f"error: {work} holds runs of the config's split; give --work another folder")
    work.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(wanted))
    print(f"labelled photos: {len(labeled)} ({' '.join(wanted['include'])})", flush=True)


def extract_pseudo(data: Path, work: Path, config: dict, count: int) -> None:
    """Pseudo-labels of ``count`` unlabeled photos (self-tuning's round-1 sample) by (a)'s first seed, once."""
    out = work / f"pseudo-{count}"
    if (out / "extract.json").is_file():
        return
    from augment.imageio import list_images
    from benchmarks.segment_ccp import link_unlabeled
    from pipelines.extract import ExtractConfig, run_extract
    from pipelines.segmenter import Segmenter
    from pipelines.selftune_steps import round_sample

    if not (data / "image_tags.json").is_file():
        sys.exit(f"error: {data / 'image_tags.json'} is absent: it lists the unlabeled photos the pseudo arms need")
    images = round_sample(list_images(link_unlabeled(data, work / "unlabeled"))[0], count, config["seed"], 1)
    started = time.perf_counter()
    summary = run_extract(Segmenter(work / "a-seed0" / "checkpoint.pt", "cpu"), images, out,
                          ExtractConfig(**config["extract"]), round_index=1, workers=2)
    print(f"pseudo-{count}: {summary.pseudo_photos} photos, {summary.labelled_fraction:.0%} of their pixels labelled, "
          f"{summary.accepted} of {summary.masks} regions accepted in {time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "ccp-copy-paste")
    parser.add_argument("--config", type=existing_file, default=ROOT / "configs" / "ccp_copy_paste.yaml")
    parser.add_argument("--data", type=Path, default=CCP, help="the CCP folder (default: ../shared/data/ccp)")
    parser.add_argument("--base", type=Path, default=None, help="photo shards of the split written before (read only)")
    parser.add_argument("--arms", nargs="*", default=None, help="arms to run (default: a and every arm of the config)")
    parser.add_argument("--labeled", nargs="+", default=None, metavar="GLOB",
                        help="labelled training photos (globs on stems) instead of the config's split")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="training seed offsets (default: 0)")
    parser.add_argument("--workers", type=at_least(1), default=2)
    args = parser.parse_args()
    if not (args.data / "labels").is_dir():
        print(f"skipped: {args.data / 'labels'} is absent (shared data not present)")
        return
    os.nice(10)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config, arms = load(args.config, args.labeled)
    except InputError as error:
        sys.exit(f"error: {error}")
    work = args.work
    if args.labeled is not None:
        if args.base is not None:
            sys.exit("error: --labeled writes photo shards of its own split; drop --base")
        _check_split(args.data, config, work)
    base = args.base or work / "base"
    if args.base is None:
        store = config["train"]["segment"]["store_short_side"]
        for name in ("labeled", "held_out"):
            split = config[name]
            write_photo_shards([args.data], base / name,
                               selftune_config.source_config(config, split["include"], split["exclude"]), store)
    chosen = args.arms if args.arms is not None else ["a", *arms]
    unknown = [arm for arm in chosen if arm != "a" and arm not in arms]
    if unknown:
        sys.exit(f"error: no arm {unknown[0]!r} in {args.config} (arms: a, {', '.join(arms)})")
    trained = [a for a in chosen if a != "a"]
    trained += [arms[a].init for a in trained if arms[a].init]  # an arm started from another trains that one first
    for arm in dict.fromkeys(arms[a].composites for a in trained if arms[a].composites):
        composites = work / arm
        if not (composites / "manifest.json").is_file():
            from augment.expand import run_expand

            started = time.perf_counter()
            expand = next(x.expand for x in arms.values() if x.composites == arm)
            result = run_expand([args.data], args.data, composites, expand, workers=args.workers)
            print(f"expand {arm}: {result.rows_written} composites, {result.manifest['objects']['cutouts']} cutouts, "
                  f"{result.manifest['backgrounds']['count']} backgrounds in {time.perf_counter() - started:.0f} s", flush=True)

    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    def run_arm(key: str, arm: str, seed: int) -> None:
        if key in results:
            return
        if arm == "a":
            result = train_baseline(key, base / "labeled", base / "held_out", config, work, seed_offset=seed)
        else:
            spec = arms[arm]
            more = [work / spec.composites] if spec.composites else []
            more += [work / spec.pseudo_folder] if spec.pseudo else []
            overrides: dict = {"steps": spec.steps} if spec.steps else {}
            if spec.init:
                run_arm(f"{spec.init}-seed{seed}", spec.init, seed)
                overrides["init_checkpoint"] = str(work / f"{spec.init}-seed{seed}" / "checkpoint.pt")
            result = train_baseline(key, base / "labeled", base / "held_out", config, work, more=tuple(more),
                                    mix=spec.mix, seed_offset=seed, overrides=overrides)
        # Runs of other seeds may go on in another process: merge with what it wrote meanwhile.
        results.update(json.loads(results_path.read_text()) if results_path.is_file() else {})
        results[key] = result
        print(key, json.dumps(result), flush=True)
        atomic_write_text(results_path, json.dumps(results, indent=2))

    for count in sorted({arms[a].pseudo for a in trained if arms[a].pseudo}):
        run_arm("a-seed0", "a", 0)  # the teacher
        extract_pseudo(args.data, work, config, count)
    for seed in args.seeds:
        for arm in chosen:
            run_arm(f"{arm}-seed{seed}", arm, seed)

    print("\nheld-out mIoU on 200 CCP photos (0101-0300), 224 px short side:")
    names = sorted({k.rsplit("-seed", 1)[0] for k in results})
    for name in names:
        values = [results[k]["miou"] for k in sorted(results) if k.rsplit("-seed", 1)[0] == name]
        print(f"  {name:4s} " + "  ".join(f"{v:.4f}" for v in values) + f"   mean {sum(values) / len(values):.4f}")


if __name__ == "__main__":
    main()
