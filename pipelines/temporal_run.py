"""Outputs of the temporal mode for one video or frame folder (used by ``synth search``).

Per frame a line for ``detections.jsonl`` (``best`` box and score, ``state`` tracking / lost /
re-detected, ``detections``: the held target, empty while lost), the highlighted video
``<name>.highlight.mp4`` (heat where it was searched, the box in the state's colour), with
``save_heatmaps`` the heat per frame, and ``<name>.summary.json``: frames tracked / lost /
re-detected and frames skipped. Decoding and encoding run on background threads, overlapping
the search.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

from augment.atomic_files import atomic_write_text
from augment.imageio import InputError
from augment.outputs import unlinked
from pipelines.frames import frames_and_highlights
from pipelines.temporal import TemporalConfig, TemporalSearcher, TrackSummary
from pipelines.temporal_draw import draw_track, frame_heat
from pipelines.window_geometry import check_start_box

logger = logging.getLogger(__name__)


def search_temporal(searcher: Any, prepared: Any, medium: Path, out: Path, name: str, *,
                    save_heatmaps: bool = False, batch: int = 4,
                    advance: Callable[[int], None] = lambda n: None,
                    config: TemporalConfig | None = None,
                    reports: list[dict[str, Any]] | None = None,
                    skipped_files: list[str] | None = None,
                    initial_box: tuple[float, float, float, float] | None = None) -> Iterator[dict[str, Any]]:
    """Hold ``prepared``'s target through ``medium``; yields one detections.jsonl line per frame.

    ``initial_box`` (x0, y0, x1, y1): the target's box in the first frame (else it is searched
    for there). After the iteration the summary is in ``<name>.summary.json`` (and appended to
    ``reports``; the frames skipped are added to ``skipped_files``, also where the video breaks later). A medium with no decodable frame, or a box outside its frames, is an InputError.
    """
    tracker = TemporalSearcher(searcher, prepared, config, initial_box=initial_box)
    checked = initial_box is None
    summary = TrackSummary()
    base = {"source": str(medium), "query": prepared.name}
    heat_folder = unlinked(out / f"{name}.heat") if save_heatmaps else out / f"{name}.heat"  # (a link of the user's kept)
    with frames_and_highlights(medium, out / f"{name}.highlight.mp4", batch,
                               heat_folder if save_heatmaps else None) as (reader, writer):
        for indices, frames in reader:
            for index, frame in zip(indices, frames):
                if not checked:  # named as the command's option (the tracker checks it too)
                    check_start_box(initial_box, frame.shape[1], frame.shape[0], f"{medium}: --box")
                    checked = True
                track = tracker.step(frame)
                track.frame = index
                summary.add(track)
                writer.write(draw_track(frame, track), index)
                if save_heatmaps:
                    heat = frame_heat(track, frame.shape[1], frame.shape[0])
                    writer.heat((heat * 255 + 0.5).clip(0, 255).astype("uint8"), index)
                # score_kind: the siamese heat on every frame (the still search's own, on the frames
                # it was tried before the first acquisition), as still lines name theirs.
                yield {**base, **track.to_json(), "score_kind": "heat", "width": frame.shape[1], "height": frame.shape[0],
                       "highlight": f"{name}.highlight.mp4"}
            advance(len(frames))
    skipped = list(getattr(reader, "skipped", []))
    advance(len(skipped))  # counted in the progress total (count_work) but never searched
    report = {**base, **summary.to_json(), "skipped": len(skipped), "skipped_files": skipped}
    if reader.error is not None:  # the summary of a video cut short says so, as its detections.jsonl does
        report["error"] = reader.error
    atomic_write_text(out / f"{name}.summary.json", json.dumps(report, indent=1) + "\n")
    if reports is not None:
        reports.append(report)
    if skipped_files is not None:
        skipped_files.extend(skipped)
    if reader.error is not None:
        raise InputError(reader.error)
