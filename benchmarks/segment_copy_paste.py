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

from augment.config import ExpandConfig, read_yaml_mapping  # noqa: E402
from augment.imageio import InputError  # noqa: E402
from augment.photo_shards import write_photo_shards  # noqa: E402
from benchmarks.segment_ccp import CCP, train_baseline  # noqa: E402
from pipelines import selftune_config  # noqa: E402


@dataclass
class Arm:
    mix: dict[str, float]
    expand: ExpandConfig
    composites: str  # folder name under the work folder


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
        if not isinstance(entry, dict) or not isinstance(entry.get("mix"), dict) or set(entry) - {"mix", "expand"}:
            raise InputError(f"{path}: arms.{name} must hold mix (a segment.mix mapping) and optionally expand")
        changes = entry.get("expand") or {}
        arms[name] = Arm(entry["mix"], ExpandConfig.from_dict(_merged(expand, changes), f"{path}: arms.{name}.expand"),
                         f"composites-{name}" if changes else "composites")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "ccp-copy-paste")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ccp_copy_paste.yaml")
    parser.add_argument("--data", type=Path, default=CCP, help="the CCP folder (default: ../shared/data/ccp)")
    parser.add_argument("--base", type=Path, default=None, help="photo shards of the split written before (read only)")
    parser.add_argument("--arms", nargs="*", default=None, help="arms to run (default: a and every arm of the config)")
    parser.add_argument("--labeled", nargs="+", default=None, metavar="GLOB",
                        help="labelled training photos (globs on stems) instead of the config's split")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="training seed offsets (default: 0)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not (args.data / "labels").is_dir():
        print(f"skipped: {args.data} is absent (shared data not present)")
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
    for arm in dict.fromkeys(arms[a].composites for a in chosen if a != "a"):
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
    for seed in args.seeds:
        for arm in chosen:
            key = f"{arm}-seed{seed}"
            if key in results:
                continue
            if arm == "a":
                result = train_baseline(key, base / "labeled", base / "held_out", config, work, seed_offset=seed)
            else:
                result = train_baseline(key, base / "labeled", base / "held_out", config, work,
                                        more=(work / arms[arm].composites,), mix=arms[arm].mix, seed_offset=seed)
            results[key] = result
            print(key, json.dumps(result), flush=True)
            results_path.write_text(json.dumps(results, indent=2))

    print("\nheld-out mIoU on 200 CCP photos (0101-0300), 224 px short side:")
    names = sorted({k.rsplit("-seed", 1)[0] for k in results})
    for name in names:
        values = [results[k]["miou"] for k in sorted(results) if k.rsplit("-seed", 1)[0] == name]
        print(f"  {name:4s} " + "  ".join(f"{v:.4f}" for v in values) + f"   mean {sum(values) / len(values):.4f}")


if __name__ == "__main__":
    main()
