"""The temporal mode's settings (:class:`TemporalConfig`, used by pipelines/temporal.py): the
window, the motion and size priors, the lost / re-detect / probation levels, and what each was
measured at."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.first_views import ViewsConfig
from pipelines.online_filter import FilterConfig
from pipelines.scale_filter import ScaleConfig
from pipelines.temporal_checks import check_temporal_config


@dataclass(frozen=True)
class TemporalConfig:
    """Window sampling, motion/scale prior and the lost / re-detect levels."""

    # The template's size (square root of its area, pixels) fed to the network; the window is
    # resampled so the target appears at this size (48 px: 6 x 6 cells of the stride-8 grid; 32
    # lost Skating1's skater among the others, 64 costs twice the time).
    template_side: int = 48
    # Window side over the padded target side sqrt((w + p) (h + p)), p = (w + h) / 2 (SiamFC: 2).
    # 1.5 with the online filter (Skating1 + VOT_bag: precision 0.975 vs 0.949 at 2.0, 0.93 at 1.3;
    # the backbone's cost follows the window's area).
    context: float = 1.5
    # Weight of the Hann window in the peak's score (the motion prior).
    window_influence: float = 0.3
    # Scales searched per frame: 1 / scale_step, 1, scale_step; off scales' heat is multiplied by
    # scale_penalty; the size follows the winning scale by scale_rate (damping). Off (1.0) by
    # default: with the untrained network's heat the size drifted (Skating1, first 150 frames:
    # precision 0.55 with 1.03 vs 1.00 without); the size then changes only on re-detection.
    scale_step: float = 1.0
    scale_penalty: float = 0.97
    scale_rate: float = 0.5
    # Target lost when the windowed peak is below lost_ratio x reference heat (the median peak of
    # the last reference_frames frames held); re-acquired when a whole-frame peak reaches
    # reacquire_ratio x reference.
    lost_ratio: float = 0.5
    reacquire_ratio: float = 0.9
    reference_frames: int = 30
    # With the online filter, its response where the target is chosen is the better witness (the
    # siamese heat of a covering background patch stays at 0.6-0.8 of the target's; the filter's
    # drops to 0.2-0.45): lost below filter_lost_ratio x its reference (the median of the last
    # reference_frames frames held), re-detected at filter_reacquire_ratio x it. While lost,
    # the last place and the filter_candidates highest peaks of the whole frame are each searched
    # in a window (one batch), and the filter picks among them (see _search_lost).
    filter_lost_ratio: float = 0.5
    filter_reacquire_ratio: float = 0.7
    filter_candidates: int = 4
    # Re-detection farther than far_radius target heights (plus far_growth per frame lost: the
    # target moves while unseen) from where the target was lost asks the filter for
    # far_reacquire_ratio of its reference (pipelines/temporal_lost.py; 0 = the same bar
    # everywhere). far_growth 0.1 keeps a long loss from holding the stricter bar for good.
    # 0.5 / 0.85, not 1.0 / 0.8 (which had delayed no cut since cuts drop the bar): on the first
    # lost frame Skating1's other skaters scored 0.71-0.82 about a height away and were taken
    # while she was covered. Skating1 with occlusions placed 3 ways (first 40 / 60 / 50, seeds
    # 0 / 1 / 2): back within 5 frames 7/18 -> 11/18, precision 0.475 -> 0.638 (mean; 0.9: 9/18,
    # 0.555; 0.95: 10/18, 0.604; about +-2 events is noise); VOT_bag 9/9 both; cuts placed the
    # same 3 ways and the 8 starts without events unchanged. A target back far away scores 0.9-0.95.
    far_radius: float = 0.5
    far_growth: float = 0.1
    far_reacquire_ratio: float = 0.85
    # A scene cut (consecutive frames' 32 x 24 grey thumbnails correlate below cut_correlation)
    # drops the last place's claim (the target may come back anywhere). Measured on Skating1 and
    # VOT_bag: within a shot 0.56-0.99, across the benchmark's cuts -0.37 to -0.08.
    cut_correlation: float = 0.2
    # On a cut seen while the target is held, the window at the last place is not trusted to hold
    # it (at the lost bar, half the reference, whatever sits there after the cut can be held:
    # Skating1, cut at frame 340, a background patch at 0.92 of the heat's reference was tracked
    # 264 px from the skater): that window competes with the whole frame's peaks at the
    # re-detection bar, as on a lost frame (tests/test_temporal_lost.py: a look-alike left at the
    # last place is held without it, the target re-detected at once with it). Neutral on the
    # benchmark: Skating1 + VOT_bag with cuts placed 5 ways back within 5 frames 39 of 45 with
    # and without (at 340 the skater, her box 0.57x too small, is not among the 4 peaks; with 8
    # peaks she is, 40 of 45, but -1 on another placement: noise, and slower while lost).
    cut_redetect: bool = True
    # After a cut, each place the whole-frame search picks is looked at for these sizes (relative
    # to the last; one window each), e.g. (1 / 1.3, 1.0, 1.3) for shots that change the zoom.
    # Off by default: on the tuning sequences with cuts it helped (Skating1 precision 0.767 ->
    # 0.830, back within 5 frames 4/6 -> 5/6, its box 0.65x the skater at the 5th cut), but the
    # held-out confirmation went the other way (Soccer with cuts 0.340 -> 0.220, Crossing's and
    # Soccer's frames/s 53 / 55 -> 40 / 39). The same sizes at every loss let look-alikes of other
    # sizes win (Skating1 with occlusions 0.697 -> 0.383).
    cut_sizes: tuple[float, ...] = (1.0,)
    # Probation: for probation_frames frames after a re-detection, holding the target asks the
    # filter for filter_reacquire_ratio of its reference (not filter_lost_ratio), while the heat
    # is not sure either (as in _lost): a re-detection must keep proving itself before the looser
    # hysteresis bar applies, so that a wrong one (a look-alike, a covering patch) is dropped
    # within a few frames instead of held (Skating1 with occlusions, 5th event: re-detected on
    # the covering patch, which showed another skater, the box then drifted onto a skater in the
    # distance and stayed there; with 8 frames of probation lost again 2 frames later, and the
    # skater re-detected 4 frames after her return). Off by default: no gain in re-acquisition
    # beyond noise. Skating1 + VOT_bag with occlusions and cuts placed 3 ways (first event at
    # frame 40 / 60 / 50, seeds 0 / 1 / 2; 54 events): back within 5 frames 43 of 54 with 8
    # frames and without; precision (mean of the 12 runs) 0.797 -> 0.822, most of it on one
    # placement (occlusions from frame 40: 0.697 -> 0.772, 4/6 -> 5/6). 5 frames: as 8 on that
    # placement; 12: a cut lost for 36 frames (the skater under the coasting box scored 0.6 of
    # the filter's reference, under the bar); a bar of 0.6, not 0.7: 14 of 18. Held out, the
    # benchmark's one placement: Crossing unchanged, Soccer with occlusions 0.379 -> 0.381 (2 of
    # 6 both), with cuts 0.340 -> 0.220 (1 of 6 both). 0 = off.
    probation_frames: int = 0
    # On the frame the held window is counted lost, the last place is looked at again with the
    # box at each of these factors (one batch of windows); a look there that meets the
    # re-detection bars (the filter's filter_reacquire_ratio, the heat's lost_ratio) is held, at
    # its size. A box fallen behind the target's growth loses the witnesses before the scale
    # filter catches up (it reads 0.96-0.98 a step where the skater grows 3-8%): at every 5th
    # frame of Skating1 (--frame-step 5) the box was 0.75x her height at frame 16, her heat 0.47 of
    # its reference; she was counted lost and a look-alike re-detected and held (prec@20 0.278);
    # with 1.3 she is held at 1.3x (0.823). On the tuning sequences plain, with occlusions and
    # cuts (placed 3 ways), zooms, zoom-occlusions, colour casts and blur (placed once), at every
    # 2nd and 3rd frame and shrunk by half: identical to the figures without it. Tried: 1/1.3 as
    # well (identical everywhere, a window more on every loss); holding a look that is merely not
    # lost (the holding bars, not re-detection's): blur 0.907 -> 0.923, every 3rd frame 0.895 ->
    # 0.929, but zoom-occlusions 0.722 -> 0.549 (a look-alike in the larger window held while the
    # skater was covered). () = off.
    rescue_sizes: tuple[float, ...] = (1.3,)
    # The same rescue with the window also turned by each of rescue_turns (degrees, counter-
    # clockwise on screen): a target turning in the image plane (a rolling camera, a turning
    # object) loses the siamese heat against the upright query past ~30 degrees, and the online
    # filter stops learning before that. A turned look is judged mainly by the siamese heat (the
    # filter learned the target's context as it stood, which a turned window turns too): it needs
    # turn_heat of the heat's reference and turn_margin times the upright look's peak (and the
    # filter's turn_filter, below); taken, the
    # angle is the target's from then on (the windows, the scale filter's samples undo it; the box
    # shown is the upright box around the turned one) and the online filter is set afresh from
    # that window. Only at the moment of loss, so footage that does not turn is searched as
    # before. Measured on Skating1 + VOT_bag (benchmarks/RESULTS.md, stop 35): a camera rolling to
    # 60 degrees and back (--events rotate) 0.618 / 0.434 -> 0.908 / 0.598; plain, cuts and
    # occlusions placed nine ways, zooms, zoom-occlusions, colour casts, blur, every 2nd / 3rd / 5th
    # frame and shrunk by half identical but for one occlusion on Skating1's LED wall (54 -> 53 of
    # 80) and every 5th frame's AUC (0.607 -> 0.617). turn_heat 0.5 took a blurred skater for a
    # turned one (blur, 23 -> 21 of 26 back within 5 frames). () = off (the code before it, to
    # the bit).
    rescue_turns: tuple[float, ...] = (15.0, -15.0, 30.0, -30.0)
    turn_margin: float = 1.2
    turn_heat: float = 0.6
    # A turned look also needs the online filter's response at turn_filter of its reference: lower
    # than re-detection's 0.7, since a turned window turns the context the filter learned, but
    # enough to refuse a cover. Stop 36: on Skating1's LED wall a cover's -15 degree look had
    # 0.77 of the heat's reference and 1.38x the upright look's, but 0.32 of the filter's (the
    # rolled skater's turns taken: 0.61-0.77); at 0.5 that occlusion is back (9 placements: 53 ->
    # 54 of 80) and every other tuning figure, the roll's included, is identical. 0 = off.
    turn_filter: float = 0.5
    # While lost, the whole frame is searched on the first lost frame and every redetect_every-th
    # after it (its cost is many windows'); the last place every frame.
    redetect_every: int = 3
    # On those frames the windows (the last place's, each peak's) are cut from the whole frame's
    # own heat and features (pipelines/temporal_lost.py) instead of each sampled and encoded again
    # (where the whole frame was searched at the windows' zoom: not capped by redetect_max_side).
    # Profiled on Skating1 with occlusions (one thread): a lost frame cost 37 ms against ~15 held,
    # the network's encoding nearly all of it, and the up to 5 windows more pixels than the whole
    # frame itself (5 x 160^2 against ~270 x 150). Not exact (a window cut from the whole frame
    # sees its context, not edge pixels, and sits on the stride-8 grid, up to 4 px off the peak;
    # the motion prior is moved back onto the peak), so judged on Skating1 + VOT_bag with events
    # placed 3 ways (first 40 / 60 / 50, seeds 0 / 1 / 2), without -> with: occlusions back
    # within 5 frames 19 -> 18 of 27, precision (mean of 6 runs) 0.764 -> 0.760; cuts 20 -> 23
    # of 27, 0.897 -> 0.915 (with the prior left on the window's centre: 19 / 0.770, 21 / 0.897).
    # All four sequences (benchmarks/tracking.py --threads 1 --methods temporal csrt, before and
    # after alternated, 2 runs), mean frames/s before -> after (CSRT): occlusions 48.6 / 51.3 ->
    # 58.8 / 64.3 (46.7 / 48.6), cuts 52.3 / 53.7 -> 58.3 / 60.5 (53.9 / 52.9), plain 65.4 / 67.5
    # -> 67.4 / 71.6 (Soccer, lost most of the time, 39 -> 54). Still under CSRT: Crossing with
    # events (its whole frame, the target magnified 1.6x: 590 x 390 px, every 3rd lost frame) and
    # Skating1 with cuts (CSRT, lost, runs at 82). Held out, precision: Crossing unchanged, Soccer
    # plain 0.573 -> 0.540, occlusions 0.545 -> 0.437, cuts 0.225 -> 0.292 (back within 5 frames
    # unchanged: 3 / 6, 1 / 6). Off by default: the tuning sequences were mixed (occlusions -1
    # event, cuts +3) and the held-out confirmation went the other way on the plain sequence and
    # with occlusions (as `cut_sizes`); a speed option while lost (`--set lost_crops=1` in the
    # benchmark). False gives the figures of the code before it, to the bit.
    lost_crops: bool = False
    # Candidate screen: on the frames the whole frame is searched while lost, each peak's window is
    # first cut from the whole frame's own maps (as lost_crops: no encoding), and only the peaks whose
    # cut window's filter response reaches candidate_screen x the filter's reference are sampled and
    # encoded again; the decision stays the sampled windows' (the last place's window, the box's
    # coasting, is always sampled). A re-detection needs filter_reacquire_ratio (0.7) of the reference
    # on the sampled window; on the tuning sequences with events placed 3 ways (810 candidate windows)
    # a cut window's response was within -0.15 / +0.25 of the sampled one's (1st / 99th percentile),
    # the 55 re-detecting windows' cut responses 0.40-1.25 (2 under 0.5; of all the windows sampled
    # there, the last place's included, 64% cut under 0.5). Profiled on Skating1 with occlusions (one
    # thread): a lost frame 38 ms against 14 held; on whole-frame frames the whole frame ~33 ms and
    # the up to 5 windows ~41 ms in one batch (batching already saves the per-call cost: 8 ms a window
    # in a batch of 5 against 9.6 alone). Skating1 + VOT_bag with occlusions and cuts placed 3 ways
    # (first 40 / 60 / 50, seeds 0 / 1 / 2): every figure the same with 0 (off), 0.4 and 0.5
    # (precision / AUC occlusions 0.764 / 0.555, back within 5 frames 19 of 27; cuts 0.897 / 0.643, 20
    # of 27). All four sequences with CSRT in the same run (benchmarks/tracking.py --threads 1
    # --methods temporal csrt --events ..., off and 0.5 alternated, twice, load 3.0-3.4 on 2 cores):
    # mean frames/s temporal / CSRT, occlusions 48.5 / 47.2 and 50.0 / 46.7 -> 51.5 / 45.7 and 54.1 /
    # 46.1; cuts 48.3 / 52.1 and 49.8 / 52.8 -> 54.5 / 53.2 and 52.7 / 53.6 (Soccer, lost in 353-359
    # of 391 frames: 34-39 -> 43-46; the rest is held frames: Skating1 with cuts 59 against CSRT's 83,
    # CSRT lost and fast). Held out, confirmed once: Crossing and Soccer precision, AUC and
    # re-acquisition unchanged to the third decimal. 0 = off (the code before it, to the bit).
    candidate_screen: float = 0.5
    # Relative sizes searched in the whole frame: at the first acquisition (the query's pixel size
    # is only a guess), and while lost (the last size: like the windowed search, since smaller
    # templates out-score larger ones on anything, a choice of sizes shrank the box).
    acquire_scales: tuple[float, ...] = (0.7, 1.0, 1.4)
    # Without a box, the target is first acquired only where the still-image search (heat map,
    # candidates verified geometrically, its calibrated threshold: `synth search` on a photo)
    # reports the query in the frame, tried on the first frame and every acquire_every-th after
    # it; until then the frames are lost, the box the still search's best guess. Why: the whole
    # frame's highest peak was taken on the first frame whatever it scored, so a query absent from
    # the video was "tracked" on whatever resembled it most (a dress in Crossing, all 60 frames).
    # With the query cut from frame 1 the still search reports it there in each shared sequence;
    # a query from another sequence is reported in none (24 pairs, frames 1 and 21). 0 = the
    # highest peak, as before.
    acquire_every: int = 10
    # Video footage rarely reaches the still search's threshold, which was calibrated on catalogue
    # photos: with the query cut from frame 1 and the video starting 20-100 frames later, none of
    # 6 starts on Skating1 and VOT_bag was acquired in 60 frames, the still search's fused score
    # 0.002-0.009 against its 0.52. So the still search's best guess, where it is not reported, is
    # followed as a *hypothesis* (a tracker of its own, the frames still counted lost), and taken as
    # the target once the still search's best lands on it (centre within half its height) at
    # acquire_confirm tries in a row, each matched by at least acquire_inliers geometric inliers
    # (the verification's own minimum): a query absent from the footage had its best at one place
    # for 8 tries in a row (a static look-alike), but never twice with 8 inliers (at most 7, 120
    # tries of 10 absent queries), while the target had 8-14 on most tries. 0 = only a reported
    # detection acquires (the code before it).
    acquire_confirm: int = 2
    acquire_inliers: int = 8
    # Back-off while the query is not in view: from the acquire_patience-th *blank* try in a row on
    # (no report, a best guess under acquire_inliers inliers: an absent query's every try, up to 7)
    # the gap between tries doubles with each, up to acquire_backoff x acquire_every frames; a
    # try with a strong best guess brings it back to acquire_every, a scene cut to a try at once. A
    # try costs a still search, 0.2-3 s (most for a small query: the frame searched up-sampled):
    # 100 frames of Skating1 searched for Crossing's pedestrian took 33.7 s, 32.4 of them tries.
    # 300 frames of it 111.7 -> 38.5 s with the back-off (benchmarks/RESULTS.md, stop 40). 1 = off.
    acquire_patience: int = 6
    acquire_backoff: int = 8
    redetect_scales: tuple[float, ...] = (1.0,)
    # The media (the windows, the whole frame while lost) encoded by onnxruntime instead of
    # PyTorch (pipelines/onnx_backbone.py): ~35% less time per window, ~25% per whole frame on
    # one AVX2 thread. Not PyTorch's values to the bit (|difference| ~3e-5); on Skating1 + VOT_bag
    # with cuts and occlusions placed 3 ways precision, AUC and delays identical
    # (benchmarks/RESULTS.md, stop 26).
    # False: PyTorch encodes (the code before it, to the bit); also where onnxruntime is absent.
    onnx_backbone: bool = True
    # Longest side of the frame when searched whole (the frame is resampled to template scale).
    redetect_max_side: int = 1024
    # While lost, the whole frame is not searched magnified above redetect_max_zoom (0 = no cap):
    # coarse to fine, as the still-image search's hot windows. Magnifying the frame adds no detail,
    # but costs the square of the zoom; with the cap the templates shrink with it, and the highest
    # peaks' windows are sampled at the windows' zoom (no candidate screen: the maps cannot be cut),
    # so the online filter decides on the same windows as without it. Off by default: a cap of 1
    # binds on none of the tuning sequences (Skating1 is searched at 0.89x, VOT_bag at 0.35x:
    # the tuning grid is identical), and where it binds it missed the target: Crossing with cuts
    # (its box shrunk after the first cut, the frame searched at 2.2x, 779 x 519) never re-detected
    # it (precision 0.782 -> 0.328) for 45 -> 48 frames/s; in generated video a 0.6 cap (a 29 px
    # template) missed it too, 0.8 did not.
    redetect_max_zoom: float = 0.0
    # Running template: weight of the confident boxes' pixels blended into the query (0 = off,
    # at most 0.5: the query stays the anchor), updated every template_every confident frames.
    template_rate: float = 0.0
    template_every: int = 10
    # The size is kept within size_band of a slow average of itself (updated by size_rate a
    # frame; 1.0 = off): the scale filter can walk the box down under changing light (Skating1's
    # red LED wall: 137 -> 42 px in 40 frames, true 150-180), the band slows that walk to the
    # average's pace (there: 137 -> 99 px). Skating1 + VOT_bag started at 4 frames each (0, 100,
    # 200, 300 / 0, 50, 100, 150): precision / AUC 0.701 / 0.477 without, 0.693 / 0.525 with
    # (Skating1 from frame 300: AUC 0.372 -> 0.612); rate 0.05: 0.700 / 0.523, band 1.4: 0.704 /
    # 0.485. From frame 1 only: 0.912 / 0.645 -> 0.919 / 0.662.
    size_band: float = 1.25
    size_rate: float = 0.03
    # Where the scale filter is sure (its response peak at least band_trust x the median peak of
    # the confident frames since the target was given), the band's average is moved to the new
    # size, so that a steady zoom is followed at the filter's pace; the band holds the size only
    # where the filter is unsure (0 = the band everywhere). Generated video (tests/
    # test_temporal_scale.py), box height / true at the end: target shrinking 2x in 40 frames
    # 1.32 -> 1.05, growing 2x 0.78 -> 0.89 (in 20 frames 0.69 -> 0.93), the camera zooming out
    # 2x 1.32 -> 1.00 (0.5-0.85 alike). Off by default: on the tuning sequences it does not help,
    # since under Skating1's LED wall the filter is as sure of its walk down as of a zoom. 0.7 from
    # frame 1: Skating1 0.875 / 0.669 -> 0.897 / 0.676, VOT_bag 0.964 / 0.655 -> 0.938 / 0.649;
    # started at 4 frames each (as size_band) 0.693 / 0.525 -> 0.704 / 0.488 (Skating1 from frame
    # 300: AUC 0.61 -> 0.44); cuts 0.860 / 0.609 -> 0.827 / 0.585, occlusions 0.777 / 0.565 ->
    # 0.766 / 0.566 (benchmarks/tracking.py --events, first 40, seed 0). A level relative to the
    # last 30 frames' peaks (not since the start) did no better (0.912 / 0.648 from frame 1).
    band_trust: float = 0.0
    # The band's slow average also moves by the size's recent trend (an exponential average, 0.1 a
    # frame, of the held frames' log change of the height), at most band_follow a frame (0 = off,
    # the code before it, to the bit). Why: held at the band's edge, the box can change only as
    # fast as the average moves toward it, 3% of a 1.25x gap: ~0.6% a frame shrinking, ~0.75%
    # growing, so a steady zoom faster than that is not followed whatever the scale filter reads
    # (benchmarks/tracking.py --events zoom: 0.4x over 100 frames is 0.9% a frame; VOT_bag's box
    # ends the zoom out held at the band's floor, 1.56-1.76x the bag). Generated video (tests/
    # test_temporal_scale.py, the camera zooming out 2x over 60 frames): box / true side at the
    # end 1.16 -> 0.99 with 0.02. Off by default: on the tuning sequences (Skating1 + VOT_bag,
    # events placed 3 ways, first 40 / 60 / 50, seeds 0 / 1 / 2) 0.02 raised the zoom events' AUC
    # (zoom to 0.4: 0.579 -> 0.595, to 0.25: 0.508 -> 0.566) but lowered their precision (0.995 ->
    # 0.959 / 0.985) and worsened the plain sequences (VOT_bag 0.990 / 0.687 -> 0.969 / 0.664) and
    # cuts (0.897 / 0.643 -> 0.888 / 0.634; occlusions 0.764 / 0.555 -> 0.788 / 0.554, 19 -> 20 of
    # 27 back within 5 frames): the trend also carries the scale filter's own walks. 0.01: plain
    # 0.936 / 0.664. (size_rate 0.1 instead: plain 0.956 / 0.680, cuts 0.878 / 0.637.)
    band_follow: float = 0.0
    # Online discriminative filter on the window's stride-8 features (pipelines/online_filter.py):
    # its weight against the siamese heat in the appearance score (0 = off), and the level of the
    # reference heat above which a frame teaches it.
    filter_weight: float = 0.5
    filter_update_ratio: float = 0.7
    # The box shown is centred on the online filter's own response peak within refine_radius grid
    # cells of the score's peak, refined between cells (pipelines/temporal_refine.py; 0 = the
    # score's peak). Diagnosed on Skating1 frame by frame: from frame ~230 the score's peak sat on
    # her lower body (the query's heat alone peaks 8-18 px below her centre there) and lagged her
    # moves by 20-30 px (frames 280-290, 334-344) while the filter's own peak stayed within a few
    # px; that peak is a cell centre of the stride-8 grid (~20 frame px on a 130 px target) until
    # refined. Open loop (main's track), within 20 px: Skating1 0.878 -> 0.947 of frames, VOT_bag
    # 0.964 -> 0.985. Skating1 + VOT_bag from frame 1 (camera_motion off): precision / AUC 0.919 /
    # 0.662 -> 0.961 / 0.684; radius 0.75, 1.5, 2: within 0.01 of 1 (with refine_feedback).
    refine_radius: float = 1.0
    # refine_feedback: the search also goes on from the refined centre (the next window, the
    # filter's teaching, the scale filter's centre), where the query's heat there is at least
    # refine_heat of the score's peak. Off: it scores higher on the tuning sequences (without the
    # heat check: from frame 1 0.997 / 0.609, started at 4 frames each 0.937 / 0.599 against main's
    # 0.693 / 0.525; with it and camera_motion 0.946 / 0.635), but the filter then teaches itself
    # where it places the centre, and where it learned a static background it stays there: a box
    # found 1.7x too large around a target moving 8 px a frame (tests/test_temporal_refine.py,
    # tests/test_search.py's clip) was left 65 px behind after 11 frames (with refine_heat 0.95:
    # the clip passes, its copy without the video codec is lost a frame later); with it, events
    # placed 3 ways (as far_radius) back within 5 frames 43 -> 39 of 54, and VOT_bag's AUC fell
    # (0.655 -> 0.507: the scale filter over-sizes the deforming bag where the centre is right,
    # benchmarks/scale_drift.py size error 0.198 tracked, 0.305 at the true centre). Also tried
    # with it: the scale filter at the score's peak (0.944 / 0.611 started at 4 frames), teaching
    # at the score's peak (0.935 / 0.577), half way between the peaks (0.905 / 0.582).
    refine_heat: float = 0.95
    refine_feedback: bool = False
    # Camera motion (pipelines/camera_motion.py): before each frame is searched, the expected
    # centre (and, while lost, the place the target was lost) moves by the camera's shift (phase
    # correlation of 160 px grey copies, 0.28 ms a frame) times how much the target was seen to
    # share it over the last camera_frames frames held: a least-squares fit in [0, 1], ~1 under a
    # handheld camera's shake, ~0 under a pan that follows the target, shrunk toward 0 by
    # camera_prior (px^2 added to the camera's power: a camera that barely moves says little);
    # nothing on a scene cut. Diagnosed on the tuning sequences: VOT_bag's handheld camera moves
    # the bag 5.9 px a frame (mean |move| per axis), 1.5 px once the measured shift is taken off;
    # Skating1's camera pans with the skater, where taking the shift off would add error (0.7 ->
    # 1.4 px): hence the fit (VOT_bag 0.83-1.0 after 20 frames; Skating1 0-0.39, once 1.0, without
    # the prior). Generated video (tests/test_temporal_camera.py): a shaking camera sends the
    # window to a look-alike 56 px away on every other frame without it, never with it. With
    # refine_radius 1, Skating1 + VOT_bag started at 4 frames each: 0.743 / 0.541 without,
    # 0.835 / 0.611 with (prior 0), 0.909 / 0.635 with prior 200 (main: 0.693 / 0.525); events
    # placed 3 ways: back within 5 frames 43 (main) -> 39 of 54 (prior 0 and 200 alike; the late
    # events of Skating1, frames 280-340), precision / AUC (mean of the 12 runs) 0.814 / 0.584
    # (main) -> 0.831 / 0.599 (prior 200). Without refinement (prior 0): started at 4 frames
    # 0.769 / 0.593, from frame 1 0.885 / 0.663, events 39 of 54.
    camera_motion: bool = True
    camera_frames: int = 30
    camera_prior: float = 200.0
    # The target's size from a 1-D scale filter on gradient cells (pipelines/scale_filter.py, DSST);
    # None leaves the size to the options above.
    scale_filter: ScaleConfig | None = field(default_factory=ScaleConfig)
    online_filter: FilterConfig = field(default_factory=FilterConfig)
    # The online filter set from the first frame's window and first_views.count distorted views
    # of it (pipelines/first_views.py; MOSSE / ATOM's expanded first frame), the scale filter from
    # first_views.scale_views photometric ones; 0 = the frame alone (the code before it, to the
    # bit). Off: no gain measured. Skating1 + VOT_bag plain and with occlusions and cuts placed 3
    # ways (14 runs; mean precision / AUC, back within 5 frames of 54 events): off 0.851 / 0.611,
    # 39; 8 shifted views (shift 0.2, no rotation, scale or photometric) 0.866 / 0.601, 41, but
    # the views' own seed moves that as much (seeds 0-3: 0.830-0.866 / 0.578-0.616, 39-44; mean
    # 0.849 / 0.603, 41); 8 views with rotation 10 / scale 0.1 / augment's scene distortions 0.821
    # / 0.596, 38; geometry only 0.850 / 0.588, 40 (4: 0.836 / 0.608, 16: 0.845 / 0.599; flips
    # 0.847 / 0.542); photometric only 0.827 / 0.604, 42; 8 scale-filter views alone 0.834 /
    # 0.617 and 0.833 / 0.597 (seeds 0, 1), 40. Held out once (8 shifted views): Crossing + Soccer
    # plain 0.786 / 0.576 -> 0.784 / 0.583, occlusions 0.772 / 0.540 -> 0.775 / 0.548 (back 5 -> 6
    # of 8), cuts 0.503 / 0.388 -> 0.531 / 0.407 (1 of 8 both). Cost at the first frame only: 11-12
    # ms -> 55-68 ms with 8 views (one thread, load ~0.2), scale views +10 ms.
    first_views: ViewsConfig = field(default_factory=ViewsConfig)

    def __post_init__(self) -> None:
        check_temporal_config(self)
