"""Put cutouts on a background: one composite scene with its instance mask.

A labelled background (:mod:`augment.labelled_backgrounds`) gives the scene its label ids too,
cropped and resized (nearest) and distorted with the canvas, so every pixel of the scene is labelled:
by a visible pasted object or by the background photo's own labels.

Sampling and applying are kept apart as in albumentations: every random choice is
drawn from the row's ``numpy.random.Generator`` and recorded in ``params``;
:func:`compose_scene` given those params (and no generator) replays the row exactly.
Choices that depend on the pixels (where an object fits without covering others
too much) are recorded as their outcome, so replay needs no retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

import cv2
import numpy as np

from augment.byte_cache import ByteLRU
from augment.config import CompositionConfig, check_composition
from augment.cutouts import Cutout
from augment.distortions import DistortionConfig, apply_chain, sample_chain
from augment.imageio import InputError, resize_image
from augment.labelled_backgrounds import LabelledBackground, read_background
from augment.object_distortions import SuperpixelOcclusion
from augment.resizing import resize_labels, resize_rgba
from augment.storage import Place, as_place, read_image
from augment.validation import check_instance

log = logging.getLogger(__name__)


@dataclass
class SceneObject:
    instance_id: int  # value in the instance mask
    cutout_id: str
    category: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the visible mask
    visible_fraction: float


@dataclass
class Scene:
    image: np.ndarray  # H×W×3 uint8 RGB
    instances: np.ndarray  # H×W uint8 instance ids, 0 = background
    objects: list[SceneObject]
    params: dict[str, Any]
    # A labelled background's label ids where it shows (0 = no label) and their categories; None otherwise.
    background_labels: np.ndarray | None = None
    background_categories: dict[int, str] | None = None


def _entry_bytes(entry: tuple[np.ndarray, np.ndarray | None]) -> int:
    return entry[0].nbytes + (entry[1].nbytes if entry[1] is not None else 0)


class BackgroundStore:
    """Backgrounds decoded on first use and kept in a bounded LRU cache (per process).

    Entries are image places (local files or object-store locations) or labelled photos, whose
    label ids are kept beside the image at the same size.
    """

    def __init__(self, paths: list[Place | LabelledBackground], max_shorter_side: int, cache_bytes: int = 1 << 30):
        self.paths = [p if isinstance(p, LabelledBackground) else as_place(p) for p in paths]
        self.max_shorter_side = max_shorter_side
        self.cache_bytes = cache_bytes
        self._cache: ByteLRU[tuple[np.ndarray, np.ndarray | None]] = ByteLRU(cache_bytes, _entry_bytes)

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int) -> np.ndarray:
        return self._load(index)[0]

    def labels(self, index: int) -> np.ndarray | None:
        """Label ids of background ``index`` (the size of :meth:`get`'s image); None for a plain image."""
        return self._load(index)[1]

    def categories(self, index: int) -> dict[int, str] | None:
        entry = self.paths[index]
        return entry.categories if isinstance(entry, LabelledBackground) else None

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        entry = self.paths[index]
        labels = None
        if isinstance(entry, LabelledBackground):
            image, labels = read_background(entry)
        else:
            image = read_image(entry, "rgb")
        shorter = min(image.shape[:2])
        if shorter > self.max_shorter_side:  # no need to keep more pixels than a crop can use
            factor = self.max_shorter_side / shorter
            size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            if labels is not None:
                labels = resize_labels(labels, size[1], size[0])
        self._cache.put(index, (image, labels))
        return image, labels


def _sample_background(rng: np.random.Generator, index: int, shape: tuple[int, int], config: CompositionConfig) -> dict:
    height, width = shape
    aspect = config.width / config.height
    side = rng.uniform(*config.background_crop) * min(height, width / aspect)
    crop_w, crop_h = max(1, min(width, round(side * aspect))), max(1, min(height, round(side)))
    x0 = int(rng.integers(0, width - crop_w + 1))
    y0 = int(rng.integers(0, height - crop_h + 1))
    return {"index": index, "crop": [x0, y0, x0 + crop_w, y0 + crop_h]}


def _object_size(cutout: Cutout, scale: float, config: CompositionConfig) -> tuple[int, int]:
    """The pasted size; ``scale`` is object_scale's draw (mode output) or source_scale_jitter's (mode source)."""
    height, width = cutout.rgba.shape[:2]
    if config.object_scale_mode == "source":
        # The object's size in its photo (the box: the crop may have been shrunk to max_cutout_side), carried
        # over at the composite's scale: shorter side to shorter side, so a shoe stays shoe-sized.
        x0, y0, x1, y1 = cutout.box
        factor = scale * min(config.width, config.height) / min(cutout.source_size) * max(x1 - x0, y1 - y0) / max(height, width)
    else:
        longer = scale * min(config.width, config.height)
        factor = longer / max(height, width)
    return max(4, round(width * factor)), max(4, round(height * factor))


def check_source_sizes(recorded: Iterable[tuple[Any, Any]], config: CompositionConfig) -> None:
    """Mode source needs each cutout's box and source image size (``recorded``: a ``(box, source_size)``
    pair per cutout); refuse (one line) tables without them."""
    if config.object_scale_mode != "source":
        return
    recorded = list(recorded)
    missing = sum(1 for box, size in recorded if box is None or not size)
    if missing:
        raise InputError(f"composition.object_scale_mode source: {missing} of {len(recorded)} cutouts do not record "
                         "their source image's size (written by a synth before it did: remove --out's objects.parquet "
                         "to rebuild it, rerun the `synth expand` or `synth extract` that wrote an `objects` source, "
                         "or use object_scale_mode output)")


def _fit_inside(rgba: np.ndarray, mask: np.ndarray, config: CompositionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Shrink an object that distortions made larger than the frame (deterministic, so replay matches)."""
    height, width = mask.shape
    factor = min(1.0, config.width / width, config.height / height)
    if factor >= 1.0:
        return rgba, mask
    size = (max(1, int(width * factor)), max(1, int(height * factor)))
    return resize_rgba(rgba, *size), resize_labels(mask, size[1], size[0])


def _place(rng: np.random.Generator, mask: np.ndarray, instances: np.ndarray, config: CompositionConfig) -> list[int] | None:
    """Top-left corner where the object covers at most ``max_overlap`` of itself over earlier objects."""
    height, width = mask.shape
    area = max(1, cv2.countNonZero(mask))
    for _ in range(config.placement_tries):
        x = int(rng.integers(0, config.width - width + 1))
        y = int(rng.integers(0, config.height - height + 1))
        region = instances[y : y + height, x : x + width]
        covered = cv2.countNonZero(cv2.bitwise_and(region, region, mask=mask))  # earlier objects under the mask
        if covered / area <= config.max_overlap:
            return [x, y]
    return None


def _blend_alpha(rgba: np.ndarray, mask: np.ndarray, config: CompositionConfig) -> np.ndarray:
    """Blending weight in [0, 1]; zero outside the label mask, so pixels change only where the labels say."""
    alpha = cv2.extractChannel(rgba, 3)
    alpha = cv2.bitwise_and(alpha, alpha, mask=mask)  # zero outside the label mask
    if config.blend == "feather" and config.feather_px > 0:
        kernel = 2 * config.feather_px + 1
        # Blurring and taking the minimum only softens the inside of the edge: nothing leaks outside.
        # Outside the array is outside the object (a cutout is cropped to its box, so it touches every
        # side of it): a reflected border left the object's edges on its box unfeathered, hard.
        alpha = cv2.min(alpha, cv2.GaussianBlur(alpha, (kernel, kernel), 0, borderType=cv2.BORDER_CONSTANT))
    weight = alpha.astype(np.float32)
    weight *= np.float32(1.0 / 255.0)
    return weight


def _paste(canvas: np.ndarray, rgba: np.ndarray, alpha: np.ndarray, mask: np.ndarray, position: list[int], config: CompositionConfig) -> None:
    x, y = position
    height, width = mask.shape
    region = canvas[y : y + height, x : x + width]
    if config.blend == "poisson" and min(x, y) > 0 and x + width < config.width and y + height < config.height:
        # seamlessClone clears the mask's outer 1-px frame, then centres what is left's bounding box (not
        # the crop) on ``center``: a mask off the crop's centre or touching its edge (a torn, rotated or
        # partly removed object) had its pixels pasted beside its label. One px of padding keeps the frame.
        binary = (mask > 0).astype(np.uint8) * 255
        box_x, box_y, box_w, box_h = cv2.boundingRect(binary)
        center = (x + box_x + box_w // 2, y + box_y + box_h // 2)
        src = cv2.copyMakeBorder(cv2.cvtColor(np.ascontiguousarray(rgba[:, :, :3]), cv2.COLOR_RGB2BGR), 1, 1, 1, 1,
                                 cv2.BORDER_REPLICATE)
        dst = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
        try:
            cloned = cv2.seamlessClone(src, dst, cv2.copyMakeBorder(binary, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0),
                                       center, cv2.NORMAL_CLONE)
        except cv2.error:  # a mask too thin or sparse for it (2 px high, a torn sliver): blended linearly below
            cloned = None  # (the same inputs fail the same way, so a replay takes the same path)
        if cloned is not None:
            canvas[y : y + height, x : x + width][mask > 0] = cv2.cvtColor(cloned, cv2.COLOR_BGR2RGB)[y : y + height, x : x + width][mask > 0]
            return
    # cv2.blendLinear is ~15x faster than the same arithmetic in numpy floats.
    region[...] = cv2.blendLinear(cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB), region, alpha, 1.0 - alpha)


def _visible_pixels(instances: np.ndarray, instance_id: int, region: tuple[int, int, int, int]) -> np.float32:
    """Pixels of ``instances`` still showing ``instance_id``, counted in the rectangle it was pasted in (later
    objects only cover it there): a float32 count, as the histogram of the whole mask gave (1/4 of its time)."""
    x, y, width, height = region
    return np.float32(cv2.countNonZero(cv2.compare(instances[y : y + height, x : x + width], instance_id, cv2.CMP_EQ)))


def _check_scene_arguments(cutouts: list[Cutout], backgrounds: BackgroundStore, config: CompositionConfig,
                           distortions: DistortionConfig, rng: np.random.Generator | None) -> None:
    """compose_scene's arguments of their types (a TypeError naming one), the composition's values in
    their ranges (an InputError naming the key), with a cutout and a background."""
    check_instance(backgrounds, BackgroundStore, "backgrounds")
    check_instance(config, CompositionConfig, "config")
    check_composition(config, "config")  # made in Python, not read from a config file: never range-checked
    check_instance(distortions, DistortionConfig, "distortions")
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), not {type(rng).__name__}")
    if not cutouts:
        raise ValueError("cutouts: give a non-empty list of Cutout (augment.cutouts.load_cutouts)")
    if not len(backgrounds):
        raise ValueError("backgrounds: the BackgroundStore holds no images")


def _check_recorded_background(backgrounds: BackgroundStore, recorded: dict[str, Any]) -> None:
    """The background a recorded scene names is the one ``backgrounds`` holds at its index: a replay with
    another list (a file added or removed, other include/exclude) took another picture without a word."""
    index, name = recorded["index"], recorded.get("name")
    if not 0 <= index < len(backgrounds):
        named = f" ({name})" if name is not None else " (no name recorded)"
        raise ValueError(f"params: background {index}{named} of the recorded scene is not among the "
                         f"{len(backgrounds)} backgrounds given")
    given = backgrounds.paths[index].name
    if name is not None and given != name:
        raise ValueError(f"params: the recorded scene's background {index} is {name}, but the backgrounds given "
                         f"have {given} there (not the run's backgrounds)")


def compose_scene(
    cutouts: list[Cutout],
    backgrounds: BackgroundStore,
    config: CompositionConfig,
    distortions: DistortionConfig,
    rng: np.random.Generator | None = None,
    params: dict[str, Any] | None = None,
) -> Scene:
    """Sample (with ``rng``) or replay (with ``params``) one composite scene. Arguments of another
    type, no cutouts or backgrounds, or params naming a cutout not given or a background that is not the
    one at its index are a TypeError or ValueError naming the argument (they were AttributeError, numpy's
    'high <= 0', a KeyError; another background list replayed another picture without a word)."""
    if (rng is None) == (params is None):
        raise ValueError("pass exactly one of rng (to sample) or params (to replay)")
    _check_scene_arguments(cutouts, backgrounds, config, distortions, rng)
    replay = params is not None
    object_chain, scene_chain = distortions.object_distortions(), distortions.scene_distortions()
    by_id = {c.cutout_id: c for c in cutouts}
    missing = sorted({plan["cutout_id"] for plan in params["objects"]} - set(by_id)) if replay else []
    if missing:
        raise ValueError(f"params: cutout {missing[0]} of the recorded scene is not among the cutouts given")
    record: dict[str, Any] = {"background": None, "objects": [], "scene": [], "dropped": []}

    # Background: a random crop of the output's aspect ratio, resized to the output size.
    if replay:
        background_params = params["background"]
        _check_recorded_background(backgrounds, background_params)
        background = backgrounds.get(background_params["index"])
    else:
        index = int(rng.integers(len(backgrounds)))
        background = backgrounds.get(index)
        background_params = _sample_background(rng, index, background.shape[:2], config)
    record["background"] = {**background_params, "name": backgrounds.paths[background_params["index"]].name}
    x0, y0, x1, y1 = background_params["crop"]
    canvas = resize_image(background[y0:y1, x0:x1], config.width, config.height)
    background_labels = backgrounds.labels(background_params["index"])
    labels = None if background_labels is None else resize_labels(
        np.ascontiguousarray(background_labels[y0:y1, x0:x1]), config.height, config.width)
    instances = np.zeros((config.height, config.width), np.uint8)

    # Objects, back to front: later ones occlude earlier ones.
    placed: list[dict[str, Any]] = []
    pasted_area: dict[int, int] = {}
    object_plans = params["objects"] if replay else range(int(rng.integers(config.min_objects, config.max_objects + 1)))
    for plan in object_plans:
        if replay:
            cutout = by_id[plan["cutout_id"]]
            scale, steps = plan["scale"], plan["steps"]
        else:
            chosen = [p["cutout_id"] for p in record["objects"]]
            if chosen and rng.random() < config.repeat_probability:
                cutout = by_id[chosen[int(rng.integers(len(chosen)))]]
            else:
                cutout = cutouts[int(rng.integers(len(cutouts)))]
            scale_range = config.source_scale_jitter if config.object_scale_mode == "source" else config.object_scale
            scale = float(rng.uniform(*scale_range))
        width, height = _object_size(cutout, scale, config)
        if not replay:
            steps = sample_chain(object_chain, rng, height, width)
        rgba = resize_rgba(cutout.rgba, width, height)
        mask = cv2.threshold(cv2.extractChannel(rgba, 3), 127, 1, cv2.THRESH_BINARY)[1]  # 1 where alpha >= 128
        # Only superpixel_occlusion reads them: resized for the objects it acts on alone.
        uses_superpixels = any(isinstance(step, dict) and step.get("name") == SuperpixelOcclusion.name for step in steps)
        superpixels = resize_labels(cutout.superpixels, height, width) if uses_superpixels else None
        rgba, mask = apply_chain(steps, rgba, mask, superpixels)
        rgba, mask = _fit_inside(rgba, mask, config)
        position = plan["position"] if replay else (_place(rng, mask, instances, config) if mask.any() else None)
        entry = {"cutout_id": cutout.cutout_id, "scale": scale, "size": [width, height], "steps": steps, "position": position}
        record["objects"].append(entry)
        if position is None:
            continue  # no room without covering others too much (or nothing left of it): left out
        instance_id = len(placed) + 1
        entry["instance_id"] = instance_id
        _paste(canvas, rgba, _blend_alpha(rgba, mask, config), mask, position, config)
        x, y = position
        instances[y : y + mask.shape[0], x : x + mask.shape[1]][mask > 0] = instance_id
        pasted_area[instance_id] = int(np.count_nonzero(mask))
        placed.append({"cutout": cutout, "instance_id": instance_id, "region": (x, y, mask.shape[1], mask.shape[0])})

    # Occlusion bookkeeping: what later objects hide no longer belongs to earlier ones.
    relabel = np.zeros(256, np.uint8)
    kept: list[tuple[dict[str, Any], float]] = []
    for item in placed:
        fraction = _visible_pixels(instances, item["instance_id"], item["region"]) / max(1, pasted_area[item["instance_id"]])
        if fraction < config.min_visible:
            record["dropped"].append(item["instance_id"])
            continue
        kept.append((item, float(fraction)))
        relabel[item["instance_id"]] = len(kept)
    if labels is not None and record["dropped"]:
        # A dropped object's visible pixels show neither it (no longer labelled) nor the background.
        labels[np.isin(instances, record["dropped"])] = 0
    instances = cv2.LUT(instances, relabel)

    # Scene-level distortions (blur, noise, pillar-box, ...) act on the whole frame and its mask.
    scene_steps = params["scene"] if replay else sample_chain(scene_chain, rng, config.height, config.width)
    record["scene"] = scene_steps
    canvas, instances, labels = _scene_chain(scene_steps, canvas, instances, labels)

    objects = []
    for new_id, (item, fraction) in enumerate(kept, 1):
        x, y, w, h = cv2.boundingRect(cv2.compare(instances, new_id, cv2.CMP_EQ))
        if w == 0 or h == 0:
            continue
        objects.append(SceneObject(new_id, item["cutout"].cutout_id, item["cutout"].category, (x, y, x + w, y + h), fraction))
    if labels is None:
        return Scene(np.ascontiguousarray(canvas), instances, objects, record)
    table = backgrounds.categories(background_params["index"]) or {}
    present = {int(v) for v in np.unique(labels) if v}
    return Scene(np.ascontiguousarray(canvas), instances, objects, record, labels,
                 {k: v for k, v in sorted(table.items()) if k in present})


def _scene_chain(steps: list[dict], canvas: np.ndarray, instances: np.ndarray, labels: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Scene distortions on the canvas, its instance ids and (when labelled) its background label ids."""
    if labels is None:
        canvas, instances = apply_chain(steps, canvas, instances)
        return canvas, instances, None
    if labels.dtype == np.uint8:
        # One uint16 map moves both with the same nearest-neighbour sampling, in one pass of the chain.
        packed = (labels.astype(np.uint16) << 8) | instances
        canvas, packed = apply_chain(steps, canvas, packed)
        return canvas, (packed & 0xFF).astype(np.uint8), (packed >> 8).astype(np.uint8)
    distorted, instances = apply_chain(steps, canvas, instances)  # apply never modifies its inputs
    return distorted, instances, apply_chain(steps, canvas, labels)[1]
