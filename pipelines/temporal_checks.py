"""The checks of :class:`pipelines.temporal_config.TemporalConfig`'s values: a ValueError naming the
setting and its value, raised as the config is made."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.temporal_config import TemporalConfig


def check_temporal_config(config: TemporalConfig) -> None:
    if not 0.0 <= config.template_rate <= 0.5:
        raise ValueError(f"template_rate must lie in [0, 0.5], not {config.template_rate}")
    if not 0.0 < config.lost_ratio <= config.reacquire_ratio:
        raise ValueError("need 0 < lost_ratio <= reacquire_ratio")
    if not 0.0 < config.filter_lost_ratio <= config.filter_reacquire_ratio:
        raise ValueError("need 0 < filter_lost_ratio <= filter_reacquire_ratio")
    if config.filter_candidates < 0 or config.redetect_every < 1 or config.probation_frames < 0:
        raise ValueError("filter_candidates and probation_frames must be >= 0, redetect_every >= 1")
    if config.scale_step < 1.0 or not 0.0 <= config.window_influence < 1.0:
        raise ValueError("scale_step must be >= 1 and window_influence in [0, 1)")
    if not config.cut_sizes or min(config.cut_sizes) <= 0:
        raise ValueError("cut_sizes must be positive factors")
    if config.rescue_sizes and min(config.rescue_sizes) <= 0:
        raise ValueError(f"rescue_sizes must be positive factors, not {config.rescue_sizes}")
    if not all(math.isfinite(turn) and 0 < abs(turn) <= 180 for turn in config.rescue_turns):
        raise ValueError(f"rescue_turns must be non-zero angles within +-180 degrees, not {config.rescue_turns}")
    if not 0.0 <= config.turn_filter <= 1.0:
        raise ValueError(f"turn_filter must lie in [0, 1], not {config.turn_filter}")
    if config.turn_margin < 1.0 or config.turn_heat <= 0.0:
        raise ValueError(f"need turn_margin >= 1 and turn_heat > 0, not {config.turn_margin}, {config.turn_heat}")
    if config.camera_frames < 1 or config.camera_prior < 0.0:
        raise ValueError(f"need camera_frames >= 1 and camera_prior >= 0, not {config.camera_frames}, "
                         f"{config.camera_prior}")
    if config.refine_radius < 0.0 or not 0.0 <= config.refine_heat <= 1.0:
        raise ValueError(f"need refine_radius >= 0 and refine_heat in [0, 1], not {config.refine_radius}, "
                         f"{config.refine_heat}")
    if config.acquire_every < 0:
        raise ValueError(f"acquire_every must be >= 0 (0: the highest peak), not {config.acquire_every}")
    if config.acquire_patience < 1 or config.acquire_backoff < 1:
        raise ValueError(f"acquire_patience and acquire_backoff must be >= 1 (backoff 1: off), not "
                         f"{config.acquire_patience}, {config.acquire_backoff}")
    if config.acquire_confirm < 0 or config.acquire_inliers < 0:
        raise ValueError(f"acquire_confirm and acquire_inliers must be >= 0, not {config.acquire_confirm}, "
                         f"{config.acquire_inliers}")
    if config.redetect_max_zoom < 0:
        raise ValueError(f"redetect_max_zoom must be >= 0 (0: no cap), not {config.redetect_max_zoom}")
    if not 0.0 <= config.candidate_screen < 1.0:
        raise ValueError(f"candidate_screen must lie in [0, 1), not {config.candidate_screen}")
    if config.band_trust < 0.0 or config.band_follow < 0.0:
        raise ValueError(f"band_trust and band_follow must be >= 0, not {config.band_trust}, {config.band_follow}")
    if config.size_band < 1.0 or not 0.0 < config.size_rate <= 1.0:
        raise ValueError("need size_band >= 1 and size_rate in (0, 1]")
    if config.far_radius <= 0.0 or config.far_growth < 0.0 or not 0.0 <= config.far_reacquire_ratio <= 2.0:
        raise ValueError("need far_radius > 0, far_growth >= 0 and far_reacquire_ratio in [0, 2]")
