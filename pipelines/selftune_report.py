"""report.md and report.png of a self-tuning state folder, regenerated after every round.

report.md: one row per round (held-out mIoU and its gain, training rows, masks extracted,
accepted and rejected by reason, step times) and the per-class IoU by round. report.png: mIoU by
round (left), accepted and rejected masks by round (right) and, below, photos of the latest
extraction with their accepted masks tinted and rejected ones outlined in red. Drawn with OpenCV:
no plotting library needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from augment.atomic_files import atomic_write_text
from augment.imageio import list_images, read_image, save_image

WHITE, GREY, INK = (255, 255, 255), (200, 200, 200), (40, 40, 40)
BLUE, GREEN, RED = (31, 119, 180), (44, 160, 44), (214, 39, 40)


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(lines: list[dict[str, Any]]) -> str:
    out = ["# Self-tuning report", "",
           "Held-out mIoU of each round's segmenter (scored on photos no round trains on), the rows it trained on,",
           "and the automatic masks it then extracted from the unlabeled pool: accepted ones become cutouts for the",
           "next round's composites (and pseudo-labelled photos); rejected ones are counted by the first filter they",
           "failed. A round whose gain is below `min_gain` ends the run.", "",
           "| round | mIoU | gain | pixel acc. | trained on (photos / composites / pseudo) | masks | accepted | "
           "rejected: small / low conf. / unstable | cutouts | skipped photos | seconds (train / fine-tune / extract / expand) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for line in lines:
        rows = line["training_rows"]
        extract = line.get("extract")
        seconds = line.get("seconds", {})
        rejected = " / ".join(str(extract["rejected"][k]) for k in ("small", "low_confidence", "unstable")) if extract else "–"
        out.append(
            f"| {line['round']} | {line['miou']:.4f} | {_fmt(line['gain'], '+.4f')} | {line['pixel_accuracy']:.3f} | "
            f"{rows.get('photos', 0)} / {rows.get('composites', 0)} / {rows.get('pseudo', 0)} | "
            f"{extract['masks'] if extract else '–'} | {extract['accepted'] if extract else '–'} | {rejected} | "
            f"{extract['cutouts'] if extract else '–'} | {extract['skipped'] if extract else '–'} | "
            f"{' / '.join(_fmt(seconds.get(k), '.0f') for k in ('train', 'finetune', 'extract', 'expand'))} |")
    stopped = lines[-1].get("stopped") if lines else None
    if stopped:
        out += ["", f"Stopped: {stopped}."]
    if lines:
        classes = list(lines[0]["per_class_iou"])
        out += ["", "## Per-class IoU on the held-out photos", "",
                "| class | " + " | ".join(f"round {x['round']}" for x in lines) + " |",
                "|---|" + "---|" * len(lines)]
        for name in classes:
            out.append(f"| {name} | " + " | ".join(_fmt(x["per_class_iou"].get(name)) for x in lines) + " |")
        skipped = [path for x in lines for path in x.get("extract", {}).get("skipped_files", [])]
        if skipped:
            out += ["", "## Unlabeled photos skipped as unreadable", ""] + [f"- `{p}`" for p in sorted(set(skipped))]
    out += ["", "![metrics by round and extracted masks](report.png)", ""]
    return "\n".join(out)


def _axes(canvas: np.ndarray, box: tuple[int, int, int, int], title: str, rounds: list[int], lo: float,
          hi: float, spec: str = ".2f") -> Callable[[float, float], tuple[int, int]]:
    """Draw axes in ``box`` (x0, y0, x1, y1), the values at its ends written by ``spec``; returns
    (round, value) -> pixel."""
    x0, y0, x1, y1 = box
    cv2.rectangle(canvas, (x0, y0), (x1, y1), GREY, 1)
    cv2.putText(canvas, title, (x0, y0 - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, INK, 1, cv2.LINE_AA)
    span = max(hi - lo, 1e-9)
    first, last = min(rounds), max(rounds)

    def point(round_index: float, value: float) -> tuple[int, int]:
        fx = 0.5 if last == first else (round_index - first) / (last - first)
        return (int(x0 + 30 + fx * (x1 - x0 - 60)), int(y1 - 20 - (value - lo) / span * (y1 - y0 - 40)))

    for round_index in rounds:
        x, _ = point(round_index, lo)
        cv2.putText(canvas, str(round_index), (x - 4, y1 - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, INK, 1, cv2.LINE_AA)
    for value in (lo, hi):
        _, y = point(first, value)
        cv2.putText(canvas, format(value, spec), (x0 + 2, y + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35, INK, 1, cv2.LINE_AA)
    return point


def plot(lines: list[dict[str, Any]], previews: list[Path], width: int = 960) -> np.ndarray:
    height = 300 + (220 if previews else 0)
    canvas = np.full((height, width, 3), 255, np.uint8)
    if lines:
        rounds = [x["round"] for x in lines]
        mious = [x["miou"] for x in lines]
        lo, hi = max(0.0, min(mious) - 0.05), min(1.0, max(mious) + 0.05)
        point = _axes(canvas, (20, 30, width // 2 - 20, 280), "held-out mIoU by round", rounds, lo, hi)
        for a, b in zip(lines, lines[1:]):
            cv2.line(canvas, point(a["round"], a["miou"]), point(b["round"], b["miou"]), BLUE, 2, cv2.LINE_AA)
        for x in lines:
            cv2.circle(canvas, point(x["round"], x["miou"]), 4, BLUE, -1, cv2.LINE_AA)
            px, py = point(x["round"], x["miou"])
            cv2.putText(canvas, f"{x['miou']:.3f}", (px - 18, py - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, INK, 1, cv2.LINE_AA)
        counts = [(x["round"], x["extract"]["accepted"], sum(x["extract"]["rejected"].values()))
                  for x in lines if x.get("extract")]
        top = max([a + r for _, a, r in counts] + [1])
        point = _axes(canvas, (width // 2 + 20, 30, width - 20, 280), "masks by round: accepted (green), rejected (red)",
                      rounds, 0.0, float(top), spec=".0f")  # counts (guessed by size, 1 was '1.00')
        for round_index, accepted, rejected in counts:
            x, base = point(round_index, 0)
            _, y_accepted = point(round_index, accepted)
            _, y_all = point(round_index, accepted + rejected)
            # A count of 0 draws nothing (a filled rectangle of no height is still a 1-px line: a
            # round that rejected no mask showed a red one).
            if accepted:
                cv2.rectangle(canvas, (x - 12, y_accepted), (x + 12, base), GREEN, -1)
            if rejected:
                cv2.rectangle(canvas, (x - 12, y_all), (x + 12, y_accepted), RED, -1)
    if previews:
        tile_h = 200
        x = 20
        for path in previews:
            image = read_image(path, "rgb")
            # At most half the strip wide: a panorama's preview (20x wider than tall) was wider than the
            # strip, and the loop ended there, so no preview was drawn, its own nor the photos' after it.
            scale = min(tile_h / image.shape[0], (width - 30) / 2 / image.shape[1])
            tile_w, high = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
            if x + tile_w > width - 10:
                continue  # a narrower one after it may fit
            canvas[310:310 + high, x:x + tile_w] = cv2.resize(image, (tile_w, high), interpolation=cv2.INTER_AREA)
            x += tile_w + 10
    return canvas


def latest_previews(state_dir: Path, limit: int = 6) -> list[Path]:
    folders = sorted(state_dir.glob("round-*/extract/previews"))
    return list_images(folders[-1])[0][:limit] if folders else []


def write_report(state_dir: Path, lines: list[dict[str, Any]], previews: Path | None = None) -> None:
    """Write ``report.md`` and ``report.png`` from the metrics lines (atomically)."""
    found = list_images(previews)[0][:6] if previews is not None and previews.is_dir() else latest_previews(state_dir)
    atomic_write_text(state_dir / "report.md", markdown(lines))
    save_image(state_dir / "report.png", plot(lines, found))
