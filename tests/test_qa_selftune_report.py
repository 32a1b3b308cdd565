"""report.png of `synth selftune` (pipelines/selftune_report.py), as a user reads it: the count axis
in whole masks, no bar for a round without masks, the previews of the last round's extraction."""

from __future__ import annotations

import cv2
import numpy as np

from tests.test_qa_visual import _colour_pixels


def test_the_selftune_reports_count_axis_is_written_in_whole_masks(monkeypatch):
    """report.png's masks-by-round axis read '0.00' to '1.00' where at most one mask was extracted
    (the format was guessed from the axis's top: 1.5 or under read as an mIoU)."""
    from pipelines import selftune_report

    written: list[str] = []
    real = cv2.putText
    monkeypatch.setattr(cv2, "putText", lambda canvas, text, *args: (written.append(text), real(canvas, text, *args)))
    extract = {"accepted": 1, "rejected": {"small": 0, "low_confidence": 0, "unstable": 0}}
    selftune_report.plot([{"round": 0, "miou": 0.31, "extract": extract}, {"round": 1, "miou": 0.34}], [])
    assert "1.00" not in written and "1" in written and "0" in written  # the count axis
    assert "0.26" in written and "0.39" in written  # the mIoU axis's ends, as before


def test_a_round_that_extracted_no_mask_draws_no_bar():
    """report.png: a round with no mask accepted or rejected showed a red line, as if one was rejected."""
    from pipelines import selftune_report

    none = {"accepted": 0, "rejected": {"small": 0, "low_confidence": 0, "unstable": 0}}
    some = {"accepted": 3, "rejected": {"small": 0, "low_confidence": 0, "unstable": 0}}
    canvas = selftune_report.plot([{"round": 1, "miou": 0.2, "extract": none},
                                   {"round": 2, "miou": 0.1, "extract": some}], [])
    red = _colour_pixels(canvas, selftune_report.RED, within=30)
    green = _colour_pixels(canvas, selftune_report.GREEN, within=30)
    assert not red.any()  # nothing rejected in either round
    columns = np.nonzero(green.any(axis=0))[0]
    assert columns.size and columns.min() > 700  # the only bar: round 2's, at the right of its axes


def test_a_panoramas_preview_leaves_the_previews_after_it_drawn(tmp_path):
    """An extraction preview 20x wider than tall (a panorama, at the segmenter's working size) was wider
    than the strip: the loop ended at it, so report.png showed no preview at all, the photos' after it
    neither."""
    from augment.imageio import save_image
    from pipelines import selftune_report

    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]
    previews = []
    for index, (colour, size) in enumerate(zip(colours, [(224, 4480), (300, 200), (300, 200)])):
        previews.append(tmp_path / f"{index}.png")
        save_image(previews[-1], np.full((*size, 3), colour, np.uint8))
    canvas = selftune_report.plot([{"round": 1, "miou": 0.4}], previews)
    strip = canvas[310:]
    for colour in colours:
        drawn = _colour_pixels(strip, colour, within=30)
        assert drawn.sum() > 1000, colour
        assert np.nonzero(drawn.any(axis=0))[0].max() < canvas.shape[1] - 10  # inside the strip
