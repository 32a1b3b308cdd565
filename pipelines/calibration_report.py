"""A ``synth calibrate`` report against the search it is given to: ``--threshold``'s parsing, the
search settings a report records (:func:`search_settings`) and their check (:func:`check_calibrated_network`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from augment.imageio import InputError

# What a fusion model's fused scores are made of (pipelines.fusion.FusionModel's fields)
FUSION_KEYS = ("weights", "bias", "pre_threshold")


def parse_threshold(text: str, verify: bool) -> dict[str, Any]:
    """``--threshold`` as a report: a number gives ``{"threshold": number}`` (its range is the
    Searcher's check); a path, the ``synth calibrate`` report there, which must calibrate the same
    search (verified, or the heat map alone) as ``verify`` says, with ``file`` added."""
    from pipelines.calibration import read_calibration

    try:
        return {"threshold": float(text)}
    except ValueError:
        pass
    if not Path(text).is_file():
        raise InputError(f"--threshold must be a number between 0 and 1 or a JSON file written by `synth "
                         f"calibrate`, not {text!r} (no such file)")
    report = read_calibration(text)
    report["file"] = text
    calibrated = report.get("verify")
    if isinstance(calibrated, bool) and calibrated != verify:
        search, option = ("the verified search", "without --no-verify") if calibrated else \
            ("the heat map alone (--no-verify)", "with --no-verify")
        raise InputError(f"{text}: calibrates {search}; search {option} as it was calibrated, or "
                         f"calibrate this search")
    return report


def search_settings(searcher: Any) -> dict[str, Any]:
    """What a calibration's threshold depends on besides the network: the sizes searched, the
    mirrored query and the working size (each moves the heat a threshold cuts) and verification; recorded by `synth
    calibrate`, checked by `synth search --threshold`."""
    return {"query_scales": ("auto" if searcher.auto_scales else "default" if searcher.network.default_scales
                             else list(searcher.query_scales)),
            "mirror": searcher.network.mirror, "max_side": searcher.network.max_side,
            "verify": searcher.verification is not None,
            "fusion": None if searcher.verification is None else fusion_record(searcher.verification.model)}


def fusion_record(model: Any) -> dict[str, Any]:
    """The fusion model a verified search's threshold was calibrated through: its file (for the
    reader) and what its fused scores are made of (weights, bias, pre_threshold), which is what is
    compared: a threshold is carried through the model (FusionModel.heat_score), and the verified
    candidates' scores are its sums."""
    return {"file": model.source, **{key: getattr(model, key) for key in FUSION_KEYS}}


def check_calibrated_network(report: dict[str, Any], checkpoint: Optional[Path], searcher: Any) -> None:
    """A ``--threshold`` report calibrates the network searched (its scale is that network's heat),
    with the same sizes and mirror (a report of the mirrored search at the default sizes was taken by
    `--no-mirror --scales 1` without a word; an older report without them is taken as it is), and the
    verified search's same fusion model (one calibrated through the network's own was taken by a
    search with `--fusion OTHER.json` without a word)."""
    from pipelines.calibration import same_network

    if "file" not in report:
        return
    if not same_network(report.get("model"), checkpoint, searcher.model_name):
        raise InputError(f"{report['file']}: calibrates {report['model']}, not {checkpoint or searcher.model_name}; "
                         f"calibrate this network (`synth calibrate` with the same --checkpoint or --untrained)")
    settings = search_settings(searcher)
    for key, option in (("query_scales", "--scales"), ("mirror", "--no-mirror"), ("max_side", "--max-side")):
        if key in report and report[key] != settings[key]:
            raise InputError(f"{report['file']}: calibrates the search with {key} {report[key]!r}, not "
                             f"{settings[key]!r}; search with the {option} it was calibrated with, or calibrate "
                             "this search")
    calibrated, fused = report.get("fusion"), settings["fusion"]
    if isinstance(calibrated, dict) and fused is not None and \
            any(calibrated.get(key) != fused[key] for key in FUSION_KEYS):
        raise InputError(f"{report['file']}: calibrates the search with fusion {calibrated.get('file')!r}, not "
                         f"{fused['file']!r} (another model: its weights, bias or pre_threshold differ); search with "
                         "the --fusion it was calibrated with, or calibrate this search (`synth calibrate --fusion`)")


def check_head_calibration(report: dict[str, Any], path: Path) -> None:
    """A calibration ``synth export-head`` ships must calibrate the search the shipped head gets: it
    records which (``verify``), and a verified one the fusion model a shipped head is searched through,
    the untrained network's (pipelines.fusion.DEFAULT_FUSION: the package ships no other), not the
    checkpoint's own CKPT.fusion.json, which does not ship."""
    from pipelines.fusion import DEFAULT_FUSION, FusionModel

    verify = report.get("verify")
    if not isinstance(verify, bool):
        raise InputError(f"{path}: records no verify (which search it calibrates: an older report); calibrate "
                         "again with this synth")
    if not verify:
        return
    shipped = fusion_record(FusionModel.load(DEFAULT_FUSION))
    calibrated = report.get("fusion")
    if not isinstance(calibrated, dict) or any(calibrated.get(key) != shipped[key] for key in FUSION_KEYS):
        named = calibrated.get("file") if isinstance(calibrated, dict) else None
        raise InputError(f"{path}: fusion {named!r} is not the fusion model a shipped head is searched with "
                         f"({DEFAULT_FUSION.name}); calibrate with `synth calibrate --fusion {DEFAULT_FUSION}` "
                         "(or --no-verify)")
