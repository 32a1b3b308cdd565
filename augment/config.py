"""Configuration of `synth expand`: dataclasses with documented defaults, loaded from YAML.

Every field's comment is its documentation; ``configs/expand.yaml`` is the commented
example and ``synth expand --help`` points to it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from augment.distortions import DistortionConfig
from augment.imageio import InputError
from augment.textfiles import read_user_text
from augment.validation import expected_type, is_int

SOURCE_FORMATS = ("auto", "mask_pairs", "rgba", "coco", "label_map", "objects", "labelme", "yolo", "cvat_mask")
# Conservative bytes per pixel of a JPEG q90 composite plus its PNG mask, to size shards by bytes.
ESTIMATED_BYTES_PER_PIXEL = 1.2
# Shards a run may plan: their names carry 5 digits (augment.schema.SHARD_NAME), and a --num of 10**23
# planned 10**20 of them in memory before anything was said.
MAX_SHARDS = 100_000
# Split names become shard file names ({split}-{index:05d}.parquet): no separators, no dots.
SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# Largest image side a config may ask for (composites, cutouts): beyond it memory, not quality, grows.
MAX_SIDE = 16384
BLEND_MODES = ("feather", "hard", "poisson")
OBJECT_SCALE_MODES = ("output", "source")
# Background formats: plain images (no labels), or labelled photos whose labels composites carry.
BACKGROUND_FORMATS = ("images", "auto", "label_map", "mask_pairs")


@dataclass
class SourceConfig:
    """How objects are read from the SOURCE folders."""

    format: str = "auto"  # auto | mask_pairs | rgba | coco | label_map | objects | labelme | yolo | cvat_mask; auto detects from the folder's contents
    min_area: int = 600  # objects (connected regions for label maps) with fewer mask pixels are skipped
    keep_labels: list[str] = field(default_factory=list)  # label/category names to keep; empty keeps all
    drop_labels: list[str] = field(default_factory=list)  # label/category names to drop (label 0 is always background)
    max_cutout_side: int = 384  # cutouts are stored downscaled so their longer side is at most this
    superpixel_max_side: int = 128  # mean-shift superpixels are computed once per cutout at this size
    include: list[str] = field(default_factory=list)  # glob patterns on file names without extension (e.g. "0[0-5]*"); empty = all
    exclude: list[str] = field(default_factory=list)  # glob patterns on file names without extension to leave out (e.g. held-out photos)
    limit: int = 0  # read at most this many source images (0 = all); handy for quick trials


@dataclass
class CompositionConfig:
    """How scenes are put together."""

    width: int = 512  # output width in pixels
    height: int = 512  # output height in pixels
    min_objects: int = 1  # objects placed per scene: uniform in [min_objects, max_objects]
    max_objects: int = 4
    repeat_probability: float = 0.25  # chance that each object after the first repeats a cutout already in the scene
    object_scale: tuple[float, float] = (0.15, 0.55)  # object's longer side / output's shorter side (mode output)
    object_scale_mode: str = "output"  # output: object_scale whatever its real size | source: its size relative to its photo (Simple Copy-Paste)
    source_scale_jitter: tuple[float, float] = (0.8, 1.25)  # mode source: factor on the object's size relative to its photo
    max_overlap: float = 0.5  # a new object may cover at most this fraction of its pixels over earlier objects
    min_visible: float = 0.3  # objects left with a smaller visible fraction are dropped from the labels
    placement_tries: int = 8  # positions tried before an object that overlaps too much is left out
    background_crop: tuple[float, float] = (0.5, 1.0)  # background crop side / background's shorter side
    blend: str = "feather"  # feather (soft alpha edge) | hard | poisson (cv2.seamlessClone; slow)
    feather_px: int = 2  # width of the soft edge for feather blending


@dataclass
class BackgroundConfig:
    """What the BACKGROUNDS folder holds."""

    format: str = "images"  # images (no labels) | auto | label_map | mask_pairs: labelled photos whose labels every composite carries (copy-paste)
    include: list[str] = field(default_factory=list)  # glob patterns on file names without extension; empty = all
    exclude: list[str] = field(default_factory=list)  # glob patterns on file names without extension to leave out (e.g. held-out photos)
    limit: int = 0  # use at most this many backgrounds (0 = all)

    @property
    def labelled(self) -> bool:
        return self.format != "images"


@dataclass
class OutputConfig:
    """How shards are written."""

    split: str = "train"  # shard names are {split}-{index:05d}.parquet
    shard_rows: int = 1000  # rows per shard at most
    shard_bytes: int = 256 * 1024 * 1024  # shards are sized to stay under this at a conservative bytes-per-row estimate
    row_group_rows: int = 32  # rows per Parquet row group: the unit of streaming and of parallel work
    jpeg_quality: int = 90  # composite images are JPEG at this quality; masks are lossless PNG


@dataclass
class ExpandConfig:
    """Everything that decides the content of the shards (workers and paths do not)."""

    seed: int = 0  # run seed: row i is generated from SeedSequence([seed, i]) alone
    num: int = 1000  # composites to make
    sources: SourceConfig = field(default_factory=SourceConfig)
    composition: CompositionConfig = field(default_factory=CompositionConfig)
    distortions: DistortionConfig = field(default_factory=DistortionConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    backgrounds: BackgroundConfig = field(default_factory=BackgroundConfig)

    def rows_per_shard(self) -> int:
        """Rows a shard holds: ``output.shard_rows``, fewer when ``output.shard_bytes`` would be passed."""
        row_bytes = self.composition.width * self.composition.height * ESTIMATED_BYTES_PER_PIXEL
        return max(1, min(self.output.shard_rows, int(self.output.shard_bytes // row_bytes)))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["distortions"] = self.distortions.to_dict()
        return data

    def content_hash(self) -> str:
        """Hash of what decides a row's content; ``num`` only decides how many rows."""
        data = self.to_dict()
        data.pop("num")
        if self.backgrounds == BackgroundConfig():
            data.pop("backgrounds")  # the hashes of runs made before the section existed stay valid
        if self.composition.object_scale_mode == "output":  # as above, for the keys added with the source mode
            data["composition"].pop("object_scale_mode")
            data["composition"].pop("source_scale_jitter")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "config") -> "ExpandConfig":
        data = dict(data or {})
        config = cls()
        sections = {"sources": SourceConfig, "composition": CompositionConfig, "output": OutputConfig,
                    "backgrounds": BackgroundConfig}
        for key, value in data.items():
            if key in sections:
                setattr(config, key, _build_section(sections[key], value, f"{origin}: {key}"))
            elif key == "distortions":
                try:
                    config.distortions = DistortionConfig.from_dict(value or {})
                except (ValueError, TypeError) as error:
                    text = str(error) if str(error).startswith("distortions") else f"distortions.{error}"
                    raise InputError(f"{origin}: {text}") from None
            elif key in ("seed", "num"):
                low = 1 if key == "num" else 0  # num 0 passed here and failed later without naming the file
                if not is_int(value) or value < low:
                    kind = "a positive" if low else "a non-negative"
                    raise InputError(f"{origin}: {key} must be {kind} integer, got {value!r}")
                setattr(config, key, value)
            else:
                raise InputError(f"{origin}: unknown key {key!r} (known: seed, num, sources, composition, distortions, output, backgrounds)")
        config.validate(origin)
        return config

    @classmethod
    def from_yaml(cls, path: Path | str) -> "ExpandConfig":
        return cls.from_dict(read_yaml_mapping(path), origin=str(path))

    def validate(self, origin: str = "config") -> None:
        """Range-check every value; the first problem is an :class:`InputError` naming its key."""
        c, s, o, b = self.composition, self.sources, self.output, self.backgrounds
        checks = [
            (is_int(self.seed) and self.seed >= 0, f"seed must be a non-negative integer, got {self.seed!r}"),
            (is_int(self.num) and self.num >= 1, f"num must be a positive integer, got {self.num!r}"),
            (s.format in SOURCE_FORMATS, f"sources.format must be one of {', '.join(SOURCE_FORMATS)}"),
            (is_int(s.min_area) and s.min_area >= 1, "sources.min_area must be at least 1"),
            (_in_range(s.max_cutout_side, 16, MAX_SIDE), f"sources.max_cutout_side must lie in [16, {MAX_SIDE}]"),
            (_in_range(s.superpixel_max_side, 16, 1024), "sources.superpixel_max_side must lie in [16, 1024]"),
            (is_int(s.limit) and s.limit >= 0, "sources.limit must be 0 (all) or more"),
            (b.format in BACKGROUND_FORMATS, f"backgrounds.format must be one of {', '.join(BACKGROUND_FORMATS)}"),
            (is_int(b.limit) and b.limit >= 0, "backgrounds.limit must be 0 (all) or more"),
            *composition_checks(c),
            (isinstance(o.split, str) and SPLIT_NAME.fullmatch(o.split) is not None,
             f"output.split must be letters, digits, '_' or '-' (it names the shard files), got {o.split!r}"),
            (is_int(o.shard_rows) and o.shard_rows >= 1, "output.shard_rows must be at least 1"),
            (is_int(o.shard_bytes) and o.shard_bytes >= 1, "output.shard_bytes must be at least 1"),
            (is_int(o.row_group_rows) and o.row_group_rows >= 1, "output.row_group_rows must be at least 1"),
            (_in_range(o.jpeg_quality, 1, 100), "output.jpeg_quality must lie in [1, 100]"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"{origin}: {message}")
        shards = -(-self.num // self.rows_per_shard())
        if shards > MAX_SHARDS:
            raise InputError(f"{origin}: num {self.num} makes {shards} shards ({self.rows_per_shard()} rows each); at most "
                             f"{MAX_SHARDS} (their names have 5 digits): a smaller num or larger output.shard_rows "
                             "and shard_bytes")


def composition_checks(c: CompositionConfig) -> list[tuple[bool, str]]:
    """(ok, message) of each composition value (:meth:`ExpandConfig.validate`'s, also run by
    :func:`check_composition` for a CompositionConfig given to the Python API)."""
    return [
        (c.blend in BLEND_MODES, f"composition.blend must be one of {', '.join(BLEND_MODES)}"),
        (_in_range(c.width, 32, MAX_SIDE) and _in_range(c.height, 32, MAX_SIDE),
         f"composition.width and height must lie in [32, {MAX_SIDE}]"),
        (is_int(c.min_objects) and is_int(c.max_objects) and 1 <= c.min_objects <= c.max_objects <= 255,
         "need 1 <= composition.min_objects <= max_objects <= 255 (8-bit instance masks)"),
        (0 < c.object_scale[0] <= c.object_scale[1] <= 1.0, "composition.object_scale must be 0 < lo <= hi <= 1"),
        (c.object_scale_mode in OBJECT_SCALE_MODES,
         f"composition.object_scale_mode must be one of {', '.join(OBJECT_SCALE_MODES)}, got {c.object_scale_mode!r}"),
        (0 < c.source_scale_jitter[0] <= c.source_scale_jitter[1] <= 10.0,
         "composition.source_scale_jitter must be 0 < lo <= hi <= 10"),
        (0 < c.background_crop[0] <= c.background_crop[1] <= 1.0, "composition.background_crop must be 0 < lo <= hi <= 1"),
        (0.0 <= c.max_overlap <= 1.0, "composition.max_overlap must lie in [0, 1]"),
        (0.0 <= c.min_visible <= 1.0, "composition.min_visible must lie in [0, 1]"),
        (0.0 <= c.repeat_probability <= 1.0, "composition.repeat_probability must lie in [0, 1]"),
        # Zero tries would place no object at all: every composite empty, silently.
        (_in_range(c.placement_tries, 1, 1000), "composition.placement_tries must lie in [1, 1000]"),
        (_in_range(c.feather_px, 0, 64), "composition.feather_px must lie in [0, 64]"),
    ]


def check_composition(c: CompositionConfig, origin: str = "composition") -> None:
    """A CompositionConfig made in Python (not read by :meth:`ExpandConfig.from_dict`) range-checked as
    a config's: the first problem is an :class:`InputError` naming its key. Values found good are remembered
    (:func:`_typed_values`): compose_scene checks its config every row (it took ~4% of a composite's rendering)."""
    key = _typed_values(c)
    if key is not None and key in _GOOD_COMPOSITIONS:
        return
    _build_section(CompositionConfig, dataclasses.asdict(c), origin)  # types first: '0 < "a"' is no check
    for ok, message in composition_checks(c):
        if not ok:
            raise InputError(f"{origin}: {message}")
    if key is not None:
        if len(_GOOD_COMPOSITIONS) >= 64:
            _GOOD_COMPOSITIONS.clear()
        _GOOD_COMPOSITIONS.add(key)


_GOOD_COMPOSITIONS: set[tuple] = set()


def _typed_values(c: CompositionConfig) -> tuple | None:
    """Every value of ``c`` with its type (and its items' types: True == 1 and 1 == 1.0 are not the same
    setting), hashable; None where one is not (a list, a dict: such a config is checked every time)."""
    def typed(value: Any) -> Any:
        if isinstance(value, tuple):
            return (tuple, tuple(typed(v) for v in value))
        return (type(value), value)

    key = (type(c), tuple(typed(getattr(c, spec.name)) for spec in dataclasses.fields(c)))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _in_range(value: Any, low: int, high: int) -> bool:
    return is_int(value) and low <= value <= high


def read_config_text(path: Path | str) -> str:
    """The text of a config file (a regular file, or a pipe such as ``--config <(...)``); a missing
    file, a folder or bytes that are not UTF-8 text is an :class:`InputError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: config file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a YAML config file")
    return read_user_text(path, "a YAML config file")


# Values a config may hold once its aliases (*name) are expanded: far beyond any real config, far
# below a "billion laughs" (nested aliases a few lines long that expand to billions of values, whose
# repr in a wrong-type message was gigabytes, and whose hash or checkpoint copy would be).
MAX_CONFIG_VALUES = 1_000_000


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, but a key given twice in one mapping is an error (PyYAML keeps the
    last without a word, so ``num: 100`` then ``num: 5000`` further down made 5000 composites), and so
    is a key that is no string (every config key is a name; YAML reads ``1:``, ``no:`` as others)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *base; keys written beside it override it
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):  # 1:, yes:, null: (train's sort of the keys was a TypeError traceback)
                hint = f' (quote it if it is one: "{key_node.value}")' if isinstance(key_node, yaml.ScalarNode) else ""
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} on line {line} is not a name{hint}", key_node.start_mark)
            first = lines.get(key)
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (lines {first} and {line})", key_node.start_mark)
            lines[key] = line
        return super().construct_mapping(node, deep)


def _expanded_size(value: Any, sizes: dict[int, int]) -> int:
    """How many values ``value`` holds with every alias expanded (each shared node counted once per
    use, its size computed once)."""
    if not isinstance(value, (list, dict)):
        return 1
    if id(value) not in sizes:
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        sizes[id(value)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(value)]


def read_yaml_mapping(path: Path | str) -> dict[str, Any]:
    """The mapping at the top of a YAML file ({} when empty); a missing or malformed file, a key given
    twice or a value that aliases expand past :data:`MAX_CONFIG_VALUES` is an InputError naming the file."""
    path = Path(path)
    text = read_config_text(path)
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        raise InputError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    except RecursionError:  # an alias inside its own value, or nesting thousands deep
        raise InputError(f"{path}: not valid YAML (nested too deep)") from None
    if data is not None and not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    try:
        size = _expanded_size(data, {})
    except RecursionError:
        raise InputError(f"{path}: not valid YAML (nested too deep)") from None
    if size > MAX_CONFIG_VALUES:
        raise InputError(f"{path}: holds over {MAX_CONFIG_VALUES:,} values once its aliases (*name) are "
                         "expanded; write the values out")
    return data or {}


def _build_section(section_type: type, values: Any, origin: str) -> Any:
    """A config section from a YAML mapping: unknown keys and values not of their default's type
    (:func:`augment.validation.expected_type`, the rule every config shares) are an InputError naming
    ``section.key``; pairs and numbers come back as floats."""
    if values is None:
        return section_type()
    if not isinstance(values, dict):
        raise InputError(f"{origin}: expected a mapping")
    known = {f.name: f for f in dataclasses.fields(section_type)}
    defaults = section_type()
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise InputError(f"{origin}: unknown key {key!r} (known: {', '.join(known)})")
        default = getattr(defaults, key)
        problem = expected_type(value, default, known[key].type)
        if problem:
            hint = ' (quote words YAML reads as other values: "null", "yes", "no", "1")' if isinstance(default, list) else ""
            raise InputError(f"{origin}.{key}: {problem}{hint}")
        if isinstance(default, tuple):
            value = tuple(float(v) for v in value)
        elif isinstance(default, float):
            value = float(value)
        kwargs[key] = value
    return section_type(**kwargs)


def _field_comments(cls: type) -> dict[str, str]:
    """``name: type = default  # comment`` lines of a dataclass's source, as {name: comment}."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        for line in inspect.getsource(klass).splitlines():
            match = re.match(r"\s+(\w+):[^#]*#:?\s*(.*)$", line)
            if match:
                comments[match.group(1)] = match.group(2).strip()
    return comments


def _yaml_value(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()


def _section_yaml(instance: Any, indent: str) -> list[str]:
    lines = []
    comments = _field_comments(type(instance))
    for spec in dataclasses.fields(instance):
        value = getattr(instance, spec.name)
        comment = comments.get(spec.name, "")
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{spec.name}:{'  # ' + comment if comment else ''}")
            lines.extend(_section_yaml(value, indent + "  "))
        else:
            lines.append(f"{indent}{spec.name}: {_yaml_value(value)}{'  # ' + comment if comment else ''}")
    return lines


def example_yaml() -> str:
    """The full default config as commented YAML (what configs/expand.yaml holds)."""
    header = [
        "# synth expand: every option with its default. Generated by `synth expand --print-config`.",
        "# Keep only what you change; unknown keys are an error.",
    ]
    return "\n".join(header + _section_yaml(ExpandConfig(), "")) + "\n"
